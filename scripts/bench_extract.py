"""Extraction throughput and memory: decode-only, inference-only and end-to-end files/s, CPU per file and per window,
peak RSS at N and 10×N, for any window setting (clip.windows).

Generates N songs of --minutes (default 3) and N of 30 s in mixed formats (wav, flac, mp3, ogg; stereo at 44.1,
48 and 22.05 kHz) into a temporary folder, then measures, with the backbone's windows chosen by --windows:

* decode only (siamrec.data.audio.decode_windows: seek, read, mono, resample): files/s through
  siamrec.extractor.decode_stream on --workers processes (10 passes over the N files), and CPU ms per window in
  this process, for both song lengths. Windows are read by seeking, so the CPU per window must not grow with the
  song's length: the ratio (3-min songs / 30-s songs, overall and per format) should stay near 1;
* inference only: the backbone (--backbone, default choi2017: the Theano release with dataset BatchNorm
  statistics estimated over the long songs; the real weights from paths.shared, else random ones: the cost is the
  same) on the already-decoded windows of the long songs (10 passes), through Extractor.embed_windows;
* end to end: the `extract` command (engine --engine) on N and on 10×N long songs (the N files hard-linked 10
  times), each in a fresh subprocess so that its peak RSS is its own. The steady rate leaves out the fixed start-up
  (loading the model, starting the workers): (10N − N) / (t(10N) − t(N)); likewise the CPU per file.

Rates are the best of --repeat runs (other jobs on a shared machine only ever slow a run down).
ideal = 1 / (1/decode + 1/inference) (decoding and inference sharing the cores); efficiency = end_to_end / ideal.
On a busy machine a run with more threads gets a larger share of the cores, so the CPU per file is compared too:
cpu_efficiency = (decode + inference CPU per file, measured apart) / end-to-end CPU per file (steady).
Each figure is printed on its own line, `name: value unit`; the last line is the command that produced them.

    python scripts/bench_extract.py [--windows first|spread:K|all] [--n 20] [--minutes 3] [--workers CORES]
                                    [--batch-size 8] [--repeat 3] [--backbone choi2017] [--engine local]
                                    [KEY=VALUE ...]   (more Hydra overrides, e.g. clip.offset=middle clip.hop=10)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchkit import FORMATS, REPO, SHARED, cpu_s, figure, link_library, make_library, peak_rss_mib


# --- decode only -------------------------------------------------------------------------------------------------
def decode_cpu(paths: list[str], plan) -> tuple[list[np.ndarray], list[float]]:
    """Each file's windows and the CPU seconds its decoding took, in this process."""
    from siamrec.data.audio import decode_windows

    windows, cpu = [], []
    for p in paths:
        start = time.process_time()
        windows.append(decode_windows(p, plan))
        cpu.append(time.process_time() - start)
    return windows, cpu


def decode_rate(paths: list[str], plan, workers: int, passes: int = 10) -> float:
    """Steady files/s of decode_stream on `workers` processes over `passes` passes of the files (so that the pool's
    start is a small part): from the first decoded file to the last."""
    from siamrec.extractor import decode_stream

    paths = paths * passes
    first = None
    for i, _windows, error, _digest in decode_stream(list(enumerate(paths)), plan, workers=workers):
        if error is not None:
            raise SystemExit(f"{paths[i]}: {error}")
        first = first or time.perf_counter()
    return (len(paths) - 1) / (time.perf_counter() - first)


# --- inference only ----------------------------------------------------------------------------------------------
def inference(extractor, windows: list[np.ndarray], repeat: int, passes: int = 10) -> tuple[float, float]:
    """Steady files/s of the backbone on decoded windows (after a warm-up batch) and CPU seconds per file, over
    `passes` passes of the songs."""
    batch = np.concatenate(windows)
    extractor.embed_windows(batch[:extractor.batch_size])
    best, cpu = 0.0, np.inf
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(passes):
            extractor.embed_windows(batch)
        best = max(best, passes * len(windows) / (time.perf_counter() - start))
        cpu = min(cpu, (time.process_time() - start_cpu) / (passes * len(windows)))
    return best, cpu


def make_run(extractor, cfg, run: Path) -> None:
    """A run folder holding the prepared backbone, its clip settings and an identity head (what extract loads)."""
    from omegaconf import OmegaConf

    from siamrec.encoder import Member, SongEncoder
    from siamrec.models.heads import IdentityHead
    from siamrec.runs import write_embeddings

    run.mkdir(parents=True)
    SongEncoder([Member(extractor, None, OmegaConf.to_container(cfg.backbone, resolve=True))]).save(run)
    IdentityHead().save(run)
    write_embeddings(run, np.zeros((0, extractor.dim), dtype=np.float32), [], [], [], [])


# --- end to end --------------------------------------------------------------------------------------------------
def child(run: str, library: str, out: str, args) -> None:
    """One `extract` in this (fresh) process; prints a JSON line: its summary, peak RSS and CPU seconds."""
    from siamrec.cli import compose, strip_hydra
    from siamrec.commands.extract import extract

    cfg = strip_hydra(compose("extract", [
        f"run={run}", "data=folder", f"data.root={library}", f"extract.out={out}", f"extract.engine={args.engine}",
        f"features.workers={args.workers}", f"features.batch_size={args.batch_size}",
        f"paths.cache={Path(out).parent / 'cache'}", f"paths.shared={SHARED}"]))
    with contextlib.redirect_stdout(sys.stderr):
        out = extract(cfg, out)
    summary = json.loads((Path(out) / "extract.json").read_text())
    print(json.dumps({**summary, "rss_mib": peak_rss_mib(), "cpu_s": cpu_s() + cpu_s(resource.RUSAGE_CHILDREN)}))


def run_child(run: Path, library: Path, out: Path, args) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(run), str(library), str(out),
                           "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                           "--engine", args.engine], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"extraction of {library} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise SystemExit(f"extraction of {library}: {result['failed']} files failed:\n{proc.stderr[-3000:]}")
    return result


def extraction(run: Path, library: Path, out: Path, args) -> dict:
    """The fastest of `args.repeat` extractions of `library`, each into a fresh folder and process."""
    runs = [run_child(run, library, out.with_name(f"{out.name}-{i}"), args) for i in range(args.repeat)]
    return min(runs, key=lambda r: r["wall_s"])


# --- main --------------------------------------------------------------------------------------------------------
def main() -> None:
    from siamrec.extractor import cpu_count

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="first", help="clip.windows: first | spread:K | all (default first)")
    parser.add_argument("--n", type=int, default=20, help="songs per size step (default 20; 10×N are extracted too)")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the long songs (default 3)")
    parser.add_argument("--workers", type=int, default=cpu_count(), help="decoding processes (default: cores)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per backbone batch (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    parser.add_argument("--backbone", default="choi2017", help="backbone config (default choi2017)")
    parser.add_argument("--engine", default="local", help="extract.engine of the end-to-end runs (default local)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides (KEY=VALUE), e.g. clip.offset=middle")
    parser.add_argument("--child", nargs=3, metavar=("RUN", "LIBRARY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args)
    command = shlex.join(["python", os.path.relpath(sys.argv[0], REPO) if Path(sys.argv[0]).is_file()
                          else sys.argv[0], *sys.argv[1:]])

    from siamrec.cli import compose, seed_everything, strip_hydra
    from siamrec.errors import SiamrecError
    from siamrec.extractor import Extractor, check_clip, make_bundle, prepared_model, window_plan

    print(f"machine: {os.uname().machine}, {cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"N={args.n}, workers={args.workers}, batch_size={args.batch_size}, backbone={args.backbone}, "
          f"clip.windows={args.windows}, engine={args.engine}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        tmp = Path(tmp)
        overrides = [f"backbone={args.backbone}", f"clip.windows={args.windows}", f"paths.cache={tmp / 'cache'}",
                     f"paths.shared={SHARED}", "backbone.download=false",
                     f"features.batch_size={args.batch_size}", *args.overrides]
        cfg = strip_hydra(compose("extract", overrides))
        seed_everything(int(cfg.seed))
        bundle = make_bundle(cfg.backbone)
        check_clip(cfg.clip, bundle)
        plan = window_plan(bundle, cfg.clip)

        start = time.perf_counter()
        long = [str(p) for p in make_library(tmp / "long", args.n, 60 * args.minutes, seed=0)]
        short = [str(p) for p in make_library(tmp / "short", args.n, 30.0, seed=1)]
        link_library(long, tmp / "long10", 10)
        print(f"generated {args.n} songs of {args.minutes:g} min and {args.n} of 30 s "
              f"({', '.join(f for f, _ in FORMATS)}) in {time.perf_counter() - start:.0f} s", flush=True)

        # decode only
        lengths = {"3min" if args.minutes == 3 else f"{args.minutes:g}min": long, "30s": short}
        per_window, rates, windows_of = {}, {}, {}
        for name, paths in lengths.items():
            rates[name] = max(decode_rate(paths, plan, args.workers) for _ in range(args.repeat))
            runs = [decode_cpu(paths, plan) for _ in range(args.repeat)]
            windows_of[name] = runs[0][0]
            n_windows = np.array([len(w) for w in runs[0][0]])
            cpu = np.min([r[1] for r in runs], axis=0)           # per file, best of the repeats
            per_window[name] = cpu / n_windows
            figure(f"decode_files_per_s_{name}", rates[name], f"files/s on {args.workers} workers")
            figure(f"windows_per_file_{name}", n_windows.mean(), "", 1)
            figure(f"decode_cpu_ms_per_file_{name}", 1000 * cpu.mean(), "ms")
            figure(f"decode_cpu_ms_per_window_{name}", 1000 * per_window[name].mean(), "ms")
        long_name = next(iter(lengths))
        figure(f"decode_cpu_per_window_ratio_{long_name}_vs_30s",
               per_window[long_name].mean() / per_window["30s"].mean(), "(≈1: a seek; grows with length: a scan)")
        for k, (fmt, _) in enumerate(FORMATS):
            sel = slice(k, None, len(FORMATS))
            if len(per_window["30s"][sel]):
                figure(f"decode_cpu_per_window_ratio_{long_name}_vs_30s[{fmt}]",
                       per_window[long_name][sel].mean() / per_window["30s"][sel].mean())
        decode = rates[long_name]
        decode_cpu_file = float(np.mean([per_window[long_name][i] * len(w)
                                         for i, w in enumerate(windows_of[long_name])]))

        # inference only
        try:
            model = prepared_model(bundle, cfg, long, progress=False)
            weights = "pretrained"
        except SiamrecError as exc:
            if "not found" not in str(exc):
                raise
            cfg = strip_hydra(compose("extract", overrides + ["backbone.pretrained=false"]))
            bundle = make_bundle(cfg.backbone)
            model = prepared_model(bundle, cfg, long, progress=False)
            weights = "random (no weight file under paths.shared)"
        print(f"backbone: {bundle.name}, weights {weights}", flush=True)
        extractor = Extractor(bundle, model, cfg.clip, batch_size=args.batch_size, workers=0, progress=False)
        infer, infer_cpu = inference(extractor, windows_of[long_name], args.repeat)
        windows_per_file = np.mean([len(w) for w in windows_of[long_name]])
        figure(f"inference_files_per_s_{long_name}", infer, "files/s")
        figure("inference_cpu_ms_per_file", 1000 * infer_cpu, "ms")
        figure("inference_cpu_ms_per_window", 1000 * infer_cpu / windows_per_file, "ms")
        ideal = 1.0 / (1.0 / decode + 1.0 / infer)
        figure("ideal_files_per_s", ideal, "files/s (1/(1/decode + 1/inference))")
        make_run(extractor, cfg, tmp / "run")

        # end to end
        small = extraction(tmp / "run", tmp / "long", tmp / "out1", args)
        large = extraction(tmp / "run", tmp / "long10", tmp / "out10", args)
        for what, r in (("N", small), ("10N", large)):
            figure(f"end_to_end_files_per_s_{what}", r["files_per_s"],
                   f"files/s ({r['embedded']} songs in {r['wall_s']:.1f} s, start-up included)")
            figure(f"peak_rss_mib_{what}", r["rss_mib"], "MiB", 0)
        end_to_end = (large["embedded"] - small["embedded"]) / (large["wall_s"] - small["wall_s"])
        e2e_cpu = (large["cpu_s"] - small["cpu_s"]) / (large["embedded"] - small["embedded"])
        figure("end_to_end_files_per_s", end_to_end, "files/s (steady: (10N - N) / (t(10N) - t(N)))")
        figure("startup_s", small["wall_s"] - small["embedded"] / end_to_end, "s")
        figure("end_to_end_cpu_ms_per_file", 1000 * e2e_cpu, "ms (steady)")
        figure("end_to_end_cpu_ms_per_window", 1000 * e2e_cpu / windows_per_file, "ms (steady)")
        figure("efficiency", end_to_end / ideal, "(end to end / ideal)", 3)
        figure("cpu_efficiency", (decode_cpu_file + infer_cpu) / e2e_cpu, "((decode + inference CPU) / end to end)", 3)
        figure("rss_growth", large["rss_mib"] / small["rss_mib"], "(peak RSS at 10N / at N)", 3)
    print(f"load average now {os.getloadavg()[0]:.2f}", flush=True)
    print(f"command: {command}")


if __name__ == "__main__":
    main()
