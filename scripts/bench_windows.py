"""Does whole-song pooling help on real audio? Test MAP of the pretrained features (identity) and of the Siamese
head, per window setting (clip.windows), for genres and for the crowd-sourced emotion tags (multi-label) of the
Emotify excerpts (400 real one-minute recordings), on group-aware stratified splits, mean ± std over seeds.

    python scripts/bench_windows.py [--windows first spread:2 spread:4 all] [--backbones choi2017]
                                    [--labels genres emotions] [--seeds 0 1 2] [--models identity siamese]
                                    [--minutes M] [--members 1 3 5] [--blend 0.5 0.8] [--extra KEY=VALUE ...]

--minutes M measures on songs of a real song's length instead of the one-minute excerpts: each genre's excerpts,
in order, are joined into M-minute songs (a medley of consecutive excerpts of one genre keeps its genre; the
emotion tags do not survive the joining, so only genres are scored), e.g. `--minutes 4 --extra
clip.max_windows=32` against the default cap of the window setting `all`.

--members trains the Siamese head once with model.ensemble=max(members) and reports its first n members together
as `siamese xN` for each n. Trained heads also show the validation MAP they chose by (before the refit on
train+valid): the evidence a setting is chosen on, the test MAP being what it gives.

--blend W ... scores, for each seed, the Siamese head's song vectors joined with the identity's (both unit-norm,
scaled by √W and √(1 − W)), whose cosine is W · the head's + (1 − W) · the pretrained vectors': `blend W` rows. Only
test MAPs (the head's validation songs are in its refit), so a look at what blending could give, not a choice.

Features are cached under --cache (default a folder in /tmp), so a second run with other heads is fast. A second
table per backbone has one row per window setting with the number of windows it reads from a 1-minute and a
4-minute song (the extraction's cost is the number of backbone inferences) and the mean of the columns.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from benchkit import SHARED, head_scores, labels_and_split, table


def main() -> int:
    shared = SHARED
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(shared / "audio" / "emotify"), help="folder with genres.csv, emotions.csv")
    p.add_argument("--windows", nargs="+", default=["first", "spread:2", "spread:4", "all"])
    p.add_argument("--backbones", nargs="+", default=["choi2017"])
    p.add_argument("--labels", nargs="+", default=["genres", "emotions"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=["identity", "siamese"])
    p.add_argument("--pool", default=None, help="clip.pool (default: the backbone's own)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "siamrec-bench-cache"))
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    p.add_argument("--minutes", type=float, help="join each genre's excerpts into songs of this length (genres only)")
    p.add_argument("--blend", nargs="+", type=float, default=[],
                   help="also score the Siamese head's vectors joined with the identity's, weight W on the head's")
    p.add_argument("--members", nargs="+", type=int, default=None,
                   help="siamese: train model.ensemble=max(N) and score the first n members for each n")
    args = p.parse_args()
    if any(not 0 <= w <= 1 for w in args.blend):
        p.error(f"--blend {' '.join(f'{w:g}' for w in args.blend)}: each weight must be in [0, 1]")
    if not (Path(args.root) / "genres.csv").is_file():
        print(f"no Emotify manifests at {args.root}: set SIAMREC_SHARED or pass --root")
        return 2
    from siamrec.cli import compose, seed_everything, strip_hydra
    from siamrec.commands.evaluate import evaluate
    from siamrec.commands.train import train

    results: dict[tuple, list] = {}
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.minutes:
            args.root, args.labels = str(medleys(Path(args.root), args.minutes, Path(tmp) / "medleys")), ["genres"]
        for backbone in args.backbones:
            for windows in args.windows:
                for labels in args.labels:
                    for seed in args.seeds:
                        for model in args.models:
                            command = "evaluate" if model == "identity" else "train"
                            members = args.members if model == "siamese" else None
                            ensemble = [f"model.ensemble={max(members)}"] if members else []
                            cfg = strip_hydra(compose(command, [
                                f"+model={model}", "data=csv", f"data.manifest={Path(args.root) / (labels + '.csv')}",
                                f"backbone={backbone}", f"clip.windows={windows}",
                                *([f"clip.pool={args.pool}"] if args.pool else []),
                                f"seed={seed}", f"paths.cache={args.cache}", f"paths.shared={shared}", "plots=false",
                                *args.extra, *ensemble]))
                            seed_everything(seed)
                            run = Path(tmp) / f"{backbone}-{windows}-{labels}-{seed}-{model}".replace(":", "_")
                            run.mkdir()
                            t0 = time.time()
                            (evaluate if command == "evaluate" else train)(cfg, run)
                            for name, test in head_scores(run, cfg, members).items():
                                results.setdefault((backbone, windows, labels, name), []).append(test)
                                valid = f", valid map={test['valid_map']:.4f}" if "valid_map" in test else ""
                                print(f"## {backbone} {windows} {labels} seed={seed} {name}: map={test['map']:.4f}"
                                      f"{valid} ({time.time() - t0:.0f} s)", flush=True)
                        if args.blend:
                            runs = [Path(tmp) / f"{backbone}-{windows}-{labels}-{seed}-{m}".replace(":", "_")
                                    for m in ("identity", "siamese")]
                            for weight, test in blends(*runs, args.blend, cfg.eval, int(cfg.query_expansion)).items():
                                results.setdefault((backbone, windows, labels, f"blend {weight:g}"), []).append(test)
                                print(f"## {backbone} {windows} {labels} seed={seed} blend {weight:g}: "
                                      f"map={test['map']:.4f}", flush=True)
    pool = args.pool or "the backbone's"
    print(f"\nEmotify test MAP ({date.today()}, {platform.machine()}, {os.cpu_count()} cores, pool={pool}, "
          f"seeds {args.seeds}, {time.time() - start:.0f} s in all)")
    def ms(tests, key):
        if any(key not in t for t in tests):
            return "–"
        v = np.array([t[key] for t in tests])
        return f"{v.mean():.4f} ± {v.std():.4f}"

    print(table(["backbone", "clip.windows", "labels", "model", "MAP", "MAP@10", "P@10", "validation MAP"],
                [[backbone, windows, labels, model, ms(tests, "map"), ms(tests, "map@10"), ms(tests, "p@10"),
                  ms(tests, "valid_map")] for (backbone, windows, labels, model), tests in results.items()]))
    models = list(dict.fromkeys(key[3] for key in results))
    trained = [m for m in models if m != "identity"] or models
    # the README's layout: one row per window setting (and trained head), with its cost in windows
    for backbone in args.backbones:
        print(f"\n{backbone}: test MAP per window setting (windows per song: what the extraction costs, "
              f"in backbone inferences)")
        rows, heads = [], []
        for windows in args.windows:
            for head in trained:
                heads = [m for m in ("identity", head) if m in models]
                columns = [(labels, model) for labels in args.labels for model in dict.fromkeys(heads)]
                tests = [results[(backbone, windows, labels, model)] for labels, model in columns]
                rows.append([windows if len(trained) == 1 else f"{windows}, {head}",
                             *windows_per_song(backbone, windows, (60, 240),
                                               [e for e in args.extra if e.startswith("clip.")]),
                             *[ms(t, "map") for t in tests],
                             f"{np.mean([np.mean([x['map'] for x in t]) for t in tests]):.4f}"])
        names = [f"{labels}, {'identity' if m == 'identity' else 'trained' if len(trained) > 1 else m}"
                 for labels in args.labels for m in dict.fromkeys(heads)]
        print(table(["clip.windows", "windows per 1-min song", "windows per 4-min song", *names,
                     f"mean of the {len(names)}"], rows))
    return 0


def blends(identity_run: Path, siamese_run: Path, weights, eval_cfg, expand: int) -> dict:
    """{W: test metrics} of the two runs' unit song vectors joined, scaled by √(1 − W) and √W."""
    from siamrec.evaluation import score_embeddings
    from siamrec.models.heads import l2_normalise
    from siamrec.runs import read_embeddings

    (plain, items), (head, head_items) = read_embeddings(identity_run), read_embeddings(siamese_run)
    if [it["key"] for it in items] != [it["key"] for it in head_items]:
        raise SystemExit(f"{identity_run} and {siamese_run} list different songs")
    y, split = labels_and_split(items)
    return {w: score_embeddings(np.concatenate([np.sqrt(1 - w) * l2_normalise(plain), np.sqrt(w) * l2_normalise(head)],
                                               axis=1), y, split, eval_cfg, expand=expand)["test"] for w in weights}


def medleys(root: Path, minutes: float, folder: Path) -> Path:
    """A manifest of songs of `minutes`, each the consecutive excerpts of one genre in root/genres.csv joined (16 kHz
    mono WAV; a song takes whole excerpts until it is long enough and is cut there; leftovers are dropped)."""
    import csv

    import soundfile as sf
    import soxr

    rows = list(csv.DictReader((root / "genres.csv").open(encoding="utf-8")))
    by_genre: dict[str, list[str]] = {}
    for row in rows:
        by_genre.setdefault(row["labels"], []).append(row["path"])
    folder.mkdir(parents=True)
    out, sr = [], 16000
    for genre, paths in sorted(by_genre.items()):
        parts, length = [], 0
        for path in paths:
            y, file_sr = sf.read(root / path, dtype="float32", always_2d=True)
            parts.append(soxr.resample(y.mean(axis=1), file_sr, sr))
            length += len(parts[-1])
            if length >= minutes * 60 * sr:
                name = f"{genre}_{len(out):03d}.wav"
                sf.write(folder / name, np.concatenate(parts)[:int(minutes * 60 * sr)], sr)
                out.append({"path": name, "labels": genre, "group": name})
                parts, length = [], 0
    with (folder / "genres.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["path", "labels", "group"])
        writer.writeheader()
        writer.writerows(out)
    print(f"{len(out)} songs of {minutes:g} min joined from {len(rows)} excerpts of {root}", flush=True)
    return folder


def windows_per_song(backbone: str, windows: str, seconds, extra=()) -> list[int]:
    """How many windows the extractor reads from a song of each length in `seconds` (siamrec's window plan)."""
    from omegaconf import OmegaConf

    from siamrec.cli import compose, strip_hydra
    from siamrec.extractor import make_bundle, window_plan

    cfg = strip_hydra(compose("evaluate", [f"backbone={backbone}", f"clip.windows={windows}", *extra]))
    bundle = make_bundle(OmegaConf.to_container(cfg.backbone, resolve=True))
    plan = window_plan(bundle, cfg.clip)
    return [len(plan.starts(int(s * bundle.sample_rate))) for s in seconds]


if __name__ == "__main__":
    sys.exit(main())
