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
  recording filed twice: measured on Emotify's duplicate recordings, scripts/radio_emotify.py). These two sound
  rules apply to a label-free embedding (the pretrained song vectors: an identity run, a library's index), where a
  small distance means the same sound; on an embedding trained on labels, whose distances measure shared labels (songs
  of one genre drawn together), only with `dup_on_trained` (Radio's `label_free`, siamrec.runs.label_free);
* `labels`: only songs carrying one of these labels (genres), `min_duration`/`max_duration` (seconds; a song
  of unknown length is left out while a duration filter is set), `exclude`: songs (key, id, title or
  "artist - title") and artists never played.

Each pick keeps its similarity to the query. The search asks the index for 5·k neighbours (16·k from an exact
scan, and at least ef_search from an HNSW index: both cost the same for any number up to that) and, while the
rules leave fewer than k, searches again for twice what the share of songs passed so far needs to fill the empty
places (at most ×4, up to an exact scan of the whole library); when even the whole library cannot fill k places
the playlist is shorter and `note` says why, never padded. The rules read integer codes of each song (artist,
album, artist + title version, recording id) made once when the library is read, so a request compares numbers
gathered in one step per block of candidates. The sound rules are checked once the walk is done: one small Gram
matrix of the songs involved shows, in nearly every walk, that no two of them come near a limit; otherwise each
candidate that reached the rules is checked against the songs heard before it, and in the rare walk where a
similarity comes within MARGIN of a limit, the walk is made again with them applied song by song, so the
playlist is the same either way.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import chain

import numpy as np

from siamrec.errors import SiamrecError

WIDEN = 4  # the factor of each widening (and 4·4 neighbours per wanted song from an exact scan, which costs the same)
FIRST = 5  # neighbours per wanted song asked of an approximate index at first (at least ef_search, which an HNSW
# search visits anyway): a k=25 playlist of the synthetic 100,000-song catalogue (scripts/bench_serve.py) looks up to
# ~145 neighbours deep, so ~5 % of its playlists search twice; asking for 6·k (151) instead never did, but made every
# ruled search ~40 % dearer (ef 151), and the ruled p95 at 32 clients rose from +21-23 % to +35-38 % over the plain one
EXHAUSTIVE = 0.25  # asking for more than this fraction of the library: one exact scan of it instead
MARGIN = 1e-4  # similarities this close to a sound rule's limit in the check after a walk: walk again song by song


@dataclass(frozen=True)
class Rules:
    """The radio rules; every field's value here means "off" (the YAML holds the defaults a listener gets)."""

    max_per_artist: int | None = None
    album_gap: int = 0
    dedupe: bool = False
    dup_distance: float = 0.0
    dup_distance_artist: float = 0.0
    dup_on_trained: bool = False
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
        if not given:
            return self
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
        for key in ("dedupe", "dup_on_trained"):
            if not isinstance(getattr(self, key), bool):
                bad(key, "true or false")
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
        """The rules as JSON-ready values (dataclasses.asdict deep-copies: 40 µs of every ruled request)."""
        values = ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and v == v


def sound_note(rules: Rules | None, label_free: bool) -> str | None:
    """One line when `rules` ask for the sound rules and the embedding (not `label_free`) leaves them out."""
    if rules is None or label_free or rules.dup_on_trained or not (rules.dup_distance or rules.dup_distance_artist):
        return None
    return ("radio rules: dup_distance and dup_distance_artist are off for this run: its embedding was trained on "
            "labels, so a small distance means shared labels, not the same recording (versions are still found by "
            "their tags; recommend.rules.dup_on_trained=true applies them anyway)")


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
        # the same as integers (-1: none), so the rules compare numbers gathered in blocks, not strings: one row
        # [artist, album, version, mbid] per song (int32: a request's gather touches half the memory of int64)
        self.codes = np.stack([_codes(self.artist_norm), _codes(self.album_key), _codes(self.version),
                               _codes(self.mbids)], axis=1)

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


def _codes(values: Sequence) -> np.ndarray:
    """One integer per distinct value (in order of first appearance), -1 for an empty one."""
    ids: dict = {}
    return np.fromiter((ids.setdefault(v, len(ids)) if v else -1 for v in values), dtype=np.int32, count=len(values))


def _seconds(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return float("nan")
    return value if value >= 0 else float("nan")


# ------------------------------------------------------------------------------------------------ choosing
class _State:
    """What is already in the playlist (the seeds and the songs chosen) and the candidates looked at so far.
    Every rule reads integers (Songs' codes, gathered once per block of candidates). The two sound rules read a
    candidate's similarity to the songs already heard (seeds and chosen songs): song by song (one small
    matrix-vector product for each candidate that passes the rules before them, kept while it waits), or, with
    `sound_after`, not during the walk: each candidate that reaches them is noted with the number of songs heard
    then, and `sound_would_refuse` checks them all at the end in one matrix product."""

    def __init__(self, songs: Songs, rules: Rules, radio: Radio, sound_after: bool = False):
        self.songs, self.radio = songs, radio
        self.cap, self.gap, self.dedupe = rules.max_per_artist, rules.album_gap, rules.dedupe
        # similarities are float32; the near-identical limit is compared as float32 too, the same-artist one not
        sound = radio.label_free or rules.dup_on_trained
        self.near_limit = float(np.float32(1 - rules.dup_distance)) if sound and rules.dup_distance > 0 else None
        self.artist_limit = 1 - rules.dup_distance_artist if sound and rules.dup_distance_artist > 0 else None
        self.per_artist: dict[int, int] = {}
        self.full: set[int] = set()  # the artists at max_per_artist
        self.album_at: dict[int, int] = {}
        self.versions: set[int] = set()
        self.mbids: set[int] = set()
        # the songs the sound rules compare with: their rows (-1: a seed outside the library, its unit vector in
        # heard_vectors), their unit vectors gathered when needed
        self.heard_rows: list[int] = []
        self.heard_vectors: dict[int, np.ndarray] = {}
        self.heard_units = np.empty((0, radio.emb.shape[1]), dtype=np.float32)
        self.n_heard = 0
        self.heard_of_artist: dict[int, list[int]] = {}  # artist -> its rows of `heard` (same-artist rule)
        self.heard_artist: list[int] = []  # each heard song's artist for the same-artist rule (-1: none)
        self.later = sound_after and (self.near_limit is not None or self.artist_limit is not None)
        self.place = 0
        self.clear()

    def clear(self) -> None:
        """No candidates (the chosen songs stay)."""
        self.rows: list[int] = []
        self.sims: list[float] = []
        self.codes: list[list[int]] = []  # each candidate's [artist, album, version, mbid] codes
        self.units = None  # each candidate's unit vector (while a sound rule is on, song by song)
        self.sound: dict[int, list[float]] = {}  # candidate -> its similarities to the first songs heard
        self.reached: list[int] = []  # sound_after: row, songs heard, artist, ... of each candidate at them (_fill)

    def add(self, rows: np.ndarray, sims: np.ndarray) -> None:
        """More candidates, numbered on from the last ones."""
        self.rows += rows.tolist()
        self.sims += sims.tolist()
        self.codes += self.songs.codes[rows].tolist()
        if (self.near_limit is not None or self.artist_limit is not None) and not self.later:
            units = self.radio.units(rows)
            self.units = units if self.units is None else np.concatenate([self.units, units])

    def add_seed(self, row: int | None, vector: np.ndarray | None = None) -> None:
        """A seed (a row, or a unit vector of a song outside the library): never chosen, nor its versions."""
        if row is not None:
            self._remember(self.songs.codes[row].tolist(), row, counted=False)
        if vector is not None and self.near_limit is not None:
            self.heard_vectors[self.n_heard] = vector
            self._hear(-1, -1)

    def _remember(self, codes: list[int], row: int, counted: bool = True) -> None:
        """A chosen song or a seed (not `counted` for max_per_artist)."""
        artist, album, version, mbid = codes
        if counted and artist >= 0:
            n = self.per_artist[artist] = self.per_artist.get(artist, 0) + 1
            if self.cap is not None and n >= self.cap:
                self.full.add(artist)
        if album >= 0:
            self.album_at[album] = self.place
        if version >= 0:
            self.versions.add(version)
        if mbid >= 0:
            self.mbids.add(mbid)
        if self.near_limit is not None or (self.artist_limit is not None and artist >= 0):
            self._hear(row, artist)

    def _hear(self, row: int, artist: int) -> None:
        """A song the sound rules compare with (-1: no artist for the same-artist rule)."""
        self.heard_rows.append(row)
        if self.artist_limit is not None and artist >= 0:
            self.heard_of_artist.setdefault(artist, []).append(self.n_heard)
        self.heard_artist.append(artist if self.artist_limit is not None else -1)
        self.n_heard += 1

    def _heard(self) -> np.ndarray:
        """The unit vectors of the songs heard so far."""
        done = len(self.heard_units)
        if done < self.n_heard:
            rows = np.array(self.heard_rows[done:])
            new = self.radio.units(rows)
            for j, vector in self.heard_vectors.items():
                if j >= done:
                    new[j - done] = vector
            self.heard_units = np.concatenate([self.heard_units, new]) if done else new
        return self.heard_units

    def _similarities(self, c: int) -> list[float]:
        """Candidate c's similarity to each song heard so far."""
        known = self.sound.get(c, [])
        if len(known) < self.n_heard:
            known = known + (self._heard()[len(known):] @ self.units[c]).tolist()
            self.sound[c] = known
        return known

    def sound_refusal(self, c: int, artist: int) -> str | None:
        """The sound rules for candidate c (of `artist`), which passed the rules before them, song by song: the
        rule that refuses it, or None."""
        if not self.n_heard:
            return None
        same = self.heard_of_artist.get(artist)
        if self.near_limit is None and same is None:
            return None
        sims = self._similarities(c)
        if self.near_limit is not None and max(sims) >= self.near_limit:
            return "near-identical sound"
        if same is not None and max(sims[j] for j in same) >= self.artist_limit:
            return "near-identical sound, same artist"
        return None

    def sound_would_refuse(self) -> bool:
        """Whether a sound rule, put off by `sound_after`, may have refused a candidate that reached it: its
        similarity to a song heard before then within MARGIN of the rule's limit (a matrix product rounds
        differently from the walk's products, never by that much). First a bound (one Gram matrix of the distinct
        songs involved), then, only when some pair comes within reach of a limit, the exact check: each candidate
        against the songs heard before it reached the rules."""
        if not self.reached or not self.n_heard:
            return False
        lowest = min(2.0 if self.near_limit is None else self.near_limit,
                     2.0 if self.artist_limit is None else self.artist_limit) - MARGIN
        if not self.heard_vectors:
            # first a bound, enough in nearly every walk: no two of the songs involved (the candidates that reached
            # the sound rules, the songs heard) are within reach of either limit, so no rule could have refused one
            units = self.radio.units(np.array(list(dict.fromkeys(self.reached[0::3] + self.heard_rows))))
            gram = units @ units.T
            gram.flat[::len(gram) + 1] = -2.0  # the diagonal (np.fill_diagonal's checks cost more than this)
            if gram.max() < lowest:
                return False
        n = len(self.reached) // 3
        rows = np.array(self.reached[0::3] + self.heard_rows)
        units = self.radio.units(rows)
        for j, vector in self.heard_vectors.items():  # seeds outside the library
            units[n + j] = vector
        sims = units[:n] @ units[n:].T
        heard_then = np.array(self.reached[1::3])
        hit = np.zeros(sims.shape, dtype=bool) if self.near_limit is None else sims >= self.near_limit - MARGIN
        if self.artist_limit is not None:  # a song heard of the candidate's artist (-1: none, never the same)
            artists = np.array(self.reached[2::3])
            same = (np.array(self.heard_artist) == artists[:, None]) & (artists >= 0)[:, None]
            hit |= same & (sims >= self.artist_limit - MARGIN)
        # only the songs heard before the candidate reached the rules count
        hit &= np.arange(self.n_heard) < heard_then[:, None]
        return bool(hit.any())


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

    def __init__(self, emb: np.ndarray, songs: Songs, index, label_free: bool = True):
        """`label_free`: the embedding is the pretrained song vectors, where the sound rules apply (see the module's
        doc); one trained on labels is not (siamrec.runs.label_free tells a run's)."""
        self.label_free = label_free
        self.emb = np.asarray(emb, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", self.emb, self.emb))  # not np.linalg.norm: see index.normalise
        self.inv_norms = (1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        self.songs, self.index = songs, index
        self.n = len(self.emb)

    def units(self, rows) -> np.ndarray:
        """The unit vectors of `rows`: the index's own (ExactIndex, faiss HNSW: what a search has just read, still in
        the CPU's caches, where the embeddings are not), else the embeddings scaled (faiss IVF)."""
        table = self.index.vectors
        return table[rows] if table is not None else self.emb[rows] * self.inv_norms[rows, None]

    def unit(self, row: int) -> np.ndarray:
        return self.units([row])[0]

    def _neighbours(self, query: np.ndarray, wanted: int, drop: np.ndarray, keep: np.ndarray | None, scan=None):
        """(rows, sims) of the `wanted` nearest rows to the unit `query`, best first, the rows of `drop` and
        rows outside `keep` removed; from `scan` (the query's similarity to every row, for an exact index: one
        product, reused while widening) or an exact scan when `wanted` is a large part of the library, else the
        index."""
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
        ok = _outside(rows, drop)
        if keep is not None:
            ok = keep[rows] if ok is None else ok & keep[rows]
        return (rows, sims) if ok is None else (rows[ok], sims[ok])

    def scan(self, query: np.ndarray) -> np.ndarray:
        """The unit `query`'s cosine similarity to every song."""
        table = self.index.vectors
        return table @ query if table is not None else (self.emb @ query) * self.inv_norms

    def _first_search(self, k: int, drop: int, exact: bool) -> int:
        """Neighbours to ask for first: a few per wanted song; an exact scan costs the same for any number
        taken from it, and an HNSW search visits ef_search songs whatever k (up to it): take those too."""
        free = getattr(self.index, "ef_search", 0) if getattr(self.index, "method", "") == "hnsw" else 0
        return min(self.n, max((WIDEN ** 2 if exact else FIRST) * k, free) + drop)

    def playlist(self, query, k: int, rules: Rules, seeds=(), seed_vectors=(), allowed=None) -> Playlist:
        """The k songs nearest to `query` (an embedding) that pass `rules`; `seeds` (rows) are left out and,
        with their versions, never chosen; `seed_vectors` are songs outside the library to dedupe against;
        `allowed` (a boolean row mask) limits the songs that may be chosen (e.g. those a player knows)."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if getattr(self.index, "expand", 0):  # ranked as the plain playlist is: by the seed and its nearest songs
            query = self.index.expanded(query[None])[0]
        query = query / max(math.sqrt(float(query @ query)), 1e-12)  # np.linalg.norm's own cost is 2 µs
        drop = np.array(sorted({int(s) for s in seeds}), dtype=np.int64)
        keep = self.songs.allowed_mask(rules)
        if allowed is not None:
            keep = allowed if keep is None else keep & allowed
        scan = self.scan(query) if getattr(self.index, "method", "") == "exact" else None
        found = self._walk(query, k, rules, drop, seed_vectors, keep, scan, sound_after=True)
        if found is None:  # a candidate came near a sound rule's limit: walk again, those rules song by song
            found = self._walk(query, k, rules, drop, seed_vectors, keep, scan, sound_after=False)
        return found

    def _walk(self, query, k: int, rules: Rules, drop, seed_vectors, keep, scan, sound_after: bool) -> Playlist | None:
        """The playlist (see `playlist`); None when, with `sound_after`, a sound rule may have refused a song."""
        wanted = self._first_search(k, len(drop), scan is not None)
        state = _State(self.songs, rules, self, sound_after)
        for r in drop.tolist():
            state.add_seed(r)
        for v in seed_vectors:
            state.add_seed(None, np.asarray(v, np.float32) / max(float(np.linalg.norm(v)), 1e-12))
        dropped: Counter = Counter()
        if keep is not None:
            dropped["labels/duration/exclude filters"] = int((~keep).sum())
        picks: list[tuple[int, float]] = []
        waiting: list[int] = []
        while True:
            rows, sims = self._neighbours(query, wanted, drop, keep, scan)
            if state.rows:  # widening: only the songs not looked at yet join the ones still waiting
                seen = set(state.rows)
                new = np.fromiter((r not in seen for r in rows.tolist()), dtype=bool, count=len(rows))
                rows, sims = rows[new], sims[new]
            waiting = _fill(state, waiting, len(state.rows), rows, sims, picks, k, dropped)
            if len(picks) >= k or wanted >= self.n:
                if state.later and state.sound_would_refuse():
                    return None
                if waiting and len(picks) < k:
                    dropped["album_gap"] += len(waiting)
                # each similarity rounded to 6 decimals in one step (Python's round costs ~0.5 µs a call; for
                # float32 similarities numpy's rounding gives the same numbers)
                sims = np.round(np.array([s for _, s in picks]), 6).tolist()
                return Playlist([(r, s) for (r, _), s in zip(picks, sims)], k, dropped, len(state.rows), self.n)
            wanted = _wider(wanted, k - len(picks), len(picks) / max(len(state.rows), 1), self.n)

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
        state = _State(self.songs, rules, self)
        state.add_seed(a)
        state.add_seed(b)
        used = [a, b]
        steps, missed = [], 0
        for point in points:
            wanted, pick = min(self.n, WIDEN * k + 2), []
            while True:
                state.clear()
                _fill(state, [], 0, *self._neighbours(point, wanted, np.array(used, dtype=np.int64), keep), pick, 1,
                      Counter())
                if pick or wanted >= self.n:
                    break
                wanted = min(self.n, wanted * WIDEN)
            if not pick:
                missed += 1
                continue
            (row, sim), = pick
            used.append(row)
            u = self.unit(row)
            steps.append({"row": row, "similarity": round(sim, 6), "similarity_a": round(float(u @ va), 6),
                          "similarity_b": round(float(u @ vb), 6)})
        note = (f"only {len(steps)} of k={k} steps found a song that passes the radio rules; loosen "
                "recommend.rules, or recommend.rules=none") if missed else None
        return steps, note


def _wider(wanted: int, missing: int, passed: float, n: int) -> int:
    """The next search's size when `missing` places are still empty and a `passed` fraction of the songs
    looked at went into the playlist: twice what that rate needs for the missing places (a search costs about
    as many songs as it returns, and the rules pass a steady share of neighbours), at least a few songs per
    missing place, at most WIDEN times as many."""
    more = 2 * missing / passed if passed > 0 else wanted * WIDEN
    return min(n, wanted * WIDEN, wanted + max(int(more), WIDEN * missing))


def _outside(rows: np.ndarray, drop: np.ndarray) -> np.ndarray | None:
    """The mask of `rows` not in `drop` (None: all of them)."""
    if len(drop) == 0:
        return None
    if len(drop) <= 8:  # a seed or a few: cheaper than np.isin's sort
        first, *rest = drop.tolist()
        ok = rows != first
        for r in rest:
            ok &= rows != r
        return ok
    return ~np.isin(rows, drop)


def _fill(state: _State, waiting: list[int], start: int, rows, sims, picks: list, k: int, dropped: Counter) -> list:
    """Add the candidates (rows, similarities: best first) and give each place, until `picks` holds k songs, the
    first candidate the rules allow: the ones waiting first, then the new ones from number `start` on. A song
    held back only by album_gap waits for a later place; any other refusal drops it (counted in `dropped`).
    Returns the candidates still waiting (all looked at while `picks` is short of k).

    The rules, in this order: dedupe (version, then recording id), max_per_artist, the sound rules, album_gap.
    This loop runs over every candidate of every ruled playlist, so it reads the state into local names and
    compares integer codes (-1, no tag, is never in the sets and dicts the chosen songs fill)."""
    state.add(rows, sims)
    codes, full, album_at, cand_rows, cand_sims = state.codes, state.full, state.album_at, state.rows, state.sims
    versions, mbids = (state.versions, state.mbids) if state.dedupe else ((), ())
    # the sound rules song by song, or (state.later) each candidate that reaches them noted with the number of
    # songs heard then, for sound_would_refuse after the walk
    later, reached = state.later, state.reached
    gap, sound = state.gap, not later and (state.near_limit is not None or state.artist_limit is not None)
    pos, end = start, len(cand_rows)
    capped = 0  # refused by max_per_artist (the most frequent refusal: counted here, added to `dropped` at the end)
    while len(picks) < k:
        held, chosen, place = [], None, state.place + 1
        for c in chain(waiting, range(pos, end)) if waiting else range(pos, end):
            artist, album, version, mbid = codes[c]
            if version in versions:
                why = "same song"
            elif mbid in mbids:
                why = "same recording id"
            elif artist in full:
                capped += 1
                continue
            elif sound and (why := state.sound_refusal(c, artist)):
                pass
            elif gap and place - album_at.get(album, -gap) <= gap:
                held.append(c)
                if later:
                    reached += (cand_rows[c], state.n_heard, artist)
                continue
            else:
                chosen = c
                break
            dropped[why] += 1
        if chosen is None:
            waiting = held
            break
        if chosen < pos:  # a song that was waiting (all of them come before pos): the ones after it wait on
            waiting = held + waiting[waiting.index(chosen) + 1:]
        else:
            waiting, pos = held, chosen + 1
        state.place = place
        if later:
            reached += (cand_rows[chosen], state.n_heard, codes[chosen][0])
        state._remember(codes[chosen], cand_rows[chosen])
        picks.append((cand_rows[chosen], cand_sims[chosen]))
    if capped:
        dropped["max_per_artist"] += capped
    return waiting
