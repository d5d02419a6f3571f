"""Which pretrained release and BatchNorm statistics give the best playlists on real audio?

Leave-one-out cosine MAP (every clip a query against all others, relevance = same label) of the pretrained
160-d features, for keras2, theano with per-clip statistics and theano with dataset statistics (estimated over
the training split, then frozen). Default data: the 69 Hindustani raga clips in the shared folder.

    python scripts/compare_releases.py [--root DIR]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = [("keras2", "per_clip"), ("theano", "per_clip"), ("theano", "dataset")]


def main() -> int:
    shared = Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(shared / "audio" / "ragaveda"), help="GTZAN-style audio folder")
    args = parser.parse_args()
    if not Path(args.root).is_dir():
        print(f"no audio folder at {args.root}: set SIAMREC_SHARED or pass --root")
        return 2
    from siamrec.cli import compose, seed_everything, strip_hydra
    from siamrec.commands.evaluate import evaluate

    rows = []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for release, bn_stats in SETTINGS:
            cfg = strip_hydra(compose("evaluate", [
                "+model=identity", "data=folder", f"data.root={args.root}", "eval.protocol=cross",
                f"backbone.release={release}", f"backbone.bn_stats={bn_stats}", f"paths.shared={shared}",
            ]))
            seed_everything(0)
            run = Path(tmp) / f"{release}_{bn_stats}"
            run.mkdir()
            test = evaluate(cfg, run)["test"]
            rows.append((release, bn_stats, test["map"], test["map@10"], test["p@10"], test["n_queries"]))
    print(f"\nLeave-one-out cosine retrieval on {args.root} ({date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} cores, {time.time() - start:.0f} s)")
    print("| release | bn_stats | MAP | MAP@10 | P@10 | queries |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1] if r[0] == 'theano' else 'stored'} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {r[5]} |")
    best = max(rows, key=lambda r: r[2])
    print(f"best: release={best[0]} bn_stats={best[1]} map={best[2]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
