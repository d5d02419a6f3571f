"""What should a listener without labels get? Test MAP of label-free song vectors of the default backbone
(musicnn): its parts, their pooling, and a normalisation fitted on the listener's own library without labels.

    python scripts/bench_label_free.py [--seeds 0 1 2] [--cache DIR] [--split test|valid] [--expand K] [--extra ...]
                                       [--root DIR] [--raga DIR]

Columns: Emotify genres and emotions (400 real one-minute excerpts; csv manifests with groups; group-aware
stratified splits, seeds 0-2; test songs ranked against test songs, as `evaluate +model=identity`; `--split valid`
scores the validation songs instead, songs a candidate chosen on the test columns was not compared on) and RagaVeda
leave-one-out (69 real raga clips, every clip a query against the other 68: eval.protocol=cross). The
normalisations are fitted on every song of the library (the listener's whole collection; no label is used).
`--root` (a folder with Emotify-style genres.csv and emotions.csv manifests) and `--raga` (a folder of label folders)
replace the shared sets, e.g. for a tiny run.

The normalisations are the project's `features.normalise` (siamrec.encoder.Normaliser): none, centre, standardise,
whiten (PCA whitening of the standardised vectors, eps in units of the mean eigenvalue).

Window features are extracted once through the project's extractor (every part, clip.windows=all, cached under
--cache); every candidate is then computed from them, so one extraction serves the whole table.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def window_features(overrides: list[str], shared: Path, cache: str):
    """(library data with its split, per-song window features of every musicnn part, part layout)."""
    from siamrec.cli import compose, strip_hydra
    from siamrec.data.sources import load_library
    from siamrec.data.split import make_split
    from siamrec.encoder import make_encoder
    from siamrec.pipeline import Data

    cfg = strip_hydra(compose("evaluate", ["+model=identity", "backbone=musicnn_msd", "clip.windows=all",
                                           "clip.pool=mean", f"paths.cache={cache}", f"paths.shared={shared}",
                                           "plots=false", *overrides]))
    lib = load_library(cfg.data, cfg.paths)
    data = Data(lib, make_split(lib, cfg.split), lib.label_names)
    encoder = make_encoder(cfg, data, all_parts=True)
    sf = encoder.song_features(list(lib.paths), keep_windows=True, desc=Path(str(lib.paths[0])).parent.parent.name)
    ok = sf.ok
    return data.subset(ok), [w[0] for w, k in zip(sf.windows, ok) if k], encoder.main.bundle.parts, cfg


def part_vector(windows, layout: dict, part: str, pool: str) -> np.ndarray:
    start = 0
    for name, width in layout.items():
        if name == part:
            break
        start += width
    rows = [w[:, start:start + layout[part]] for w in windows]
    mean = np.stack([r.mean(axis=0) for r in rows])
    return mean if pool == "mean" else np.concatenate([mean, np.stack([r.std(axis=0) for r in rows])], axis=1)


def normalised(x, kind: str, eps: float = 1.0) -> np.ndarray:
    """The project's label-free normaliser (features.normalise), fitted on the whole library."""
    from siamrec.encoder import Normaliser

    norm = Normaliser(kind, eps)
    norm.fit(x)
    return norm(x)


def candidates(windows, layout) -> dict[str, np.ndarray]:
    """Every label-free song vector to compare, fitted on the whole library (no labels)."""
    out = {}
    for pool in ("mean", "mean_std"):
        sfx = "" if pool == "mean" else ", mean_std"
        vec = {p: part_vector(windows, layout, p, pool) for p in ("penultimate", "taggram", "max_pool")}
        # both parts standardised and scaled by 1/sqrt(width), so each weighs alike in a cosine
        vec["penultimate + taggram"] = np.concatenate(
            [normalised(vec[p], "standardise") / np.sqrt(vec[p].shape[1]) for p in ("penultimate", "taggram")], axis=1)
        for name, x in vec.items():
            if name == "max_pool" and pool == "mean_std":
                continue
            out[f"{name}{sfx}"] = x
            for kind in ("centre", "standardise"):
                out[f"{name}{sfx}, {kind}"] = normalised(x, kind)
            for eps in (0.1, 1.0):
                out[f"{name}{sfx}, whiten (eps {eps})"] = normalised(x, "whiten", eps)
    return out


def more_candidates(windows, layout) -> dict[str, np.ndarray]:
    """Further label-free song vectors (issue 19 item 3), each fitted on the whole library without labels: maps of
    the windows before pooling, other poolings, power normalisation, PCA and partial whitening, the taggram's logit,
    parts combined with equal weight (each centred or standardised, then L2-normalised), and each song joined by its
    nearest songs of the library (database-side augmentation)."""
    def rows(part):
        start = 0
        for name, width in layout.items():
            if name == part:
                return [w[:, start:start + width].astype(np.float64) for w in windows]
            start += width

    def l2(x):
        return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)

    def centre(x):
        return x - x.mean(axis=0)

    def ssqrt(x):
        return np.sign(x) * np.sqrt(np.abs(x))

    def pca(x, alpha: float, k: int | None = None):
        """Centred x on its k leading principal axes, each scaled by eigenvalue^(-alpha/2) (0: no whitening)."""
        z = centre(x)
        lam, v = np.linalg.eigh(np.cov(z, rowvar=False))
        lam, v = lam[::-1][:k], v[:, ::-1][:, :k]
        return z @ v / np.power(np.clip(lam, 1e-9, None), alpha / 2)

    def neighbours_added(x, k: int):
        """Database-side augmentation (query expansion of the library): each song's unit vector plus those of
        its k nearest songs of the library (cosine, itself left out), renormalised."""
        z = l2(x)
        sims = z @ z.T
        np.fill_diagonal(sims, -np.inf)
        near = np.argsort(-sims, axis=1)[:, :k]
        return l2(z + z[near].sum(axis=1))

    pen, tag, mp = rows("penultimate"), rows("taggram"), rows("max_pool")
    mean = np.stack([r.mean(axis=0) for r in pen])
    l2mean = np.stack([l2(r).mean(axis=0) for r in pen])
    logit = np.stack([np.log(np.clip(r, 1e-4, 1 - 1e-4) / (1 - np.clip(r, 1e-4, 1 - 1e-4))).mean(axis=0) for r in tag])
    l2_ssqrt = ssqrt(centre(l2mean))
    return {
        "penultimate, windows L2-normalised, centre": centre(l2mean),
        "penultimate, windows L2-normalised, centre, signed sqrt": ssqrt(centre(l2mean)),
        "penultimate, windows L2-normalised, mean_std, centre":
            centre(np.concatenate([l2mean, np.stack([l2(r).std(axis=0) for r in pen])], axis=1)),
        "penultimate, windows centred per window, centre": centre(np.stack([(r - r.mean(axis=1, keepdims=True))
                                                                            .mean(axis=0) for r in pen])),
        "penultimate, centre, signed sqrt": ssqrt(centre(mean)),
        "penultimate, mean + max pooling, centre": centre(np.concatenate([mean, np.stack([r.max(axis=0) for r in pen])],
                                                                         axis=1)),
        "penultimate, PCA to 16 dims": pca(mean, 0.0, 16),
        "penultimate, PCA to 64 dims": pca(mean, 0.0, 64),
        "penultimate, PCA, eigenvalue^-0.25 (partial whitening)": pca(mean, 0.5),
        "penultimate, PCA, eigenvalue^-0.125 (partial whitening)": pca(mean, 0.25),
        "taggram logit, centre": centre(logit),
        "penultimate + taggram, each centred and L2-normalised": np.concatenate(
            [l2(centre(mean)), l2(centre(np.stack([r.mean(axis=0) for r in tag])))], axis=1),
        "penultimate + taggram logit, each centred and L2-normalised": np.concatenate(
            [l2(centre(mean)), l2(centre(logit))], axis=1),
        "penultimate + max_pool, each centred and L2-normalised": np.concatenate(
            [l2(centre(mean)), l2(centre(np.stack([r.mean(axis=0) for r in mp])))], axis=1),
        "penultimate + max_pool, each standardised and L2-normalised": np.concatenate(
            [l2(centre(mean)), l2(normalised(np.stack([r.mean(axis=0) for r in mp]), "standardise"))], axis=1),
        **{f"penultimate, centre, + {k} nearest songs (database-side augmentation)": neighbours_added(centre(mean), k)
           for k in (3, 5, 8)},
        "penultimate, windows L2-normalised, centre, signed sqrt, + 5 nearest songs": neighbours_added(l2_ssqrt, 5),
    }


def main() -> int:
    shared = Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "siamrec-bench-cache"))
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="the Emotify songs scored, ranked among themselves (valid: a check on songs the candidates "
                        "were not compared on)")
    p.add_argument("--expand", type=int, default=None,
                   help="query expansion of the scoring (default: the config's query_expansion)")
    p.add_argument("--extra", nargs="*", default=[],
                   help="more overrides of the extraction, e.g. backbone=musicnn_mtt (a musicnn backbone)")
    p.add_argument("--root", type=Path, default=shared / "audio" / "emotify",
                   help="the Emotify-style folder: genres.csv and emotions.csv manifests (path,labels[,group])")
    p.add_argument("--raga", type=Path, default=shared / "audio" / "ragaveda",
                   help="the leave-one-out set: a folder of label folders")
    args = p.parse_args()
    emotify, raga = args.root, args.raga
    if not all((emotify / f"{labels}.csv").is_file() for labels in ("genres", "emotions")) or not raga.is_dir():
        print(f"no genres.csv and emotions.csv under {emotify} or no folder {raga}: set SIAMREC_SHARED, or --root "
              f"and --raga")
        return 2
    from omegaconf import OmegaConf

    from siamrec.evaluation import score_embeddings

    start = time.time()
    scores: dict[str, dict[str, list[float]]] = {}
    for labels in ("genres", "emotions"):
        for seed in args.seeds:
            data, windows, layout, cfg = window_features(
                ["data=csv", f"data.manifest={emotify / (labels + '.csv')}", f"seed={seed}", *args.extra], shared,
                args.cache)
            expand = int(cfg.query_expansion) if args.expand is None else args.expand
            for name, x in {**candidates(windows, layout), **more_candidates(windows, layout)}.items():
                m = score_embeddings(x, data.y, data.split, cfg.eval, data.label_names,
                                     expand=expand)[args.split]["map"]
                scores.setdefault(name, {}).setdefault(labels, []).append(m)
    data, windows, layout, cfg = window_features(["data=folder", f"data.root={raga}", *args.extra], shared, args.cache)
    cross = OmegaConf.merge(cfg.eval, {"protocol": "cross"})
    for name, x in {**candidates(windows, layout), **more_candidates(windows, layout)}.items():
        scores[name]["raga"] = [score_embeddings(x, data.y, data.split, cross, data.label_names,
                                                     expand=expand)["test"]["map"]]

    print(f"\nLabel-free song vectors, {cfg.backbone.name}{' ' + ' '.join(args.extra) if args.extra else ''}, "
          f"clip.windows=all: MAP of Emotify's {args.split} songs "
          f"({date.today()}, {platform.machine()}, {os.cpu_count()} cores, Emotify seeds {args.seeds}, query "
          f"expansion {expand}, {time.time() - start:.0f} s in all)")
    print("| song vector | Emotify genres | Emotify emotions | RagaVeda (leave-one-out) | mean of the three |\n"
          "|---|---|---|---|---|")
    for name, cols in scores.items():
        means = [float(np.mean(cols[c])) for c in ("genres", "emotions", "raga")]
        cells = [f"{np.mean(cols[c]):.4f} ± {np.std(cols[c]):.4f}" for c in ("genres", "emotions")]
        print(f"| {name} | {cells[0]} | {cells[1]} | {means[2]:.4f} | {np.mean(means):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
