"""Decoding: songs to their windows (siamrec.data.audio), a bounded number of files ahead in worker processes."""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections import deque
from itertools import islice

from siamrec.data.audio import AudioError, WindowPlan, decode_windows
from siamrec.inference import cpu_count
from siamrec.runs import sha256_file

def decode_workers(features_cfg) -> int:
    """features.workers, or one decoding process per core when it is null."""
    workers = features_cfg.get("workers")
    return cpu_count() if workers is None else int(workers)


def _decode(job):
    i, path, plan, want_digest = job
    try:
        windows = decode_windows(path, plan)
        return i, windows, None, sha256_file(path) if want_digest else None
    except AudioError as exc:
        return i, None, exc.reason, None
    except OSError as exc:
        return i, None, f"cannot read: {exc.strerror or exc}", None


def decode_stream(items, plan: WindowPlan, workers: int = 0, want_digest: bool = False):
    """Yield (index, windows or None, error or None, digest or None) for the (index, path) `items`, in order.
    Decoding runs ahead in `workers` processes (0 or 1: in this process), a bounded number of files ahead of the
    consumer, so memory stays bounded however many files there are."""
    jobs = [(i, p, plan, want_digest) for i, p in items]
    workers = min(int(workers), len(jobs))
    if workers <= 1:
        yield from map(_decode, jobs)
        return
    prefetch = 32 if plan.mode == "first" else 8
    # workers ignore Ctrl-C: the main process handles it (and keeps what is finished). They keep glibc's default
    # malloc (siamrec.heap is not needed there: their memory stayed flat, and a fixed mmap threshold cost decoding
    # ~60 ms of CPU per 4-min song in system time)
    with mp.get_context("spawn").Pool(workers, initializer=signal.signal,
                                      initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        it = iter(jobs)
        pending = deque(pool.apply_async(_decode, (job,)) for job in islice(it, prefetch))
        while pending:
            result = pending.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.apply_async(_decode, (nxt,)))
            yield result
