"""Do the radio rules keep duplicate recordings apart on real audio? The Emotify library (400 real excerpts) holds
5 pairs that are the same recording under two numbers (its README: electronic 28/30, pop 59/66, rock 63/66,
70/76, 72/75). With the identity model's embeddings (the default backbone, every song of the library as a
seed), this counts the playlists in which both songs of a pair appear together (or the seed and its twin),
with the radio rules (the defaults of conf/config.yaml) and without (recommend.rules=none), and prints the
cosine distance of each pair next to the library's nearest-neighbour distances. Exits 1 if a ruled playlist
holds a pair.

    python scripts/radio_emotify.py [--run RUN] [--k 10 25] [--manifest CSV --pairs A B [C D ...]] [--extra ...]

Without --run it embeds the library first (python -m siamrec evaluate +model=identity data=csv
data.manifest=$SIAMREC_SHARED/audio/emotify/genres.csv, plus the --extra overrides; the feature cache makes a
second run quick). Needs the shared data ($SIAMREC_SHARED, default ../shared), or another library given by
--manifest (a csv of data=csv) and its duplicate pairs by --pairs (keys of the manifest, two by two).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PAIRS = [("electronic/28.ogg", "electronic/30.ogg"), ("pop/59.ogg", "pop/66.ogg"), ("rock/63.ogg", "rock/66.ogg"),
         ("rock/70.ogg", "rock/76.ogg"), ("rock/72.ogg", "rock/75.ogg")]


def main() -> int:
    sys.path.insert(0, str(REPO))
    from omegaconf import OmegaConf

    from siamrec.index import ExactIndex
    from siamrec.rules import Radio, Rules, Songs, sound_note
    from siamrec.runs import label_free, read_embeddings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a run of the Emotify library (default: embed it now)")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 25])
    ap.add_argument("--manifest", type=Path, help="the library's csv (default: Emotify's genres.csv, shared data)")
    ap.add_argument("--pairs", nargs="+", default=[k for pair in PAIRS for k in pair],
                    help="the keys of the duplicate recordings, two by two (default: Emotify's five pairs)")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for the evaluate run")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error(f"--pairs {' '.join(args.pairs)}: give the keys two by two (an even number)")
    shared = Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))
    manifest = args.manifest or shared / "audio" / "emotify" / "genres.csv"
    if args.run is None:
        if not manifest.is_file():
            print(f"no library at {manifest}: set SIAMREC_SHARED or give --manifest")
            return 2
        args.run = Path(tempfile.mkdtemp(prefix="siamrec-emotify-")) / "run"
        cmd = [sys.executable, "-m", "siamrec", "evaluate", "+model=identity", "data=csv",
               f"data.manifest={manifest.resolve()}", "plots=false", f"hydra.run.dir={args.run}", *args.extra]
        print(" ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}).returncode:
            print("the library could not be embedded (the evaluate run's message above)")
            return 2
    emb, items = read_embeddings(args.run)
    keys = [it["key"] for it in items]
    row = {k: i for i, k in enumerate(keys)}
    missing = [k for k in args.pairs if k not in row]
    if missing:
        print(f"--pairs: {', '.join(missing)} not among the {len(keys)} songs of {args.run} (keys as in items.csv)")
        return 2
    pairs = [(row[a], row[b]) for a, b in zip(args.pairs[::2], args.pairs[1::2])]
    twin = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    rules = Rules.from_config(OmegaConf.load(REPO / "conf" / "config.yaml").recommend.rules)
    radio = Radio(emb, Songs(items), ExactIndex(emb), label_free(args.run))
    off = sound_note(rules, radio.label_free)
    if off:
        print(off)

    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    nn = 1 - sims.max(axis=1)
    print(f"{len(items)} songs of {args.run}; rules: {rules}")
    print("cosine distance of each duplicate pair: "
          + ", ".join(f"{keys[a]}/{keys[b].split('/')[-1]} {1 - unit[a] @ unit[b]:.4f}" for a, b in pairs))
    print(f"nearest-neighbour cosine distance of the other songs: min {np.min(np.delete(nn, list(twin))):.4f}, "
          f"5th percentile {np.percentile(np.delete(nn, list(twin)), 5):.4f}, median {np.median(nn):.4f}; "
          f"dup_distance={rules.dup_distance}")
    failed = False
    for k in args.k:
        together = {"rules": 0, "plain": 0}
        short = 0
        for seed in range(len(items)):
            for name, r in (("rules", rules), ("plain", Rules())):
                found = radio.playlist(emb[seed], k, r, seeds=[seed])
                chosen = {j for j, _ in found.picks} | {seed}
                together[name] += sum(a in chosen and b in chosen for a, b in pairs)
                short += name == "rules" and found.note is not None
        print(f"k={k}: {len(items)} playlists; a duplicate pair together (seed included) in {together['plain']} "
              f"plain playlists, {together['rules']} with the radio rules; ruled playlists shorter than k: {short}")
        failed |= together["rules"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
