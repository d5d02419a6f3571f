"""Radio rules: a nearest-neighbour list made into a playlist a listener keeps, and song paths from A to B.

One set of rules (`recommend.rules` in conf/config.yaml) for every place a listener gets a playlist: the
`recommend` command, the web app's API, the Subsonic endpoints and `mpd`. `recommend.rules=none` gives the plain
nearest-neighbour list (what scoring always uses). The rules, applied while walking the neighbours from the most
similar down:

* `max_per_artist`: at most N songs of one artist (the artist tag; without one, the item's group);
* `album_gap`: two songs of one album (artist + album tags) are more than W places apart (the seed is place 0);
  a song held back by this rule waits for a later place instead of being dropped;
* `dedupe`: no second version of a chosen song or of the seed: same artist + title once case, accents,
  bracketed parts ("(Live)", "[Remastered 2011]"), " - Live" style suffixes and "feat. ..." are stripped, or the
  same MusicBrainz recording id, or an embedding within `dup_distance` (cosine distance) of a chosen song, or
  within the looser `dup_distance_artist` of a chosen song of the same artist (a live take, a remaster, the same
  recording filed twice: measured on Emotify's duplicate recordings, scripts/radio_emotify.py);
* `labels`: only songs carrying one of these labels (genres), `min_duration`/`max_duration` (seconds; a song
  of unknown length is left out while a duration filter is set), `exclude`: songs (key, id, title or
  "artist - title") and artists never played.

Each pick keeps its similarity to the query. The search asks the index for a few times k neighbours and widens
(×4, up to an exact scan of the whole library) while the rules leave fewer than k; when even the whole library
cannot fill k places the playlist is shorter and `note` says why, never padded.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from siamrec.errors import SiamrecError

WIDEN = 4  # neighbours searched per wanted song at first, and the factor of each widening
EXHAUSTIVE = 0.25  # asking for more than this fraction of the library: one exact scan of it instead


@dataclass(frozen=True)
class Rules:
    """The radio rules; every field's value here means "off" (the YAML holds the defaults a listener gets)."""

    max_per_artist: int | None = None
    album_gap: int = 0
    dedupe: bool = False
    dup_distance: float = 0.0
    dup_distance_artist: float = 0.0
    labels: tuple[str, ...] = ()
    min_duration: float | None = None
    max_duration: float | None = None
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, node) -> Rules | None:
        """Rules from `recommend.rules` (a mapping of the fields), or None for `none`/null/false (no rules)."""
        if node is None or node is False or (isinstance(node, str) and node.strip().lower() in ("none", "off", "false")):
            return None
        if not isinstance(node, Mapping):
            raise SiamrecError(f"recommend.rules={node!r}: give the rules' settings or none")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(node) - names)
        if unknown:
            raise SiamrecError(f"recommend.rules.{unknown[0]}: unknown rule; the rules are {', '.join(sorted(names))}")
        return cls().replace(**dict(node))

    def replace(self, **given) -> Rules:
        """A copy with some rules changed (None values are ignored), each checked."""
        given = {k: v for k, v in given.items() if v is not None}
        for key in ("labels", "exclude"):
            if key in given:
                value = given[key]
                value = [value] if isinstance(value, str) else list(value)
                given[key] = tuple(str(v).strip() for v in value if str(v).strip())
        out = dataclasses.replace(self, **given)
        out.check()
        return out

    def check(self) -> None:
        def bad(key, what):
            raise SiamrecError(f"recommend.rules.{key}={getattr(self, key)!r}: must be {what}")

        if self.max_per_artist is not None and (not _is_int(self.max_per_artist) or self.max_per_artist < 1):
            bad("max_per_artist", "an integer >= 1 or null (no limit)")
        if not _is_int(self.album_gap) or self.album_gap < 0:
            bad("album_gap", "an integer >= 0 (0: off)")
        if not isinstance(self.dedupe, bool):
            bad("dedupe", "true or false")
        for key in ("dup_distance", "dup_distance_artist"):
            if not _is_num(getattr(self, key)) or not 0 <= getattr(self, key) < 1:
                bad(key, "a number in [0, 1) (0: off)")
        for key in ("min_duration", "max_duration"):
            value = getattr(self, key)
            if value is not None and (not _is_num(value) or value < 0):
                bad(key, "a number of seconds >= 0 or null")
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            bad("min_duration", f"at most max_duration={self.max_duration}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and v == v


# ------------------------------------------------------------------------------------------------ versions
_FEAT = re.compile(r"\s+(?:feat\.?|ft\.|featuring)\s+.*$", re.IGNORECASE)
_BRACKETS = re.compile(r"[\(\[\{][^\)\]\}]*[\)\]\}]")
_SUFFIX = re.compile(r"\s+[-–—]\s+[^-–—]*\b(?:live|remaster(?:ed)?|version|edit|mix|remix|mono|stereo|acoustic|"
                     r"demo|unplugged|session)\b[^-–—]*$", re.IGNORECASE)


_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def normal_text(text: str) -> str:
    """Text compared without case, Latin accents, punctuation or extra spaces (Gurmukhi and Devanagari vowel
    signs are kept: they are letters there, not accents)."""
    text = str(text)
    if text.isascii():  # the common case, 20× faster
        return " ".join(_NOT_ALNUM.sub(" ", text).lower().split())
    text = unicodedata.normalize("NFKD", text)
    out, prev = [], ""
    for c in text:
        cat = unicodedata.category(c)
        if cat == "Mn" and prev and ord(prev) < 0x0530:  # a combining accent on a Latin/Greek/Cyrillic letter
            continue
        out.append(c if cat[0] in "LMN" else " ")
        prev = c if cat[0] != "M" else prev
    return " ".join(unicodedata.normalize("NFC", "".join(out)).casefold().split())


def normal_title(title: str) -> str:
    """A title without its version marks: "Song (Live)", "Song [Remastered 2011]", "Song - Live at X" and
    "Song feat. Y" are all "song"."""
    stripped = _SUFFIX.sub("", _BRACKETS.sub(" ", _FEAT.sub("", str(title))))
    return normal_text(stripped) or normal_text(title)


@lru_cache(maxsize=65536)
def normal_artist(artist: str) -> str:
    return normal_text(_FEAT.sub("", str(artist))) or normal_text(artist)


# ------------------------------------------------------------------------------------------------ songs
class Songs:
    """What the rules read of each song: the columns of items.csv (title, artist, album, duration, mbid when the
    library has them; labels; group as the artist when there is no artist tag)."""

    def __init__(self, items: Sequence[Mapping[str, str]]):
        self.n = len(items)
        self.keys = [it["key"] for it in items]
        self.titles = [(it.get("title") or "").strip() for it in items]
        groups = [(it.get("group") or "").strip() for it in items]
        self.artists = [(it.get("artist") or "").strip() or (g if g and g != k else "")
                        for it, g, k in zip(items, groups, self.keys)]
        self.artist_norm = [normal_artist(a) if a else "" for a in self.artists]
        self.albums = [(it.get("album") or "").strip() for it in items]
        album_norm = {al: normal_text(al) for al in set(self.albums) if al}
        self.album_key = [(a, album_norm[al]) if al else None for a, al in zip(self.artist_norm, self.albums)]
        self.durations = np.array([_seconds(it.get("duration")) for it in items], dtype=np.float64)
        self.mbids = [(it.get("mbid") or "").strip().lower() for it in items]
        self.labels = [tuple(x.strip() for x in (it.get("labels") or "").split("|") if x.strip()) for it in items]
        self.version = [(a, normal_title(t)) if t else None for a, t in zip(self.artist_norm, self.titles)]

    @cached_property
    def rows_of_label(self) -> dict[str, np.ndarray]:
        out: dict[str, list[int]] = {}
        for i, labs in enumerate(self.labels):
            for lab in labs:
                out.setdefault(normal_text(lab), []).append(i)
        return {k: np.array(v, dtype=np.int64) for k, v in out.items()}

    @cached_property
    def _names(self) -> dict[str, list[int]]:
        """Normalised key, title, artist and "artist - title" -> rows (for the exclude list)."""
        out: dict[str, list[int]] = {}
        for i, (key, title, artist) in enumerate(zip(self.keys, self.titles, self.artists)):
            names = {normal_text(key)}
            if title:
                names.add(normal_text(title))
                if artist:
                    names.add(normal_text(f"{artist} - {title}"))
            if artist:
                names.add(normal_text(artist))
            for name in names:
                out.setdefault(name, []).append(i)
        return out

    def rows_named(self, entry: str) -> list[int]:
        """The rows an exclude entry names: a row id, a key, a title, an artist or "artist - title"."""
        text = str(entry).strip()
        rows = list(self._names.get(normal_text(text), []))
        if text.isascii() and text.isdigit() and int(text) < self.n:
            rows.append(int(text))
        return rows

    def allowed_mask(self, rules: Rules) -> np.ndarray | None:
        """Rows the filters keep (labels, duration range, exclude list), or None when no filter is set."""
        if not (rules.labels or rules.exclude or rules.min_duration is not None or rules.max_duration is not None):
            return None
        keep = np.ones(self.n, dtype=bool)
        if rules.labels:
            carrying = np.zeros(self.n, dtype=bool)
            for lab in rules.labels:
                rows = self.rows_of_label.get(normal_text(lab))
                if rows is not None:
                    carrying[rows] = True
            keep &= carrying
        with np.errstate(invalid="ignore"):
            if rules.min_duration is not None:
                keep &= self.durations >= rules.min_duration  # NaN (unknown) compares False: left out
            if rules.max_duration is not None:
                keep &= self.durations <= rules.max_duration
        for entry in rules.exclude:
            keep[self.rows_named(entry)] = False
        return keep


def _seconds(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return float("nan")
    return value if value >= 0 else float("nan")


# ------------------------------------------------------------------------------------------------ choosing
class _State:
    """What is already in the playlist (and the seeds): artists counted, albums' last places, versions."""

    def __init__(self, songs: Songs, rules: Rules, vectors):
        self.songs, self.rules = songs, rules
        self.per_artist: Counter = Counter()
        self.album_at: dict = {}
        self.versions: set = set()
        self.mbids: set = set()
        self.vectors: list[np.ndarray] = []
        self.artist_vectors: dict[str, list[np.ndarray]] = {}
        self.vectors_of = vectors  # row -> unit vector
        self.place = 0
        self.cand_units = self.cand_max = None  # extend(): candidates' unit vectors, their max similarity so far

    def extend(self, units: np.ndarray) -> None:
        """More candidates, given as a block of unit vectors (candidate numbers continue from the last block):
        their similarity to the songs chosen so far is kept up to date in one product per chosen song."""
        if self.rules.dup_distance <= 0:
            return
        best = np.full(len(units), -np.inf, dtype=np.float32)
        for v in self.vectors:  # matrix-vector products: a small matrix product would wake BLAS's threads
            np.maximum(best, units @ v, out=best)
        if self.cand_units is None:
            self.cand_units, self.cand_max = units, best
        else:
            self.cand_units = np.concatenate([self.cand_units, units])
            self.cand_max = np.concatenate([self.cand_max, best])

    def add_seed(self, row: int | None, vector: np.ndarray | None = None) -> None:
        if row is not None:
            self._remember(row, counted=False)
        if vector is not None and self.rules.dup_distance > 0:
            self.vectors.append(vector)

    def _remember(self, row: int, counted: bool = True) -> None:
        s = self.songs
        if self.cand_units is not None:
            np.maximum(self.cand_max, self.cand_units @ self.vectors_of(row), out=self.cand_max)
        if counted and s.artist_norm[row]:
            self.per_artist[s.artist_norm[row]] += 1
        if s.album_key[row] is not None:
            self.album_at[s.album_key[row]] = self.place
        if s.version[row] is not None:
            self.versions.add(s.version[row])
        if s.mbids[row]:
            self.mbids.add(s.mbids[row])
        if self.rules.dup_distance > 0:
            self.vectors.append(self.vectors_of(row))
        if self.rules.dup_distance_artist > 0 and s.artist_norm[row]:
            self.artist_vectors.setdefault(s.artist_norm[row], []).append(self.vectors_of(row))

    def refusal(self, row: int, candidate: int | None = None) -> str | None:
        """Why `row` (candidate number `candidate` of extend()) cannot take the next place: a rule's name, or
        None."""
        s, rules = self.songs, self.rules
        if rules.dedupe:
            if s.version[row] is not None and s.version[row] in self.versions:
                return "same song"
            if s.mbids[row] and s.mbids[row] in self.mbids:
                return "same recording id"
        if rules.max_per_artist is not None and s.artist_norm[row] \
                and self.per_artist[s.artist_norm[row]] >= rules.max_per_artist:
            return "max_per_artist"
        if rules.dup_distance > 0:
            if candidate is not None and self.cand_max is not None:
                if self.cand_max[candidate] >= 1 - rules.dup_distance:
                    return "near-identical sound"
            elif self.vectors and float(np.max(np.stack(self.vectors) @ self.vectors_of(row))) >= 1 - rules.dup_distance:
                return "near-identical sound"
        if rules.dup_distance_artist > 0 and s.artist_norm[row] in self.artist_vectors:
            same = self.artist_vectors[s.artist_norm[row]]
            if float(np.max(np.stack(same) @ self.vectors_of(row))) >= 1 - rules.dup_distance_artist:
                return "near-identical sound, same artist"
        if rules.album_gap and s.album_key[row] is not None:
            last = self.album_at.get(s.album_key[row])
            if last is not None and self.place + 1 - last <= rules.album_gap:
                return "album_gap"
        return None

    def take(self, row: int) -> None:
        self.place += 1
        self._remember(row)


@dataclass
class Playlist:
    """A ruled playlist: (row, similarity) picks, the k asked for and what each rule left out."""

    picks: list[tuple[int, float]]
    k: int
    dropped: Counter
    searched: int  # neighbours looked at
    library: int   # songs in the library

    @property
    def note(self) -> str | None:
        if len(self.picks) >= self.k:
            return None
        why = ", ".join(f"{name} {count}" for name, count in self.dropped.most_common()) or "no other songs"
        return (f"only {len(self.picks)} of k={self.k} songs pass the radio rules (left out: {why}); loosen "
                "recommend.rules, or recommend.rules=none for the plain list")


class Radio:
    """Ruled playlists and A→B paths over a library's embeddings, searched with its index."""

    def __init__(self, emb: np.ndarray, songs: Songs, index):
        self.emb = np.asarray(emb, dtype=np.float32)
        norms = np.linalg.norm(self.emb, axis=1)
        self.inv_norms = (1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        self.songs, self.index = songs, index
        self.n = len(self.emb)

    def unit(self, row: int) -> np.ndarray:
        return self.emb[row] * self.inv_norms[row]

    def _neighbours(self, query: np.ndarray, wanted: int, drop: set[int], keep: np.ndarray | None, scan=None):
        """(rows, sims) of the `wanted` nearest rows to the unit `query`, best first, `drop` and rows outside
        `keep` removed; from `scan` (the query's similarity to every row, for an exact index: one product,
        reused while widening) or an exact scan when `wanted` is a large part of the library, else the index."""
        if scan is None and (wanted >= self.n * EXHAUSTIVE or wanted > self.n - len(drop) - 1):
            scan = self.scan(query)
        if scan is not None:
            wanted = min(wanted, self.n)
            top = np.argpartition(-scan, wanted - 1)[:wanted] if wanted < self.n else np.arange(self.n)
            rows = top[np.lexsort((top, -scan[top]))]  # most similar first, ties by row (as the exact index)
            sims = scan[rows]
        else:
            idx, s = self.index.search(query[None], wanted)
            rows, sims = idx[0], s[0]
        ok = np.ones(len(rows), dtype=bool) if keep is None else keep[rows]
        if drop:
            ok &= ~np.isin(rows, np.fromiter(drop, dtype=np.int64, count=len(drop)))
        return rows[ok], sims[ok]

    def scan(self, query: np.ndarray) -> np.ndarray:
        """The unit `query`'s cosine similarity to every song."""
        return (self.emb @ query) * self.inv_norms

    def playlist(self, query, k: int, rules: Rules, seeds=(), seed_vectors=(), allowed=None) -> Playlist:
        """The k songs nearest to `query` (an embedding) that pass `rules`; `seeds` (rows) are left out and,
        with their versions, never chosen; `seed_vectors` are songs outside the library to dedupe against;
        `allowed` (a boolean row mask) limits the songs that may be chosen (e.g. those a player knows)."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        drop = {int(r) for r in seeds}
        keep = self.songs.allowed_mask(rules)
        if allowed is not None:
            keep = allowed if keep is None else keep & allowed
        scan = self.scan(query) if getattr(self.index, "method", "") == "exact" else None
        # an exact scan costs the same for any number of neighbours taken from it: take more at once
        wanted = min(self.n, (WIDEN if scan is None else WIDEN ** 2) * k + len(drop))
        state = _State(self.songs, rules, self.unit)
        for r in drop:
            state.add_seed(r)
        for v in seed_vectors:
            state.add_seed(None, np.asarray(v, np.float32) / max(float(np.linalg.norm(v)), 1e-12))
        dropped: Counter = Counter()
        if keep is not None:
            dropped["labels/duration/exclude filters"] = int((~keep).sum())
        picks: list[tuple[int, float]] = []
        pending: list[tuple[int, float, int]] = []
        seen: set[int] = set()
        while True:
            rows, sims = self._neighbours(query, wanted, drop, keep, scan)
            if seen:  # widening: only the songs not looked at yet join the ones still waiting
                new = np.fromiter((r not in seen for r in rows.tolist()), dtype=bool, count=len(rows))
                rows, sims = rows[new], sims[new]
            start = len(seen)
            seen.update(rows.tolist())
            state.extend(self.emb[rows] * self.inv_norms[rows, None])
            pending += zip(rows.tolist(), np.asarray(sims, dtype=np.float64).tolist(),
                           range(start, start + len(rows)))
            pending = _fill(state, pending, picks, k, dropped)
            if len(picks) >= k or wanted >= self.n:
                if pending and len(picks) < k:
                    dropped["album_gap"] += len(pending)
                return Playlist(picks, k, dropped, len(seen), self.n)
            wanted = min(self.n, wanted * WIDEN)

    def path(self, a: int, b: int, k: int, rules: Rules | None) -> tuple[list[dict], str | None]:
        """k songs from A's sound to B's: the points (1 - t)·A + t·B, t = 1/(k+1) ... k/(k+1) (unit vectors),
        each step's nearest song not used yet (rules applied; A, B and their versions excluded). Each step
        has its similarity to its point, to A and to B. Returns (steps, note when fewer than k)."""
        va, vb = self.unit(a), self.unit(b)
        t = np.arange(1, k + 1, dtype=np.float32)[:, None] / (k + 1)
        points = (1 - t) * va + t * vb
        points /= np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
        rules = rules or Rules()
        keep = self.songs.allowed_mask(rules)
        state = _State(self.songs, rules, self.unit)
        state.add_seed(a)
        state.add_seed(b)
        used = {a, b}
        steps, missed = [], 0
        for point in points:
            wanted = min(self.n, WIDEN * k + 2)
            while True:
                rows, sims = self._neighbours(point, wanted, used, keep)
                pick = next(((int(r), float(s)) for r, s in zip(rows, sims) if state.refusal(int(r)) is None), None)
                if pick is not None or wanted >= self.n:
                    break
                wanted = min(self.n, wanted * WIDEN)
            if pick is None:
                missed += 1
                continue
            row, sim = pick
            state.take(row)
            used.add(row)
            u = self.unit(row)
            steps.append({"row": row, "similarity": round(sim, 6), "similarity_a": round(float(u @ va), 6),
                          "similarity_b": round(float(u @ vb), 6)})
        note = (f"only {len(steps)} of k={k} steps found a song that passes the radio rules; loosen "
                "recommend.rules, or recommend.rules=none") if missed else None
        return steps, note


def _fill(state: _State, pending: list, picks: list, k: int, dropped: Counter) -> list:
    """Walk the candidates (row, similarity, candidate number), best first, giving each place the first song
    the rules allow, until `picks` holds k songs; a song held back only by album_gap waits for a later place,
    any other refusal drops it (counted in `dropped`). Returns the candidates still waiting or not looked at."""
    while len(picks) < k:
        chosen, waiting = None, []
        for i in range(len(pending)):
            why = state.refusal(pending[i][0], pending[i][2])
            if why is None:
                chosen = i
                break
            if why == "album_gap":
                waiting.append(i)
            else:
                dropped[why] += 1
        if chosen is None:
            return [pending[i] for i in waiting]
        row, sim, _c = pending[chosen]
        state.take(row)
        picks.append((row, round(sim, 6)))
        # the songs held back wait ahead of the rest; the ones dropped are gone
        pending = [pending[i] for i in waiting] + pending[chosen + 1:]
    return pending
