"""The Extractor: a bundle's model with the clip settings; decoded windows go through the model in full batches, song
by song, and come out as window features and pooled song vectors (cached per file when a cache is set)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamrec.extractor.cache import FeatureCache, FileDigests, file_stat
from siamrec.extractor.clip import check_clip, plain, window_plan
from siamrec.extractor.decoding import decode_stream
from siamrec.extractor.fingerprints import fingerprint
from siamrec.extractor.pooling import part_columns, pool_windows, pooled_parts
from siamrec.heap import return_freed_memory
from siamrec.inference import inference_threads, make_runner


# The last song_features call's result in this process, by (fingerprint, the files and their size and mtime): the
# same songs through the same model are not extracted twice in one command, with or without the feature cache (a head
# choosing among inputs builds each input's encoder, and every input starts with the configured backbone's vectors).
_LAST: dict = {}


def _stamp(path: str):
    try:
        return file_stat(path)
    except OSError:
        return None


@dataclass
class SongFeatures:
    vectors: np.ndarray                                  # (n, dim) pooled song vectors; NaN rows for failed files
    windows: list | None = None                          # per song (n_windows, window dim), when asked for
    failures: list[tuple[int, str]] = field(default_factory=list)  # (item index, reason)
    n_cached: int = 0

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.vectors).all(axis=1)


class Extractor:
    """A bundle's model with the clip settings: decodes, embeds and pools songs."""

    def __init__(self, bundle, model, clip_cfg, batch_size: int = 8, workers: int = 0, cache_root=None,
                 progress: bool = True, runtime: str = "tensorflow", threads: int | None = None, model_cache=None):
        check_clip(clip_cfg, bundle)
        return_freed_memory()  # song after song, what is freed goes back to the system (siamrec.heap)
        self.bundle, self.model, self.clip = bundle, model, plain(clip_cfg)
        self.plan = window_plan(bundle, clip_cfg)
        self.pool = self.clip["pool"]
        self.layout = pooled_parts(bundle.parts, self.pool)
        self.batch_size, self.workers, self.progress = int(batch_size), int(workers), progress
        self.cache_root = Path(cache_root) if cache_root else None
        # inference (siamrec.inference): the runtime, its threads, where an exported graph is cached
        self.runtime, self.threads = runtime, inference_threads(threads)
        self.model_cache = Path(model_cache) if model_cache else None
        self._runner, self._runner_key = None, None

    def runner(self):
        """The model's runner for its current weights (built again after fine-tuning changed them)."""
        key = self.fingerprint
        if self._runner is None or key != self._runner_key:
            self._runner = make_runner(self.bundle, self.model, self.runtime, self.threads, key, self.model_cache)
            self._runner_key = key
        return self._runner

    @property
    def fingerprint(self) -> str:
        """Of the model's current weights (fine-tuning changes them)."""
        return fingerprint(self.bundle, self.model, self.clip)

    @property
    def dim(self) -> int:
        return int(sum(self.layout.values()))

    def columns(self, names) -> np.ndarray:
        return part_columns(self.layout, names, self.bundle.name)

    def decode(self, items, want_digest: bool = False):
        """(index, windows, error, digest) for the (index, path) `items`, in order (see decode_stream)."""
        return decode_stream(items, self.plan, self.workers, want_digest)

    def embed_windows(self, windows: np.ndarray, runner=None) -> np.ndarray:
        """(n, bundle.dim) features of (n, window) windows, in full batches (the last padded: no retracing)."""
        runner = runner or self.runner()
        out = []
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            n = len(batch)
            if n < self.batch_size:
                batch = np.concatenate([batch, np.zeros((self.batch_size - n, batch.shape[1]), np.float32)])
            out.append(self.bundle.feature_vector(runner(batch))[:n])
        return np.concatenate(out) if out else np.empty((0, self.bundle.dim), np.float32)

    def stream(self, items, want_digest: bool = False, desc: str = "features"):
        """Yield (index, window features (n_windows, dim) or None, error or None, digest) for the (index, path)
        `items`, in order: worker processes decode the next files while the model embeds the current batch."""
        bar = tqdm(total=len(items), desc=desc, unit="file", disable=not self.progress or not items)
        pending: deque = deque()            # songs in order: [index, digest, n_windows, rows, error]
        buf: list = []                      # (song, window) waiting for the model
        n_failed = 0
        runner = self.runner() if items else None

        def run(n):
            batch = np.stack([w for _, w in buf[:n]])
            for (song, _), row in zip(buf[:n], self.embed_windows(batch, runner)):
                song[3].append(row)
            del buf[:n]

        def ready():
            while pending and (pending[0][4] is not None or len(pending[0][3]) == pending[0][2]):
                i, digest, _, rows, error = pending.popleft()
                bar.update(1)
                yield i, (np.stack(rows) if error is None else None), error, digest

        try:
            for i, windows, error, digest in self.decode(items, want_digest):
                if error is not None:
                    n_failed += 1
                    bar.set_postfix(failed=n_failed, refresh=False)
                    pending.append([i, digest, 0, [], error])
                else:
                    song = [i, digest, len(windows), [], None]
                    pending.append(song)
                    buf.extend((song, w) for w in windows)
                    while len(buf) >= self.batch_size:
                        run(self.batch_size)
                yield from ready()
            if buf:
                run(len(buf))
            yield from ready()
        finally:
            bar.close()

    def features_of(self, windows_per_song: list[np.ndarray]) -> list[np.ndarray]:
        """Window features of windows already in memory (one array per song)."""
        if not windows_per_song:
            return []
        feats = self.embed_windows(np.concatenate(windows_per_song))
        bounds = np.cumsum([len(w) for w in windows_per_song])[:-1]
        return np.split(feats, bounds)

    def pool_songs(self, window_feats: list[np.ndarray]) -> np.ndarray:
        if not window_feats:
            return np.empty((0, self.dim), np.float32)
        return np.stack([pool_windows(f, self.pool, self.bundle.parts) for f in window_feats]).astype(np.float32)

    def song_features(self, paths: list[str], keep_windows: bool = False, use_cache: bool = True,
                      desc: str = "features") -> SongFeatures:
        """Pooled vectors of the songs (NaN rows for files that failed), cached per file when a cache is set."""
        key = None if keep_windows else (self.fingerprint, tuple((p, _stamp(p)) for p in paths))
        if key is not None and key in _LAST:
            last = _LAST[key]
            return SongFeatures(last.vectors.copy(), None, list(last.failures), last.n_cached)
        out = self._song_features(paths, keep_windows, use_cache, desc)
        if key is not None:
            _LAST.clear()
            _LAST[key] = SongFeatures(out.vectors.copy(), None, list(out.failures), out.n_cached)
        return out

    def _song_features(self, paths: list[str], keep_windows: bool, use_cache: bool, desc: str) -> SongFeatures:
        out = SongFeatures(np.full((len(paths), self.dim), np.nan, dtype=np.float32),
                           [None] * len(paths) if keep_windows else None)
        cache = FeatureCache(self.cache_root / "features", self.fingerprint) if use_cache and self.cache_root else None
        digests = FileDigests(self.cache_root) if cache else None
        keys, todo = {}, []
        for i, p in enumerate(paths):
            cached = None
            if cache is not None:
                try:
                    keys[i] = digests.digest(p)
                except OSError as exc:
                    out.failures.append((i, f"cannot read: {exc.strerror or exc}"))
                    continue
                cached = cache.get(keys[i])
            if cached is not None:
                self._put(out, i, cached)
                out.n_cached += 1
            else:
                todo.append((i, p))
        for i, feats, error, _ in self.stream(todo, desc=desc):
            if error is not None:
                out.failures.append((i, error))
                continue
            self._put(out, i, feats)
            if cache is not None:
                cache.put(keys[i], feats)
        out.failures.sort()
        return out

    def _put(self, out: SongFeatures, i: int, feats: np.ndarray) -> None:
        out.vectors[i] = pool_windows(feats, self.pool, self.bundle.parts)
        if out.windows is not None:
            out.windows[i] = feats
