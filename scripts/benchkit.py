"""What the benchmarks of scripts/ share, so none repeats it: where the repository and the shared data are,
synthetic songs and libraries, a synthetic run folder (embeddings + items.csv, written by siamrec's own
writer), timing and memory figures, and Markdown tables.

Each script imports it by name (`python scripts/NAME.py` puts scripts/ on the path), and every script runs in
the test suite at a tiny size (tests/test_scripts.py), so none rots unnoticed.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of the figures
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))

# The synthetic library's formats and rates: every decoder path and resampling ratio the extractor meets.
FORMATS = (("wav", 44100), ("flac", 48000), ("mp3", 44100), ("ogg", 22050))


# --- songs and libraries -----------------------------------------------------------------------------------------
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


def make_library(root: Path, n: int, seconds: float, seed: int = 0) -> list[Path]:
    """n synthetic songs under root/style{0..3}/, cycling through FORMATS."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        fmt, sr = FORMATS[i % len(FORMATS)]
        path = Path(root) / f"style{i % 4}" / f"song{i:04d}.{fmt}"
        write_song(path, synth_song(seconds, sr, rng), sr)
        paths.append(path)
    return paths


def link_library(paths, root: Path, copies: int) -> None:
    """`copies` hard links of every song under root (same label folders), so 10×N costs no extra disk."""
    for c in range(copies):
        for p in map(Path, paths):
            target = Path(root) / p.parent.name / f"{p.stem}_copy{c}{p.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, target)


# --- embeddings and runs -------------------------------------------------------------------------------------------
def clustered(n: int, dim: int, centres: int, rng, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """(n × dim float32 rows around `centres` random N(0, 1) centres with N(0, noise²) scatter, each row's centre)."""
    points = rng.normal(size=(centres, dim)).astype(np.float32)
    centre = rng.integers(0, centres, n)
    return points[centre] + rng.normal(scale=noise, size=(n, dim)).astype(np.float32), centre


def write_run(folder: Path, emb: np.ndarray, keys: list[str], labels: list[str], meta: list[dict] | None = None) -> Path:
    """A finished run folder as `serve` and `recommend` read it: embeddings.npy and items.csv by siamrec's own
    writer, then the completion marker (commands refuse a folder without it). Fake paths under
    /nonexistent/music/, one label per song, the key's first folder as its group (the artist), and `meta` (each
    song's title, artist, album, duration, mbid) when given."""
    from siamrec.runs import mark_finished, write_embeddings

    write_embeddings(folder, emb, keys, [f"/nonexistent/music/{k}" for k in keys], [(lab,) for lab in labels],
                     [""] * len(keys), [k.split("/")[0] for k in keys], meta)
    mark_finished(folder)
    return Path(folder)


def labels_and_split(items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """A run's items.csv rows as score_embeddings reads them: the label matrix (songs × labels) and the splits."""
    labels = [it["labels"].split("|") if it["labels"] else [] for it in items]
    names = sorted({lab for song in labels for lab in song})
    y = np.array([[n in song for n in names] for song in labels], dtype=bool)
    return y, np.array([it["split"] for it in items])


def head_scores(run_dir: Path, cfg, members=None) -> dict:
    """A finished train run's scores per head: {name: test metrics plus `valid_map`, the validation MAP the head
    chose by (before any refit on train+valid; absent when it records none)}. With `members` (e.g. [1, 3, 5]) and
    a Siamese run of model.ensemble >= max(members), one entry per n, `siamese x{n}`: the first n members together
    (without an LDA projection the run may have joined), scored from the run's own embeddings (each member's
    unit-norm embedding is a block of model.dim columns)."""
    import json

    from siamrec.evaluation import score_embeddings
    from siamrec.models.heads import l2_normalise
    from siamrec.runs import read_embeddings

    run_dir = Path(run_dir)
    history_file = run_dir / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else {}
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    name = cfg.model.name if cfg.get("model") else "identity"
    if not members:
        return {name: {**test, **({"valid_map": history["valid_map"]} if "valid_map" in history else {})}}
    emb, items = read_embeddings(run_dir)
    y, split = labels_and_split(items)
    dim, by_members = int(cfg.model.dim), history.get("valid_map_by_members", {"1": history.get("valid_map")})
    out = {}
    for n in members:
        scores = score_embeddings(l2_normalise(emb[:, :n * dim]), y, split, cfg.eval,
                                  expand=int(cfg.query_expansion))["test"]
        out[f"{name} x{n}"] = {**scores, **({"valid_map": by_members[str(n)]} if by_members.get(str(n)) else {})}
    return out


# --- figures -------------------------------------------------------------------------------------------------------
def figure(name: str, value: float, unit: str = "", digits: int = 2) -> None:
    """One measured figure on its own line: `name: value unit`."""
    print(f"{name}: {value:.{digits}f}{' ' + unit if unit else ''}", flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident memory (separate worker processes are not counted)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / 2**20 if sys.platform == "darwin" else kib / 2**10


def cpu_s(who=resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (or of its waited-for children with RUSAGE_CHILDREN)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _proc_stat(pid) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return text[text.rindex(")") + 2:].split()  # the fields after the command name, from `state` on


def process_tree() -> list[int]:
    """This process and its live children (e.g. decoding workers): Linux /proc; [this process] elsewhere."""
    me = os.getpid()
    if not Path("/proc/self/stat").is_file():
        return [me]
    kids = [int(d) for d in os.listdir("/proc") if d.isdigit() and (_proc_stat(d) or [None, None])[1] == str(me)]
    return [me, *kids]


def tree_cpu_s() -> float:
    """CPU seconds of this process and its live children (utime + stime; without /proc: this process's)."""
    if not Path("/proc/self/stat").is_file():
        return cpu_s()
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(f[11]) + int(f[12]) for f in map(_proc_stat, process_tree()) if f) / tick


def tree_rss_mib(own: bool = False) -> float:
    """Resident memory now of this process and its live children, or (own) of this process alone (without /proc:
    this process's peak)."""
    if not Path("/proc/self/stat").is_file():
        return peak_rss_mib()
    page = os.sysconf("SC_PAGE_SIZE")
    pids = [os.getpid()] if own else process_tree()
    return sum(int(f[21]) for f in map(_proc_stat, pids) if f) * page / 2**20


@contextmanager
def timed():
    """`with timed() as t: ...` then t.wall_s and t.cpu_s: the block's wall-clock and CPU seconds."""
    class Times:
        wall_s = cpu_s = float("nan")

    times, wall, cpu = Times(), time.perf_counter(), cpu_s()
    try:
        yield times
    finally:
        times.wall_s, times.cpu_s = time.perf_counter() - wall, cpu_s() - cpu


def median_ms(fn, repeat: int) -> float:
    """The median wall-clock milliseconds of `repeat` calls of fn()."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def table(header, rows) -> str:
    """A Markdown table (each row a sequence of cells, already formatted as text)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
