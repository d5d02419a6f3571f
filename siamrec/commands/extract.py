"""`extract [run=RUN] data=...`: embed a whole library into a resumable feature store, streaming, in bounded memory.

With `run=RUN` the library is embedded with the run's model; without it, with the pretrained backbone as it is
(the identity model of `backbone`, made once and kept in the output folder), so a listener's library needs no run
and no labels. The output folder is `extract.out`, else, for data=library|beets, the library's own index folder
under the user's data directory (siamrec.data.music.library_folder), else this command's run folder.

The songs not yet in the store of the output folder (see siamrec.store: rows keyed by the file's content, so an
edited song is embedded again and an unchanged one is not read at all) go to the engine (`extract.engine`,
siamrec.engines), which embeds them through the one extractor and stores them in shards. At the end the command
assembles `embeddings.npy` + `items.csv` (library order, with each song's metadata; deleted songs are gone) from
the store (without run=: normalised with features.normalise fitted on all of them, siamrec.encoder.fit_library_normaliser),
keeps the model files alongside (so `recommend run=OUT` and `serve run=OUT` work and embed new songs),
and writes `failed.csv` and the summary `extract.json`; `progress.json` tells how far it is (siamrec.progress).
Its last line is the output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from siamrec.embedder import ExtractJob, RunEmbedder, embed_with_run
from siamrec.encoder import LIBRARY_NORMALISER, fit_library_normaliser
from siamrec.engines import make_engine
from siamrec.errors import SiamrecError
from siamrec.extractor import decode_workers, report_failures
from siamrec.pipeline import Data, require_head, save_embeddings
from siamrec.progress import Progress
from siamrec.runs import (atomic_write_bytes, existing_run, first_few, mark_finished, model_files, read_csv,
                          unmark_finished, write_embeddings, write_json)
from siamrec.schema import override_value
from siamrec.store import FeatureStore, run_fingerprint


LISTENER_SOURCES = ("library", "beets")  # a listener's library: its index folder lives in the user's data directory


def output_folder(cfg, run_dir) -> Path:
    """Where extract writes: extract.out, else a listener library's own index folder, else the run folder. A music
    folder that is not there gets none (a mistyped data.root leaves nothing behind)."""
    if cfg.data.source == "library":
        from siamrec.data.music import music_root

        music_root(cfg.data)
    if cfg.extract.out:
        return Path(str(cfg.extract.out)).expanduser()
    if cfg.data.source in LISTENER_SOURCES:
        from siamrec.data.music import library_folder

        return library_folder(cfg.data)
    return Path(run_dir)


def run_or_library(cfg, run_dir) -> Path:
    """The finished run folder `run=` names; without run=, for a listener's library (data=library|beets), its
    index folder, built or updated first as `extract` does (only new and changed songs are embedded)."""
    if not cfg.get("run") and cfg.data.source in LISTENER_SOURCES:
        return extract(cfg, run_dir)
    return existing_run(cfg.run)


def extract(cfg, run_dir) -> Path:
    run = existing_run(cfg.run) if cfg.get("run") else None  # before anything is written
    out = output_folder(cfg, run_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SiamrecError(f"extract.out={out}: cannot make the folder ({exc.strerror or exc}); "
                           "choose a folder you can write to") from None
    print(f"index folder: {out}", flush=True)
    progress = Progress(out)
    try:
        return _extract(cfg, run, out, progress)
    except KeyboardInterrupt:
        progress.finish("interrupted", "interrupted; run the same command to finish")
        raise
    except BaseException as exc:
        progress.finish("failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise


def _extract(cfg, run: Path | None, out: Path, progress: Progress) -> Path:
    from siamrec.data.sources import load_library

    started = time.perf_counter()
    if run is not None and out.resolve() == run.resolve():
        raise SiamrecError(f"extract.out={out} is the run folder itself, whose embeddings would be overwritten; "
                           "choose another folder")
    shard_size = int(cfg.extract.shard_size)
    if shard_size < 1:
        raise SiamrecError(f"extract.shard_size={shard_size}: must be at least 1")
    engine = make_engine(cfg.extract.engine)
    lib = load_library(cfg.data, cfg.paths)
    unmark_finished(out)  # no run for run= until everything below is written
    if lib.features is not None:  # feature rows (data=features): nothing to decode, the head alone embeds them
        if run is None:
            raise SiamrecError(f"data={cfg.data.source} gives feature rows, not audio: there is nothing to embed "
                               "without a trained model; pass run=RUN_FOLDER")
        data, emb = embed_with_run(RunEmbedder(run), cfg, Data(lib, np.full(len(lib), ""), lib.label_names), out)
        save_embeddings(out, data, emb)
        mark_finished(out)
        print(f"embedded {len(emb)} feature rows into {out}")
        progress.finish("ready", f"{len(emb)} feature rows embedded")
        return out
    model = run if run is not None else pretrained_model(cfg, out, lib)

    store = FeatureStore(out / "store", run_fingerprint(model))
    store.lock()
    try:
        found, todo = store.lookup(lib.keys, lib.paths)
        print(f"{len(lib)} files: {len(found)} already in {store.dir}, {len(todo)} to embed "
              f"({engine.name} engine)")
        progress.start_embedding(len(lib), len(found))
        job = ExtractJob(run=str(model), batch_size=int(cfg.features.batch_size),
                         workers=decode_workers(cfg.features), threads=cfg.features.threads,
                         runtime=str(cfg.features.runtime), shard_size=shard_size,
                         cache=str(Path(str(cfg.paths.cache)).expanduser()), library_normalised=run is not None)
        try:
            failures = engine.run(job, [(i, lib.paths[i]) for i in todo], lib.keys, store,
                                  progress=progress.song) if todo else []
        except KeyboardInterrupt as exc:  # the engine stored every finished song first
            exc.resume_hint = (f"every finished song is kept in {store.dir}; run the same command "
                               f"(extract.out={out}) to finish")
            raise
        failures.sort()
        final, missing = store.lookup(lib.keys, lib.paths) if todo else (found, [])  # nothing new: as found
        failed = {i for i, _ in failures}
        lost = [i for i in missing if i not in failed]
        if lost:  # a file changed while it was being embedded
            failures += [(i, "changed while it was being embedded; run the same command again") for i in lost]
        rows = sorted(final)
        emb = store.embeddings([final[i] for i in rows])
        if run is None:  # the pretrained model: features.normalise fitted on the library as it is now
            emb = fit_library_normaliser(model, RunEmbedder(model, finished=False).spec, emb)
        kept = lib.subset(rows)
        gone = gone_songs(out, lib.keys)
        write_embeddings(out, emb, kept.keys, kept.paths, kept.labels, [""] * len(kept), kept.groups, kept.meta)
        if run is not None:
            for path in [*model_files(run), run / LIBRARY_NORMALISER]:
                if path.is_file():
                    atomic_write_bytes(out / path.name, path.read_bytes())
    finally:
        store.unlock()
    wall = time.perf_counter() - started
    embedded = len(todo) - len(failures)
    summary = {"items": len(lib), "embedded": embedded, "reused": len(found), "failed": len(failures),
               "damaged_shards": [p.name for p in store.damaged], "engine": engine.name,
               **getattr(engine, "stats", {}),
               "gone": len(gone), "wall_s": round(wall, 3), "files_per_s": round(embedded / wall, 3), "rows": len(kept),
               "out": str(out)}
    write_json(out / "extract.json", summary)
    write_json(out / "data_report.json", lib.report)  # what the scan found (folders not read, CUE albums, ...)
    _print_summary(summary)
    if gone:
        print(f"extract: {len(gone)} song(s) of the index are no longer in the library (deleted, moved or renamed) "
              f"and were left out of it: {first_few(gone)}")
    (out / "failed.csv").unlink(missing_ok=True)
    report_failures(out, lib.keys, lib.paths, failures, float(cfg.data.max_failed_fraction))
    mark_finished(out)
    progress.finish("ready", f"{len(kept)} songs indexed")
    return out


RECOMMENDED = ("windows", "pool", "normalise")  # a backbone YAML's recommendations to clip and features


def _index_settings(clip: dict, normalise: str) -> dict:
    """The settings an index folder's song vectors depend on besides the backbone: its clip (but the rate and window
    length, which the backbone fixes) and features.normalise, keyed as the command line names them."""
    return {**{f"clip.{k}": v for k, v in clip.items() if k not in ("sr", "duration")}, "features.normalise": normalise}


def pretrained_model(cfg, out: Path, lib) -> Path:
    """`out` as a model folder: the identity model of cfg.backbone with cfg.clip (extractor.json, backbone.keras,
    head.json), made on the first extract into `out` and kept, so the store's fingerprint stays the same and an
    unchanged library is never embedded again. A folder made with other backbone or clip settings is refused."""
    import json

    from omegaconf import OmegaConf

    from siamrec.encoder import make_encoder
    from siamrec.models.heads import IdentityHead

    spec_file, head_file = out / "extractor.json", out / "head.json"
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    if spec_file.is_file() and head_file.is_file():
        try:
            spec = json.loads(spec_file.read_text(encoding="utf-8"))
            member = spec["members"][0]
            saved = _index_settings(member["clip"], (spec.get("normalise") or {}).get("kind", "none"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise SiamrecError(f"the index folder {out}: its extractor.json is damaged; delete the folder to index "
                               "the library again") from None
        # what a backbone recommends to clip and features (windows, pool, normalise) is compared as those settings
        model_keys = {k: v for k, v in backbone.items() if k not in RECOMMENDED}
        if {k: v for k, v in member.get("backbone", {}).items() if k not in RECOMMENDED} != model_keys:
            raise SiamrecError(f"the index folder {out} was made with another backbone "
                               f"({member.get('backbone', {}).get('name')}); use it (backbone=...), another "
                               "extract.out, or delete the folder to index the library again")
        now = _index_settings(OmegaConf.to_container(cfg.clip, resolve=True), str(cfg.features.normalise))
        differ = [key for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
        if differ:
            was = [f"{key}={override_value(saved.get(key))}" for key in differ]
            raise SiamrecError(
                f"the index folder {out} was made with other settings: "
                f"{', '.join(f'{w} (now {override_value(now.get(key))})' for w, key in zip(was, differ))}; add "
                f"'{' '.join(was)}' to use it as it is, or delete the folder (or give another extract.out) to index "
                "the library again with these")
        return out
    if cfg.get("model"):  # extract without run= embeds with the pretrained backbone as it is: no head to fit
        require_head(cfg, "extract").untrained(cfg.model.name, "extract")
    print(f"no run given: embedding with the pretrained backbone {backbone.get('name')} as it is (identity model)")
    encoder = make_encoder(cfg, Data(lib, np.full(len(lib), ""), lib.label_names))
    encoder.save(out)
    IdentityHead().save(out)  # last: a folder with head.json holds a whole model
    return out


def gone_songs(out: Path, keys) -> list[str]:
    """The songs of the index in `out` (its items.csv, from the last extract) that the library no longer has."""
    items = out / "items.csv"
    if not items.is_file():
        return []
    try:
        before = [item["key"] for item in read_csv(items, f"the index folder {out}")]
    except (SiamrecError, KeyError):  # damaged: it is written afresh below, and there is nothing to compare
        return []
    now = set(keys)
    return [key for key in before if key not in now]


def _print_summary(summary: dict) -> None:
    print(f"extract: {summary['embedded']} embedded, {summary['reused']} reused from the store, "
          f"{summary['failed']} failed; {summary['wall_s']:.1f} s ({summary['files_per_s']:.2f} files/s); "
          f"{summary['rows']} items in {Path(summary['out']) / 'embeddings.npy'}")
