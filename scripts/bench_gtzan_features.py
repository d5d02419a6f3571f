"""Benchmark the heads on the real GTZAN transfer features with the artist-filtered split.

For each seed, runs identity, lda, baseline (the dense classifier on the features; its embedding is the
penultimate layer) and siamese with each metric-learning loss, through the project's own train/evaluate
functions, and prints one table of test retrieval scores (test queries against the test gallery, cosine,
relevance = same genre) as mean ± std over the seeds, then a summary line.

    python scripts/bench_gtzan_features.py [--seeds 0 1 2] [--losses triplet_semihard contrastive] [--tsne]
                                           [--models siamese] [--members 1 3 5] [--extra model.dim=256 ...]

The runs skip their t-SNE pictures (most of a run's time) unless --tsne is given. --members trains each Siamese
head once with model.ensemble=max(members) and reports its first n members together as `siamese xN` for each n;
--extra adds overrides to the Siamese runs. The "valid MAP" column is the validation MAP a trained head chose by
(before its refit on train+valid): the evidence a setting is chosen on, the test MAP being what it gives.

The shared data is read from $SIAMREC_SHARED, or ../shared next to the repository.
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
from datetime import datetime
from pathlib import Path

import numpy as np

from benchkit import SHARED, head_scores

FEATURES = "features/gtzan-choi2017"
COLUMNS = (("MAP", "map"), ("MAP@10", "map@10"), ("P@10", "p@10"), ("R-prec", "r_precision"),
           ("valid MAP", "valid_map"))
MODELS = ("identity", "lda", "baseline", "siamese")
BAR = 0.86  # the acceptance bar of the siamese head (default loss): mean test MAP over seeds 0, 1, 2


def data_overrides(root: Path) -> list[str]:
    g = root / FEATURES
    layers = ",".join(str(g / f"gtzan_genre_layer_{i}.npy") for i in range(5))
    return [
        "data=features", f"data.features=[{layers}]", f"data.labels={g / 'gtzan_genre.csv'}",
        "data.label_column=id", "data.key_column=filepath", "split=files",
        f"split.train={g / 'splits/train_filtered.txt'}", f"split.valid={g / 'splits/valid_filtered.txt'}",
        f"split.test={g / 'splits/test_filtered.txt'}",
    ]


def run_one(command: str, overrides: list[str], seed: int, run_dir: Path, members=None) -> dict:
    """One CLI-equivalent run (composed config, seeded like the CLI); returns its heads' scores (head_scores)."""
    from siamrec.cli import compose, seed_everything, strip_hydra
    from siamrec.commands.evaluate import evaluate
    from siamrec.commands.train import train

    cfg = strip_hydra(compose(command, [*overrides, f"seed={seed}"]))
    seed_everything(seed)
    run_dir.mkdir(parents=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the runs' own progress lines
        (train if command == "train" else evaluate)(cfg, run_dir)
    return head_scores(run_dir, cfg, members)


def main() -> int:
    from siamrec.configs import compose, group_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    losses = group_options("loss")
    parser.add_argument("--losses", nargs="+", default=losses, choices=losses)
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every model this many epochs (default: each model's YAML)")
    parser.add_argument("--tsne", action="store_true", help="let each run draw its t-SNE pictures (slow)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--members", nargs="+", type=int, default=None,
                        help="siamese: train model.ensemble=max(N) and score the first n members for each n")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for the siamese runs")
    args = parser.parse_args()

    root = SHARED
    if not (root / FEATURES / "gtzan_genre.csv").is_file():
        print(f"bench_gtzan_features: GTZAN features not found under {root / FEATURES}; "
              "set SIAMREC_SHARED to the shared data folder", file=sys.stderr)
        return 2
    data = data_overrides(root) + ([] if args.tsne else ["plots=false"])
    epochs = {"baseline": [f"model.head_epochs={args.epochs}"], "siamese": [f"model.epochs={args.epochs}"]} \
        if args.epochs else {}
    setups = [("identity", "", "evaluate", ["+model=identity"]),
              ("lda", "", "train", ["+model=lda"]),
              ("baseline", "", "train", ["+model=baseline", *epochs.get("baseline", [])])]
    ensemble = [f"model.ensemble={max(args.members)}"] if args.members else []
    setups += [("siamese", loss, "train", ["+model=siamese", f"model.loss={loss}", *epochs.get("siamese", []),
                                           *ensemble, *args.extra]) for loss in args.losses]
    setups = [setup for setup in setups if setup[0] in args.models]

    print(f"GTZAN transfer features ({root / FEATURES}), artist-filtered split, seeds {args.seeds}")
    print(f"date {datetime.now():%Y-%m-%d %H:%M}; machine {platform.platform()}, {os.cpu_count()} CPUs; "
          f"python {platform.python_version()}", flush=True)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_gtzan_") as tmp:
        for model, loss, command, overrides in setups:
            scores, seconds = {}, []
            for seed in args.seeds:
                t0 = time.perf_counter()
                heads = run_one(command, [*data, *overrides], seed, Path(tmp) / f"{model}-{loss}-{seed}",
                                args.members if model == "siamese" else None)
                for name, test in heads.items():
                    scores.setdefault(name, []).append(test)
                seconds.append(time.perf_counter() - t0)
            rows += [(name, loss, tests, float(np.mean(seconds))) for name, tests in scores.items()]
            print(f"  done: {model} {loss} ({np.mean(seconds):.1f} s per run)", file=sys.stderr, flush=True)
    total = time.perf_counter() - start

    header = f"{'model':<11} {'loss':<17}" + "".join(f" {name:>15}" for name, _ in COLUMNS) + f" {'s/run':>6}"
    print(header)
    print("-" * len(header))
    for model, loss, scores, seconds in rows:
        cells = []
        for _, key in COLUMNS:
            values = np.array([s.get(key, np.nan) for s in scores])
            cells.append(f" {values.mean():.4f} ± {values.std():.4f}" if np.isfinite(values).all() else " –")
        print(f"{model:<11} {loss or '-':<17}" + "".join(f"{c:>16}" for c in cells) + f" {seconds:6.1f}")
    print(f"total time {total:.0f} s")

    maps = {(m, l): np.mean([s["map"] for s in scores]) for m, l, scores, _ in rows}
    default = ("siamese", compose("train", ["+model=siamese"]).hydra.runtime.choices["loss@model.loss"])
    if default in maps and {("lda", ""), ("baseline", ""), ("identity", "")} <= set(maps):
        verdict = "meets" if maps[default] >= BAR else "misses"
        print(f"summary: siamese ({default[1]}, the default loss) test MAP {maps[default]:.4f} {verdict} the bar {BAR} "
              f"(lda {maps[('lda', '')]:.4f}, baseline {maps[('baseline', '')]:.4f}, "
              f"identity {maps[('identity', '')]:.4f}); siamese losses: "
              + ", ".join(f"{l} {v:.4f}" for (m, l), v in maps.items() if m == "siamese"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
