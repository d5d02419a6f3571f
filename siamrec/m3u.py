"""M3U8 playlists as players read them (VLC, MPD, Navidrome, Jellyfin, phones), and as `data=playlists` reads them
back: the one writer of every playlist file siamrec makes (the web app's exports and saved playlists, `recommend`,
the beets plugin, the radio).

    #EXTM3U
    #PLAYLIST:<name>
    #EXTINF:<whole seconds, -1 when unknown>,<artist> - <title>
    <path>

UTF-8, written atomically. Paths are absolute, or relative to `relative_to` (for a playlist that lives in the music
folder). A line of an M3U8 ends at a line break, so nothing in a track may break one:

- titles, artists and the playlist name have their control characters and line/paragraph separators replaced by
  a space (so a tag holding a newline shows as one line; zero-width joiners of Indic scripts are kept);
- a relative path starting with `#` (a comment line otherwise) gets a leading `./`;
- a path that cannot be written as a plain line (it holds a control character or line separator, is not UTF-8,
  starts or ends with a space, or holds `://` or a backslash; an absolute one starting with `#` cannot happen) is written as a percent-encoded
  absolute `file://` URI instead. Such a track is never skipped: every player named above and `data=playlists`
  read file URIs, and the URI decodes back to the very same path.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

from siamrec.runs import atomic_write_text, printable

_BREAKING = {"Cc", "Zl", "Zp"}  # control characters (\n, \r, \x85, ...) and U+2028/U+2029: str.splitlines splits on them


def one_line(text) -> str:
    """`text` as one line of UTF-8: control characters and line separators become spaces, runs of spaces one
    space, bytes of a non-UTF-8 file name \\xNN."""
    if text is None:
        return ""
    cleaned = "".join(" " if unicodedata.category(c) in _BREAKING else c for c in printable(str(text)))
    return " ".join(cleaned.split())


def _plain(line: str) -> bool:
    """Whether `line` can stand as an entry line as it is (and be read back as the same path)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a non-UTF-8 file name, held as surrogate escapes
        return False
    return (bool(line) and line == line.strip() and not line.startswith("#") and "://" not in line
            and "\\" not in line and not any(unicodedata.category(c) in _BREAKING for c in line))


def entry_line(path, relative_to=None) -> str:
    """The entry line of the file at `path`: absolute, or relative to folder `relative_to` (forward slashes);
    a percent-encoded file:// URI when the path cannot be a plain line (see the module's docstring)."""
    absolute = Path(os.path.abspath(os.fspath(path)))
    line = str(absolute)
    if relative_to is not None:
        line = Path(os.path.relpath(absolute, os.path.abspath(os.fspath(relative_to)))).as_posix()
        line = f"./{line}" if line.startswith("#") else line
    if _plain(line):
        return line
    return absolute.as_uri()


def extinf(track: Mapping) -> str:
    """The #EXTINF line of a track (a mapping with path and, each optional, title, artist, duration)."""
    duration = track.get("duration")
    try:
        seconds = int(round(float(duration))) if duration not in (None, "") else -1
    except (TypeError, ValueError, OverflowError):  # not a number, NaN, infinity
        seconds = -1
    if seconds < 0 or seconds > 10**7:  # absurd values are "unknown"
        seconds = -1
    title = one_line(track.get("title")) or one_line(Path(os.fspath(track["path"])).stem)
    artist = one_line(track.get("artist"))
    return f"#EXTINF:{seconds},{artist} - {title}" if artist else f"#EXTINF:{seconds},{title}"


def m3u8_text(tracks: Iterable[Mapping], name: str | None = None, relative_to=None) -> str:
    """The M3U8 text of `tracks` (mappings with `path` and optional `title`, `artist`, `duration` in seconds),
    in order; tracks without a path are left out (nothing to play)."""
    lines = ["#EXTM3U"]
    if name and one_line(name):
        lines.append(f"#PLAYLIST:{one_line(name)}")
    for track in tracks:
        if not track.get("path"):
            continue
        lines += [extinf(track), entry_line(track["path"], relative_to)]
    return "\n".join(lines) + "\n"


def write_m3u8(path, tracks: Iterable[Mapping], name: str | None = None, relative_to=None) -> Path:
    """Write `tracks` as an M3U8 file at `path`, atomically (see m3u8_text)."""
    return atomic_write_text(path, m3u8_text(tracks, name, relative_to))


def read_entries(path) -> list[tuple[str, str | None, dict]]:
    """The entries of an M3U/M3U8 file, in order: (the line, its absolute path, the metadata of the #EXTINF line
    before it: parse_extinf), relative paths resolved against the file's folder, file:// URIs decoded (a non-UTF-8
    name's bytes kept); the path is None for a URL of another scheme. Other # lines are skipped. .m3u8 must be UTF-8 (a SiamrecError naming the file
    otherwise); .m3u falls back to latin-1."""
    from urllib.parse import unquote, urlparse

    from siamrec.errors import SiamrecError

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SiamrecError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        if path.suffix.lower() == ".m3u8":
            raise SiamrecError(f"{path}: not UTF-8, as .m3u8 must be; save it as UTF-8 (or name it .m3u)") from None
        text = raw.decode("latin-1")
    out: list[tuple[str, str | None, dict]] = []
    extinf: dict = {}
    for line in text.splitlines():
        entry = line = line.strip()
        if entry.upper().startswith("#EXTINF:"):
            extinf = parse_extinf(entry)
            continue
        if not entry or entry.startswith("#"):
            continue
        info, extinf = extinf, {}
        if entry.lower().startswith("file://"):
            entry = unquote(urlparse(entry).path, errors="surrogateescape")  # a non-UTF-8 name: its bytes
        elif "://" in entry:
            out.append((line, None, info))
            continue
        p = Path(entry.replace("\\", "/") if "/" not in entry else entry).expanduser()
        out.append((line, os.path.abspath(p if p.is_absolute() else path.parent / p), info))
    return out


def parse_extinf(line: str) -> dict:
    """The metadata of an M3U `#EXTINF:<seconds>,<artist> - <title>` line (duration -1 or absent: unknown; no
    ' - ': the whole text is the title)."""
    head, _, text = line.partition(":")[2].partition(",")
    out: dict = {}
    try:
        seconds = float(head.split()[0]) if head.split() else -1.0
    except ValueError:
        seconds = -1.0
    if seconds > 0:
        out["duration"] = seconds
    artist, sep, title = text.strip().partition(" - ")
    if sep and artist.strip() and title.strip():
        out["artist"], out["title"] = artist.strip(), title.strip()
    elif text.strip():
        out["title"] = text.strip()
    return out
