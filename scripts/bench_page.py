"""What the page's library features cost on a large tagged catalogue: building the app (items.csv with title,
artist, album, duration read into the catalogue), the first GET /api/songs (encoded once, then cached), and
GET /api/search (folded substring search over title, artist, album, labels and file name; the first call also
folds the catalogue) and seed resolution by title, all in-process through FastAPI's TestClient (no network).

    python scripts/bench_page.py [--n 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchkit import REPO, write_run

ARTISTS = ["Béla Fleck", "ਗੁਰਦਾਸ ਮਾਨ", "लता मंगेशकर", "Zoë Keating", "Sidhu Moose Wala", "Björk", "Arijit Singh"]


def make_run(folder: Path, n: int, dim: int = 128, seed: int = 0) -> Path:
    emb = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    artists = [f"{ARTISTS[i % len(ARTISTS)]} {i // 700}" for i in range(n)]
    meta = [{"title": f"Song {i} ਗੀਤ", "artist": a, "album": f"Album {i // 12}", "duration": 120 + i % 200}
            for i, a in enumerate(artists)]
    return write_run(folder, emb, [f"{a}/Album {i // 12}/{i % 12:02d} Song {i}.flac" for i, a in enumerate(artists)],
                     [f"genre{i % 40}" for i in range(n)], meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    from fastapi.testclient import TestClient
    from hydra import compose, initialize_config_dir

    from siamrec.serve.app import create_app

    run = make_run(Path(tempfile.mkdtemp(prefix="siamrec-bench-page-")) / "run", args.n)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"run={run}", f"paths.cache={run.parent / 'cache'}"])
    print(f"{args.n} tagged songs; {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    t = time.perf_counter()
    client = TestClient(create_app(run, cfg))
    print(f"app built (items.csv with metadata read, exact index): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    body = client.get("/api/songs", headers={"accept-encoding": "gzip"})
    sent = int(body.headers["content-length"])  # the gzip body (the client has already decompressed it)
    print(f"first GET /api/songs: {time.perf_counter() - t:.2f} s, {sent / 2**20:.1f} MiB gzip for the page to "
          f"download ({len(body.content) / 2**20:.1f} MiB of JSON)")
    rng = np.random.default_rng(1)
    words = ["bela", "ਗੁਰਦਾਸ", "zoe keating 3", "album 77", "genre7", "song 4242", "BJÖRK", "लता"]
    t = time.perf_counter()
    client.get("/api/search", params={"q": "warm"})
    print(f"first GET /api/search (folds the catalogue once): {time.perf_counter() - t:.2f} s")
    lat = []
    for i in range(args.queries):
        q = words[int(rng.integers(len(words)))]
        t = time.perf_counter()
        r = client.get("/api/search", params={"q": q, "limit": 500})
        lat.append(time.perf_counter() - t)
        assert r.status_code == 200
    ms = np.array(lat) * 1000
    print(f"GET /api/search, {args.queries} queries: p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms")
    lat = []
    for i in rng.integers(0, args.n, min(args.queries, 100)):
        t = time.perf_counter()
        r = client.get("/api/recommend", params={"seed": f"Song {int(i)} ਗੀਤ", "k": 10})
        lat.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    ms = np.array(lat) * 1000
    print(f"GET /api/recommend?seed=<title> (exact search), {len(lat)} queries: p50 {np.percentile(ms, 50):.1f} ms, "
          f"p95 {np.percentile(ms, 95):.1f} ms (the first builds the title lookup)")


if __name__ == "__main__":
    main()
