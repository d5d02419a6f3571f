"""Backbone features for a library of audio files: decoding in worker processes overlapped with batched
inference (streamed batch by batch), and a per-file cache.

The cache keys a file by its content (sha256) and the model by a fingerprint of its weights and the clip
settings, so a second run over the same library decodes nothing and a fine-tuned model never reuses stale
features. Files that cannot be decoded are skipped and reported, never fatal.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamrec.data.audio import AudioError, load_clip
from siamrec.errors import SiamrecError
from siamrec.runs import atomic_write_bytes, write_csv

N_FEATURES = 160


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_fingerprint(model, clip_cfg) -> str:
    """Hash of every weight of `model` and of the clip settings: equal fingerprints give equal features."""
    h = hashlib.sha256(model.name.encode())
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    h.update(json.dumps({k: str(clip_cfg[k]) for k in ("sr", "duration", "offset")}, sort_keys=True).encode())
    return h.hexdigest()[:20]


class FeatureCache:
    """One .npy per (model fingerprint, file digest), written atomically."""

    def __init__(self, root: str | os.PathLike, fingerprint: str):
        self.dir = Path(root) / fingerprint

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        p = self._path(digest)
        if not p.is_file():
            return None
        try:
            return np.load(p)
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed
            return None

    def put(self, digest: str, row: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(row, dtype=np.float32))
        atomic_write_bytes(self._path(digest), buf.getvalue())


@dataclass
class Extraction:
    features: np.ndarray                      # (n, 160) float32; rows of failed files are NaN
    failures: list[tuple[int, str]] = field(default_factory=list)  # (item index, reason)
    n_cached: int = 0

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.features).all(axis=1)


def _decode(args):
    i, path, sr, duration, offset = args
    try:
        return i, load_clip(path, sr, duration, offset), None
    except AudioError as exc:
        return i, None, exc.reason


def decode_stream(items, clip_cfg, workers: int = 0, prefetch: int = 32):
    """Yield (index, clip or None, error or None) for the (index, path) `items`, in order. Decoding runs ahead in
    `workers` processes (never more than there are files; 0 or 1: in this process), at most `prefetch` files
    ahead of the consumer, so memory stays bounded however many files there are."""
    jobs = [(i, p, int(clip_cfg.sr), float(clip_cfg.duration), clip_cfg.offset) for i, p in items]
    workers = min(int(workers), len(jobs))
    if workers <= 1:
        yield from map(_decode, jobs)
        return
    # workers ignore Ctrl-C: the main process handles it (and keeps what is finished)
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


def stream_features(items, model, clip_cfg, batch_size: int = 8, workers: int = 0, progress: bool = True,
                    desc: str = "features"):
    """Yield (indices, features (m, 160) float32, failures [(index, reason)]) batch by batch for the (index, path)
    `items`. Worker processes decode the next files while the model embeds the current batch, so decoding and
    inference overlap; memory holds one batch and the decoding prefetch, whatever the number of items.
    A progress bar shows files/s and the time left."""
    from siamrec.models.backbone import concat_blocks

    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not progress or not items)
    indices, clips, failures = [], [], []
    n_failed = 0

    def batch():
        feats = (concat_blocks(model.predict_on_batch(np.stack(clips))) if clips
                 else np.empty((0, N_FEATURES), dtype=np.float32))
        bar.update(len(clips))
        return indices, feats.astype(np.float32, copy=False), failures

    try:
        for i, clip, error in decode_stream(items, clip_cfg, workers=workers):
            if error is not None:
                failures.append((i, error))
                n_failed += 1
                bar.set_postfix(failed=n_failed, refresh=False)
                bar.update(1)
                continue
            indices.append(i)
            clips.append(clip)
            if len(clips) >= batch_size:
                yield batch()
                indices, clips, failures = [], [], []
        if clips or failures:
            yield batch()
    finally:
        bar.close()


def extract_features(paths: list[str], model, clip_cfg, cache: FeatureCache | None = None, batch_size: int = 8,
                     workers: int = 0, progress: bool = True, desc: str = "features") -> Extraction:
    """The 160-d block features of each file (NaN rows for files that failed to decode)."""
    out = np.full((len(paths), N_FEATURES), np.nan, dtype=np.float32)
    result = Extraction(out)
    todo = []
    digests = {}
    for i, p in enumerate(paths):
        try:
            digests[i] = file_digest(p) if cache is not None else None
        except OSError as exc:
            result.failures.append((i, f"cannot read: {exc.strerror or exc}"))
            continue
        row = cache.get(digests[i]) if cache is not None else None
        if row is not None:
            out[i] = row
            result.n_cached += 1
        else:
            todo.append((i, p))
    for indices, feats, failures in stream_features(todo, model, clip_cfg, batch_size, workers, progress, desc):
        result.failures += failures
        out[indices] = feats
        if cache is not None:
            for j, row in zip(indices, feats):
                cache.put(digests[j], row)
    return result


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode_workers(features_cfg) -> int:
    """features.workers, or one decoding process per core when it is null."""
    workers = features_cfg.get("workers")
    return cpu_count() if workers is None else int(workers)


def report_failures(run_dir, keys, paths, failures: list[tuple[int, str]], max_failed_fraction: float) -> None:
    """failed.csv in the run folder; a clear error when too many files failed."""
    if not failures:
        return
    rows = [(keys[i], paths[i], reason) for i, reason in failures]
    write_csv(Path(run_dir) / "failed.csv", ("key", "path", "reason"), rows)
    n, total = len(rows), len(paths)
    print(f"skipped {n} of {total} files that could not be decoded (listed in {Path(run_dir) / 'failed.csv'})")
    if n > max_failed_fraction * total:
        raise SiamrecError(
            f"{n} of {total} audio files failed to decode (more than data.max_failed_fraction={max_failed_fraction}); "
            f"see {Path(run_dir) / 'failed.csv'}, e.g. {rows[0][1]}: {rows[0][2]}"
        )


def decode_all(data, cfg, run_dir):
    """Decode every item's clip into memory (for fine-tuning); failures are skipped and reported.
    Returns (the kept items, clips array (n, samples))."""
    n = int(round(float(cfg.clip.sr) * float(cfg.clip.duration)))
    clips = np.zeros((len(data.lib), n), dtype=np.float32)
    ok = np.ones(len(data.lib), dtype=bool)
    failures = []
    stream = decode_stream(list(enumerate(data.lib.paths)), cfg.clip, workers=decode_workers(cfg.features))
    for i, clip, error in tqdm(stream, total=len(data.lib), desc="decoding", unit="file"):
        if error is None:
            clips[i] = clip
        else:
            failures.append((i, error))
            ok[i] = False
    report_failures(run_dir, data.lib.keys, data.lib.paths, failures, float(cfg.data.get("max_failed_fraction", 0.2)))
    return data.subset(ok), clips[ok]
