"""The command line as a user meets it: help, errors as one line, run folders, metrics.json on features data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from siamrec.cli import with_run_overrides


def run_cli(*args, cwd=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "siamrec", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_help_lists_every_command_with_one_line():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("train", "evaluate", "recommend", "extract", "plot", "tag"):
        lines = [line for line in out.stdout.splitlines() if line.strip().startswith(command + " ")]
        assert len(lines) == 1, command


@pytest.mark.parametrize("args, needle", [
    (["dance"], "unknown command 'dance'"),
    (["train", "no.such.key=1"], "no.such.key"),
    (["train", "data=nope"], "data/nope"),
    (["train", "split.test=["], "bad setting"),
])
def test_bad_command_or_override_is_one_line_and_non_zero(args, needle):
    out = run_cli(*args)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_a_setting_in_gurmukhi_or_devanagari_is_taken_as_typed(tmp_path):
    """Hydra's grammar reads other scripts only quoted: a folder named in Gurmukhi reaches the command as typed
    (here it does not exist, so the command names it), instead of a grammar error."""
    for name in ("ਸੰਗੀਤ ਦਾ ਖ਼ਜ਼ਾਨਾ", "नया संगीत", "Musique é"):
        folder = tmp_path / name
        out = run_cli("extract", "data=library", f"data.root={folder}", f"extract.out={tmp_path / 'index'}")
        assert out.returncode == 1, out.stderr
        assert out.stderr.strip() == (f"siamrec extract: error: data.root={folder}: no such folder; point it at the "
                                      "folder of your music"), out.stderr
        assert not (tmp_path / "index").exists()  # nothing is written for a folder that is not there


def test_a_mistyped_music_folder_leaves_no_index_folder_behind(tmp_path):
    """extract and serve data=library with a data.root that is not there: one line, and no index folder under the
    user's data directory, no outputs/ folder."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    for command in ("extract", "serve"):
        out = subprocess.run([sys.executable, "-m", "siamrec", command, "data=library",
                              f"data.root={tmp_path / 'ਸੰਗੀਤ'}"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 1 and "no such folder" in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], sorted(tmp_path.rglob("*"))


def test_only_values_outside_the_grammar_are_quoted():
    from siamrec.overrides import split_args

    overrides, _, _ = split_args("extract", ["data.root=/m/ਸੰਗੀਤ", "+x.y=é b", "data.root=[ਸ]", "p=ਸ(1)", "seed=1",
                                             "~data.group", "data.root=/m/${oc.env:HOME}ਸ"], {})
    assert overrides == ["data.root='/m/ਸੰਗੀਤ'", "+x.y='é b'", "data.root=[ਸ]", "p=ਸ(1)", "seed=1", "~data.group",
                         "data.root=/m/${oc.env:HOME}ਸ"]


def write_features(tmp_path, multilabel: bool, n=60, d=12, seed=0):
    """Feature rows around label centres, a label CSV and split lists naming items by file."""
    rng = np.random.default_rng(seed)
    names = ["rock", "jazz", "bhangra", "ghazal"]
    labels = []
    x = rng.normal(size=(n, d))
    for i in range(n):
        if multilabel:
            labs = sorted(set(rng.choice(names, size=rng.integers(1, 3), replace=False)))
        else:
            labs = [names[i % len(names)]]
        for lab in labs:
            x[i, names.index(lab)] += 2.0
        labels.append(labs)
    np.save(tmp_path / "a.npy", x[:, :5].astype(np.float32))
    np.save(tmp_path / "b.npy", x[:, 5:].astype(np.float32))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["idx", "tags", "file"])
        for i, labs in enumerate(labels):
            w.writerow([i, "|".join(labs), f"songs/{labs[0]}/song{i:03d}.mp3"])
    test_items = list(range(0, n, 2))
    (tmp_path / "test.txt").write_text("".join(f"{labels[i][0]}/song{i:03d}.wav\n" for i in test_items))
    return x.astype(np.float32), labels, test_items


def independent_map(x, labels):
    """Full-ranking MAP by cosine, the query left out, relevant = at least one shared label; queries with no
    relevant item skipped. Written plainly, sharing nothing with siamrec.metrics."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    aps = []
    for q in range(len(x)):
        others = [j for j in range(len(x)) if j != q]
        order = sorted(others, key=lambda j: (-float(u[q] @ u[j]), j))
        rel = [bool(set(labels[q]) & set(labels[j])) for j in order]
        if not any(rel):
            continue
        hits, precisions = 0, []
        for rank, r in enumerate(rel, start=1):
            if r:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / len(precisions))
    return float(np.mean(aps)), len(aps)


@pytest.mark.parametrize("multilabel", [False, True])
def test_evaluate_identity_on_features_matches_an_independent_map(tmp_path, multilabel):
    x, labels, test_items = write_features(tmp_path, multilabel)
    run_dir = tmp_path / "run"
    out = run_cli(
        "evaluate", "+model=identity", "data=features",
        f"data.features=[{tmp_path / 'a.npy'},{tmp_path / 'b.npy'}]", f"data.labels={tmp_path / 'labels.csv'}",
        "data.label_column=tags", "data.key_column=file", "split=files", f"split.test={tmp_path / 'test.txt'}",
        f"hydra.run.dir={run_dir}", f"paths.cache={tmp_path / 'cache'}",
        "query_expansion=0",  # ranked by each seed alone, as independent_map ranks (expansion: test_evaluation.py)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected, n_queries = independent_map(x[test_items], [labels[i] for i in test_items])
    assert metrics["test"]["map"] == pytest.approx(expected, abs=1e-6)
    assert metrics["test"]["n_queries"] == n_queries
    assert "p@10" in metrics["test"]
    # embeddings.npy and items.csv: one row per item, same order, the split recorded
    emb = np.load(run_dir / "embeddings.npy")
    with open(run_dir / "items.csv", newline="") as f:
        items = list(csv.DictReader(f))
    assert emb.dtype == np.float32 and emb.shape == x.shape and len(items) == len(x)
    np.testing.assert_allclose(emb, x, rtol=1e-6)
    assert [it["split"] == "test" for it in items] == [i in test_items for i in range(len(x))]
    assert items[3]["labels"] == "|".join(labels[3])
    assert (run_dir / "split.csv").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()


def test_train_without_model_says_how_to_choose_one(tmp_path):
    out = run_cli("train", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 1
    assert "+model=baseline" in out.stderr and out.stderr.strip().count("\n") == 0


def test_missing_data_folder_is_one_clear_line(tmp_path):
    out = run_cli("evaluate", "+model=identity", "data=folder", f"data.root={tmp_path / 'nowhere'}",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 1
    assert f"data.root={tmp_path / 'nowhere'}" in out.stderr and out.stderr.strip().count("\n") == 0


def test_run_overrides_carry_over_and_new_ones_win(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        "- +model=lda\n- data=folder\n- data.root=/music\n- seed=3\n- hydra.run.dir=/old\n")
    merged = with_run_overrides([f"run={run}", "data=csv", "data.manifest=/m.csv", "+model=siamese"])
    assert merged == ["seed=3", f"run={run}", "data=csv", "data.manifest=/m.csv", "+model=siamese"]


@pytest.mark.parametrize("setting, needle", [("clip.offset=sideways", "clip.offset='sideways'"),
                                             ("clip.duration=0", "clip.duration=0")])
def test_bad_clip_settings_are_one_line_before_any_work(tmp_path, setting, needle):
    out = run_cli("evaluate", "+model=identity", setting, f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2 and needle in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
