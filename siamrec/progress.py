"""How far the indexing of a library has come: `progress.json` in its index folder, for the terminal and the page.

While `extract` (or `serve data=library|beets`) builds or updates an index folder it keeps `progress.json` there
(written atomically, at most twice a second):

    {"state": "scanning" | "embedding" | "ready" | "failed" | "interrupted",
     "done": songs of the library in the index so far (reused + embedded + failed),
     "total": songs of the library, "embedded": ..., "reused": ..., "failed": ...,
     "eta_s": seconds left at the current rate (null until known), "songs_per_s": ...,
     "started": unix time, "updated": unix time, "message": one line}

`read_progress(folder)` returns it as a dict (None when the folder has none).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from siamrec.runs import write_json

FILE = "progress.json"
EVERY_S = 0.5


def read_progress(folder) -> dict | None:
    """The progress.json of an index folder, or None."""
    try:
        return json.loads((Path(folder) / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Progress:
    """Counts songs as they are indexed and keeps progress.json up to date."""

    def __init__(self, folder, total: int = 0, state: str = "scanning"):
        self.path = Path(folder) / FILE
        self.started = time.time()
        self.state, self.total, self.reused, self.embedded, self.failed = state, total, 0, 0, 0
        self.message = ""
        self._embed_started = None
        self._written = 0.0
        self.write()

    @property
    def done(self) -> int:
        return self.reused + self.embedded + self.failed

    def start_embedding(self, total: int, reused: int) -> None:
        self.state, self.total, self.reused = "embedding", total, reused
        self._embed_started = time.time()
        self.write()

    def song(self, failed: bool = False) -> None:
        """One more song embedded (or failed)."""
        if failed:
            self.failed += 1
        else:
            self.embedded += 1
        if time.time() - self._written >= EVERY_S:
            self.write()

    def finish(self, state: str = "ready", message: str = "") -> None:
        self.state, self.message = state, message
        self.write()

    def as_dict(self) -> dict:
        now = time.time()
        rate = eta = None
        worked = self.embedded + self.failed
        if self._embed_started is not None and worked and now > self._embed_started:
            rate = worked / (now - self._embed_started)
            eta = max(self.total - self.done, 0) / rate
        return {"state": self.state, "done": self.done, "total": self.total, "embedded": self.embedded,
                "reused": self.reused, "failed": self.failed,
                "eta_s": None if eta is None else round(eta, 1), "songs_per_s": None if rate is None else round(rate, 3),
                "started": round(self.started, 3), "updated": round(now, 3), "message": self.message}

    def write(self) -> None:
        self._written = time.time()
        write_json(self.path, self.as_dict())
