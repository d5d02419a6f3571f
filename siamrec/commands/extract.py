"""`extract run=RUN data=...`: embed a whole library with a run's model, streaming, resumably, in bounded memory.

Worker processes decode and resample the files while the model embeds batches. Every `extract.shard_size`
files the embeddings go to the feature store (`OUT/store/shard-*.npz`, siamrec.store) of the output folder
(`extract.out`, default this command's run folder); started again with the same `extract.out`, the command
skips the stored files and embeds the rest. At the end it assembles `embeddings.npy` + `items.csv` (library
order) from the shards, copies the run's model files alongside (so `recommend run=OUT` also embeds new songs),
and writes `failed.csv` and the summary `extract.json`. The per-file feature cache of train/evaluate is not
used: hashing whole songs would cost more than decoding their clip window.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from siamrec.embedder import RunEmbedder, embed_with_run
from siamrec.errors import SiamrecError
from siamrec.features import decode_workers, report_failures, stream_features
from siamrec.pipeline import Data, save_embeddings
from siamrec.runs import atomic_write_bytes, existing_run, write_embeddings, write_json
from siamrec.store import MODEL_FILES, FeatureStore, run_fingerprint

SHOWN_FAILURES = 5


def extract(cfg, run_dir) -> dict:
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
    lib = load_library(cfg.data, cfg.paths)
    if lib.features is not None:  # feature rows (data=features): nothing to decode, the head alone embeds them
        data, emb = embed_with_run(run, cfg, Data(lib, np.full(len(lib), ""), lib.label_names), out)
        save_embeddings(out, data, emb)
        print(f"embedded {len(emb)} feature rows into {out}")
        return {"items": len(lib), "embedded": len(emb), "already_done": 0, "failed": 0}

    embedder = RunEmbedder(run)
    store = FeatureStore(out / "store", run_fingerprint(run, cfg.clip))
    done = store.keys()
    todo = [(i, path) for i, (key, path) in enumerate(zip(lib.keys, lib.paths)) if key not in done]
    print(f"{len(lib)} files: {len(lib) - len(todo)} already in {store.dir}, {len(todo)} to embed")
    failures = _embed_into(store, todo, lib.keys, embedder, cfg, shard_size) if todo else []

    rows, emb = store.rows(lib.keys)
    kept = lib.subset(rows)
    write_embeddings(out, emb, kept.keys, kept.paths, kept.labels, [""] * len(kept))
    for name in MODEL_FILES:
        if (run / name).is_file():
            atomic_write_bytes(out / name, (run / name).read_bytes())
    wall = time.perf_counter() - started
    summary = {"items": len(lib), "embedded": len(todo) - len(failures), "already_done": len(lib) - len(todo),
               "failed": len(failures), "wall_s": round(wall, 3),
               "files_per_s": round(len(todo) / wall, 3), "rows": len(kept), "out": str(out)}
    write_json(out / "extract.json", summary)
    _print_summary(summary, failures, lib.keys)
    (out / "failed.csv").unlink(missing_ok=True)
    report_failures(out, lib.keys, lib.paths, failures, float(cfg.data.get("max_failed_fraction", 0.2)))
    return summary


def _embed_into(store: FeatureStore, todo, keys, embedder: RunEmbedder, cfg, shard_size: int) -> list:
    """Embed the (index, path) items of `todo` into `store`, in shards of `shard_size` files; returns the
    failures (index, reason). On Ctrl-C the finished rows are stored first."""
    workers = decode_workers(cfg.features)
    failures, indices, feats = [], [], []

    def flush(everything: bool):
        """Store the pending rows as full shards (and the remainder too when `everything`)."""
        if not indices:
            return
        rows = np.concatenate(feats)
        end = len(indices) if everything else len(indices) // shard_size * shard_size
        for start in range(0, end, shard_size):
            stop = min(start + shard_size, end)
            store.write([keys[i] for i in indices[start:stop]], embedder.from_features(rows[start:stop]))
        del indices[:end]
        feats[:] = [rows[end:]]

    stream = stream_features(todo, embedder.backbone, cfg.clip, int(cfg.features.batch_size), workers,
                             desc="extract")
    try:
        for batch_indices, batch_feats, batch_failures in stream:
            failures += batch_failures
            indices.extend(batch_indices)
            feats.append(batch_feats)
            flush(everything=False)
    except KeyboardInterrupt:
        flush(everything=True)
        print(f"interrupted: finished shards kept in {store.dir} ({len(store.shards)}); run the same command with "
              f"extract.out={store.dir.parent} to finish", file=sys.stderr)
        raise
    finally:
        stream.close()  # stops the decoding workers at once on any error
    flush(everything=True)
    return failures


def _print_summary(summary: dict, failures: list, keys: list[str]) -> None:
    print(f"extract: {summary['embedded']} embedded, {summary['already_done']} skipped as already done, "
          f"{summary['failed']} failed; {summary['wall_s']:.1f} s ({summary['files_per_s']:.2f} files/s); "
          f"{summary['rows']} items in {Path(summary['out']) / 'embeddings.npy'}")
    for i, reason in failures[:SHOWN_FAILURES]:
        print(f"  failed: {keys[i]}: {reason}")
    if len(failures) > SHOWN_FAILURES:
        print(f"  ... and {len(failures) - SHOWN_FAILURES} more (see failed.csv)")
