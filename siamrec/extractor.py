"""The one extractor: songs → windows → backbone → pooled song vectors, for every command.

    decode (worker processes: seek, read, mono, resample to the bundle's rate; siamrec.data.audio)
      → batches of windows → the bundle's model → named feature parts of each window
      → pool the windows of a song (clip.pool: mean | mean_std) → one vector per song
      → cache (train/evaluate: keyed by the file's content and the fingerprint) or store (extract)

Decoding runs ahead in worker processes while the model embeds the current batch, so the two overlap; memory
holds one batch and a bounded prefetch, whatever the number of songs. Files that cannot be decoded are skipped
and reported, never fatal. The fingerprint of a feature hashes the decoder's version, the bundle's spec, the model's
weights and the whole `clip` config, so a changed setting, a fine-tuned model or a corrected decoder never reuses
stale features.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import signal
import sqlite3
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamrec.data.audio import DECODER_VERSION, AudioError, WindowPlan, decode_windows, parse_windows, window_start
from siamrec.errors import SiamrecError
from siamrec.inference import cpu_count, inference_threads, make_runner
from siamrec.runs import closing_note, printable, read_checked_npz, sha256_file, write_checked_npz, write_csv

POOLS = ("mean", "mean_std")


# --- settings ----------------------------------------------------------------------------------------------------
def _plain(node) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def check_clip(clip_cfg, bundle=None) -> None:
    """Reject bad clip settings (and settings that contradict the backbone) before any file is decoded."""
    clip = _plain(clip_cfg)
    for key in ("sr", "duration"):
        value = clip.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise SiamrecError(f"clip.{key}={value!r}: must be a positive number")
    try:
        window_start(float(clip["duration"]), float(clip["duration"]), clip["offset"])
        parse_windows(clip["windows"])
    except ValueError as exc:
        raise SiamrecError(str(exc)) from None
    if clip["pool"] not in POOLS:
        raise SiamrecError(f"clip.pool={clip['pool']!r}: use one of {', '.join(POOLS)}")
    hop = clip.get("hop")
    if hop is not None and (isinstance(hop, bool) or not isinstance(hop, (int, float)) or hop <= 0):
        raise SiamrecError(f"clip.hop={hop!r}: must be a positive number of seconds (or null: the backbone's hop)")
    cap = clip["max_windows"]
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise SiamrecError(f"clip.max_windows={cap!r}: must be an integer >= 1")
    if bundle is not None:
        if int(clip["sr"]) != bundle.sample_rate:
            raise SiamrecError(f"clip.sr={clip['sr']}: the backbone {bundle.name} takes {bundle.sample_rate} Hz; "
                               "clip.sr follows the backbone, leave it unset")
        if abs(float(clip["duration"]) - bundle.window_seconds) > 1e-6:
            raise SiamrecError(f"clip.duration={clip['duration']}: the backbone {bundle.name} takes windows of "
                               f"{bundle.window_seconds:g} s; clip.duration follows the backbone, leave it unset")


def window_plan(bundle, clip_cfg) -> WindowPlan:
    clip = _plain(clip_cfg)
    mode, count = parse_windows(clip["windows"])
    hop = clip.get("hop")
    return WindowPlan(sr=bundle.sample_rate, window=bundle.window_samples, context=bundle.context_samples,
                      hop=int(round(float(hop) * bundle.sample_rate)) if hop else bundle.hop_samples,
                      mode=mode, count=count, max_windows=int(clip["max_windows"]),
                      offset=clip["offset"])


def pooled_parts(parts: dict[str, int], pool: str) -> dict[str, int]:
    """The layout of a pooled song vector: the parts (means), then with mean_std the parts' standard deviations."""
    return dict(parts) if pool == "mean" else {**parts, **{f"{p}_std": w for p, w in parts.items()}}


def part_columns(layout: dict[str, int], names, owner: str = "the backbone") -> np.ndarray:
    """Columns of the chosen parts (names of the backbone's parts; null = all) in a pooled song vector."""
    from siamrec.backbones.base import part_columns as columns

    if names is None:
        return np.arange(sum(layout.values()))
    names = [str(n) for n in names]
    return columns(layout, names + [f"{n}_std" for n in names if f"{n}_std" in layout], owner)


def pool_windows(feats: np.ndarray, pool: str) -> np.ndarray:
    """One vector from a song's (n_windows, dim) window features."""
    mean = feats.mean(axis=0)
    return mean if pool == "mean" else np.concatenate([mean, feats.std(axis=0)])


def fingerprint(bundle, model, clip_cfg) -> str:
    """Hash of everything that changes a song vector: the decoder's version, the bundle's spec, every weight of the
    model, the clip config."""
    h = hashlib.sha256(f"decoder {DECODER_VERSION}".encode())
    h.update(json.dumps(bundle.spec(), sort_keys=True, default=str).encode())
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    h.update(json.dumps(_plain(clip_cfg), sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


# --- file identity and the feature cache ------------------------------------------------------------------------
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


def padding_note(path: str, window_seconds: float, what: str = "seed") -> str | None:
    """The line that says a song shorter than the backbone's window was padded with silence (None when it is not
    shorter, or its length cannot be read)."""
    from siamrec.data.audio import duration_seconds

    try:
        seconds = duration_seconds(path)
    except Exception:  # noqa: BLE001 - it was decoded already; its length is only for the note
        return None
    if seconds >= window_seconds:
        return None
    return (f"{what} {path} is {seconds:.1f} s, shorter than the backbone's {window_seconds:g} s window: padded with "
            "silence")


# --- decoding -------------------------------------------------------------------------------------------------
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


# --- the extractor ----------------------------------------------------------------------------------------------
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
        self.bundle, self.model, self.clip = bundle, model, _plain(clip_cfg)
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
        return np.stack([pool_windows(f, self.pool) for f in window_feats]).astype(np.float32)

    def song_features(self, paths: list[str], keep_windows: bool = False, use_cache: bool = True,
                      desc: str = "features") -> SongFeatures:
        """Pooled vectors of the songs (NaN rows for files that failed), cached per file when a cache is set."""
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
        out.vectors[i] = pool_windows(feats, self.pool)
        if out.windows is not None:
            out.windows[i] = feats


NOTED_FAILED_FRACTION = 0.01  # more skipped files than this: their causes are repeated at the end of the command


def failure_causes(paths, failures: list[tuple[int, str]], examples: int = 2) -> list[str]:
    """The failures grouped by cause, most frequent first: "40 × 'reason' (e.g. a.mp3, b.mp3)". Reasons that differ
    only in their numbers (sizes, positions) are one cause."""
    import re

    groups: dict[str, list[tuple[int, str]]] = {}
    for i, reason in failures:
        groups.setdefault(re.sub(r"\d+", "#", reason), []).append((i, reason))
    out = []
    for members in sorted(groups.values(), key=len, reverse=True):
        names = [printable(Path(paths[i]).name) for i, _ in members[:examples]]
        more = ", ..." if len(members) > examples else ""
        out.append(f"{len(members)} × '{members[0][1]}' (e.g. {', '.join(names)}{more})")
    return out


def report_failures(run_dir, keys, paths, failures: list[tuple[int, str]], max_failed_fraction: float) -> None:
    """failed.csv in the run folder and the failures' causes, grouped: printed now, and again at the end of the
    command when more than 1 % of the files failed (a systematic failure must not pass for a few bad files); a clear
    error, with the causes, when more than `max_failed_fraction` failed."""
    if not failures:
        return
    rows = [(keys[i], paths[i], reason) for i, reason in failures]
    listed = Path(run_dir) / "failed.csv"
    write_csv(listed, ("key", "path", "reason"), rows)
    n, total = len(rows), len(paths)
    causes = failure_causes(paths, failures)
    if n > max_failed_fraction * total:
        raise SiamrecError(
            f"{n} of {total} audio files failed to decode (more than data.max_failed_fraction={max_failed_fraction}): "
            f"{'; '.join(causes)}; all are listed in {listed}")
    report = (f"skipped {n} of {total} files ({100 * n / total:.1f} %) that could not be decoded, listed in {listed}:"
              + "".join(f"\n  {cause}" for cause in causes))
    print(report)
    if n > NOTED_FAILED_FRACTION * total:
        closing_note(report)


# --- building a bundle's model, with its label-free preparation cached ------------------------------------------
def make_bundle(backbone_cfg):
    """The bundle of `backbone` (built from its YAML's `_target_`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(backbone_cfg, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, SiamrecError):
            raise cause from None
        text = str(cause or exc).splitlines()[0]
        raise SiamrecError(f"backbone: {text}") from None


def prepared_model(bundle, cfg, pool_paths: list[str], clip=None, progress: bool = True):
    """The bundle's model; for bundles that estimate label-free statistics (e.g. dataset BatchNorm statistics),
    estimated once over (a seeded sample of) `pool_paths`' windows and cached by the content of those files, so a
    second run over the same library decodes nothing."""
    clip = cfg.clip if clip is None else clip
    model = bundle.build(cfg.paths)
    if not bundle.needs_preparation:
        return model
    if not pool_paths:
        raise SiamrecError(f"backbone {bundle.name} estimates statistics over audio; it needs an audio library")
    limit = bundle.prepare_max_windows
    rng = np.random.default_rng(0)  # label-free statistics of a library: the same for every run and seed
    if len(pool_paths) > limit:
        pool_paths = [pool_paths[j] for j in sorted(rng.choice(len(pool_paths), limit, replace=False))]
    cache_root = Path(str(cfg.paths.cache)).expanduser()
    digests = FileDigests(cache_root)
    h = hashlib.sha256(fingerprint(bundle, model, clip).encode())
    for p in sorted(pool_paths):
        try:
            h.update(digests.digest(p).encode())
        except OSError:
            h.update(p.encode())
    cached = cache_root / "prepared" / f"{h.hexdigest()[:20]}.npz"
    if cached.is_file():
        try:
            z = read_checked_npz(cached)  # sha256-checked: a damaged entry is recomputed
            model.set_weights([z[f"arr_{i}"] for i in range(len(z))])
            return model
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed
            pass
    plan = window_plan(bundle, clip)
    windows = [w for _, w, err, _ in tqdm(decode_stream(list(enumerate(pool_paths)), plan,
                                                        decode_workers(cfg.features)),
                                           total=len(pool_paths), desc="decoding for statistics", unit="file",
                                           disable=not progress) if err is None]
    if not windows:
        raise SiamrecError(f"backbone {bundle.name}: none of the {len(pool_paths)} files could be decoded "
                           "to estimate its statistics")
    windows = np.concatenate(windows)
    if len(windows) > limit:
        windows = windows[np.sort(rng.choice(len(windows), limit, replace=False))]
    bundle.prepare(model, windows)
    write_checked_npz(cached, {f"arr_{i}": w for i, w in enumerate(model.get_weights())})
    return model
