"""How many neighbours should a seed be expanded with? Validation and label-free MAP per `query_expansion`.

    python scripts/bench_expansion.py [--ks 0 1 2 3 5 8] [--seeds 0 1 2] [--sets gtzan genres emotions raga]
                                      [--extra KEY=VALUE ...]

A playlist is ranked by the seed expanded with its k nearest songs (siamrec.index.Index.expanded; the config's
`query_expansion`). This prints, for each k, the evidence the default is chosen on:

* trained heads: the validation MAP of the default Siamese head (`+model=siamese`, its LDA share chosen as usual)
  trained with `model.refit=false`, so that no validation song is in its training: GTZAN's artist-filtered
  transfer features, and Emotify's 400 excerpts with genres and with the crowd-sourced emotion tags (musicnn_msd,
  clip.windows=all, group-aware stratified splits);
* the label-free default (`+model=identity`, no training, so its test songs are as unseen as validation ones):
  test MAP on Emotify's genres and emotions and RagaVeda leave-one-out (69 clips, eval.protocol=cross).

A second table: seeds of a rare kind. Expansion adds a seed's k nearest songs; when the seed's label has fewer
songs than that in the library, some of them are necessarily of other labels. For every label in turn, the
gallery (the same split) keeps only `--rare` songs of that label (drawn at random, `--draws` times) and every song
of the others; the figure is the MAP of those few songs as seeds, mean over labels, draws and seeds. It is the
listener's case of a style with a handful of songs in a large library.

Every figure is a mean over the seeds (RagaVeda has none). The shared data is read from $SIAMREC_SHARED, or
../shared next to the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from benchkit import SHARED, labels_and_split, table

import bench_gtzan_features as gtzan


def scores(run: Path, cfg, split_name: str, ks, rare: int, draws: int,
           protocol: str | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """({k: MAP of the run's `split_name` songs ranked with query expansion k}, {k: MAP of the seeds of a label cut
    to `rare` songs in that gallery, the other labels whole; mean over labels and `draws` random cuts})."""
    from omegaconf import OmegaConf

    from siamrec.evaluation import retrieval, score_embeddings
    from siamrec.runs import read_embeddings

    emb, items = read_embeddings(run)
    y, split = labels_and_split(items)
    eval_cfg = OmegaConf.merge(cfg.eval, {"protocol": protocol}) if protocol else cfg.eval
    whole = {k: score_embeddings(emb, y, split, eval_cfg, expand=k)[split_name]["map"] for k in ks}
    songs = np.flatnonzero(y.any(axis=1) & ((split == split_name) | (protocol == "cross")))
    rng, few = np.random.default_rng(0), {k: [] for k in ks}
    for label in range(y.shape[1]):
        mine = songs[y[songs, label]]
        if len(mine) <= rare:
            continue
        for _ in range(draws):
            kept = rng.choice(mine, rare, replace=False)
            gallery = np.concatenate([songs[~y[songs, label]], kept])
            for k in ks:
                few[k].append(retrieval(emb, y, kept, gallery, eval_cfg, expand=k)["map"])
    return whole, {k: float(np.mean(v)) for k, v in few.items()}


def one_run(command: str, overrides: list[str], seed: int, run: Path):
    from siamrec.cli import compose, seed_everything, strip_hydra
    from siamrec.commands.evaluate import evaluate
    from siamrec.commands.train import train

    cfg = strip_hydra(compose(command, [*overrides, f"seed={seed}", "plots=false"]))
    seed_everything(seed)
    run.mkdir(parents=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the runs' own progress lines
        (train if command == "train" else evaluate)(cfg, run)
    return cfg


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", nargs="+", type=int, default=[0, 1, 2, 3, 5, 8])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sets", nargs="+", default=["gtzan", "genres", "emotions", "raga"],
                   choices=["gtzan", "genres", "emotions", "raga"])
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "siamrec-bench-cache"))
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for the Siamese runs (e.g. model.epochs=2)")
    p.add_argument("--rare", type=int, default=3, help="songs a rare kind keeps in the gallery (second table)")
    p.add_argument("--draws", type=int, default=10, help="random cuts of each label to --rare songs")
    args = p.parse_args()
    emotify, raga = SHARED / "audio" / "emotify", SHARED / "audio" / "ragaveda"
    if not (SHARED / gtzan.FEATURES / "gtzan_genre.csv").is_file() or not (emotify / "genres.csv").is_file():
        print(f"no GTZAN features / Emotify audio under {SHARED}: set SIAMREC_SHARED")
        return 2
    audio = ["backbone=musicnn_msd", "clip.windows=all", f"paths.cache={args.cache}", f"paths.shared={SHARED}"]
    columns: dict[str, list[tuple[dict[int, float], dict[int, float]]]] = {}
    rare = (args.rare, args.draws)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_expansion_") as tmp:
        for name in args.sets:
            for seed in args.seeds if name != "raga" else [0]:
                t0, run = time.time(), Path(tmp) / f"{name}-{seed}"
                if name == "gtzan":
                    cfg = one_run("train", [*gtzan.data_overrides(SHARED), "+model=siamese", "model.refit=false",
                                                  *args.extra],
                                  seed, run)
                    columns.setdefault("GTZAN, siamese, valid", []).append(scores(run, cfg, "valid", args.ks, *rare))
                elif name == "raga":
                    cfg = one_run("evaluate", ["+model=identity", "data=folder", f"data.root={raga}", *audio], seed, run)
                    columns.setdefault("RagaVeda, identity, leave-one-out", []).append(
                        scores(run, cfg, "test", args.ks, *rare, protocol="cross"))
                else:
                    data = ["data=csv", f"data.manifest={emotify / (name + '.csv')}", *audio]
                    cfg = one_run("train", [*data, "+model=siamese", "model.refit=false", *args.extra], seed, run)
                    columns.setdefault(f"Emotify {name}, siamese, valid", []).append(scores(run, cfg, "valid", args.ks, *rare))
                    cfg = one_run("evaluate", [*data, "+model=identity"], seed, Path(f"{run}-identity"))
                    columns.setdefault(f"Emotify {name}, identity, test", []).append(scores(run.with_name(
                        f"{run.name}-identity"), cfg, "test", args.ks, *rare))
                print(f"  done: {name} seed {seed} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"\nMAP per query expansion k ({date.today()}, {platform.machine()}, {os.cpu_count()} cores, seeds "
          f"{args.seeds}, {time.time() - start:.0f} s in all); siamese: model.refit=false, its validation split")
    names = list(columns)
    trained = [n for n in names if "siamese" in n]
    free = [n for n in names if "identity" in n]
    for which, title in ((0, None), (1, f"\nMAP of the seeds of a rare kind: each label in turn cut to {args.rare} songs "
                                        f"in the gallery, the others whole ({args.draws} random cuts per label)")):
        if title:
            print(title)
        mean = {n: {k: float(np.mean([c[which][k] for c in columns[n]])) for k in args.ks} for n in names}
        rows = [[str(k), *[f"{mean[n][k]:.4f}" for n in names]] for k in args.ks]
        headers = ["query_expansion", *names]
        for group, head in ((trained, "mean, trained (valid)"), (free, "mean, label-free (test)")):
            if group:
                headers.append(head)
                for row, k in zip(rows, args.ks):
                    row.append(f"{np.mean([mean[n][k] for n in group]):.4f}")
        print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
