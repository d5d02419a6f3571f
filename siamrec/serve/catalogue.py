"""What the web app serves, without the web: a run's songs (with their title, artist, album, duration), search,
their playlists, audio, cover art, exports and saved playlists.

Songs are addressed by id (their row in items.csv) or key; a seed may also be text naming one song (title or
`artist - title`, siamrec.songs.SongFinder, as `recommend seed=`); a path never comes from a request.
Playlists of one library seed are computed by siamrec.playlists.playlists exactly as `recommend` computes them,
so the app and the command agree; several seeds are searched with the normalised mean of their embeddings, and
"exclude same group" widens the search until k songs of other groups are found.
"""

from __future__ import annotations

import csv
import io
import os
import re
import struct
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path
import threading
from threading import Lock

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.index import ExactIndex, choose_method, import_faiss, normalise, open_index
from siamrec.m3u import m3u8_text, read_entries
from siamrec.playlists import COLUMNS, playlists
from siamrec.rules import Radio, Rules, Songs
from siamrec.runs import atomic_write_text, label_free, read_embeddings, strict_json
from siamrec.songs import META, SongFinder, display_name, fold, meta

# formats a browser plays as they are, and the ones transcoded to WAV on the fly (soundfile reads au/snd, aiff/aif/aifc,
# caf and w64; audioread through ffmpeg the others)
NATIVE = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
          ".opus": "audio/ogg", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".webm": "audio/webm", ".aac": "audio/aac"}
TRANSCODED = {".au", ".snd", ".aiff", ".aif", ".aifc", ".caf", ".w64", ".wma", ".wv", ".ape", ".mpc", ".tta", ".mka"}
WAV_CACHE_SONGS, WAV_CACHE_BYTES = 8, 1 << 30  # transcoded songs kept for replays and range requests: the newest
                                               # 8, fewer when they hold more than 1 GiB (always the newest one)
EXPORT_FORMATS = {"m3u8": "audio/x-mpegurl; charset=utf-8", "csv": "text/csv; charset=utf-8",
                  "json": "application/json"}
EXPORT_COLUMNS = COLUMNS + META  # recommend out=FILE's columns, then the song's metadata
COVER_FILES = ("cover", "folder", "front")  # cover art beside a file: cover.jpg, folder.jpg, front.jpg (.jpeg, .png)
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def _lossless_mp4(path: str) -> bool:
    """An .m4a holding Apple Lossless (iTunes' lossless rips), which browsers do not play: sent as WAV."""
    if not path.lower().endswith(".m4a"):
        return False
    from mutagen.mp4 import MP4

    try:
        return MP4(path).info.codec == "alac"
    except Exception:  # noqa: BLE001 - a damaged header: sent as it is, as before
        return False


def _wav(path: str) -> bytes:
    """A whole file as 16-bit WAV bytes: the 16-bit PCM soundfile reads, else the one audioread decodes (WMA,
    WavPack, ...: ffmpeg), with a WAV header put in front; never held as floats (an hour of 44.1 kHz stereo is 635 MB
    as PCM)."""
    import soundfile as sf

    try:
        y, sr = sf.read(path, dtype="int16", always_2d=True)
        channels, pcm = y.shape[1], [y.astype("<i2", copy=False).tobytes()]
        del y
    except Exception as first:  # noqa: BLE001 - soundfile does not read it: ask ffmpeg
        from siamrec.data.audio import audioread_blocks

        try:
            blocks = list(audioread_blocks(path))
        except Exception:  # noqa: BLE001 - neither reads it: soundfile's reason
            raise first from None
        if not blocks:
            raise first from None
        sr, channels, _ = blocks[0]
        pcm = [b for _, _, b in blocks]
    n = sum(map(len, pcm))
    header = b"".join([b"RIFF", struct.pack("<I", 36 + n), b"WAVEfmt ",
                       struct.pack("<IHHIIHH", 16, 1, channels, sr, sr * channels * 2, channels * 2, 16),
                       b"data", struct.pack("<I", n)])
    return b"".join([header, *pcm])


class UnknownSong(KeyError):
    """No song of the library has this id."""


class PlaylistExists(SiamrecError):
    """A saved playlist of that name is there already."""


def _labels(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (text or "").split("|")))


class Catalogue:
    """A run's library (embeddings.npy + items.csv) with its search index, held in memory."""

    def __init__(self, run, index_cfg, expand: int = 0):
        self.run = Path(run)
        self.expand = int(expand)  # query expansion of every playlist's seed (the config's query_expansion)
        emb, items = read_embeddings(self.run)
        if len(items) == 0:
            raise SiamrecError(f"run={run}: items.csv lists no songs")
        self.emb = np.asarray(emb, dtype=np.float32)
        self.keys = [it["key"] for it in items]
        self.paths = [it.get("path") or "" for it in items]
        self.labels = [_labels(it.get("labels", "")) for it in items]
        # the optional group column (artist, recording); absent or empty: every song is its own group
        self.groups = [(it.get("group") or "").strip() or it["key"] for it in items]
        self.has_groups = len(set(self.groups)) < len(self.groups)
        self.meta = [meta(it) for it in items]
        self.codecs = [it.get("codec") or "" for it in items]  # from the tag scan; "" when unknown (older index)
        self.names = [display_name(it) for it in items]
        self.finder = SongFinder(items)
        self.by_key = self.finder.by_key
        self._haystack: tuple[str, list[int]] | None = None  # the folded catalogue, made on the first search
        self.radio_songs = Songs(items)  # what the radio rules read: title, artist, album, duration, mbid
        self.label_free = label_free(self.run)  # whether the radio rules' sound distances apply (siamrec.rules)
        self._index_lock = Lock()
        self._open_index(index_cfg)
        self._present: dict[int, bool] = {}
        self._play: dict[int, str] = {}  # row -> native | wav | no, found on first use
        self._wav_cache: OrderedDict[int, bytes] = OrderedDict()
        self._wav_lock = Lock()

    def __len__(self) -> int:
        return len(self.keys)

    def _open_index(self, index_cfg, wait_s: float = 1.5) -> None:
        """self.index: the configured index, never written into the run folder. A faiss index that must be
        built (no index.faiss of these embeddings in the run) is built in a background thread while exact
        search answers, so the app starts at once; a saved one is loaded within `wait_s`."""
        self.index_ready = threading.Event()
        if choose_method(len(self.emb), index_cfg) == "exact":
            self.index = ExactIndex(self.emb).with_expansion(self.expand)
            self.index_ready.set()
            return
        import_faiss().omp_set_num_threads(1)  # one query at a time: OpenMP threads would only spin
        self.index = None

        def build():
            try:
                built = open_index(self.run, self.emb, index_cfg, save=False, expand=self.expand)
                with self._index_lock:
                    self.index = built
            except Exception as exc:  # noqa: BLE001 - keep answering with exact search
                print(f"the faiss index could not be built ({exc}); searching exactly", flush=True)
            self.index_ready.set()

        threading.Thread(target=build, name="siamrec-index", daemon=True).start()
        if self.index_ready.wait(wait_s) and self.index is not None:
            return
        print(f"building the faiss index of {len(self.emb)} songs in the background; exact search until then",
              flush=True)
        exact = ExactIndex(self.emb).with_expansion(self.expand)
        with self._index_lock:
            if self.index is None:
                self.index = exact

    # ---------------------------------------------------------------- lookup
    def row(self, song_id) -> int:
        """The row of a song given by its id (row number) or its key; UnknownSong otherwise (paths are not ids)."""
        row = self.finder.row_of_id(str(song_id))
        if row < 0:
            raise UnknownSong(str(song_id))
        return row

    def resolve(self, seed) -> int:
        """The row of a seed: an id, a key, or text naming one song (title, `artist - title`); UnknownSong when
        it names none, siamrec.songs.Ambiguous (with .candidates) when several."""
        row = self.finder.find(str(seed))
        if row < 0:
            raise UnknownSong(str(seed))
        return row

    def search(self, query: str, limit: int) -> tuple[int, list[int]]:
        """(number of hits, the first `limit` rows) of the songs whose title, artist, album, labels or file name
        hold every word of `query`, compared folded (siamrec.songs.fold: case, accents, Unicode forms). The
        folded catalogue is one string scanned by str.find (C speed), songs separated by NUL."""
        if self._haystack is None:
            texts = [fold(" ".join(filter(None, (m["title"], m["artist"], m["album"], " ".join(labs), key))))
                     .replace("\0", " ") for m, labs, key in zip(self.meta, self.labels, self.keys)]
            starts = np.cumsum([0] + [len(t) + 1 for t in texts]).tolist()
            self._haystack = ("\0".join(texts) + "\0", starts)
        text, starts = self._haystack
        words = fold(query.replace("\0", " ")).split()
        if not words:
            return len(self.keys), list(range(min(limit, len(self.keys))))
        first = min(words, key=text.count)  # scan for the rarest word, check the others song by song
        rest = [w for w in words if w != first]
        hits, pos = [], text.find(first)
        while pos >= 0:
            row = bisect_right(starts, pos) - 1
            end = starts[row + 1]
            if not rest or all(w in text[starts[row]:end - 1] for w in rest):
                hits.append(row)
            pos = text.find(first, end)
        return len(hits), hits[:limit]

    def song(self, row: int) -> dict:
        return {"id": row, "key": self.keys[row], "name": self.names[row], **self.meta[row],
                "labels": list(self.labels[row]), "group": self.groups[row], "playable": self._playable(row)}

    def _playable(self, row: int) -> str:
        """How the page plays the song: native, wav (transcoded) or no (a format browsers cannot play, or no file).
        Found once per song (a file's presence is checked once; every playlist entry asks)."""
        playable = self._play.get(row)
        if playable is None:
            playable = "wav" if self._sent_as_wav(row) else "native" if self._ext(row) in NATIVE else "no"
            if playable != "no" and not self._exists(row):
                playable = "no"
            self._play[row] = playable
        return playable

    def _exists(self, row: int) -> bool:
        """Whether the song's file is there (checked once per song)."""
        if row not in self._present:
            self._present[row] = bool(self.paths[row]) and os.path.isfile(self.paths[row])
        return self._present[row]

    def songs(self) -> list[dict]:
        return [self.song(i) for i in range(len(self.keys))]

    # ---------------------------------------------------------------- playlists
    def recommend(self, rows: list[int], k: int, exclude_group: bool = False) -> list[dict]:
        """The k songs nearest to the seed rows (left out of the result). One seed without group exclusion is
        `recommend`'s playlist, row for row."""
        if not rows:
            raise SiamrecError("no seed: give at least one song")
        rows = list(dict.fromkeys(int(r) for r in rows))
        if len(rows) == 1 and not exclude_group:
            r = rows[0]
            found = playlists(self.emb[[r]], self.index, self.keys, self.labels, self.paths,
                              [(self.keys[r], self.labels[r])], k, self_index=np.array([r]))
            return [self._entry(self.by_key[f[3]], f[2], f[5]) for f in found]
        query = normalise(normalise(self.emb[rows]).mean(axis=0, keepdims=True))
        groups = {self.groups[r] for r in rows} if exclude_group else set()
        return self._search(self.index.expanded(query), k, drop=set(rows), drop_groups=groups)

    @property
    def radio(self) -> Radio:
        """Ruled playlists and paths over the current index (a faiss index may replace exact search)."""
        if getattr(self, "_radio", None) is None:
            self._radio = Radio(self.emb, self.radio_songs, self.index, self.label_free)
        self._radio.index = self.index
        return self._radio

    def ruled(self, rows: list[int], k: int, rules: Rules, exclude_group: bool = False,
              query: np.ndarray | None = None) -> tuple[list[dict], str | None]:
        """(playlist, note): the radio rules' playlist of the seed rows (one: its embedding; several: their
        normalised mean) or of `query` (a song outside the library); the note says when fewer than k songs
        pass the rules."""
        rows = list(dict.fromkeys(int(r) for r in rows))
        drop = set(rows)
        if exclude_group:
            groups = {self.groups[r] for r in rows}
            drop |= {i for i, g in enumerate(self.groups) if g in groups}
        if query is None:
            if not rows:
                raise SiamrecError("no seed: give at least one song")
            query = self.emb[rows[0]] if len(rows) == 1 else normalise(self.emb[rows]).mean(axis=0)
            vectors = []
        else:
            vectors = [query]
        k = min(k, len(self.keys) - len(drop))
        if k < 1:
            return [], "no other songs in the library"
        found = self.radio.playlist(query, k, rules, seeds=sorted(drop), seed_vectors=vectors)
        return [self._entry(j, rank, s) for rank, (j, s) in enumerate(found.picks, start=1)], found.note

    def recommend_vector(self, query: np.ndarray, k: int) -> list[dict]:
        """The playlist of a song outside the library (its embedding), as `recommend` gives it for a new song."""
        found = playlists(np.asarray(query, np.float32).reshape(1, -1), self.index, self.keys, self.labels,
                          self.paths, [("upload", ())], k, self_index=np.array([-1]))
        return [self._entry(self.by_key[f[3]], f[2], f[5]) for f in found]

    def _search(self, query, k: int, drop: set[int], drop_groups: set[str]) -> list[dict]:
        n = len(self.keys)
        wanted = min(n, k + len(drop))
        while True:
            idx, sims = self.index.search(query, wanted)
            out = [(int(j), float(s)) for j, s in zip(idx[0], sims[0])
                   if int(j) not in drop and self.groups[int(j)] not in drop_groups]
            if len(out) >= k or wanted >= n:
                break
            wanted = min(n, wanted * 4)
        return [self._entry(j, rank, round(s, 6)) for rank, (j, s) in enumerate(out[:k], start=1)]

    def _entry(self, row: int, rank: int, similarity: float) -> dict:
        return {"rank": int(rank), **self.song(row), "similarity": float(similarity)}

    # ---------------------------------------------------------------- audio
    def transcoded(self, row: int) -> bool:
        """Whether the song is sent as WAV: a format browsers do not play, or an .m4a holding Apple Lossless (the
        codec the tag scan read; an index without it has the file's header read)."""
        return self._sent_as_wav(row) or not self.codecs[row] and _lossless_mp4(self.paths[row])

    def _sent_as_wav(self, row: int) -> bool:
        """Sent as WAV by what the index knows: the file's extension, or the codec the tag scan read."""
        return self._ext(row) in TRANSCODED or self.codecs[row] == "alac"

    def _ext(self, row: int) -> str:
        """The song's file extension, lower case with its dot ("" without a file)."""
        return Path(self.paths[row]).suffix.lower()

    def audio(self, row: int) -> tuple[str, str | bytes]:
        """("file", path) for a format browsers play, ("wav", bytes) for one transcoded to WAV."""
        path = self.paths[row]
        if not path or not os.path.isfile(path):
            raise UnknownSong(str(row))
        if not self.transcoded(row):
            return "file", path
        with self._wav_lock:
            if row in self._wav_cache:
                self._wav_cache.move_to_end(row)
                return "wav", self._wav_cache[row]
        try:
            data = _wav(path)
        except Exception as exc:  # noqa: BLE001 - a broken file of the library: say so, no traceback
            raise SiamrecError(f"{self.keys[row]}: cannot be read for playback ({exc})") from None
        with self._wav_lock:
            self._wav_cache[row] = data
            while len(self._wav_cache) > 1 and (len(self._wav_cache) > WAV_CACHE_SONGS or
                                                sum(map(len, self._wav_cache.values())) > WAV_CACHE_BYTES):
                self._wav_cache.popitem(last=False)
        return "wav", data

    def cover(self, row: int) -> tuple[bytes, str] | tuple[str, str] | None:
        """The song's cover art: (bytes, mime) of a picture embedded in the file (read with mutagen), else
        ("file", path) of cover.jpg|folder.jpg|front.jpg beside it; None when there is none."""
        path = self.paths[row]
        if not path or not self._exists(row):
            return None
        embedded = _embedded_picture(path)
        if embedded is not None:
            return embedded
        folder = Path(path).parent
        try:
            beside = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
        except OSError:
            return None
        for name in COVER_FILES:
            for ext, mime in IMAGE_TYPES.items():
                if name + ext in beside:
                    return "file", str(beside[name + ext])
        return None

    # ---------------------------------------------------------------- export
    def tracks(self, rows) -> list[dict]:
        """The siamrec.m3u tracks (path, title, artist, duration) of library rows."""
        return [{"path": self.paths[r], "title": self.meta[r]["title"] or Path(self.keys[r]).stem,
                 "artist": self.meta[r]["artist"], "duration": self.meta[r]["duration"]} for r in rows]

    def export(self, entries: list[dict], fmt: str, seed_name: str, seed_labels=(), seeds=()) -> str:
        """A playlist (entries with id and similarity) as M3U8 (absolute paths; the seed rows `seeds` first, so a
        player starts with the seed), CSV or JSON (the columns of `recommend out=...`, then title, artist, album,
        duration; strict JSON: a NaN similarity is null)."""
        rows = [self.row(e["id"]) for e in entries]
        if fmt == "m3u8":
            return m3u8_text(self.tracks([*seeds, *rows]), name=seed_name)
        table = []
        for rank, (r, e) in enumerate(zip(rows, entries), start=1):
            path = os.path.abspath(self.paths[r]) if self.paths[r] else ""
            sim = _finite(e.get("similarity", 0.0))
            table.append((seed_name, "|".join(seed_labels), rank, self.keys[r], "|".join(self.labels[r]), sim, path,
                          *(self.meta[r][c] for c in META)))
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")  # quotes fields holding commas, quotes, line breaks
            writer.writerow(EXPORT_COLUMNS)
            writer.writerows(["" if v is None else v for v in row] for row in table)
            return buf.getvalue()
        if fmt == "json":
            playlist = [dict(zip(EXPORT_COLUMNS[2:], r[2:])) for r in table]
            return strict_json({seed_name: {"labels": "|".join(seed_labels), "playlist": playlist}}, ensure_ascii=False)
        raise SiamrecError(f"format={fmt!r}: choose m3u8, csv or json")

    # ---------------------------------------------------------------- saved playlists
    def save_playlist(self, folder: Path, name: str, rows: list[int], overwrite: bool = False) -> Path:
        """Write rows (the seed first) as FOLDER/<name>.m3u8 (siamrec.m3u: absolute paths), the folder
        `train data=playlists data.playlists=FOLDER` learns from. PlaylistExists when the file is there."""
        path = Path(folder) / f"{playlist_file_name(name)}.m3u8"
        if path.exists() and not overwrite:
            raise PlaylistExists(f"a playlist named {path.stem!r} is saved already; choose another name or replace it")
        atomic_write_text(path, m3u8_text(self.tracks(rows), name=name))
        return path

    def saved_playlists(self, folder: Path) -> list[dict]:
        """The .m3u8/.m3u files of `folder`: name, file, the library rows of their entries (entries of no song
        of this library are counted as `missing`)."""
        out = []
        folder = Path(folder)
        if not folder.is_dir():
            return out
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".m3u8", ".m3u") and p.is_file()):
            try:
                entries = read_entries(path)
            except SiamrecError:
                continue
            rows = [self.finder.by_path.get(e, -1) if e else -1 for _, e, _ in entries]
            out.append({"name": path.stem, "file": path.name, "ids": [r for r in rows if r >= 0],
                        "missing": sum(r < 0 for r in rows)})
        return out


def playlist_file_name(name: str) -> str:
    """A saved playlist's file name (without .m3u8) for the name a listener typed: any script kept; path
    separators, control characters and characters Windows forbids replaced; no leading dot."""
    from siamrec.m3u import one_line

    text = re.sub(r'[\\/:*?"<>|]+', "_", one_line(name)).strip(" .")
    if not text:
        raise SiamrecError("the playlist needs a name")
    return text[:120]


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _embedded_picture(path: str) -> tuple[bytes, str] | None:
    """The first picture embedded in an audio file's tags (ID3 APIC, FLAC/Vorbis pictures, MP4 covr), via mutagen."""
    try:
        import mutagen
        from mutagen.flac import Picture
    except ImportError:
        return None
    try:
        audio = mutagen.File(path)
    except Exception:  # noqa: BLE001 - unreadable tags: no embedded picture
        return None
    if audio is None:
        return None
    for pic in getattr(audio, "pictures", None) or []:  # FLAC
        return pic.data, pic.mime or "image/jpeg"
    tags = audio.tags
    if tags is None:
        return None
    try:
        for key in list(tags.keys()):
            if str(key).startswith("APIC"):  # ID3 (MP3, WAV, AIFF)
                frame = tags[key]
                return frame.data, frame.mime or "image/jpeg"
        if "covr" in tags and tags["covr"]:  # MP4
            cover = tags["covr"][0]
            return bytes(cover), "image/png" if getattr(cover, "imageformat", 0) == 14 else "image/jpeg"
        for b64 in tags.get("metadata_block_picture", []) if hasattr(tags, "get") else []:  # Ogg Vorbis/Opus
            import base64

            pic = Picture(base64.b64decode(b64))
            return pic.data, pic.mime or "image/jpeg"
    except Exception:  # noqa: BLE001 - a damaged tag: no embedded picture
        return None
    return None


