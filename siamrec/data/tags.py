"""A listener's music folder: find the audio files, read their tags (mutagen), remember them by size and mtime.

`scan(root, extensions, cache_file)` walks the folder tree (hidden files and folders, macOS `._*` included, are
skipped) and returns one `Song` per audio file with its tags: title, artist, album, albumartist, genre (several),
date, tracknumber, duration (seconds), MusicBrainz recording id and, for MP4, the codec (`alac` marks Apple
Lossless, which browsers do not play), from ID3 (MP3, WAV, AIFF), Vorbis comments
(FLAC, Ogg, Opus), MP4 atoms (M4A), ASF (WMA) and APEv2 (WavPack, Monkey's Audio, Musepack, TTA). Tags of a file whose size and mtime are unchanged since the last scan come
from the cache (an SQLite file, one row per path), so a second scan of an unchanged library only lists and stats
the files. A file whose tags cannot be read is kept with no tags (counted in the scan's `unreadable`). An album
ripped to one file with a CUE sheet beside it is one song; the scan names such files (`cue_albums`).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

TEXT_TAGS = ("title", "artist", "album", "albumartist", "date", "tracknumber")
# ID3 frames of the tags, for ID3 tags mutagen offers no "easy" view of (WAV, AIFF)
ID3_FRAMES = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "albumartist": "TPE2", "date": "TDRC",
              "tracknumber": "TRCK"}
MBID_KEYS = ("musicbrainz_trackid", "musicbrainz_recordingid")  # the recording id, as Picard and beets write it
# the same tags under the names of the formats mutagen offers no "easy" view of: ASF (WMA) and APEv2 (WavPack,
# Monkey's Audio, Musepack, TTA), lower-cased; used where the file has no tag of the common name
KEY_ALIASES = {"author": "artist", "wm/albumtitle": "album", "wm/albumartist": "albumartist",
               "album artist": "albumartist", "wm/genre": "genre", "wm/year": "date", "year": "date",
               "wm/tracknumber": "tracknumber", "track": "tracknumber", "musicbrainz/track id": "musicbrainz_trackid"}
GENRE_SEPARATORS = re.compile(r"\s*[;/|,]\s*|\x00")
CACHE_VERSION = 3  # bump when what read_tags returns changes: cached rows of another version are read again


@dataclass
class Song:
    path: str              # as the file system gives it (a non-UTF-8 name keeps its surrogate escapes)
    rel: str               # the path below the root, '/'-separated
    size: int
    mtime: int             # ns
    tags: dict = field(default_factory=dict)


def normalise_text(text) -> str:
    """One line of text, Unicode-normalised (NFC), whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


def normalise_genres(values) -> tuple[str, ...]:
    """Genre tags as labels: split at ; / | , (one tag often holds several), lower case, whitespace collapsed,
    duplicates dropped, order kept."""
    out = []
    for value in values or ():
        for part in GENRE_SEPARATORS.split(str(value)):
            g = normalise_text(part).lower()
            if g and g not in out:
                out.append(g)
    return tuple(out)


def _first(values) -> str:
    for v in values or ():
        text = normalise_text(v)
        if text:
            return text
    return ""


def _id3_tags(tags) -> dict:
    """The tags of a (non-easy) ID3 header."""
    out = {}
    for name, frame_id in ID3_FRAMES.items():
        out[name] = [str(t) for frame in tags.getall(frame_id) for t in frame.text]
    out["genre"] = [g for frame in tags.getall("TCON") for g in frame.genres]
    ufid = tags.getall("UFID:http://musicbrainz.org")
    out["musicbrainz_trackid"] = [ufid[0].data.decode("ascii", "replace")] if ufid else []
    return out


def read_tags(path: str) -> dict:
    """The tags of one file ({} when it has none or mutagen does not know the format); raises on a damaged file."""
    import mutagen
    from mutagen.apev2 import APETextValue
    from mutagen.id3 import ID3

    f = mutagen.File(path, easy=True)
    if f is None:
        return {}
    out: dict = {}
    length = getattr(getattr(f, "info", None), "length", None)
    if length:
        out["duration"] = round(float(length), 3)
    codec = getattr(getattr(f, "info", None), "codec", None)  # MP4's: "alac", "mp4a.40.2", ...
    if isinstance(codec, str) and codec:
        out["codec"] = codec
    tags = f.tags
    if tags is None:
        return out
    # each tag's values as a list: mutagen gives lists (Vorbis, MP4, ASF), one value, or an APEv2 text value
    # holding several (iterating it gives each)
    raw = _id3_tags(tags) if isinstance(tags, ID3) else {
        k.lower(): v if isinstance(v, list) else list(v) if isinstance(v, APETextValue) else [v]
        for k, v in tags.items()}
    for name, common in KEY_ALIASES.items():
        if name in raw and common not in raw:
            raw[common] = raw[name]
    for name in TEXT_TAGS:
        value = " & ".join(normalise_text(v) for v in raw.get(name, ()) if normalise_text(v)) \
            if name == "artist" else _first(raw.get(name))
        if value:
            out[name] = value
    genres = normalise_genres(raw.get("genre"))
    if genres:
        out["genre"] = list(genres)
    mbid = next((_first(raw.get(k)) for k in MBID_KEYS if _first(raw.get(k))), "")
    if mbid:
        out["mbid"] = mbid
    return out


CACHE_BATCH = 2000   # tags read are stored every this many files (an interrupted scan keeps its work)
PARALLEL_FROM = 500  # this many files or more are read in one worker process per core


def read_tags_or_none(path: str) -> dict | None:
    """read_tags, or None when the file's tags are damaged."""
    try:
        return read_tags(path)
    except Exception:  # noqa: BLE001 - any damage in a tag header
        return None


def _read_all(paths: list[str]):
    """Yield read_tags of each path (None where it fails), in order: in worker processes (one per core) when there
    are many, here otherwise."""
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers < 2 or len(paths) < PARALLEL_FROM:
        yield from map(read_tags_or_none, paths)
        return
    import multiprocessing as mp
    import signal

    # workers ignore Ctrl-C: the main process handles it (and keeps the tags stored so far)
    with mp.get_context("spawn").Pool(workers, initializer=signal.signal,
                                      initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        yield from pool.imap(read_tags_or_none, paths, chunksize=64)


class TagCache:
    """Tags by (path, size, mtime) in an SQLite file; paths are stored as bytes (any file name fits)."""

    def __init__(self, file):
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(file), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS tags (path BLOB PRIMARY KEY, size INTEGER, mtime INTEGER, "
                        "version INTEGER, tags TEXT)")

    def under(self, root: str) -> dict[bytes, tuple[int, int, str]]:
        """Every cached row below `root`: {path: (size, mtime, tags json)}."""
        prefix = os.fsencode(os.path.join(root, ""))
        rows = self.db.execute("SELECT path, size, mtime, tags FROM tags WHERE path >= ? AND path < ? AND version = ?",
                               (prefix, prefix[:-1] + bytes([prefix[-1] + 1]), CACHE_VERSION))
        return {bytes(p): (s, m, t) for p, s, m, t in rows}

    def put(self, rows: list[tuple[bytes, int, int, str]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?)",
                                [(p, s, m, CACHE_VERSION, t) for p, s, m, t in rows])

    def close(self) -> None:
        self.db.close()


def walk(root: str, extensions) -> tuple[list[Song], list[str], list[tuple[str, str]]]:
    """The audio files below `root` (recursive, sorted; names starting with '.' skipped), with size and mtime, the
    folders that could not be read ('/'-separated below root) and the CUE sheets (path, rel). Links are followed,
    but a folder is listed once: a link back up (a loop) or a second link to the same folder adds no song twice."""
    found: list[Song] = []
    unreadable: list[str] = []
    sheets: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(folder))
        except OSError:
            unreadable.append(rel.rstrip("/") or ".")  # no permission, or gone: said, its songs are not listed
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    stack.append((e.path, f"{rel}{e.name}/"))
                elif os.path.splitext(e.name)[1].lower() in extensions and e.is_file():
                    st = e.stat()
                    found.append(Song(e.path, rel + e.name, st.st_size, st.st_mtime_ns))
                elif e.name.lower().endswith(".cue") and e.is_file():
                    sheets.append((e.path, rel + e.name))
            except OSError:
                continue  # vanished while listed, or a broken link
    found.sort(key=lambda s: s.rel)
    return found, sorted(unreadable), sorted(sheets, key=lambda p: p[1])


CUE_FILE = re.compile(r'^\s*FILE\s+(?:"([^"]+)"|(\S+))', re.IGNORECASE)
CUE_TRACK = re.compile(r"^\s*TRACK\s+\d+\s+AUDIO\b", re.IGNORECASE)
CUE_MAX_BYTES = 1 << 20  # a CUE sheet is a few kB; a larger .cue is not one


def cue_tracks(path: str) -> dict[str, int]:
    """{file named by a FILE line (its last path component): its number of audio tracks} of a CUE sheet ({} when
    it cannot be read). Sheets are UTF-8 (with or without BOM) or, as older rippers wrote them, a legacy code page:
    read as Latin-1 then, which keeps ASCII names right."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(CUE_MAX_BYTES + 1)
    except OSError:
        return {}
    if len(raw) > CUE_MAX_BYTES:
        return {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    tracks: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        m = CUE_FILE.match(line)
        if m:
            current = (m.group(1) or m.group(2)).replace("\\", "/").rsplit("/", 1)[-1]
            tracks.setdefault(current, 0)
        elif current is not None and CUE_TRACK.match(line):
            tracks[current] += 1
    return tracks


def cue_albums(sheets: list[tuple[str, str]], songs: list[Song]) -> list[tuple[str, int]]:
    """The library's files that a CUE sheet beside them splits into two or more tracks (an album ripped to one
    file), as (rel, tracks). A sheet's FILE is matched by name in the sheet's folder, else by stem (a sheet written
    for Album.wav beside the Album.flac it was converted to)."""
    rels = {s.rel for s in songs}
    by_stem: dict[tuple[str, str], str] = {}
    for s in songs:
        folder, _, name = s.rel.rpartition("/")
        by_stem.setdefault((folder, os.path.splitext(name)[0].casefold()), s.rel)
    albums: dict[str, int] = {}
    for path, rel in sheets:
        folder = rel.rpartition("/")[0]
        for name, n in cue_tracks(path).items():
            named = f"{folder}/{name}" if folder else name
            song = named if named in rels else by_stem.get((folder, os.path.splitext(name)[0].casefold()))
            if song is not None and n >= 2:
                albums[song] = max(n, albums.get(song, 0))
    return sorted(albums.items())


def scan(root, extensions, cache_file, progress: bool = True) -> tuple[list[Song], dict]:
    """The songs below `root` with their tags, and a report {files, read, cached, unreadable: [rel, ...] (files whose
    tags are damaged), unreadable_folders: [rel, ...], cue_albums: [(rel, tracks), ...] (see cue_albums)}."""
    root = os.path.abspath(os.path.expanduser(str(root)))
    exts = {f".{str(e).lower().lstrip('.')}" for e in extensions}
    songs, folders, sheets = walk(root, exts)
    cache = TagCache(cache_file)
    try:
        cached = cache.under(root)
        todo = []
        for s in songs:
            row = cached.get(os.fsencode(s.path))
            if row is not None and row[0] == s.size and row[1] == s.mtime:
                s.tags = json.loads(row[2])
            else:
                todo.append(s)
        unreadable, fresh = [], []
        read = _read_all([s.path for s in todo])
        for s, tags in zip(todo, tqdm(read, total=len(todo), desc="reading tags", unit="file",
                                      disable=not progress or len(todo) < 50)):
            if tags is None:  # a damaged header: the song is kept, untagged; the decoder decides
                tags = {}
                unreadable.append(s.rel)
            s.tags = tags
            fresh.append((os.fsencode(s.path), s.size, s.mtime, json.dumps(tags, ensure_ascii=False)))
            if len(fresh) >= CACHE_BATCH:
                cache.put(fresh)
                fresh.clear()
        read.close()
        cache.put(fresh)
    finally:
        cache.close()
    return songs, {"files": len(songs), "read": len(todo), "cached": len(songs) - len(todo), "unreadable": unreadable,
                   "unreadable_folders": folders, "cue_albums": cue_albums(sheets, songs)}
