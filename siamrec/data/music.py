"""A listener's library as data: a tagged music folder (data=library) or a beets library (data=beets).

No label folders are needed. Every song gets its metadata (title, artist, album, albumartist, genres, date,
tracknumber, duration, MusicBrainz recording id) from its tags or beets' fields; its labels from `data.labels`
(genre: the genre tags, normalised; folder: the first folder below the root; none); its group from `data.group`
(artist, falling back to albumartist; album; none), so that an artist stays on one side of every split and
"exclude same artist" works. Songs without a label are kept (embedded, listed, recommended) and left out of
training and scoring only.

Each library has one index folder under the user's data directory (`library_folder`), unless extract.out says
otherwise: `<user data dir>/libraries/<name>-<hash of the library>`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Literal

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.data.library import Library
from siamrec.data.sources import Extensions, FailedFraction, File, MinLabelCount, Source
from siamrec.data.tags import normalise_genres, normalise_text, scan
from siamrec.errors import SiamrecError
from siamrec.runs import first_few, printable
from siamrec.schema import path, string

LABELS = ("genre", "folder", "none")
GROUPS = ("artist", "album", "none")


Labels = Literal["genre", "folder", "none"]
Group = Literal["artist", "album", "none"]


class MusicLibrary(Source):
    """data=library: every audio file below data.root, with its tags (from_library)."""

    def __init__(self, *, root: File, extensions: Extensions, labels: Labels, group: Group, guess_from_path: bool,
                 min_label_count: MinLabelCount, max_failed_fraction: FailedFraction):
        super().__init__(root=root, extensions=extensions, labels=labels, group=group, guess_from_path=guess_from_path,
                         min_label_count=min_label_count, max_failed_fraction=max_failed_fraction)

    def load(self, paths_cfg) -> Library:
        return from_library(self.cfg, paths_cfg)


class Beets(Source):
    """data=beets: the items of a beets library, read through beets' own API (from_beets)."""

    def __init__(self, *, library: Annotated[str | None, path(null=True)],
                 directory: Annotated[str | None, path(null=True)], query: Annotated[str | None, string(null=True)],
                 labels: Labels, group: Group, min_label_count: MinLabelCount, max_failed_fraction: FailedFraction):
        super().__init__(library=library, directory=directory, query=query, labels=labels, group=group,
                         min_label_count=min_label_count, max_failed_fraction=max_failed_fraction)

    def load(self, paths_cfg) -> Library:
        return from_beets(self.cfg)


def _check(data_cfg) -> None:
    if data_cfg.labels not in LABELS:
        raise SiamrecError(f"data.labels={data_cfg.labels!r}: choose {'|'.join(LABELS)}")
    if data_cfg.group not in GROUPS:
        raise SiamrecError(f"data.group={data_cfg.group!r}: choose {'|'.join(GROUPS)}")


def _group(key: str, tags: dict, how: str) -> str:
    if how == "artist":
        return tags.get("artist") or tags.get("albumartist") or key
    if how == "album" and tags.get("album"):
        return f"{tags.get('albumartist') or tags.get('artist') or ''} / {tags['album']}"
    return key


def _labels(key: str, tags: dict, how: str) -> tuple[str, ...]:
    if how == "genre":  # normalised when read (siamrec.data.tags.read_tags, beets_tags)
        return tuple(tags.get("genre") or ())
    if how == "folder":
        parts = key.split("/")
        return (normalise_text(parts[0]).lower(),) if len(parts) > 1 else ()
    return ()


def _library(keys, paths, tags_list, data_cfg, report) -> Library:
    """The Library of songs (their keys, paths and tags) under the labelling and grouping of `data_cfg`."""
    meta = []
    for key, tags in zip(keys, tags_list):
        m = dict(tags)
        m["title"] = tags.get("title") or Path(key).stem  # a song always has a title to show
        meta.append(m)
    labels, group = str(data_cfg.labels), str(data_cfg.group)  # read once: a config lookup per song is slow
    lib = Library(keys=keys, paths=paths, labels=[_labels(k, t, labels) for k, t in zip(keys, tags_list)],
                  groups=[_group(k, t, group) for k, t in zip(keys, tags_list)], meta=meta, keep_unlabelled=True)
    lib.report.update(report)
    return lib


def music_root(data_cfg) -> Path:
    """data.root, checked to be a folder (before anything is read or written for it)."""
    root_text = data_cfg.root
    if root_text in (None, "", "???"):
        raise SiamrecError("data.root is not set: pass data.root=~/Music (the folder of your music)")
    root = Path(str(root_text)).expanduser()
    if not root.is_dir():
        raise SiamrecError(f"data.root={root}: no such folder; point it at the folder of your music")
    return root


def from_library(data_cfg, paths_cfg) -> Library:
    """data=library: every audio file below data.root, with its tags."""
    _check(data_cfg)
    root = music_root(data_cfg)
    extensions = data_cfg.extensions or AUDIO_EXTENSIONS
    cache_file = Path(str(paths_cfg.cache)).expanduser() / "tags.sqlite"
    songs, report = scan(root, extensions, cache_file)
    if not songs:
        raise SiamrecError(f"data.root={root}: no audio files in it ({', '.join(sorted(map(str, extensions)))})")
    keys = [printable(s.rel) for s in songs]
    renamed = [k for k, s in zip(keys, songs) if k != s.rel]
    tags_list = []
    guess = bool(data_cfg.guess_from_path)
    for s in songs:
        tags = dict(s.tags)
        if guess:  # Artist/Album/Song.ext: folder names where the tags say nothing
            parts = s.rel.split("/")[:-1]
            if parts and not tags.get("album"):
                tags["album"] = printable(parts[-1])
            if len(parts) > 1 and not (tags.get("artist") or tags.get("albumartist")):
                tags["artist"] = printable(parts[-2])
        tags_list.append(tags)
    if report["unreadable"]:
        print(f"{len(report['unreadable'])} files have tags mutagen cannot read (kept untagged): "
              f"{first_few(report['unreadable'])}")
    if report["unreadable_folders"]:
        n = len(report["unreadable_folders"])
        print(f"{n} {'folder' if n == 1 else 'folders'} could not be read, so {'its' if n == 1 else 'their'} songs "
              f"are not in the library (check the permissions): {first_few(report['unreadable_folders'])}")
    albums = report["cue_albums"]
    if albums:
        n = len(albums)
        print(f"{n} {'file is a whole album' if n == 1 else 'files are whole albums'} with a CUE sheet beside "
              f"{'it' if n == 1 else 'them'}, embedded as one song{'' if n == 1 else ' each'} (not track by track): "
              f"{first_few(f'{rel} ({tracks} tracks)' for rel, tracks in albums)}; split "
              f"{'it' if n == 1 else 'them'} into one file per track (e.g. shnsplit -f ALBUM.cue -o flac ALBUM.flac) "
              "for recommendations song by song (listed in data_report.json)")
    if renamed:
        print(f"{len(renamed)} file names are not UTF-8; they are kept with their odd bytes written as \\xNN, "
              f"e.g. {renamed[0]} (listed in data_report.json)")
    report = {"source": "library", "root": str(root), "tags_read": report["read"], "tags_cached": report["cached"],
              "unreadable_tags": [printable(r) for r in report["unreadable"]],
              **({"unreadable_folders": [printable(r) for r in report["unreadable_folders"]]}
                 if report["unreadable_folders"] else {}),
              **({"cue_albums": [{"file": printable(rel), "tracks": tracks} for rel, tracks in albums]}
                 if albums else {}),
              **({"non_utf8_names": renamed} if renamed else {})}
    return _library(keys, [s.path for s in songs], tags_list, data_cfg, report)


# --- beets -------------------------------------------------------------------------------------------------------
def _beets_setting(data_cfg, key: str) -> Path:
    """data.<key>, or the <key> of the user's beets configuration (beets.config: $BEETSDIR/config.yaml, ...)."""
    if data_cfg.get(key) not in (None, ""):
        return Path(str(data_cfg.get(key))).expanduser()
    try:
        import beets
    except ImportError:
        raise SiamrecError("data=beets needs beets: pip install \"siamrec[beets]\"") from None
    try:
        return Path(beets.config[key].as_filename())
    except Exception as exc:  # noqa: BLE001 - a broken beets configuration
        raise SiamrecError(f"data.{key}: cannot read it from your beets configuration ({exc}); pass data.{key}=...") from None


def beets_library_path(data_cfg) -> Path:
    """data.library, or the library of the user's beets configuration."""
    return _beets_setting(data_cfg, "library")


def beets_tags(item) -> dict:
    """A beets item's fields as the tags of siamrec.data.tags.read_tags."""
    tags = {}
    for name in ("title", "artist", "album", "albumartist"):
        value = normalise_text(item.get(name) or "")
        if value:
            tags[name] = value
    genres = item.get("genres") or item.get("genre") or ""
    genres = normalise_genres(genres if isinstance(genres, (list, tuple)) else [genres])
    if genres:
        tags["genre"] = list(genres)
    year, month, day = (int(item.get(f) or 0) for f in ("year", "month", "day"))
    if year:
        tags["date"] = f"{year:04d}" + (f"-{month:02d}" if month else "") + (f"-{day:02d}" if month and day else "")
    if item.get("track"):
        tags["tracknumber"] = str(item.get("track"))
    if item.get("length"):
        tags["duration"] = round(float(item.get("length")), 3)
    if item.get("mb_trackid"):
        tags["mbid"] = str(item.get("mb_trackid"))
    if item.get("format"):  # beets' name of the codec: MP3, FLAC, AAC, ALAC, ...
        tags["codec"] = str(item.get("format")).lower()
    return tags


def from_beets(data_cfg) -> Library:
    """data=beets: the items of a beets library (data.library, its music folder data.directory; both default to the
    user's beets configuration; data.query in beets' query syntax), read through beets' own API; paths from beets,
    keys are the absolute paths."""
    _check(data_cfg)
    try:
        from beets.library import Library as BeetsLibrary
    except ImportError:
        raise SiamrecError("data=beets needs beets: pip install \"siamrec[beets]\"") from None
    db = beets_library_path(data_cfg)
    if not db.is_file():
        raise SiamrecError(f"data.library={db}: no beets library there; give the library.db of your beets "
                           "(beet config shows its path)")
    directory = _beets_setting(data_cfg, "directory")  # beets stores paths relative to the music folder
    try:
        lib = BeetsLibrary(str(db), str(directory))
        items = list(lib.items(str(data_cfg.query) if data_cfg.query else None))
    except Exception as exc:  # noqa: BLE001 - a damaged database, a bad query
        raise SiamrecError(f"data=beets: cannot read {db} (query {data_cfg.query!r}): {exc}") from None
    finally:
        if "lib" in locals():
            lib._close()
    if not items:
        raise SiamrecError(f"data=beets: no item of {db} matches data.query={data_cfg.query!r}")
    paths = [os.fsdecode(item.path) for item in items]
    order = sorted(range(len(items)), key=lambda i: paths[i])
    keys = [printable(paths[i]) for i in order]
    if len(set(keys)) != len(keys):
        raise SiamrecError(f"data=beets: {db} lists a file twice; run beet dup or remove the duplicate item")
    report = {"source": "beets", "library": str(db), "query": data_cfg.query}
    return _library(keys, [paths[i] for i in order], [beets_tags(items[i]) for i in order], data_cfg, report)


# --- the index folder of a library -------------------------------------------------------------------------------
def library_folder(data_cfg) -> Path:
    """The default index folder of the library `data_cfg` names: one per library (and beets query) under the
    user's data directory."""
    from platformdirs import user_data_dir

    if data_cfg.source == "beets":
        db = beets_library_path(data_cfg).resolve()
        what, name = f"beets:{db}:{data_cfg.query or ''}", f"beets-{db.parent.name or 'library'}"
    else:
        root = Path(str(data_cfg.root)).expanduser().resolve()
        what, name = f"library:{root}", root.name or "music"
    digest = hashlib.sha256(os.fsencode(what)).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in printable(name))[:40]
    return Path(user_data_dir("siamrec")) / "libraries" / f"{safe}-{digest}"
