"""Backbone features for a library of audio files: parallel decoding, batched inference, a per-file cache.

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
from collections import deque
from dataclasses import dataclass, field
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


def decode_stream(paths, clip_cfg, workers: int = 0, prefetch: int = 32):
    """Yield (index, clip or None, error or None) in order; decoding runs ahead in `workers` processes,
    at most `prefetch` files ahead of the consumer, so memory stays bounded."""
    jobs = [(i, p, int(clip_cfg.sr), float(clip_cfg.duration), clip_cfg.offset) for i, p in paths]
    if workers <= 1:
        yield from map(_decode, jobs)
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        pending = deque()
        it = iter(jobs)
        for job in it:
            pending.append(pool.apply_async(_decode, (job,)))
            if len(pending) >= prefetch:
                break
        while pending:
            result = pending.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.apply_async(_decode, (nxt,)))
            yield result


def extract_features(paths: list[str], model, clip_cfg, cache: FeatureCache | None = None, batch_size: int = 8,
                     workers: int = 0, progress: bool = True, desc: str = "features") -> Extraction:
    """The 160-d block features of each file (NaN rows for files that failed to decode)."""
    from siamrec.models.backbone import concat_blocks

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
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo)
    batch_idx, batch = [], []

    def flush():
        feats = concat_blocks(model.predict_on_batch(np.stack(batch)))
        for j, row in zip(batch_idx, feats):
            out[j] = row
            if cache is not None:
                cache.put(digests[j], row)
        bar.update(len(batch))
        batch_idx.clear()
        batch.clear()

    for i, clip, error in decode_stream(todo, clip_cfg, workers=workers):
        if error is not None:
            result.failures.append((i, error))
            bar.update(1)
            continue
        batch_idx.append(i)
        batch.append(clip)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    return result


def report_failures(run_dir, keys, paths, extraction: Extraction, max_failed_fraction: float) -> None:
    """failed.csv in the run folder; a clear error when too many files failed."""
    if not extraction.failures:
        return
    rows = [(keys[i], paths[i], reason) for i, reason in extraction.failures]
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
    ext = Extraction(np.zeros((len(data.lib), 1), dtype=np.float32))
    workers = cfg.features.get("workers")
    from siamrec.pipeline import n_workers

    workers = n_workers() if workers is None else int(workers)
    stream = decode_stream(list(enumerate(data.lib.paths)), cfg.clip, workers=workers)
    for i, clip, error in tqdm(stream, total=len(data.lib), desc="decoding", unit="file"):
        if error is None:
            clips[i] = clip
        else:
            ext.failures.append((i, error))
            ext.features[i] = np.nan
    report_failures(run_dir, data.lib.keys, data.lib.paths, ext, float(cfg.data.get("max_failed_fraction", 0.2)))
    ok = ext.ok
    return data.subset(ok), clips[ok]
