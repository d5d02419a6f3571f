"""The Ray engine: extraction spread over a Ray cluster with Ray Data (`extract.engine=ray`; README, "Many machines").

    driver: the songs still to do → ray.data.from_items({index, path, key})
      → actor pool (`extract.ray.actors`, one per CPU of the cluster by default; `extract.ray.num_gpus` each):
        every actor loads the run's model once (SongEmbedder) and decodes + embeds its batches of songs, returning
        one row per song (index, key, size, mtime, digest, embedding, error, and where and how long it ran)
      → driver: streams the rows back (iter_batches) and writes them into the same store as the local engine,
        a shard every `shard_size` embedded songs.

So a killed driver keeps every finished shard and a re-run skips those songs (`extract` looks them up in the
store first). A song that fails is a row with its error, returned as a failure (failed.csv), never a failed job.
The songs' files must be readable at the same paths on every node and the store must be on storage the driver
writes (shared storage when the driver moves between machines).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from siamrec.engines import ExtractJob, SongEmbedder
from siamrec.errors import SiamrecError
from siamrec.extractor import file_stat

INSTALL = 'extract.engine=ray needs Ray, which is not installed: pip install -e ".[ray]"'
MAX_BLOCKS = 20_000  # one block per actor call: rows come back call by call (a block is returned whole)
COLUMNS = ("index", "key", "size", "mtime", "digest", "embedding", "error", "actor", "node", "busy_s", "cpu_s",
           "load_s")


def _reachable(address: str, timeout: float = 10.0) -> None:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise SiamrecError(f"extract.ray.address={address}: no Ray cluster answers there ({exc}); start one with "
                           "`ray start --head` and give its address (HOST:PORT), or use null for a local one") from None


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    return host == "localhost" or host.startswith("127.") or host == "::1"


@contextmanager
def _loopback_only():
    """Loopback stays loopback: a cluster this engine starts for itself serves this machine only and listens on
    127.0.0.1 (not on the machine's network address), and `extract.ray.address=127.0.0.1:PORT` reaches a cluster
    listening there (Ray resolves 127.0.0.1 to the network address unless its cluster mode is off, as on macOS)."""
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: its default then
        yield
        return
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


class EmbedSongs:
    """An actor of the pool: the run's model loaded once; a batch of songs in, one row per song out."""

    def __init__(self, job: ExtractJob):
        started, cpu = time.perf_counter(), time.process_time()
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import kapre  # noqa: F401 - registers kapre's layers: a model with kapre layers loads only after this import
        import ray
        import tensorflow as tf

        # TensorFlow's thread pools as wide as the actor's CPUs (by default as wide as the machine: with one actor
        # per core, every actor's pools would compete for every core)
        cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(cpus)
        except RuntimeError:  # TensorFlow already initialised in this process: keep its pools
            pass

        # decoding happens here, in the actor (one actor per core): no decoding processes inside an actor
        self.embedder = SongEmbedder(replace(job, workers=0), progress=False)
        self.node = ray.get_runtime_context().get_node_id()
        self.actor = f"{self.node[:12]}:{os.getpid()}"
        self.load_s = time.perf_counter() - started
        self.load_cpu_s = time.process_time() - cpu

    def _embed(self, items):
        """(index, embedding, error, digest) per song: the song vectors of the batch through the run's head; a song
        that breaks the batch in an unexpected way is retried alone, so that only it fails."""
        try:
            rows = list(self.embedder.stream(items))
        except Exception:  # noqa: BLE001 - isolate the culprit below
            if len(items) == 1:
                raise
            rows = []
            for item in items:
                try:
                    rows += self.embedder.stream([item])
                except Exception as exc:  # noqa: BLE001 - one song's failure, reported as such
                    rows.append((item[0], None, f"{type(exc).__name__}: {exc}", ""))
        ok = [r for r in rows if r[2] is None]
        embedded = dict(zip([r[0] for r in ok], self.embedder.embed(np.stack([r[1] for r in ok])))) if ok else {}
        return [(i, embedded.get(i), error, digest) for i, _, error, digest in rows]

    def __call__(self, batch: dict):
        import pyarrow as pa

        started, cpu = time.perf_counter(), time.process_time()
        index = [int(i) for i in batch["index"]]
        paths = dict(zip(index, (str(p) for p in batch["path"])))
        keys = dict(zip(index, (str(k) for k in batch["key"])))
        rows = {name: [] for name in COLUMNS}
        for i, emb, error, digest in self._embed(list(paths.items())):
            size = mtime = -1
            if error is None:
                try:
                    size, mtime = file_stat(paths[i])
                except OSError as exc:
                    error = f"cannot read: {exc.strerror or exc}"
            rows["index"].append(i)
            rows["key"].append(keys[i])
            rows["size"].append(size)
            rows["mtime"].append(mtime)
            rows["digest"].append(digest or "")
            rows["embedding"].append([] if error is not None else np.asarray(emb, np.float32).tolist())
            rows["error"].append(error or "")
        n = len(rows["index"])
        busy, cpu = time.perf_counter() - started, time.process_time() - cpu
        rows["actor"] = [self.actor] * n
        rows["node"] = [self.node] * n
        rows["busy_s"] = [busy / max(n, 1)] * n
        rows["cpu_s"] = [cpu / max(n, 1)] * n
        rows["load_s"] = [self.load_s] * n
        types = {"embedding": pa.list_(pa.float32()), "size": pa.int64(), "mtime": pa.int64(), "index": pa.int64()}
        return pa.table({name: pa.array(values, type=types.get(name)) for name, values in rows.items()})


class RayEngine:
    """`extract.engine=ray`: the `extract.ray` settings (address, actors, num_gpus); see the module docstring."""

    name = "ray"

    def __init__(self, ray_cfg=None):
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise SiamrecError(INSTALL) from None
        cfg = dict(ray_cfg or {})
        self.address = cfg.get("address")
        self.address = None if self.address in (None, "", "null") else str(self.address)
        actors, gpus = cfg.get("actors"), cfg.get("num_gpus") or 0
        if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
            raise SiamrecError(f"extract.ray.actors={actors!r}: an integer >= 1, or null (one per CPU of the cluster)")
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
            raise SiamrecError(f"extract.ray.num_gpus={gpus!r}: a number >= 0 (GPUs per actor)")
        self.actors, self.num_gpus = actors, float(gpus)
        self.stats: dict = {}

    # --- the cluster ------------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        import logging

        import ray

        where = self.address or "a new local cluster"
        if self.address and self.address not in ("auto", "local") and "://" not in self.address:
            _reachable(self.address)  # else Ray retries an address where nothing listens for minutes
        try:
            if self.address is None or _loopback(self.address):
                with _loopback_only():
                    ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:  # e.g. a wrong token
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SiamrecError(f"extract.ray.address={self.address}: cannot start or reach Ray at {where}: "
                               f"{first}") from None

    def _pool_size(self, n_songs: int) -> int:
        import ray

        resources = ray.cluster_resources()
        if self.actors is not None:
            size = self.actors
        elif self.num_gpus > 0:
            size = int(resources.get("GPU", 0) // self.num_gpus)
            if size < 1:
                raise SiamrecError(f"extract.ray.num_gpus={self.num_gpus:g}: the cluster has "
                                   f"{resources.get('GPU', 0):g} GPUs")
        else:
            size = int(resources.get("CPU", 1))
        return max(1, min(size, n_songs))

    # --- the engine -------------------------------------------------------------------------------------------------
    def run(self, job: ExtractJob, todo: list[tuple[int, str]], keys: list[str], store,
            progress=None) -> list[tuple[int, str]]:
        import ray

        started = time.perf_counter()
        own = not ray.is_initialized()
        if own:
            self._connect()
        try:
            init_s = time.perf_counter() - started
            return self._run(job, todo, keys, store, started, init_s, progress)
        finally:
            if own:
                ray.shutdown()

    def _run(self, job, todo, keys, store, started, init_s, progress=None):
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = sys.stderr.isatty()
        size = self._pool_size(len(todo))
        # songs per actor call: every actor gets some, and at most MAX_BLOCKS blocks (one per call) for any library
        per_call = max(1, min(job.batch_size, -(-len(todo) // size)), -(-len(todo) // MAX_BLOCKS))
        print(f"ray: {size} actors ({self.num_gpus:g} GPU each) on "
              f"{len([n for n in ray.nodes() if n.get('Alive')])} nodes at {self.address or 'a local cluster'}")
        ds = ray.data.from_items([{"index": i, "path": p, "key": keys[i]} for i, p in todo],
                                 override_num_blocks=-(-len(todo) // per_call))
        ds = ds.map_batches(EmbedSongs, fn_constructor_kwargs={"job": job}, batch_size=per_call,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
                            num_cpus=1, num_gpus=self.num_gpus or None)

        failures, pending = [], []
        actors: dict[str, dict] = {}
        nodes: dict[str, int] = {}
        first_row = None

        def flush():
            if pending:
                store.write([keys[r["index"]] for r in pending], [r["size"] for r in pending],
                            [r["mtime"] for r in pending], [r["digest"] for r in pending],
                            np.asarray([r["embedding"] for r in pending], np.float32))
                pending.clear()

        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in table.to_pylist():
                    if first_row is None:
                        first_row = time.perf_counter() - started
                    a = actors.setdefault(row["actor"], {"node": row["node"], "files": 0, "busy_s": 0.0,
                                                         "cpu_s": 0.0, "load_s": row["load_s"]})
                    a["files"] += 1
                    a["busy_s"] += row["busy_s"]
                    a["cpu_s"] += row["cpu_s"]
                    nodes[row["node"]] = nodes.get(row["node"], 0) + 1
                    if progress is not None:
                        progress(failed=bool(row["error"]))
                    if row["error"]:
                        failures.append((row["index"], row["error"]))
                        continue
                    pending.append(row)
                    if len(pending) >= job.shard_size:
                        flush()
        except KeyboardInterrupt:
            flush()  # keep every finished song (extract says how to go on)
            raise
        except ray.exceptions.RayError as exc:  # the cluster failed (not a song: songs fail as rows)
            flush()
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise SiamrecError(f"extract.engine=ray: the Ray job failed ({lines[-1] if lines else type(exc).__name__}"
                               f"); every finished song is kept in {store.dir}: run the same command again to "
                               "finish") from None
        flush()
        files = sum(a["files"] for a in actors.values())
        busy = sum(a["busy_s"] for a in actors.values())
        self.stats = {
            "ray_actors": len(actors), "ray_nodes": nodes,
            "ray_init_s": round(init_s, 3),                                      # start or join the cluster
            "ray_actor_load_s": round(max((a["load_s"] for a in actors.values()), default=0.0), 3),
            "ray_first_row_s": round(first_row or 0.0, 3),                        # cluster + actor + first batch
            "ray_actor_files_per_s": round(files / busy, 3) if busy else None,   # one actor's steady rate
            "ray_actor_cpu_ms_per_file": round(1000 * sum(a["cpu_s"] for a in actors.values()) / files, 2)
            if files else None,
        }
        return failures
