"""ClassifierHead: the paper's baseline on precomputed features (data=features), a dense classifier whose
penultimate layer is the embedding; single-label (softmax) and multi-label (sigmoid), saved and loaded."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
from conftest import head_from_yaml

from siamrec.metrics import retrieval_metrics
from siamrec.models.classifier import ClassifierHead, class_weights, is_multilabel
from siamrec.models.heads import load_head
from siamrec.runs import read_csv

FAST = {"hidden": 16, "head_epochs": 40, "head_batch_size": 16, "head_lr": 0.01, "dropout": 0.0, "head_patience": 40}


def clusters(n_per=20, labels=3, dim=12, seed=0, spread=4.0):
    """Labelled clusters hidden among noise dimensions: the classifier must find the few that matter."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(labels), n_per)
    x = rng.normal(size=(len(classes), dim))
    x[:, :3] += spread * rng.normal(size=(labels, 3))[classes]
    return x.astype(np.float32), np.eye(labels, dtype=bool)[classes]


def test_the_baseline_yaml_builds_a_classifier_head():
    head = head_from_yaml("baseline")
    assert isinstance(head, ClassifierHead) and head.cfg["head_epochs"] == 200 and head.train_on == "songs"


def test_single_label_embedding_is_the_penultimate_layer_and_separates_held_out_items():
    keras.utils.set_random_seed(0)
    x, y = clusters()
    tr, te = np.arange(len(x)) % 4 != 0, np.arange(len(x)) % 4 == 0
    head = head_from_yaml("baseline", **FAST)
    history = head.fit_rows(x[tr], y[tr], x[te], y[te])
    assert "loss" in history and "val_loss" in history
    emb = head.transform(x[te])
    assert emb.shape == (te.sum(), FAST["hidden"]) and np.isfinite(emb).all()
    proba = head.predict_proba(x[te])
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)  # softmax over the labels
    assert (proba.argmax(axis=1) == y[te].argmax(axis=1)).mean() > 0.8
    assert retrieval_metrics(emb, y[te])["map"] > 0.8  # held-out songs of a label lie close in the embedding


def test_multi_label_data_gets_independent_sigmoid_outputs():
    keras.utils.set_random_seed(1)
    x, y = clusters(seed=1)
    y[::3, (y[::3].argmax(axis=1) + 1) % y.shape[1]] = True  # a second tag on every third item
    assert is_multilabel(y) and class_weights(y) is None
    head = head_from_yaml("baseline", **FAST)
    head.fit_rows(x, y)
    proba = head.predict_proba(x)
    assert proba.shape == y.shape and ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(axis=1), 1, atol=1e-3)  # not a softmax


def test_class_weights_balance_unequal_labels():
    y = np.eye(2, dtype=bool)[[0, 0, 0, 1]]
    assert class_weights(y) == pytest.approx({0: 4 / 6, 1: 2.0})


def test_save_and_load_round_trip(tmp_path):
    keras.utils.set_random_seed(2)
    x, y = clusters(seed=2)
    head = head_from_yaml("baseline", **FAST)
    head.fit_rows(x, y)
    head.save(tmp_path)
    saved = json.loads((tmp_path / "head.json").read_text())
    assert saved["target"] == "siamrec.models.classifier.ClassifierHead" and saved["cfg"]["hidden"] == FAST["hidden"]
    again = load_head(tmp_path)
    assert isinstance(again, ClassifierHead)
    np.testing.assert_allclose(again.transform(x), head.transform(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ through the commands (one interface)


@pytest.fixture
def feature_rows(tmp_path):
    """data=features: 3 labelled clusters hidden among noise dimensions, 60 rows."""
    x, y = clusters(seed=3)
    np.save(tmp_path / "f.npy", x)
    (tmp_path / "labels.csv").write_text("label,key\n" + "".join(f"c{c},song{i:03d}.wav\n"
                                                                 for i, c in enumerate(y.argmax(axis=1))))
    return x, ["data=features", f"data.features=[{tmp_path / 'f.npy'}]", f"data.labels={tmp_path / 'labels.csv'}",
               "data.key_column=key", "plots=false", "split.test=0.3"]


def test_train_fits_the_baseline_on_feature_rows_and_scores_its_predictions(tmp_path, feature_rows, capsys):
    """train calls the head's one interface: fit on the training set's rows, test_metrics (accuracy), save; the
    run embeds with the penultimate layer and evaluate run= gives the same embedding back."""
    from siamrec.cli import main

    x, data = feature_rows
    settings = [f"model.{k}={v}" for k, v in FAST.items()]
    run = tmp_path / "run"
    assert main(["train", "+model=baseline", *settings, f"hydra.run.dir={run}", *data]) == 0, capsys.readouterr().err
    fitted = re.search(r"fitting classifier on (\d+) training songs and (\d+) validation songs \((\d+)-d features\)",
                       capsys.readouterr().out)
    splits = [row["split"] for row in read_csv(run / "items.csv")]
    assert fitted and fitted.groups() == (str(splits.count("train")), str(splits.count("valid")), str(x.shape[1]))
    head = json.loads((run / "head.json").read_text())
    assert head["target"] == "siamrec.models.classifier.ClassifierHead" and head["cfg"]["hidden"] == FAST["hidden"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "baseline" and metrics["test"]["accuracy"] > 0.8 and metrics["test"]["map"] > 0.6
    emb = np.load(run / "embeddings.npy")
    assert emb.shape == (len(x), FAST["hidden"])
    again = tmp_path / "again"
    assert main(["evaluate", f"run={run}", f"hydra.run.dir={again}", *data]) == 0, capsys.readouterr().err
    np.testing.assert_allclose(np.load(again / "embeddings.npy"), emb, atol=1e-5)


def test_evaluate_without_a_run_refuses_the_baseline_but_scores_the_identity(tmp_path, feature_rows, capsys):
    from siamrec.cli import main

    x, data = feature_rows
    assert main(["evaluate", "+model=baseline", f"hydra.run.dir={tmp_path / 'b'}", *data]) == 1  # a refused job
    err = capsys.readouterr().err
    assert "+model=baseline must be trained first" in err and "\n" not in err.strip()
    assert not (tmp_path / "b" / "embeddings.npy").exists()
    assert main(["evaluate", "+model=identity", f"hydra.run.dir={tmp_path / 'i'}", *data]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "i" / "embeddings.npy"), x)  # the rows are the embedding


def test_a_wrong_baseline_setting_is_named_before_anything_runs(tmp_path, feature_rows, capsys):
    from siamrec.cli import main

    _, data = feature_rows
    assert main(["train", "+model=baseline", "model.threshold=1", f"hydra.run.dir={tmp_path / 'r'}", *data]) == 2
    assert "model.threshold=1: must be a number in (0, 1)" in capsys.readouterr().err
    assert main(["train", "+model=baseline", "+model.hiden=8", f"hydra.run.dir={tmp_path / 'r'}", *data]) == 2
    assert "unknown setting model.hiden: did you mean model.hidden" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
