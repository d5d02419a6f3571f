"""Which backbone gives the best playlists on real audio?

Leave-one-out cosine MAP (every song a query against all others, relevance = same label) of the pretrained song
vectors of each backbone setting, with a cold feature cache, so the extraction is timed too (files/s and CPU ms
per song, decoding workers included). Default data: the 69 Hindustani raga clips in the shared folder.

    python scripts/compare_backbones.py [--root DIR] [--windows all] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchkit import SHARED, cpu_s, table

MUSICNN = "{backbone:musicnn_msd,parts:[penultimate]}"
SETTINGS = {
    "choi2017 keras2": ["backbone=choi2017_keras2"],
    "choi2017 theano, per-clip statistics": ["backbone=choi2017", "backbone.bn_stats=per_clip"],
    "choi2017 theano, dataset statistics": ["backbone=choi2017"],
    "musicnn penultimate": ["backbone=musicnn_msd", "features.parts=[penultimate]"],
    "musicnn max_pool": ["backbone=musicnn_msd", "features.parts=[max_pool]"],
    "choi2017 theano + musicnn penultimate": ["backbone=choi2017", f"features.combine=[{MUSICNN}]"],
}


def cpu_all_s() -> float:
    """CPU seconds of this process and its finished children (the decoding workers)."""
    return cpu_s() + cpu_s(resource.RUSAGE_CHILDREN)


def main() -> int:
    shared = SHARED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(shared / "audio" / "ragaveda"), help="GTZAN-style audio folder")
    parser.add_argument("--windows", default="all", help="clip.windows for every setting (default all)")
    parser.add_argument("--only", nargs="*", help="names of settings to run (default: all)")
    args = parser.parse_args()
    if not Path(args.root).is_dir():
        print(f"no audio folder at {args.root}: set SIAMREC_SHARED or pass --root")
        return 2
    from siamrec.cli import compose, seed_everything, strip_hydra
    from siamrec.commands.evaluate import evaluate

    rows = []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in SETTINGS.items():
            if args.only and name not in args.only:
                continue
            slug = "".join(c if c.isalnum() else "_" for c in name)
            cfg = strip_hydra(compose("evaluate", [
                "+model=identity", "data=folder", f"data.root={args.root}", "eval.protocol=cross",
                f"clip.windows={args.windows}", f"paths.shared={shared}", f"paths.cache={Path(tmp) / slug}",
                *overrides]))
            seed_everything(0)
            run = Path(tmp) / f"run_{slug}"
            run.mkdir()
            t0, c0 = time.perf_counter(), cpu_all_s()
            metrics = evaluate(cfg, run)
            wall, cpu = time.perf_counter() - t0, cpu_all_s() - c0
            test, n = metrics["test"], metrics["test"]["n_queries"] + metrics["test"]["n_skipped"]
            rows.append((name, test["map"], test["map@10"], test["p@10"], n / wall, 1000 * cpu / n))
            print(f"## {name}: map={test['map']:.4f} ({wall:.0f} s)", flush=True)
    print(f"\nLeave-one-out cosine retrieval on {args.root}, clip.windows={args.windows} ({date.today()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, {time.time() - start:.0f} s; extraction from a cold "
          "cache, statistics included)")
    print(table(["backbone", "MAP", "MAP@10", "P@10", "files/s", "CPU ms per song"],
                [[r[0], f"{r[1]:.4f}", f"{r[2]:.4f}", f"{r[3]:.4f}", f"{r[4]:.1f}", f"{r[5]:.0f}"] for r in rows]))
    best = max(rows, key=lambda r: r[1])
    print(f"best: {best[0]} map={best[1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
