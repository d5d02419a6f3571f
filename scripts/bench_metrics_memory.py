"""Time and peak memory of siamrec.metrics.retrieval_metrics on clustered random embeddings.

Draws n float32 embeddings around 100 random centres (label = centre), evaluates
all of them as queries against each other and prints wall time, peak RSS and the
metrics; the last line reads ``time_s=<x> peak_rss_mib=<y>``.

    python scripts/bench_metrics_memory.py [--n 100000] [--dim 128]
"""

import argparse
import time

import numpy as np

from benchkit import clustered, peak_rss_mib
from siamrec.metrics import retrieval_metrics

N_CENTRES = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of items (default 100000)")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128)")
    parser.add_argument("--noise", type=float, default=3.0,
                        help="std of points around their N(0, 1) centre (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    emb, centre = clustered(args.n, args.dim, N_CENTRES, np.random.default_rng(args.seed), args.noise)
    labels = np.zeros((args.n, N_CENTRES), dtype=bool)
    labels[np.arange(args.n), centre] = True
    print(f"n={args.n} dim={args.dim} labels={N_CENTRES} noise={args.noise} "
          f"rss_before_mib={peak_rss_mib():.0f}", flush=True)

    start = time.perf_counter()
    metrics = retrieval_metrics(emb, labels)
    elapsed = time.perf_counter() - start
    peak = peak_rss_mib()
    print(f"wall_time_s={elapsed:.1f}")
    print(f"peak_rss_mib={peak:.0f}")
    for name, value in metrics.items():
        print(f"  {name}: {value:.6f}" if isinstance(value, float) else f"  {name}: {value}")
    print(f"time_s={elapsed:.1f} peak_rss_mib={peak:.0f}")


if __name__ == "__main__":
    main()
