"""Extraction throughput and memory: decode-only, inference-only and end-to-end files/s, peak RSS at N and 10×N.

Generates N songs of --minutes (default 3) and N of 30 s in mixed formats (wav, flac, mp3, ogg; stereo at 44.1,
48 and 22.05 kHz) into a temporary folder, then measures on all cores:

* decode-and-resample only (siamrec.features.decode_stream, `--workers` processes), for both song lengths and
  both clip offsets (start; middle, which seeks): a seeking decoder's files/s does not fall with song length;
* inference only: the Choi 2017 backbone (theano release; the real weights when found under $SIAMREC_SHARED,
  default ../shared, else random ones: the cost is the same) on already-decoded clips, in batches;
* end to end: `extract` on N and on 10×N songs (the N files hard-linked 10 times), each in a fresh
  subprocess so that its peak RSS is its own. Fixed start-up costs (loading the model, starting the workers)
  are reported apart: the steady rate is (10N − N) / (t(10N) − t(N)).

Rates are steady-state (the decoding pool's start and TensorFlow's first call are left out; they are the
start-up), each the best of --repeat runs, since other jobs on a shared machine only ever slow a run down.
ideal = 1 / (1/decode + 1/inference); efficiency = end_to_end / ideal. On a shared machine a run with more
threads gets a larger share of the cores, so the CPU seconds per file are compared too: CPU efficiency =
(decode + inference CPU per file, measured apart) / end-to-end CPU per file. The last line reads
`efficiency=<x> files_per_s=<end-to-end> rss_growth=<peak RSS at 10N / at N>`.

    python scripts/bench_extract.py [--n 20] [--minutes 3] [--workers CORES] [--batch-size 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of the figures
REPO = Path(__file__).resolve().parent.parent
FORMATS = (("wav", 44100), ("flac", 48000), ("mp3", 44100), ("ogg", 22050))
CLIP = {"sr": 12000, "duration": 29.0}


def peak_rss_mib() -> float:
    """This process's peak RSS (the decoding workers are separate processes of constant size)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / 2**20 if sys.platform == "darwin" else kib / 2**10


def synth_song(seconds: float, sr: int, rng) -> np.ndarray:
    """Stereo 'music': a bass line and chords that change every 2 s, noise-burst drums, a little hiss."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    notes = 110.0 * 2 ** (rng.integers(0, 24, int(seconds // 2) + 1) / 12)
    f = notes[(t // 2).astype(int)]
    y = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.1 * np.sin(2 * np.pi * np.cumsum(1.5 * f) / sr)
    beat = (t * 2) % 1 < 0.05
    y = y + 0.3 * beat * rng.normal(size=n) + 0.01 * rng.normal(size=n)
    left, right = y, np.roll(y, 64)
    return (0.8 * np.stack([left, right], axis=1) / np.abs(y).max()).astype(np.float32)


def write_song(path: Path, y: np.ndarray, sr: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", sr, y.shape[1]) as f:  # in 1-s pieces: libsndfile's ogg writer crashes on long calls
        for start in range(0, len(y), sr):
            f.write(y[start:start + sr])


def make_library(root: Path, n: int, seconds: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        fmt, sr = FORMATS[i % len(FORMATS)]
        path = root / f"style{i % 4}" / f"song{i:04d}.{fmt}"
        write_song(path, synth_song(seconds, sr, rng), sr)
        paths.append(str(path))
    return paths


def link_library(paths: list[str], root: Path, copies: int) -> None:
    """`copies` hard links of every song under root (same label folders), so 10×N costs no extra disk."""
    for c in range(copies):
        for p in map(Path, paths):
            target = root / p.parent.name / f"{p.stem}_copy{c}{p.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, target)


def cpu_s(who=resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def decode_cpu_per_file(paths: list[str], offset) -> float:
    """CPU seconds to decode and resample one clip, in this process."""
    from siamrec.data.audio import load_clip

    start = time.process_time()
    for p in paths:
        load_clip(p, CLIP["sr"], CLIP["duration"], offset)
    return (time.process_time() - start) / len(paths)


def decode_rate(paths: list[str], offset, workers: int) -> float:
    """Steady files/s of decode_stream: from the first decoded file to the last."""
    from omegaconf import OmegaConf

    from siamrec.features import decode_stream

    clip_cfg = OmegaConf.create({**CLIP, "offset": offset})
    first = None
    for i, _clip, error in decode_stream(list(enumerate(paths)), clip_cfg, workers=workers):
        if error is not None:
            raise RuntimeError(f"{paths[i]}: {error}")
        first = first or time.perf_counter()
    return (len(paths) - 1) / (time.perf_counter() - first)


def make_backbone():
    """The theano-release backbone with dataset BatchNorm; the real weights when found. Returns (model, what)."""
    from siamrec.models.backbone import build_backbone
    from siamrec.models.weights import FILES, load_pretrained

    model = build_backbone("theano", "dataset")
    shared = Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))
    weights = shared / "weights" / "choi2017" / FILES["theano"]["file"]
    if weights.is_file():
        load_pretrained(model, weights, "theano")
        return model, f"pretrained {weights.name}"
    return model, "random weights"


def inference_rate(model, paths: list[str], batch_size: int, repeat: int) -> tuple[float, float]:
    """Steady files/s of the backbone on decoded clips (after one warm-up batch) and CPU seconds per file,
    each the best of `repeat` passes."""
    from siamrec.data.audio import load_clip

    clips = np.stack([load_clip(p, CLIP["sr"], CLIP["duration"]) for p in paths])
    model.predict_on_batch(clips[:batch_size])
    best, cpu = 0.0, np.inf
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(clips), batch_size):
            model.predict_on_batch(clips[i:i + batch_size])
        best = max(best, len(clips) / (time.perf_counter() - start))
        cpu = min(cpu, (time.process_time() - start_cpu) / len(clips))
    return best, cpu


def make_run(model, run: Path) -> None:
    """A run folder holding the backbone and an identity head over all five blocks (what extract loads)."""
    from siamrec.models.heads import IdentityHead, save_keras
    from siamrec.runs import write_embeddings

    run.mkdir(parents=True)
    save_keras(model, run / "backbone.keras")
    IdentityHead({"blocks": [1, 2, 3, 4, 5]}).save(run)
    write_embeddings(run, np.zeros((0, 160), dtype=np.float32), [], [], [], [])


def child(run: str, library: str, out: str, workers: int, batch_size: int) -> None:
    """One extraction in this (fresh) process; prints a JSON line: wall time, items, peak RSS."""
    import contextlib

    import siamrec.models.backbone  # noqa: F401 - registers kapre's layers, which siamrec.embedder does not import yet
    from siamrec.cli import compose, strip_hydra
    from siamrec.commands.extract import extract

    cfg = strip_hydra(compose("extract", [f"run={run}", "data=folder", f"data.root={library}", f"extract.out={out}",
                                          f"features.workers={workers}", f"features.batch_size={batch_size}",
                                          f"paths.cache={Path(out).parent / 'cache'}"]))
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        summary = extract(cfg, out)
    wall = time.perf_counter() - start
    print(json.dumps({"wall_s": wall, "files": summary["embedded"], "failed": summary["failed"],
                      "rss_mib": peak_rss_mib(), "cpu_s": cpu_s() + cpu_s(resource.RUSAGE_CHILDREN)}))


def run_child(run: Path, library: Path, out: Path, workers: int, batch_size: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(run), str(library), str(out),
                           "--workers", str(workers), "--batch-size", str(batch_size)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"extraction of {library} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extraction(run: Path, library: Path, out: Path, args) -> dict:
    """The fastest of `args.repeat` extractions of `library`, each into a fresh folder and process."""
    runs = [run_child(run, library, out.with_name(f"{out.name}-{i}"), args.workers, args.batch_size)
            for i in range(args.repeat)]
    return min(runs, key=lambda r: r["wall_s"])


def main() -> None:
    from siamrec.features import cpu_count as n_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="songs per size step (default 20; 10×N are extracted too)")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the long songs (default 3)")
    parser.add_argument("--workers", type=int, default=n_workers(), help="decoding processes (default: cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    parser.add_argument("--child", nargs=3, metavar=("RUN", "LIBRARY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.workers, args.batch_size)

    print(f"machine: {os.uname().machine}, {n_workers()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"N={args.n}, workers={args.workers}, batch_size={args.batch_size}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        long = make_library(tmp / "long", args.n, 60 * args.minutes, seed=0)
        short = make_library(tmp / "short", args.n, 30.0, seed=1)
        link_library(long, tmp / "long10", 10)
        print(f"generated {args.n} songs of {args.minutes:g} min and {args.n} of 30 s "
              f"({', '.join(f for f, _ in FORMATS)}) in {time.perf_counter() - start:.0f} s", flush=True)

        rates, cpus = {}, {}
        for name, paths in ((f"{args.minutes:g} min", long), ("30 s", short)):
            for offset in ("start", "middle"):
                rates[name, offset] = max(decode_rate(paths, offset, args.workers) for _ in range(args.repeat))
                cpus[name, offset] = min(decode_cpu_per_file(paths, offset) for _ in range(args.repeat))
                print(f"decode+resample only, {name} songs, clip.offset={offset}: {rates[name, offset]:.1f} files/s "
                      f"on {args.workers} workers; {1000 * cpus[name, offset]:.1f} ms CPU per clip", flush=True)
        decode, decode_cpu = rates[f"{args.minutes:g} min", "start"], cpus[f"{args.minutes:g} min", "start"]

        model, weights = make_backbone()
        inference, inference_cpu = inference_rate(model, long, args.batch_size, args.repeat)
        print(f"inference only ({weights}, batch {args.batch_size}): {inference:.2f} files/s", flush=True)
        make_run(model, tmp / "run")
        ideal = 1.0 / (1.0 / decode + 1.0 / inference)
        print(f"ideal overlap 1/(1/decode + 1/inference): {ideal:.2f} files/s", flush=True)

        small = extraction(tmp / "run", tmp / "long", tmp / "out1", args)
        large = extraction(tmp / "run", tmp / "long10", tmp / "out10", args)
        for what, r in (("N", small), ("10N", large)):
            print(f"end to end, {r['files']} songs ({what}): {r['wall_s']:.1f} s = {r['files'] / r['wall_s']:.2f} "
                  f"files/s including start-up; peak RSS {r['rss_mib']:.0f} MiB", flush=True)
        end_to_end = (large["files"] - small["files"]) / (large["wall_s"] - small["wall_s"])
        end_to_end_cpu = (large["cpu_s"] - small["cpu_s"]) / (large["files"] - small["files"])
        startup = small["wall_s"] - small["files"] / end_to_end
        efficiency = end_to_end / ideal
        rss_growth = large["rss_mib"] / small["rss_mib"]
        print(f"end to end, steady: {end_to_end:.2f} files/s; fixed start-up {startup:.1f} s; "
              f"peak RSS {large['rss_mib'] - small['rss_mib']:+.0f} MiB from N to 10N")
        apart = decode_cpu + inference_cpu
        print(f"CPU per file: decode {1000 * decode_cpu:.0f} ms + inference {1000 * inference_cpu:.0f} ms = "
              f"{1000 * apart:.0f} ms apart, {1000 * end_to_end_cpu:.0f} ms end to end (steady): "
              f"CPU efficiency {apart / end_to_end_cpu:.3f}")
        print(f"load average now {os.getloadavg()[0]:.2f} (other jobs share the cores: a run with more threads "
              "gets a larger share, so wall-clock efficiency can exceed 1; CPU efficiency does not depend on it)")
    print(f"efficiency={efficiency:.3f} files_per_s={end_to_end:.2f} rss_growth={rss_growth:.3f}")


if __name__ == "__main__":
    main()
