"""run.log: library chatter (warnings, logging, TensorFlow's C++ log on file descriptor 2) goes to the run
folder, not to the terminal, while siamrec's own messages and progress bars still reach it."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

class _QuietHandler(logging.StreamHandler):
    """A logging handler on run.log that drops a record it cannot write (a full disk) instead of printing
    logging's "--- Logging error ---" traceback: the next result file the command writes says the disk is full."""

    def handleError(self, record):  # noqa: N802
        pass


class RunLog:
    """Library chatter goes to `run.log` in the run folder, not to the terminal: Python warnings (librosa's
    FutureWarnings, Keras', ...), logging records (TensorFlow's retracing warnings, absl) and, when stderr is
    the process's real stderr, whatever is written to file descriptor 2 (TensorFlow's C++ log, decoders,
    decoding worker processes). siamrec's own messages and progress bars still reach the terminal through
    sys.stderr, which is pointed at the original stderr meanwhile."""

    def __init__(self, path: Path):
        self.path = path
        self.saved_fd = None

    def __enter__(self):
        import logging

        self.file = open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        self.handler = _QuietHandler(self.file)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        self.root_level = root.level
        root.addHandler(self.handler)
        root.setLevel(min(root.level, logging.INFO))
        # loggers that write to the terminal themselves (TensorFlow adds its own stderr handler) go to the file
        self.silenced = []
        for name in ("tensorflow", "absl", "h5py", "numba", "jax"):
            logger = logging.getLogger(name)
            for h in list(logger.handlers):
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__):
                    logger.removeHandler(h)
                    self.silenced.append((logger, h))
        logging.captureWarnings(True)
        self.stderr = sys.stderr
        try:
            real = sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            real = False
        if real:
            sys.stderr.flush()
            self.saved_fd = os.dup(2)
            sys.stderr = open(self.saved_fd, "w", buffering=1, encoding=self.stderr.encoding,
                              errors=self.stderr.errors, closefd=False)
            os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import logging

        if self.saved_fd is not None:
            sys.stderr.flush()
            os.dup2(self.saved_fd, 2)
            sys.stderr.close()
            os.close(self.saved_fd)
            sys.stderr = self.stderr
        logging.captureWarnings(False)
        for logger, h in self.silenced:
            logger.addHandler(h)
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.root_level)
        self.file.close()
        if self.path.is_file() and self.path.stat().st_size == 0:
            self.path.unlink()
        return False
