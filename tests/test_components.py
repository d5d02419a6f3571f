"""A component is one class + one YAML: a toy loss and a toy head from a test-only module (tests/toy_components.py)
and tests/toy_conf/ train, evaluate and are validated with no siamrec module edited."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from siamrec.cli import main

TOY_CONF = str(Path(__file__).resolve().parent / "toy_conf")


@pytest.fixture
def features(tmp_path):
    """data=features: 3 labelled clusters of 16-d rows."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 14)
    x = (rng.normal(size=(3, 16))[y] * 3 + rng.normal(size=(len(y), 16))).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "key"])
        w.writerows([f"c{label}", f"song{i:03d}.wav"] for i, label in enumerate(y))
    return ["data=features", f"data.features=[{tmp_path / 'f.npy'}]", f"data.labels={tmp_path / 'labels.csv'}",
            "data.key_column=key", "plots=false", "--config-dir", TOY_CONF,
            "query_expansion=0"]  # ~3 test songs per cluster: fewer than a seed is expanded with


def test_a_toy_head_trains_and_evaluates(tmp_path, features, capsys):
    run = tmp_path / "run"
    assert main(["train", "+model=toy_centre", "model.scale=3", f"hydra.run.dir={run}", *features]) == 0, \
        capsys.readouterr().err
    head = json.loads((run / "head.json").read_text())
    assert head["target"] == "toy_components.ToyCentre" and head["cfg"]["scale"] == 3
    emb = np.load(run / "embeddings.npy")
    x = np.load(tmp_path / "f.npy")
    assert np.allclose(emb[1:] - emb[:-1], 3 * (x[1:] - x[:-1]), atol=1e-3)  # its transform, scale 3...
    assert abs(emb.mean()) < abs(3 * x.mean())  # ...of the features centred (on the training rows)
    assert json.loads((run / "metrics.json").read_text())["test"]["map"] > 0.9  # ...and the clusters kept apart

    again = tmp_path / "again"
    assert main(["evaluate", f"run={run}", f"hydra.run.dir={again}", *features]) == 0, capsys.readouterr().err
    assert np.allclose(np.load(again / "embeddings.npy"), emb, atol=1e-5)  # loaded back through head.json


def test_a_toy_heads_settings_are_checked_from_its_constructor(tmp_path, features, capsys):
    assert main(["train", "+model=toy_centre", "model.scale=0", f"hydra.run.dir={tmp_path / 'r'}", *features]) == 2
    assert "model.scale=0: must be a positive number" in capsys.readouterr().err
    assert main(["train", "+model=toy_centre", "+model.scael=1", f"hydra.run.dir={tmp_path / 'r'}", *features]) == 2
    assert "unknown setting model.scael: did you mean model.scale" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_toy_loss_trains_a_siamese_head(tmp_path, features, capsys):
    run = tmp_path / "run"
    small = ["model.hidden=[16]", "model.dim=8", "model.branches=2", "model.ensemble=1", "model.epochs=3",
             "model.classes_per_batch=3", "model.m_per_class=4"]
    assert main(["train", "+model=siamese", "model.loss=toy_cosine", "model.loss.margin=0.1", *small,
                 f"hydra.run.dir={run}", *features]) == 0, capsys.readouterr().err
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert "_target_: toy_components.ToyCosine" in saved and "margin: 0.1" in saved
    assert np.load(run / "embeddings.npy").shape == (42, 8)
    assert main(["train", "+model=siamese", "model.loss=toy_cosine", "model.loss.margin=2", *small,
                 f"hydra.run.dir={tmp_path / 'bad'}", *features]) == 2
    assert "model.loss.margin=2: must be a number in [-1, 1]" in capsys.readouterr().err
