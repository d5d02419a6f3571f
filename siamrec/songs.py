"""Songs as a listener names them: the metadata of a library's items (items.csv's title, artist, album, duration,
null when unknown or when an older items.csv lacks the columns), text folding for search, and the one way a seed
given as text is found (`recommend seed=` and the web app's `?seed=` both use SongFinder).

A seed is, in this order: a key; a row number (id); with `paths=True` (the command line) a path of the library (an
existing file elsewhere is a new song); else text naming one song: its title, `artist - title`, or its file stem,
compared folded (see fold); the command line also matches the file stem of what it was given ("Title.mp3", a
moved song's old path). Text naming several songs raises Ambiguous with the candidates.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import cached_property
from siamrec.data.split import NameMatcher, stem
from siamrec.errors import SiamrecError

META = ("title", "artist", "album", "duration")
MAX_ID_DIGITS = 18  # a row number is shorter; longer digit strings are text, never int()-parsed


# combining marks (the blocks of diacritics) right after a Latin letter: accents, dropped by fold
_LATIN_ACCENTS = re.compile("([\x00-\u024f\u1e00-\u1eff])[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff"
                            "\ufe20-\ufe2f]+")


def fold(text) -> str:
    """`text` for matching: NFKC, case-folded, accents of Latin letters dropped (é → e, Ø stays), spaces collapsed.
    Gurmukhi and Devanagari keep every sign (their vowel signs and nukta are combining marks that change the
    word), so they match as typed, in either composed or decomposed form."""
    text = unicodedata.normalize("NFKC", str(text or "")).casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFC", _LATIN_ACCENTS.sub(r"\1", unicodedata.normalize("NFD", text)))
    return " ".join(text.split())


def _text(value) -> str | None:
    value = (value or "").strip()
    return value or None


def _seconds(value) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return round(seconds, 3) if seconds == seconds and 0 <= seconds < 1e7 else None


def meta(item: dict) -> dict:
    """{"title", "artist", "album", "duration"} of an items.csv row; None for each unknown (or absent column)."""
    return {"title": _text(item.get("title")), "artist": _text(item.get("artist")),
            "album": _text(item.get("album")), "duration": _seconds(item.get("duration"))}


def display_name(item: dict) -> str:
    """How a song is shown in one line: `artist - title`, the title, else the file stem of its key."""
    m = meta(item)
    title = m["title"] or stem(item["key"])
    return f"{m['artist']} - {title}" if m["artist"] else title


class Ambiguous(SiamrecError):
    """Text that names several songs; `candidates` are their rows."""

    def __init__(self, seed: str, candidates: list[int], shown: list[str]):
        self.seed, self.candidates = seed, candidates
        more = f" and {len(candidates) - len(shown)} more" if len(candidates) > len(shown) else ""
        super().__init__(f"seed={seed!r} names {len(candidates)} songs ({'; '.join(shown)}{more}); "
                         "give its key or id, or `artist - title`")


class SongFinder:
    """Finds the row of a seed among `items` (items.csv rows); lookups are dictionaries built on first use."""

    def __init__(self, items: list[dict]):
        self.items = items
        self.by_key = {it["key"]: i for i, it in enumerate(items)}

    @cached_property
    def by_path(self) -> dict[str, int]:
        out = {os.path.abspath(it["path"]): i for i, it in enumerate(self.items) if it.get("path")}
        return out

    @cached_property
    def by_real_path(self) -> dict[str, int]:
        return {os.path.realpath(it["path"]): i for i, it in enumerate(self.items) if it.get("path")}

    @cached_property
    def by_name(self) -> NameMatcher:
        return NameMatcher([it["key"] for it in self.items])

    @cached_property
    def by_text(self) -> dict[str, list[int]]:
        """Folded title, `artist - title` and file stem → rows (a row once per distinct text)."""
        out: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            m = meta(it)
            names = {fold(stem(it["key"]))}
            if m["title"]:
                names.add(fold(m["title"]))
                if m["artist"]:
                    names.add(fold(f"{m['artist']} - {m['title']}"))
            for name in names:
                if name:
                    out.setdefault(name, []).append(i)
        return out

    def row_of_id(self, text: str) -> int:
        """The row of a key or an id (row number); −1 otherwise."""
        if text in self.by_key:
            return self.by_key[text]
        if text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS and int(text) < len(self.items):
            return int(text)
        return -1

    def find(self, seed, paths: bool = False) -> int:
        """The row of `seed` (see the module's docstring), −1 when it names no song; Ambiguous when several."""
        text = str(seed).strip()
        row = self.row_of_id(text)
        if row >= 0:
            return row
        if paths:
            path = os.path.abspath(os.path.expanduser(text))
            row = self.by_path.get(path, -1)
            if row < 0 and os.path.isfile(path):
                row = self.by_real_path.get(os.path.realpath(path), -1)
            if row >= 0 or os.path.isfile(path):  # a file outside the library: a new song
                return row
        rows = self.by_text.get(fold(text)) or []
        if not rows and paths:  # the command line: 'rock/1' or a moved song's old path, by its longest trailing
            rows = self.by_name.find(text)  # part that names a song (as split=files matches), or "Title.mp3"
            if len(rows) != 1:
                rows = rows or self.by_text.get(fold(stem(text))) or []
        if len(rows) > 1:
            raise Ambiguous(text, rows, [f"{self.items[r]['key']} (id {r})" for r in rows[:5]])
        return rows[0] if rows else -1
