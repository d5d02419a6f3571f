"""Extraction on Ray vs the local engine: files/s, CPU per file, Ray's fixed start-up, hours for 1,000,000 songs.

Generates N songs of --seconds (default 30) in mixed formats (wav, flac, mp3, ogg; stereo at 44.1, 48, 22.05 kHz),
makes a run on them (`train +model=identity`, the Choi 2017 backbone: its pretrained weights when found under
$SIAMREC_SHARED, default ../shared, else random ones: the cost is the same), then runs
`python -m siamrec extract` for each engine on N songs and on K×N (the N files hard-linked K times), each in a
fresh process with a fresh output folder. The fixed costs (Python and TensorFlow start, loading the model; for
Ray also starting the cluster and its actors) fall out of the steady figures:

    files/s (steady)   = (K·N − N) / (wall(K·N) − wall(N))
    CPU ms per file    = (CPU(K·N) − CPU(N)) / (K·N − N), CPU summed over the process and every descendant
                         (decoding workers; Ray's daemons, workers and actors), sampled from /proc
    fixed start-up     = wall(N) − N / files/s; for Ray also as Ray reports it: cluster start, actor model load,
                         first row (extract.json)

The projection for 1,000,000 songs on M machines uses the measured per-actor rate (songs / an actor's busy
time) × actors per machine (--cores-per-machine, default this machine's cores: one actor per core) × M, plus the
fixed start-up. Ray's cluster here is a private local one (loopback, token auth with a token given in the
environment, files under the temporary folder, all removed at the end).

    python scripts/bench_ray.py [--n 24] [--k 6] [--seconds 30] [--engine local,ray] [--actors CORES]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchkit import REPO, link_library, make_library  # the same synthetic songs as bench_extract

TICK = os.sysconf("SC_CLK_TCK")


# --- CPU of a process tree ----------------------------------------------------------------------------------------
class TreeCPU:
    """CPU seconds of a process and all its descendants, sampled from /proc (each process's last sample counts)."""

    def __init__(self, root: int, every: float = 0.1):
        self.root, self.every, self.seen = root, every, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        stats = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    text = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                fields = text[text.rindex(")") + 2:].split()
                stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
        tree, grew = {self.root}, True
        while grew:
            grew = False
            for pid, (ppid, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        for pid in tree:
            if pid in stats:
                self.seen[pid] = max(self.seen.get(pid, 0.0), stats[pid][1])

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())


# --- runs ---------------------------------------------------------------------------------------------------------
def siamrec(args: list[str], env: dict, log: Path) -> tuple[float, float]:
    """`python -m siamrec ARGS` in a fresh process: (wall s, CPU s of its whole process tree)."""
    started = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "siamrec", *args], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        cpu = TreeCPU(proc.pid)
        code = proc.wait()
    wall = time.perf_counter() - started
    total = cpu.stop()
    if code != 0:
        raise SystemExit(f"siamrec {args[0]} failed ({code}); see {log}:\n" + log.read_text()[-3000:])
    return wall, total


def extract(engine: str, run: Path, library: Path, out: Path, env: dict, args) -> dict:
    extra = [f"extract.engine.actors={args.actors}"] if engine == "ray" and args.actors else []
    wall, cpu = siamrec(["extract", f"run={run}", "data=folder", f"data.root={library}", f"extract.out={out}",
                         f"extract.engine={engine}", f"features.batch_size={args.batch_size}",
                         f"hydra.run.dir={out}-hydra", *extra], env, out.with_suffix(".log"))
    summary = json.loads((out / "extract.json").read_text())
    return {**summary, "process_wall_s": wall, "process_cpu_s": cpu}


def leftovers(text: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=24, help="songs in the small library (default 24)")
    parser.add_argument("--k", type=int, default=6, help="the large library holds K×N songs (default 6)")
    parser.add_argument("--seconds", type=float, default=30.0, help="song length (default 30)")
    parser.add_argument("--engine", default="local,ray", help="local,ray (default) | ray | local")
    parser.add_argument("--actors", type=int, default=0, help="Ray actors (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cores-per-machine", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--machines", default="1,10,50,100", help="machine counts for the projection")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    if not set(engines) <= {"local", "ray"}:
        raise SystemExit(f"--engine {args.engine}: local, ray or local,ray")

    tmp = Path(tempfile.mkdtemp(prefix="sr-bench-ray-", dir="/tmp"))  # short: Ray's socket paths
    shared = Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))
    pretrained = (shared / "weights" / "choi2017").is_dir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_TMPDIR": str(tmp / "ray"), "RAY_USAGE_STATS_ENABLED": "0", "SIAMREC_SHARED": str(shared)}
    (tmp / "ray").mkdir()
    try:
        paths = make_library(tmp / "small", args.n, args.seconds)
        link_library(paths, tmp / "large", args.k)
        run = tmp / "run"
        siamrec(["train", "+model=identity", "data=folder", f"data.root={tmp / 'small'}", f"hydra.run.dir={run}",
                 f"paths.cache={tmp / 'cache'}", f"paths.shared={shared}",
                 f"backbone.pretrained={str(pretrained).lower()}",
                 "plots=false", "eval.protocol=test_vs_all"],  # its scores do not matter: any library size works
                env, tmp / "train.log")
        print(f"{args.n} and {args.k * args.n} songs of {args.seconds:g} s; Choi 2017 "
              f"({'pretrained' if pretrained else 'random'} weights), batch {args.batch_size}; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        results = {}
        for engine in engines:
            small = extract(engine, run, tmp / "small", tmp / f"{engine}-small", env, args)
            large = extract(engine, run, tmp / "large", tmp / f"{engine}-large", env, args)
            extra = args.k * args.n - args.n
            rate = extra / (large["process_wall_s"] - small["process_wall_s"])
            cpu_ms = 1000 * (large["process_cpu_s"] - small["process_cpu_s"]) / extra
            fixed = small["process_wall_s"] - args.n / rate
            results[engine] = {"files_per_s": rate, "cpu_ms": cpu_ms, "fixed_s": fixed, "small": small,
                               "large": large}
            print(f"{engine:5s}: {rate:6.2f} files/s steady, {cpu_ms:6.1f} ms CPU per file, fixed start-up "
                  f"{fixed:5.1f} s (wall {small['process_wall_s']:.1f} s for {args.n}, "
                  f"{large['process_wall_s']:.1f} s for {args.k * args.n})")
            if engine == "ray":
                print(f"       Ray reports: cluster start {large['ray_init_s']:.1f} s, actor model load "
                      f"{large['ray_actor_load_s']:.1f} s, first row after {large['ray_first_row_s']:.1f} s; "
                      f"{large['ray_actors']} actors at {large['ray_actor_files_per_s']:.2f} files/s each "
                      f"({large['ray_actor_cpu_ms_per_file']:.1f} ms CPU per file in the actors)")
        if "ray" in results:
            r = results["ray"]
            per_actor = r["large"]["ray_actor_files_per_s"]
            startup = r["large"]["ray_first_row_s"]
            print(f"1,000,000 songs, {args.cores_per_machine} actors per machine at {per_actor:.2f} files/s each "
                  f"(+{startup:.0f} s start-up):")
            for m in (int(x) for x in args.machines.split(",")):
                hours = (1e6 / (per_actor * args.cores_per_machine * m) + startup) / 3600
                print(f"  {m:4d} machines: {hours:7.2f} h")
        if {"local", "ray"} <= set(results):
            ratio = results["ray"]["cpu_ms"] / results["local"]["cpu_ms"]
            print(f"CPU per file, ray / local: {ratio:.3f} (target <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'}); "
                  f"Ray fixed start-up {results['ray']['fixed_s']:.1f} s by regression, "
                  f"{results['ray']['large']['ray_first_row_s']:.1f} s to the first row "
                  f"(target <= 30 s: {'met' if results['ray']['fixed_s'] <= 30 else 'NOT met'})")
        print(f"load average now {os.getloadavg()[0]:.2f}")
        print(json.dumps({e: {k: round(v, 3) for k, v in r.items() if isinstance(v, float)}
                          for e, r in results.items()}))
    finally:
        for pid in leftovers(str(tmp)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
