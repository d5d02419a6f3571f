"""Extraction engines: songs in → store rows and failures out.

An engine takes the songs still to embed (index, path), embeds them with a run's model through the one extractor
(`SongEmbedder`, which loads the model once per process or actor) and writes the rows to the store as shards of
`shard_size` songs; it returns the failures. `local` overlaps decoding in worker processes with inference in this
process; a distributed engine implements the same `run` (see README, "Many machines").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siamrec.extractor import file_stat


@dataclass(frozen=True)
class ExtractJob:
    """What an engine needs to rebuild the embedder anywhere (plain values, picklable)."""

    run: str
    batch_size: int = 8
    workers: int = 0
    shard_size: int = 256
    cache: str | None = None


class SongEmbedder:
    """A run's model, loaded once: `stream(items)` yields (index, song vector or None, error or None, digest) and
    `embed(vectors)` applies the run's head to a batch of them."""

    def __init__(self, job: ExtractJob, progress: bool = True):
        from omegaconf import OmegaConf

        from siamrec.embedder import RunEmbedder

        self.embedder = RunEmbedder(job.run, finished=False)  # extract checked the run, or is making the model
        cfg = OmegaConf.create({"features": {"batch_size": job.batch_size, "workers": job.workers, "cache": False},
                                "paths": {"cache": job.cache or ""}})
        self.encoder = self.embedder.encoder(cfg)
        for member in self.encoder.members:
            member.extractor.progress = progress

    def stream(self, items, desc: str = "extract"):
        return self.encoder.stream(items, want_digest=True, desc=desc)

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        return self.embedder.from_features(np.asarray(vectors, dtype=np.float32))


class LocalEngine:
    """Decoding in worker processes overlapped with inference here; rows stored every `shard_size` songs."""

    name = "local"

    def run(self, job: ExtractJob, todo: list[tuple[int, str]], keys: list[str], store,
            progress=None) -> list[tuple[int, str]]:
        """Embed `todo` into `store`; `progress(failed=...)` (siamrec.progress.Progress.song) is told of each song."""
        embedder = SongEmbedder(job)
        failures, pending = [], []

        def flush():
            if pending:
                stats = [file_stat(p) for _, p, _, _ in pending]
                store.write([keys[i] for i, *_ in pending], [s for s, _ in stats], [m for _, m in stats],
                            [d for *_, d, _ in pending], embedder.embed(np.stack([v for *_, v in pending])))
                pending.clear()

        paths = dict(todo)
        stream = embedder.stream(todo)
        try:
            for i, vector, error, digest in stream:
                if progress is not None:
                    progress(failed=error is not None)
                if error is not None:
                    failures.append((i, error))
                    continue
                pending.append((i, paths[i], digest, vector))
                if len(pending) >= job.shard_size:
                    flush()
        except KeyboardInterrupt:
            flush()  # keep every finished song (extract says how to go on)
            raise
        finally:
            stream.close()  # stops the decoding workers at once on any error
        flush()
        return failures


def make_engine(name: str, ray_cfg=None):
    """The engine `name`; `ray_cfg` is the `extract.ray` node (address, actors, num_gpus) for the ray engine."""
    from siamrec.errors import SiamrecError

    if name == "local":
        return LocalEngine()
    if name == "ray":
        from siamrec.engines_ray import RayEngine  # optional: pip install -e ".[ray]"

        return RayEngine(ray_cfg)
    raise SiamrecError(f"extract.engine={name!r}: use local or ray")
