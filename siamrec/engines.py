"""Extraction engines: songs in → store rows and failures out.

An engine takes the songs still to embed (index, path), embeds them with a run's model through the one extractor
(`SongEmbedder`, which loads the model once per process or actor) and writes the rows to the store as shards of
`shard_size` songs; it returns the failures. `local` overlaps decoding in worker processes with inference in this
process; a distributed engine implements the same `run` (see README, "Many machines").
"""

from __future__ import annotations

import numpy as np

from siamrec.embedder import ExtractJob, SongEmbedder
from siamrec.extractor import file_stat


class LocalEngine:
    """`extract.engine=local` (conf/engine/local.yaml): decoding in worker processes overlapped with inference
    here; rows stored every `shard_size` songs."""

    name = "local"

    def __init__(self):
        pass

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


def make_engine(engine_cfg):
    """The engine `extract.engine` describes (its YAML's `_target_`: LocalEngine, siamrec.engines_ray.RayEngine or a
    user's own, with its settings)."""
    from siamrec.configs import build

    return build(engine_cfg, "extract.engine")
