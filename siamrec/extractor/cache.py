"""File identity and the feature cache: a file's content digest (remembered by path, size and mtime) and its window
features stored under (fingerprint, digest)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from siamrec.runs import read_checked_npz, sha256_file, write_checked_npz

def file_stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class FileDigests:
    """sha256 of files, remembered by (path, size, mtime): a file is hashed again only when it changed."""

    def __init__(self, root):
        Path(root).mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(Path(root) / "digests.sqlite", timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, "
                        "sha256 TEXT)")

    def digest(self, path: str) -> str:
        size, mtime = file_stat(path)
        key = _db_key(path)
        row = self.db.execute("SELECT size, mtime, sha256 FROM files WHERE path = ?", (key,)).fetchone()
        if row and row[0] == size and row[1] == mtime:
            return row[2]
        digest = sha256_file(path)
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (key, size, mtime, digest))
        return digest


def _db_key(path: str) -> str | bytes:
    """A path as SQLite stores it: text, or its bytes when its name is not UTF-8 (surrogate escapes, which SQLite
    cannot encode)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


class FeatureCache:
    """The window features of a file, one .npz per (fingerprint, file content), written atomically and
    sha256-checked on every load (a damaged entry is recomputed)."""

    def __init__(self, root, fingerprint: str):
        self.dir = Path(root) / fingerprint

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npz"

    def get(self, digest: str) -> np.ndarray | None:
        p = self._path(digest)
        if not p.is_file():
            return None
        try:
            a = read_checked_npz(p)["windows"]
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed
            return None
        return a if a.ndim == 2 and len(a) else None

    def put(self, digest: str, windows: np.ndarray) -> None:
        write_checked_npz(self._path(digest), {"windows": np.asarray(windows, dtype=np.float32)})
