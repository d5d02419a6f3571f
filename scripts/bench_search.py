"""Top-10 search over a large catalogue: exact (the default) against faiss HNSW, with the shipped settings.

Draws n (default 1,000,000) × 160 float32 embeddings around 1,000 random centres, each point varying in its
own 32-d random subspace plus a little isotropic noise (clustered and of low intrinsic dimension, like real
embeddings; uniform noise would put every neighbour at the same distance), and --queries new songs from the
same distribution. Measures siamrec.index with conf/index/faiss.yaml's HNSW settings:

* exact: latency of one query (median over --latency-queries), and batched throughput over all queries;
* HNSW: build time, latency of one query (median), batched throughput, recall@10 against exact;
* IVF (what index=faiss picks above `ivf_above` items), the same figures, for comparison.

The last line reads `exact_ms=<x> exact_batched_ms=<x> ann_ms=<x> recall_at_10=<x> build_s=<x>`.

    python scripts/bench_search.py [--n 1000000] [--dim 160] [--queries 1000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from omegaconf import OmegaConf

import benchkit
from benchkit import REPO
from siamrec.index import ExactIndex, build_index

K = 10
N_CENTRES = 1000
SUBSPACE = 32


def clustered(n: int, dim: int, rng, centres, bases, chunk: int = 10_000) -> np.ndarray:
    """n rows: a random centre + a draw in that centre's subspace + small isotropic noise."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        c = rng.integers(0, len(centres), m)
        local = np.einsum("ns,nsd->nd", rng.standard_normal((m, SUBSPACE), dtype=np.float32), bases[c])
        out[start:start + m] = centres[c] + local + 0.05 * rng.standard_normal((m, dim), dtype=np.float32)
    return out


def median_ms(index, queries, k: int) -> float:
    """The median milliseconds of a single query (one query at a time, in order)."""
    it = iter(queries)
    return benchkit.median_ms(lambda: index.search(next(it)[None], k), len(queries))


def batched_ms(index, queries, k: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    found, _ = index.search(queries, k)
    return 1000 * (time.perf_counter() - start) / len(queries), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="catalogue size (default 1000000)")
    parser.add_argument("--dim", type=int, default=160)
    parser.add_argument("--queries", type=int, default=1000, help="queries for throughput and recall (default 1000)")
    parser.add_argument("--latency-queries", type=int, default=50, help="single queries timed for exact latency")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = OmegaConf.load(REPO / "conf" / "index" / "faiss.yaml")

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((N_CENTRES, args.dim), dtype=np.float32)
    bases = rng.standard_normal((N_CENTRES, SUBSPACE, args.dim), dtype=np.float32) * (0.7 / np.sqrt(SUBSPACE))
    start = time.perf_counter()
    emb = clustered(args.n, args.dim, rng, centres, bases)
    queries = clustered(args.queries, args.dim, rng, centres, bases)
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{args.n} x {args.dim} float32 embeddings around {N_CENTRES} centres ({emb.nbytes / 2**20:.0f} MiB), "
          f"drawn in {time.perf_counter() - start:.0f} s", flush=True)

    start = time.perf_counter()
    exact = ExactIndex(emb)
    print(f"exact: index (normalised copy) in {time.perf_counter() - start:.1f} s", flush=True)
    exact_ms = median_ms(exact, queries[:args.latency_queries], K)
    exact_batched, truth = batched_ms(exact, queries, K)
    print(f"exact top-{K}: {exact_ms:.1f} ms per single query (median of {args.latency_queries}); batched "
          f"{exact_batched:.1f} ms per query = {1000 / exact_batched:.0f} queries/s", flush=True)

    figures = {}
    for method, params in (("hnsw", f"M={cfg.hnsw_m}, efConstruction={cfg.ef_construction}, efSearch={cfg.ef_search}"),
                           ("ivf", f"nlist=4·sqrt(n), nprobe={cfg.ivf_nprobe}")):
        start = time.perf_counter()
        ann = build_index(emb, method, hnsw_m=cfg.hnsw_m, ef_construction=cfg.ef_construction,
                          ef_search=cfg.ef_search, ivf_nlist=cfg.ivf_nlist, ivf_nprobe=cfg.ivf_nprobe)
        build_s = time.perf_counter() - start
        ann_ms = median_ms(ann, queries, K)
        ann_batched, found = batched_ms(ann, queries, K)
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(truth, found)])
        figures[method] = ann_ms, recall, build_s
        print(f"faiss {method.upper()} ({params}): built in {build_s:.0f} s; top-{K}: {ann_ms:.2f} ms per single "
              f"query (median of {len(queries)}); batched {ann_batched:.3f} ms per query = "
              f"{1000 / ann_batched:.0f} queries/s; recall@{K} vs exact {recall:.4f}", flush=True)
        del ann
    print(f"load average now {os.getloadavg()[0]:.2f}")
    ann_ms, recall, build_s = figures["hnsw"]
    print(f"exact_ms={exact_ms:.1f} exact_batched_ms={exact_batched:.1f} ann_ms={ann_ms:.2f} "
          f"recall_at_10={recall:.4f} build_s={build_s:.0f}")


if __name__ == "__main__":
    main()
