"""`extract run=RUN data=...`: embed a whole library with a run's model, streaming, resumably, in bounded memory.

The songs not yet in the store of the output folder (`extract.out`; see siamrec.store: rows keyed by the file's
content, so an edited song is embedded again) go to the engine (`extract.engine`, siamrec.engines), which embeds
them with the run's bundle, model and clip settings through the one extractor and stores them in shards. At the
end the command assembles `embeddings.npy` + `items.csv` (library order) from the store, copies the run's model
files alongside (so `recommend run=OUT` also embeds new songs), and writes `failed.csv` and the summary
`extract.json`; its last line is the output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from siamrec.embedder import RunEmbedder, embed_with_run
from siamrec.engines import ExtractJob, make_engine
from siamrec.errors import SiamrecError
from siamrec.extractor import decode_workers, report_failures
from siamrec.pipeline import Data, save_embeddings
from siamrec.runs import atomic_write_bytes, existing_run, mark_finished, model_files, unmark_finished, write_embeddings, write_json
from siamrec.store import FeatureStore, run_fingerprint

SHOWN_FAILURES = 5


def extract(cfg, run_dir) -> Path:
    from siamrec.data.sources import load_library

    if not cfg.get("run"):
        raise SiamrecError("extract needs a trained model: pass run=RUN_FOLDER (printed by train)")
    started = time.perf_counter()
    run = existing_run(cfg.run)
    out = Path(str(cfg.extract.out or run_dir)).expanduser()
    if out.resolve() == run.resolve():
        raise SiamrecError(f"extract.out={out} is the run folder itself, whose embeddings would be overwritten; "
                           "choose another folder")
    shard_size = int(cfg.extract.shard_size)
    if shard_size < 1:
        raise SiamrecError(f"extract.shard_size={shard_size}: must be at least 1")
    engine = make_engine(str(cfg.extract.engine), cfg.extract.ray)
    lib = load_library(cfg.data, cfg.paths)
    unmark_finished(out)  # unfinished (not a run for run=) until everything below is written
    if lib.features is not None:  # feature rows (data=features): nothing to decode, the head alone embeds them
        data, emb = embed_with_run(RunEmbedder(run), cfg, Data(lib, np.full(len(lib), ""), lib.label_names), out)
        save_embeddings(out, data, emb)
        mark_finished(out)
        print(f"embedded {len(emb)} feature rows into {out}")
        return out

    store = FeatureStore(out / "store", run_fingerprint(run))
    store.lock()
    try:
        found, todo = store.lookup(lib.keys, lib.paths)
        print(f"{len(lib)} files: {len(found)} already in {store.dir}, {len(todo)} to embed "
              f"({engine.name} engine)")
        job = ExtractJob(run=str(run), batch_size=int(cfg.features.batch_size), workers=decode_workers(cfg.features),
                         shard_size=shard_size, cache=str(Path(str(cfg.paths.cache)).expanduser()))
        try:
            failures = engine.run(job, [(i, lib.paths[i]) for i in todo], lib.keys, store) if todo else []
        except KeyboardInterrupt as exc:  # the engine stored every finished song first
            exc.resume_hint = (f"every finished song is kept in {store.dir}; run the same command "
                               f"(extract.out={out}) to finish")
            raise
        failures.sort()
        final, missing = store.lookup(lib.keys, lib.paths)
        failed = {i for i, _ in failures}
        lost = [i for i in missing if i not in failed]
        if lost:  # a file changed while it was being embedded
            failures += [(i, "changed while it was being embedded; run the same command again") for i in lost]
        rows = sorted(final)
        emb = store.embeddings([final[i] for i in rows])
        kept = lib.subset(rows)
        write_embeddings(out, emb, kept.keys, kept.paths, kept.labels, [""] * len(kept), kept.groups)
        for path in model_files(run):
            atomic_write_bytes(out / path.name, path.read_bytes())
    finally:
        store.unlock()
    wall = time.perf_counter() - started
    embedded = len(todo) - len(failures)
    summary = {"items": len(lib), "embedded": embedded, "reused": len(found), "failed": len(failures),
               "damaged_shards": [p.name for p in store.damaged], "engine": engine.name,
               **getattr(engine, "stats", {}),
               "wall_s": round(wall, 3), "files_per_s": round(embedded / wall, 3), "rows": len(kept), "out": str(out)}
    write_json(out / "extract.json", summary)
    _print_summary(summary, failures, lib.keys)
    (out / "failed.csv").unlink(missing_ok=True)
    report_failures(out, lib.keys, lib.paths, failures, float(cfg.data.max_failed_fraction))
    mark_finished(out)
    return out


def _print_summary(summary: dict, failures: list, keys: list[str]) -> None:
    print(f"extract: {summary['embedded']} embedded, {summary['reused']} reused from the store, "
          f"{summary['failed']} failed; {summary['wall_s']:.1f} s ({summary['files_per_s']:.2f} files/s); "
          f"{summary['rows']} items in {Path(summary['out']) / 'embeddings.npy'}")
    for i, reason in failures[:SHOWN_FAILURES]:
        print(f"  failed: {keys[i]}: {reason}")
    if len(failures) > SHOWN_FAILURES:
        print(f"  ... and {len(failures) - SHOWN_FAILURES} more (see failed.csv)")
