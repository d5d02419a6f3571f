"""Extraction throughput, CPU and memory: decode-only, inference-only and end-to-end files/s, CPU per song and per
window, how busy the cores are and how resident memory grows, for any window setting (clip.windows).

Songs: N synthetic songs of --minutes (default 3) and N of 30 s in mixed formats (wav, flac, mp3, ogg; stereo at
44.1, 48 and 22.05 kHz), or N real ones (--songs FOLDER, or --emotify GENRE: shared Emotify excerpts of one genre
concatenated into 44.1 kHz stereo MP3s of --minutes). Then, with the backbone's windows (its default, or --windows /
clip.windows=...):

* decode only (siamrec.data.audio.decode_windows: seek, read, mono, resample): files/s through
  siamrec.extractor.decode_stream on --workers processes (--passes over the N files), and CPU ms per window in
  this process, for both song lengths. Windows are read by seeking, so the CPU per window must not grow with the
  song's length: the ratio (long songs / 30-s songs, overall and per format) should stay near 1;
* inference only: the backbone (--backbone, default choi2017; the real weights from paths.shared, else random
  ones: the cost is the same) on the already-decoded windows of the long songs, through Extractor.embed_windows,
  in --runtime and in each runtime of --compare;
* --costs all,spread:8,...: CPU-s per song (decoding + inference) of each clip.windows setting on the same songs;
* end to end: the `extract` command (engine --engine) on scale×N songs (the N files hard-linked), in a fresh
  subprocess. Steady figures are taken from song 10 to the last, from inside that process: CPU-s per song (the
  process and its decoding workers), songs/s, core_efficiency (CPU-s per wall-s over the process's cores), the
  machine's idle cores meanwhile (what the extraction left unused: on a machine shared with other jobs
  core_efficiency cannot reach 1, but the idle cores should be ~0), and the resident memory at song 10 and at the
  last song (rss_growth);
* --compare essentia: essentia-tensorflow's TensorflowPredictMusiCNN on the same songs, in processes of its own.

Rates are the best of --repeat runs (other jobs on a shared machine only ever slow a run down).
ideal = 1 / (1/decode + 1/inference); efficiency = end_to_end / ideal;
cpu_efficiency = (decode + inference CPU per song, measured apart) / end-to-end CPU per song (steady).
Each figure is printed on its own line, `name: value unit`; the last line is the command that produced them.

    python scripts/bench_extract.py [--windows first|spread:K|all] [--n 20] [--minutes 3] [--workers CORES]
                                    [--batch-size 8] [--repeat 3] [--backbone choi2017] [--engine local]
                                    [--songs FOLDER | --emotify GENRE] [--costs all,spread:8] [--compare essentia]
                                    [KEY=VALUE ...]   (more Hydra overrides, e.g. clip.windows=spread:16)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchkit import (FORMATS, REPO, SHARED, figure, link_library, make_library, peak_rss_mib, tree_cpu_s,
                      tree_rss_mib, write_song)


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
    from siamrec.runs import mark_finished, write_embeddings

    run.mkdir(parents=True)
    SongEncoder([Member(extractor, None, OmegaConf.to_container(cfg.backbone, resolve=True))]).save(run)
    IdentityHead().save(run)
    write_embeddings(run, np.zeros((0, extractor.dim), dtype=np.float32), [], [], [], [])
    mark_finished(run)  # a finished run: extract refuses a folder without its completion marker


# --- end to end --------------------------------------------------------------------------------------------------
STEADY_FROM = 10  # steady-state figures are taken from this song on (model loaded, workers started, queue full)


def child(run: str, library: str, out: str, args) -> None:
    """One `extract` in this (fresh) process; prints a JSON line: its summary, and the CPU seconds (this process and
    its decoding workers), wall time and resident memory (likewise) when song STEADY_FROM and the last song were
    done, and the machine's idle CPU seconds in between (/proc/stat)."""
    import siamrec.progress
    from siamrec.cli import compose, strip_hydra
    from siamrec.commands.extract import extract

    cfg = strip_hydra(compose("extract", [
        f"run={run}", "data=folder", f"data.root={library}", f"extract.out={out}", f"extract.engine={args.engine}",
        f"features.workers={args.workers}", f"features.batch_size={args.batch_size}",
        f"features.runtime={args.runtime}", f"features.threads={'null' if args.threads is None else args.threads}",
        f"paths.cache={Path(out).parent / 'cache'}", f"paths.shared={SHARED}"]))
    marks, series = {}, {}
    song = siamrec.progress.Progress.song

    def counted(self, failed: bool = False) -> None:  # the bench's own probe on extract's progress
        song(self, failed)
        if (self.embedded + self.failed) % 10 == 0:  # where memory grows: a warm-up levels off, a leak does not
            series[self.embedded + self.failed] = [round(tree_rss_mib()), round(tree_rss_mib(own=True))]
        if self.embedded + self.failed in (STEADY_FROM, self.total - self.reused):
            marks[self.embedded + self.failed] = {"wall_s": time.perf_counter(), "cpu_s": tree_cpu_s(),
                                                  "rss_mib": tree_rss_mib(), "rss_self_mib": tree_rss_mib(own=True),
                                                  "idle_s": machine_idle_s()}

    siamrec.progress.Progress.song = counted
    with contextlib.redirect_stdout(sys.stderr):
        out = extract(cfg, out)
    summary = json.loads((Path(out) / "extract.json").read_text())
    print(json.dumps({**summary, "marks": marks, "rss_series": series, "peak_rss_mib": peak_rss_mib()}))


def machine_idle_s() -> float:
    """Idle CPU seconds of the whole machine since boot, all cores (/proc/stat: idle + iowait); NaN without it."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return float("nan")
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def run_child(run: Path, library: Path, out: Path, args) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(run), str(library), str(out),
                           "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                           "--engine", args.engine, "--runtime", args.runtime,
                           *(["--threads", str(args.threads)] if args.threads is not None else [])],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"extraction of {library} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise SystemExit(f"extraction of {library}: {result['failed']} files failed:\n{proc.stderr[-3000:]}")
    return result


def steady(result: dict) -> dict:
    """Figures of one extraction between song STEADY_FROM and its last song."""
    first, last = (result["marks"][k] for k in sorted(result["marks"], key=int))
    songs = result["embedded"] - STEADY_FROM
    wall, cpu = last["wall_s"] - first["wall_s"], last["cpu_s"] - first["cpu_s"]
    return {"songs": songs, "files_per_s": songs / wall, "cpu_s_per_song": cpu / songs,
            "cores_busy": cpu / wall, "idle_cores": (last["idle_s"] - first["idle_s"]) / wall,
            "rss_first": first["rss_mib"], "rss_last": last["rss_mib"],
            "rss_self_first": first["rss_self_mib"], "rss_self_last": last["rss_self_mib"]}


# --- essentia-tensorflow, the peer ------------------------------------------------------------------------------
ESSENTIA_INPUT, ESSENTIA_TAGS = "model/Placeholder", "model/Sigmoid"
ESSENTIA_PENULTIMATE = "model/penultimate"


def freeze_musicnn(ckpt: str, out: str) -> None:
    """The original MSD_musicnn checkpoint frozen into one graph as essentia's msd-musicnn-1.pb is: input
    model/Placeholder (batch, 187, 96), outputs model/Sigmoid (50 tags) and model/penultimate (the 200-d layer
    siamrec calls `penultimate`: the dense layer's BatchNorm output). Uses the original model code (musicnn 0.1.0,
    tf_keras; run in a process of its own with TF_USE_LEGACY_KERAS=1)."""
    import tensorflow as tf
    from musicnn import models as original

    graph = tf.Graph()
    with graph.as_default():
        with tf.compat.v1.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96], name="Placeholder")
            logits, *_, penultimate = original.define_model(x, tf.constant(False), "MSD_musicnn", 50)
            tf.nn.sigmoid(logits, name="Sigmoid")
            tf.identity(penultimate, name="penultimate")
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, ckpt)
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), [ESSENTIA_TAGS, ESSENTIA_PENULTIMATE])
    Path(out).write_bytes(frozen.SerializeToString())


def essentia_child(pb: str, songs: str) -> None:
    """essentia's TensorflowPredictMusiCNN at its default settings (patch hop 93 frames, batch 64) on the songs
    (MonoLoader at 16 kHz): per song its CPU seconds (decoding included) and mean penultimate vector (JSON lines)."""
    import essentia
    import essentia.standard as es

    essentia.log.warningActive = False
    model = es.TensorflowPredictMusiCNN(graphFilename=pb, output=ESSENTIA_PENULTIMATE)
    for path in json.loads(songs):
        start = time.process_time()
        audio = es.MonoLoader(filename=path, sampleRate=16000, resampleQuality=4)()
        emb = np.asarray(model(audio))
        print(json.dumps({"cpu_s": time.process_time() - start, "patches": len(emb),
                          "mean": emb.mean(axis=0).tolist()}), flush=True)


def essentia_compare(paths: list[str], tmp: Path, siamrec_vectors: np.ndarray) -> dict | None:
    """CPU per song of essentia-tensorflow on the songs and the cosine of its mean penultimate vector with
    siamrec's; None (with a printed reason) when essentia-tensorflow, the original musicnn code or the checkpoint
    is missing."""
    import importlib.util

    missing = [m for m in ("essentia", "musicnn", "tf_keras") if importlib.util.find_spec(m) is None]
    ckpt = SHARED / "weights" / "musicnn" / "MSD_musicnn"
    if missing or not (ckpt / ".index").is_file():
        why = f"{', '.join(missing)} not installed (pip install essentia-tensorflow; musicnn==0.1.0 --no-deps; " \
              "tf_keras)" if missing else f"no MSD_musicnn checkpoint under {ckpt}"
        print(f"essentia: skipped, {why}", flush=True)
        return None
    pb = tmp / "msd-musicnn-frozen.pb"
    # essentia at its own defaults: without siamrec's TF_ENABLE_ONEDNN_OPTS=1 (siamrec.cli sets it in this process),
    # with which essentia-tensorflow dies of a floating-point exception (SIGFPE) on its first song
    env = {**{k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}, "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_USE_LEGACY_KERAS": "1", "PYTHONWARNINGS": "ignore"}
    for argv in (["--freeze", str(ckpt) + "/", str(pb)], ["--essentia", str(pb), json.dumps(paths)]):
        proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"essentia comparison ({argv[0]}) failed with exit status {proc.returncode} after "
                             f"{proc.stdout.count(chr(10))} songs:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    theirs = np.array([r["mean"] for r in rows])
    cos = np.sum(theirs * siamrec_vectors, axis=1) / (np.linalg.norm(theirs, axis=1)
                                                      * np.linalg.norm(siamrec_vectors, axis=1))
    return {"cpu_s": float(np.mean([r["cpu_s"] for r in rows[1:]] or [rows[0]["cpu_s"]])),  # first: warm-up
            "patches": float(np.mean([r["patches"] for r in rows])), "cosine": cos}


def emotify_songs(genre: str, n: int, seconds: float, folder: Path) -> Path:
    """n songs of `seconds` as 44.1 kHz stereo MP3s (what a listener's library holds), each made of consecutive
    shared Emotify excerpts of `genre` (one-minute, 24 kHz mono Opus): real music, of a real song's length."""
    import soundfile as sf
    import soxr

    excerpts = sorted((SHARED / "audio" / "emotify" / genre).glob("*.ogg"), key=lambda p: int(p.stem))
    if not excerpts:
        raise SystemExit(f"--emotify {genre}: no excerpts under {SHARED / 'audio' / 'emotify' / genre} "
                         "(set SIAMREC_SHARED to the shared data)")
    feed = iter(excerpts)
    folder.mkdir(parents=True)
    for i in range(n):
        parts, length = [], 0
        while length < seconds * 44100:
            path = next(feed, None)
            if path is None:
                raise SystemExit(f"--emotify {genre}: {len(excerpts)} excerpts are too few for {n} songs of "
                                 f"{seconds / 60:g} min")
            y, sr = sf.read(path, dtype="float32", always_2d=True)
            parts.append(soxr.resample(y.mean(axis=1), sr, 44100))
            length += len(parts[-1])
        y = np.concatenate(parts)[:int(seconds * 44100)]
        stereo = np.stack([y, y], axis=1)
        write_song(folder / f"{genre}{i:03d}.mp3", stereo, 44100)
    return folder


# --- main --------------------------------------------------------------------------------------------------------
def main() -> None:
    from siamrec.inference import cpu_count

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", help="clip.windows: first | spread:K | all (default: the backbone's; the "
                        "override clip.windows=... works too)")
    parser.add_argument("--n", type=int, default=20, help="songs (default 20; the end-to-end run extracts scale×N)")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the long songs (default 3)")
    parser.add_argument("--workers", type=int, default=cpu_count(), help="decoding processes (default: cores)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per backbone batch (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    parser.add_argument("--backbone", default="choi2017", help="backbone config (default choi2017)")
    parser.add_argument("--engine", default="local", help="extract.engine of the end-to-end runs (default local)")
    parser.add_argument("--songs", help="a folder of real songs: its first N files (sorted) instead of synthetic "
                        "ones (the 30-s decode comparison is then skipped)")
    parser.add_argument("--emotify", metavar="GENRE", help="real songs instead of synthetic ones: N songs of --minutes "
                        "made by concatenating the shared Emotify excerpts of GENRE (e.g. rock), as 44.1 kHz stereo "
                        "MP3s in the temporary folder")
    parser.add_argument("--costs", default="", help="comma list of clip.windows settings (e.g. all,spread:8,spread:16):"
                        " CPU-s per song (decoding + inference, this process) of each on the same songs")
    parser.add_argument("--passes", type=int, default=10, help="passes over the songs when measuring decode-only "
                        "and inference-only (default 10)")
    parser.add_argument("--scale", type=int, default=10, help="the end-to-end run extracts scale×N songs "
                        f"(N hard-linked; default 10; steady figures from song {STEADY_FROM} on)")
    parser.add_argument("--runtime", default="tensorflow", help="features.runtime (default tensorflow)")
    parser.add_argument("--threads", type=int, default=None, help="features.threads (default: cores)")
    parser.add_argument("--compare", default="", help="comma list: tensorflow or onnxruntime (inference in the "
                        "other runtime on the same windows), essentia (essentia-tensorflow's TensorflowPredictMusiCNN on the same songs)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides (KEY=VALUE), e.g. clip.offset=middle")
    parser.add_argument("--child", nargs=3, metavar=("RUN", "LIBRARY", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--freeze", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--essentia", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args)
    if args.freeze:
        return freeze_musicnn(*args.freeze)
    if args.essentia:
        return essentia_child(*args.essentia)
    if args.n * args.scale <= STEADY_FROM:
        raise SystemExit(f"--n {args.n} --scale {args.scale}: the end-to-end run needs more than {STEADY_FROM} songs")
    compare = [c for c in args.compare.split(",") if c]
    if set(compare) - {"tensorflow", "onnxruntime", "essentia"}:
        raise SystemExit(f"--compare {args.compare}: use tensorflow, onnxruntime and/or essentia")
    command = shlex.join(["python", os.path.relpath(sys.argv[0], REPO) if Path(sys.argv[0]).is_file()
                          else sys.argv[0], *sys.argv[1:]])

    from siamrec.cli import compose, seed_everything, strip_hydra
    from siamrec.errors import SiamrecError
    from siamrec.extractor import Extractor, check_clip, make_bundle, prepared_model, window_plan

    print(f"machine: {os.uname().machine}, {cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"N={args.n}, workers={args.workers}, batch_size={args.batch_size}, backbone={args.backbone}, "
          f"clip.windows={args.windows or 'the backbone’s'}, engine={args.engine}, features.runtime={args.runtime}, "
          f"features.threads={args.threads}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        tmp = Path(tmp)
        overrides = [f"backbone={args.backbone}", *([f"clip.windows={args.windows}"] if args.windows else []),
                     f"paths.cache={tmp / 'cache'}",
                     f"paths.shared={SHARED}", "backbone.download=false",
                     f"features.batch_size={args.batch_size}", f"features.runtime={args.runtime}", *args.overrides]
        cfg = strip_hydra(compose("extract", overrides))
        seed_everything(int(cfg.seed))
        bundle = make_bundle(cfg.backbone)
        check_clip(cfg.clip, bundle)
        plan = window_plan(bundle, cfg.clip)

        start = time.perf_counter()
        if args.emotify:
            args.songs = str(emotify_songs(args.emotify, args.n, 60 * args.minutes, tmp / "emotify"))
        if args.songs:
            found = sorted(str(p) for p in Path(args.songs).expanduser().iterdir() if p.is_file())[:args.n]
            if len(found) < args.n:
                raise SystemExit(f"--songs {args.songs}: {len(found)} files, --n {args.n} asked for")
            long = []
            for i, p in enumerate(found):  # under one label folder (extract's data=folder), linked, not copied
                target = tmp / "long" / "songs" / f"song{i:04d}{Path(p).suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(p, target)
                long.append(str(target))
            lengths = {"songs": long}
            print(f"{args.n} songs from {args.emotify and f'Emotify {args.emotify}, concatenated' or args.songs}",
                  flush=True)
        else:
            long = [str(p) for p in make_library(tmp / "long", args.n, 60 * args.minutes, seed=0)]
            short = [str(p) for p in make_library(tmp / "short", args.n, 30.0, seed=1)]
            print(f"generated {args.n} songs of {args.minutes:g} min and {args.n} of 30 s "
                  f"({', '.join(f for f, _ in FORMATS)}) in {time.perf_counter() - start:.0f} s", flush=True)
            lengths = {"3min" if args.minutes == 3 else f"{args.minutes:g}min": long, "30s": short}
        link_library(long, tmp / "long10", args.scale)

        # decode only
        per_window, rates, windows_of = {}, {}, {}
        for name, paths in lengths.items():
            rates[name] = max(decode_rate(paths, plan, args.workers, args.passes) for _ in range(args.repeat))
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
        if "30s" in per_window:
            figure(f"decode_cpu_per_window_ratio_{long_name}_vs_30s",
                   per_window[long_name].mean() / per_window["30s"].mean(), "(≈1: a seek; grows with length: a scan)")
        for k, (fmt, _) in enumerate(FORMATS):
            sel = slice(k, None, len(FORMATS))
            if "30s" in per_window and len(per_window["30s"][sel]):
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
        windows_per_file = np.mean([len(w) for w in windows_of[long_name]])
        measured = {}
        for runtime in dict.fromkeys([args.runtime] + [c for c in compare if c != "essentia"]):
            extractor = Extractor(bundle, model, cfg.clip, batch_size=args.batch_size, workers=0, progress=False,
                                  runtime=runtime, threads=args.threads, model_cache=tmp / "cache")
            used = extractor.runner().name
            print(f"runtime: {used}" + (f" (asked for {runtime})" if used != runtime else ""), flush=True)
            measured[runtime] = inference(extractor, windows_of[long_name], args.repeat, args.passes)
            tag = "" if runtime == args.runtime else f"_{used}"
            figure(f"inference_files_per_s{tag}", measured[runtime][0], "files/s")
            figure(f"inference_cpu_s_per_song{tag}", measured[runtime][1], "CPU-s")
            figure(f"inference_cpu_ms_per_window{tag}", 1000 * measured[runtime][1] / windows_per_file, "ms")
        infer, infer_cpu = measured[args.runtime]
        extractor = Extractor(bundle, model, cfg.clip, batch_size=args.batch_size, workers=0, progress=False,
                              runtime=args.runtime, threads=args.threads, model_cache=tmp / "cache")
        song_vectors = extractor.columns(bundle.default_parts)
        ideal = 1.0 / (1.0 / decode + 1.0 / infer)
        figure("ideal_files_per_s", ideal, "files/s (1/(1/decode + 1/inference))")
        make_run(extractor, cfg, tmp / "run")

        for windows in [w for w in args.costs.split(",") if w]:
            clip = strip_hydra(compose("extract", overrides + [f"clip.windows={windows}"])).clip
            costly = Extractor(bundle, model, clip, batch_size=args.batch_size, workers=0, progress=False,
                               runtime=args.runtime, threads=args.threads, model_cache=tmp / "cache")
            got, decode_s = decode_cpu(long, costly.plan)
            start = time.process_time()
            costly.embed_windows(np.concatenate(got))
            cpu = (sum(decode_s) + time.process_time() - start) / len(long)
            figure(f"cpu_s_per_song[clip.windows={windows}]", cpu, f"CPU-s ({np.mean([len(w) for w in got]):.1f} "
                   f"windows per {args.minutes:g}-min song; decoding + inference, one process)")

        # end to end: one extraction of scale×N songs; steady figures from song STEADY_FROM to the last
        result = run_child(tmp / "run", tmp / "long10", tmp / "out", args)
        st = steady(result)
        figure("end_to_end_files_per_s", st["files_per_s"], f"files/s (steady, songs {STEADY_FROM}–"
               f"{result['embedded']}; {result['embedded']} songs in {result['wall_s']:.1f} s with start-up)")
        figure("end_to_end_cpu_s_per_song", st["cpu_s_per_song"], f"CPU-s (steady, decoding workers included; "
               f"{windows_per_file:.1f} windows per song)")
        figure("end_to_end_cpu_ms_per_window", 1000 * st["cpu_s_per_song"] / windows_per_file, "ms (steady)")
        figure("efficiency", st["files_per_s"] / ideal, "(end to end / ideal)", 3)
        figure("cpu_efficiency", (decode_cpu_file + infer_cpu) / st["cpu_s_per_song"],
               "((decode + inference CPU, measured apart) / end-to-end CPU)", 3)
        figure("core_efficiency", st["cores_busy"] / cpu_count(),
               f"(CPU-s per wall-s of the extraction and its workers over the {cpu_count()} cores, steady)", 3)
        figure("machine_idle_cores", st["idle_cores"], "(cores the machine left idle meanwhile, steady: what "
               "the extraction could have used but did not)", 2)
        figure("cores_used_of_available", st["cores_busy"] / (st["cores_busy"] + st["idle_cores"]),
               "(the extraction's CPU / (its CPU + the machine's idle CPU), steady)", 3)
        figure(f"rss_mib_song_{STEADY_FROM}", st["rss_first"], "MiB (extraction + workers)", 0)
        figure(f"rss_mib_song_{result['embedded']}", st["rss_last"], "MiB", 0)
        figure("rss_growth", st["rss_last"] / st["rss_first"],
               f"(resident memory at song {result['embedded']} / at song {STEADY_FROM})", 3)
        figure("rss_growth_main_process", st["rss_self_last"] / st["rss_self_first"], f"(the extraction's own "
               f"process: {st['rss_self_first']:.0f} → {st['rss_self_last']:.0f} MiB; the rest is its decoding workers)", 3)
        figure("peak_rss_mib", result["peak_rss_mib"], "MiB (the extraction's own process)", 0)
        print("rss_mib_by_song: " + " ".join(f"{n}:{tree}/{own}" for n, (tree, own) in result["rss_series"].items())
              + " (song: MiB of the extraction and its workers / of its own process)")

        if "essentia" in compare:
            from siamrec.runs import read_embeddings

            ours, items = read_embeddings(tmp / "out")
            order = {Path(row["path"]).name: k for k, row in enumerate(items)}
            ours = ours[[order[f"{Path(p).stem}_copy0{Path(p).suffix}"] for p in long]][:, song_vectors]
            peer = essentia_compare(long, tmp, ours)
            if peer is not None:
                figure("essentia_cpu_s_per_song", peer["cpu_s"], f"CPU-s (decoding included; "
                       f"{peer['patches']:.1f} patches per song at its default hop of 93 frames)")
                figure("essentia_vs_siamrec_cpu_ratio", peer["cpu_s"] / st["cpu_s_per_song"], "(essentia / siamrec, end to end)")
                figure("essentia_cosine_mean", float(peer["cosine"].mean()),
                       "(cosine of the songs' mean penultimate vectors)", 4)
                figure("essentia_cosine_min", float(peer["cosine"].min()), "", 4)
    print(f"load average now {os.getloadavg()[0]:.2f}", flush=True)
    print(f"command: {command}")


if __name__ == "__main__":
    main()
