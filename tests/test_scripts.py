"""Every benchmark of scripts/ runs at a tiny size, so none rots: each is started as a user starts it
(`python scripts/NAME.py ...`, from another folder) and must finish and print its figures. The figures of a tiny
run mean nothing; the README's come from full-size runs."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))
import benchkit  # noqa: E402

SHARED = Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))


def run_script(name: str, *args, cwd: Path, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SIAMREC_SHARED": str(SHARED), "SIAMREC_CACHE": str(cwd / "cache"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


needs_weights = pytest.mark.skipif(not (SHARED / "weights").is_dir(),
                                   reason=f"no pretrained weights under {SHARED} (set SIAMREC_SHARED)")


# Scripts without a tiny run yet, and why (each is a debt: give it a size option and a test below).
NO_TINY_RUN: dict[str, str] = {}


def test_every_script_has_a_tiny_run_here():
    tested = {line.split('"')[1] for line in Path(__file__).read_text().splitlines()
              if line.strip().startswith("out = run_script(")}
    assert tested | set(NO_TINY_RUN) == {p.name for p in SCRIPTS.glob("*.py") if p.name != "benchkit.py"}


@pytest.fixture
def songs(tmp_path) -> Path:
    """16 synthetic songs of 3 s in label folders style0..3, mixed formats (benchkit.make_library)."""
    root = tmp_path / "songs"
    benchkit.make_library(root, 16, 3.0)
    return root


def manifest(root: Path, name: str, column: str) -> Path:
    with open(root / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", column])
        w.writerows([p.relative_to(root).as_posix(), p.parent.name] for p in sorted(root.rglob("song*.*")))
    return root


def test_benchkit_table_and_figures(capsys):
    assert benchkit.table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    benchkit.figure("rate", 2.345, "files/s")
    assert capsys.readouterr().out == "rate: 2.35 files/s\n"
    with benchkit.timed() as t:
        sum(range(1000))
    assert t.wall_s >= 0 and t.cpu_s >= 0


def test_bench_decode(tmp_path):
    out = run_script("bench_decode.py", "--n", 1, "--seconds", 3, "--repeat", 1, "--long-minutes", 0.1, cwd=tmp_path)
    assert "ms" in out
    if shutil.which("ffmpeg"):
        assert re.search(r"0.1-min M4A, the reader's musicnn windows: peak \d+ MiB", out), out


@needs("fastapi")
@needs("mutagen")
def test_bench_library(tmp_path):
    out = run_script("bench_library.py", "--n", 40, "--dir", tmp_path / "library", cwd=tmp_path)
    assert "cold tag scan:" in out and "serve run=INDEX start-up" in out


@needs("fastapi")
def test_bench_page(tmp_path):
    out = run_script("bench_page.py", "--n", 300, "--queries", 5, cwd=tmp_path)
    assert "ms" in out


@needs("fastapi")
def test_bench_serve(tmp_path):
    out = run_script("bench_serve.py", "--n", 300, "--requests", 64, "--only", "exact", "--radio", "--keep",
                     tmp_path / "k", cwd=tmp_path)
    assert "| exact |" in out and "p95_32_ms=" in out and "the radio rules add" in out and "rounds' ratios" in out


@needs("faiss")
def test_bench_search(tmp_path):
    out = run_script("bench_search.py", "--n", 3000, "--dim", 16, "--queries", 20, "--latency-queries", 5,
                     cwd=tmp_path)
    assert "recall_at_10=" in out


def test_bench_metrics_memory(tmp_path):
    out = run_script("bench_metrics_memory.py", "--n", 500, "--dim", 8, cwd=tmp_path)
    assert "peak_rss_mib=" in out and "map:" in out


def test_bench_extract(tmp_path):
    out = run_script("bench_extract.py", "--n", 2, "--minutes", 0.1, "--repeat", 1, "--workers", 0,
                     "--windows", "first", "--costs", "first,spread:2", cwd=tmp_path)
    assert "end_to_end_files_per_s:" in out and "rss_growth:" in out and "core_efficiency:" in out
    assert "rss_mib_by_song: 10:" in out
    assert "cpu_s_per_song[clip.windows=spread:2]:" in out


@needs("ray")
def test_bench_ray(tmp_path):
    out = run_script("bench_ray.py", "--n", 8, "--k", 2, "--seconds", 3, "--engine", "local", cwd=tmp_path)
    assert "local" in out and "files/s" in out


@needs_weights
def test_bench_musicnn(tmp_path, songs):
    out = run_script("bench_musicnn.py", "--root", manifest(songs, "labels.csv", "label"), "--batch", 2,
                     cwd=tmp_path)
    assert "| penultimate | 200 |" in out


@needs_weights
def test_bench_label_free(tmp_path, songs):
    """Each song's window features are one array of every musicnn part (as the candidates slice them)."""
    manifest(songs, "genres.csv", "labels")
    out = run_script("bench_label_free.py", "--root", manifest(songs, "emotions.csv", "labels"), "--raga", songs,
                     "--seeds", 0, "--cache", tmp_path / "cache", "--extra", "split.test=0.5", cwd=tmp_path)
    assert "| penultimate, windows L2-normalised, centre, signed sqrt, + 5 nearest songs | " in out


def test_radio_emotify_keeps_a_duplicate_recording_out_of_the_ruled_playlists(tmp_path, songs):
    """A byte copy of a song is its twin: the plain playlists of 17 songs hold the pair, the ruled ones never."""
    first = sorted((songs / "style0").iterdir())[0]
    twin = first.with_name("song9999" + first.suffix)
    shutil.copy(first, twin)
    manifest(songs, "genres.csv", "labels")
    pair = [p.relative_to(songs).as_posix() for p in (first, twin)]
    out = run_script("radio_emotify.py", "--manifest", songs / "genres.csv", "--pairs", *pair, "--k", 5,
                     "--extra", "backbone=choi2017", "backbone.pretrained=false", "eval.protocol=test_vs_all",
                     f"paths.cache={tmp_path / 'cache'}",
                     cwd=tmp_path)
    counts = re.search(r"k=5: 17 playlists; a duplicate pair together \(seed included\) in (\d+) plain playlists, "
                       r"(\d+) with the radio rules", out)
    assert counts, out
    assert int(counts[1]) >= 2 and int(counts[2]) == 0  # each twin's plain playlist starts with the other
    assert f"{pair[0]}/song9999{first.suffix} 0.0000" in out


def test_bench_windows(tmp_path, songs):
    out = run_script("bench_windows.py", "--root", manifest(songs, "genres.csv", "labels"), "--windows", "first",
                     "--backbones", "choi2017", "--labels", "genres", "--seeds", 0, "--models", "identity",
                     "--cache", tmp_path / "cache", "--extra", "backbone.pretrained=false", "eval.protocol=test_vs_all",
                     cwd=tmp_path)
    assert "| choi2017 | first | genres | identity |" in out
    assert "| first | 1 | 1 | " in out  # the per-setting table: one window per 1-min and per 4-min song


def test_bench_windows_refuses_a_blend_weight_outside_0_1_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_windows.py"), "--blend", "0.5", "1.5"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith("--blend 0.5 1.5: each weight must be in [0, 1]")


def test_bench_windows_blends_join_the_heads_vectors_with_the_pretrained_ones(tmp_path):
    """--blend W scores the two runs' unit vectors joined, weight W on the head's: W=0 is the identity run's test
    MAP, W=1 the head's, and a blend is scored as the cosine W·head + (1 − W)·identity ranks the songs."""
    import numpy as np

    import bench_windows
    from conftest import make_cfg
    from siamrec.evaluation import score_embeddings
    from siamrec.runs import write_embeddings

    rng = np.random.default_rng(0)
    n = 60
    labels = [[f"g{i % 3}"] for i in range(n)]
    splits = ["train"] * 30 + ["valid"] * 10 + ["test"] * 20
    keys = [f"s{i}" for i in range(n)]
    y = np.array([[lab == [f"g{j}"] for j in range(3)] for lab in labels])
    runs, vectors = [], []
    for name, dim in (("identity", 12), ("siamese", 5)):
        v = rng.normal(size=(n, dim)) + 0.8 * rng.normal(size=(3, dim))[np.arange(n) % 3] * (dim / 5)
        run = tmp_path / name
        run.mkdir()
        write_embeddings(run, v * rng.uniform(0.5, 4, (n, 1)), keys, [""] * n, labels, splits)
        runs.append(run)
        vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    eval_cfg = make_cfg("evaluate", ["+model=identity"], tmp_path).eval
    got = bench_windows.blends(*runs, [0.0, 0.3, 1.0], eval_cfg, 0)
    for w, v in ((0.0, vectors[0]), (1.0, vectors[1])):
        assert got[w]["map"] == pytest.approx(score_embeddings(v, y, np.array(splits), eval_cfg)["test"]["map"], abs=1e-6)
    cosine = 0.7 * vectors[0] @ vectors[0].T + 0.3 * vectors[1] @ vectors[1].T  # what the joined vectors rank by
    top = np.linalg.eigh(cosine)
    joined = top.eigenvectors * np.sqrt(np.clip(top.eigenvalues, 0, None))
    assert got[0.3]["map"] == pytest.approx(score_embeddings(joined, y, np.array(splits), eval_cfg)["test"]["map"],
                                            abs=1e-4)
    assert got[0.3]["map"] not in (got[0.0]["map"], got[1.0]["map"])


def test_bench_windows_medleys_join_one_genre_into_songs_of_the_length_asked(tmp_path, songs):
    import soundfile as sf

    import bench_windows

    folder = bench_windows.medleys(manifest(songs, "genres.csv", "labels"), 0.1, tmp_path / "medleys")
    rows = list(csv.DictReader((folder / "genres.csv").open(encoding="utf-8")))
    assert len(rows) == 8  # 16 excerpts of 3 s, 4 per style: two 6-s songs per style
    assert sorted(r["labels"] for r in rows) == sorted(f"style{i}" for i in range(4) for _ in range(2))
    for row in rows:
        info = sf.info(folder / row["path"])
        assert info.samplerate == 16000 and info.channels == 1 and info.frames == 6 * 16000
        assert row["group"] == row["path"]  # each song its own group: no song is split across train and test


@needs_weights
def test_compare_backbones(tmp_path, songs):
    out = run_script("compare_backbones.py", "--root", songs, "--only", "choi2017 keras2", cwd=tmp_path)
    assert "| choi2017 keras2 |" in out and "best: choi2017 keras2" in out


@pytest.mark.skipif(not (SHARED / "features" / "gtzan-choi2017").is_dir(), reason="no GTZAN features under SHARED")
def test_bench_gtzan_features(tmp_path):
    out = run_script("bench_gtzan_features.py", "--seeds", 0, "--losses", "triplet_semihard", "--epochs", 1,
                     cwd=tmp_path)
    assert "summary: siamese (triplet_semihard, the default loss)" in out


@pytest.mark.skipif(not (SHARED / "features" / "gtzan-choi2017").is_dir(), reason="no GTZAN features under SHARED")
def test_bench_expansion(tmp_path):
    out = run_script("bench_expansion.py", "--sets", "gtzan", "--seeds", 0, "--ks", 0, 3, "--extra", "model.epochs=2",
                     "model.ensemble=1", cwd=tmp_path)
    whole, rare = out.split("MAP of the seeds of a rare kind")
    for part in (whole, rare):
        rows = [line.split("|")[1:-1] for line in part.splitlines() if re.match(r"\| [03] \|", line)]
        assert [r[0].strip() for r in rows] == ["0", "3"], out
        assert all(re.fullmatch(r"0\.\d{4}", r[1].strip()) for r in rows) and rows[0][1] != rows[1][1], out
    # the seeds of a label cut to 3 songs score otherwise than the whole split's
    assert re.search(r"\| 0 \| (0\.\d{4})", whole).group(1) != re.search(r"\| 0 \| (0\.\d{4})", rare).group(1), out


@pytest.mark.skipif(not (SHARED / "features" / "gtzan-choi2017").is_dir(), reason="no GTZAN features under SHARED")
def test_bench_gtzan_features_scores_the_first_members_of_an_ensemble(tmp_path):
    out = run_script("bench_gtzan_features.py", "--seeds", 0, "--models", "siamese", "--losses", "triplet_semihard",
                     "--epochs", 1, "--members", 1, 2, "--extra", "model.dim=16", cwd=tmp_path)
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("siamese x")}
    assert set(rows) == {"x1", "x2"}, out
    assert all(re.fullmatch(r"0\.\d{4}", row[-4]) for row in rows.values()), out  # a validation MAP for each
