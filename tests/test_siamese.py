"""Tests for the Siamese head (siamrec.models.siamese) on synthetic features: fast, no shared data needed."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from siamrec.errors import SiamrecError
from siamrec.metrics import retrieval_metrics
from siamrec.models.heads import l2_normalise, load_head
from conftest import head_from_yaml

from siamrec.models.siamese import whitening_matrix

# Small and quick: a few seconds per fit on one CPU core.
FAST = {"hidden": [64], "dim": 32, "branches": 2, "epochs": 12, "lr": 0.005, "classes_per_batch": 4, "m_per_class": 4,
        "ensemble": 1, "lda_share": [0.0]}


def hidden_clusters(n_per_class=40, n_classes=5, seed=0):
    """Gaussian clusters in 4 dimensions, drowned in 36 louder noise dimensions and randomly mixed: cosine on
    the raw features barely sees the classes, a learned projection can."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(scale=2.0, size=(n_classes, 4))
    signal = centres[classes] + rng.normal(scale=0.7, size=(len(classes), 4))
    noise = rng.normal(scale=3.0, size=(len(classes), 36))
    mixing = np.linalg.qr(rng.normal(size=(40, 40)))[0]
    x = (np.concatenate([signal, noise], axis=1) @ mixing + 5.0).astype(np.float32)
    y = np.eye(n_classes, dtype=bool)[classes]
    order = rng.permutation(len(x))
    return x[order], y[order]


def split(x, y):
    """60 % / 20 % / 20 %."""
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def mean_ap(emb, y):
    return retrieval_metrics(emb, y, ks=(10,))["map"]


@pytest.fixture(scope="module")
def trained():
    """A head trained on the hidden clusters with a validation split, and the data."""
    keras.utils.set_random_seed(0)
    (xtr, ytr), (xva, yva), (xte, yte) = split(*hidden_clusters())
    head = head_from_yaml("siamese", **{**FAST, "seed": 0})
    history = head.fit_rows(xtr, ytr, xva, yva)
    return head, history, (xte, yte)


def test_learns_the_hidden_structure_and_embeds_on_the_unit_sphere(trained):
    head, _, (xte, yte) = trained
    emb = head.transform(xte)
    assert emb.shape == (len(xte), FAST["dim"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    identity, learned = mean_ap(xte, yte), mean_ap(emb, yte)
    assert identity < 0.5  # the structure is hidden from cosine on the raw features
    assert learned > identity + 0.25, (identity, learned)


def test_epochs_are_chosen_on_validation_then_refit_on_train_and_valid(trained):
    _, history, _ = trained
    assert len(history["val_map"]) == len(history["loss"]) == FAST["epochs"]
    chosen = len(history["refit_loss"])  # the refit trains for the chosen number of epochs
    assert int(np.argmax(history["val_map"])) + 1 <= chosen <= FAST["epochs"]
    assert history["val_map"][chosen - 1] >= max(history["val_map"]) - 0.1


def test_save_and_load_give_identical_embeddings(trained, tmp_path):
    head, _, (xte, _) = trained
    head.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.json", "model.keras", "scaler.npz"]
    assert json.loads((tmp_path / "head.json").read_text())["kind"] == "siamese"
    loaded = load_head(tmp_path)
    np.testing.assert_allclose(loaded.transform(xte), head.transform(xte), rtol=0, atol=1e-6)
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert not model.compiled  # saved uncompiled: loading needs no custom loss, e.g. in `evaluate run=`
    embedder = keras.Model(model.input, model.get_layer("embedding").output)
    np.testing.assert_allclose(embedder.predict(head.scale(xte), verbose=0), head.transform(xte), atol=1e-6)


def test_multi_label_tags_without_validation():
    """Items carry one or two tags, positives share at least one; without a validation split every epoch runs."""
    keras.utils.set_random_seed(0)
    x, y = hidden_clusters()
    y = y.copy()
    second = np.flatnonzero(np.random.default_rng(0).random(len(y)) < 0.3)
    y[second, (y[second].argmax(axis=1) + 1) % y.shape[1]] = True  # a neighbouring tag
    (xtr, ytr), _, (xte, yte) = split(x, y)
    assert (ytr.sum(axis=1) > 1).any()
    head = head_from_yaml("siamese", **{**FAST, "seed": 0, "loss": "multi_similarity"})
    history = head.fit_rows(xtr, ytr, None, None)
    assert len(history["loss"]) == FAST["epochs"] and "val_map" not in history and "refit_loss" not in history
    identity, learned = mean_ap(xte, yte), mean_ap(head.transform(xte), yte)
    assert learned > identity + 0.08, (identity, learned)  # shared tags make the task harder: a smaller margin


@pytest.mark.parametrize("loss", ["triplet_hard", "contrastive"])
def test_other_losses_and_small_data_with_few_labels(loss):
    """2 labels of 12 items each: fewer labels than classes_per_batch, which adapts."""
    keras.utils.set_random_seed(2)
    x, y = hidden_clusters(n_per_class=12, n_classes=2, seed=2)
    head = head_from_yaml("siamese", **{**FAST, "epochs": 3, "classes_per_batch": 8, "seed": 2, "loss": loss})
    head.fit_rows(x[:16], y[:16], x[16:], y[16:])
    emb = head.transform(x)
    assert emb.shape == (len(x), FAST["dim"]) and np.isfinite(emb).all()


def test_a_bad_loss_setting_is_a_clear_error():
    x, y = hidden_clusters(n_per_class=6)
    with pytest.raises(SiamrecError, match=r"model=siamese: model.loss: cannot build siamrec.losses.TripletSemihard"):
        head_from_yaml("siamese", **{**FAST, "loss": {"margn": 0.5}}).fit_rows(x, y)


def test_whitening_matrix_whitens():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    w = whitening_matrix(z, eps=0.0)
    np.testing.assert_allclose(np.cov(z @ w, rowvar=False), np.eye(6), atol=1e-4)
    shrunk = np.cov(z @ whitening_matrix(z, eps=1.0), rowvar=False)
    assert (np.diag(shrunk) < 1.0).all() and np.diag(shrunk)[0] > np.diag(shrunk)[-1]  # decreasing variance


def test_embedding_dimension_must_split_over_the_branches():
    from siamrec.errors import SiamrecError
    from siamrec.models.siamese import build_projection

    with pytest.raises(SiamrecError, match="model.dim=30 must be a multiple of model.branches=4"):
        build_projection(np.eye(5, dtype=np.float32), [8], 30, 0.0, 4)


@pytest.fixture(scope="module")
def ensemble():
    """A head of 3 members trained on the hidden clusters (validation split, refit), its history and the data."""
    (xtr, ytr), (xva, yva), (xte, yte) = split(*hidden_clusters())
    head = head_from_yaml("siamese", **{**FAST, "seed": 0, "ensemble": 3})
    history = head.fit_rows(xtr, ytr, xva, yva)
    return head, history, (xtr, ytr, xva, yva, xte, yte)


def member_embeddings(head, x):
    return [np.asarray(head.model.get_layer(f"member{k}")(head.scale(x), training=False)) for k in (1, 2, 3)]


def test_ensemble_of_one_is_the_single_head_and_the_first_member_of_a_larger_ensemble(trained, ensemble):
    """ensemble=1 keeps the single model (same seed, same structure: no nesting) and is the first member of an
    ensemble with the same seed, trained (epoch chosen, refitted) exactly as the single head is."""
    single, single_history, _ = trained
    head, history, (*_, xte, _) = ensemble
    assert single.cfg["ensemble"] == 1 and single.model.name == "siamese"
    assert single.model.get_layer("b1_projection") is not None  # the branches directly in the saved model
    np.testing.assert_allclose(member_embeddings(head, xte)[0], single.transform(xte), rtol=0, atol=1e-6)
    assert history["members"][0]["chosen_epoch"] == single_history["chosen_epoch"]
    assert history["loss"] == single_history["loss"] and history["refit_loss"] == single_history["refit_loss"]


def test_ensemble_members_differ_and_the_cosine_is_their_mean_cosine(ensemble):
    from siamrec.models.siamese import member_seed

    head, history, (*_, xte, yte) = ensemble
    seeds = [member_seed(0, k) for k in range(3)]
    assert seeds[0] == 0 and len(set(seeds)) == 3 and seeds == [member_seed(0, k) for k in range(3)]
    assert member_seed(1, 1) not in seeds  # a run with the next seed shares no member
    members = member_embeddings(head, xte)
    assert all(np.abs(a - b).max() > 1e-2 for i, a in enumerate(members) for b in members[i + 1:])
    emb = head.transform(xte)
    assert emb.shape == (len(xte), 3 * FAST["dim"])
    mean_cosine = np.mean([m @ m.T for m in members], axis=0)
    np.testing.assert_allclose(emb @ emb.T, mean_cosine, atol=1e-5)
    assert [len(h) for h in history["members"]] == [2, 2, 2] and set(history["valid_map_by_members"]) == {"1", "2", "3"}
    assert history["valid_map_by_members"]["1"] == pytest.approx(history["members"][0]["valid_map"], abs=1e-6)
    assert mean_ap(emb, yte) > mean_ap(xte, yte) + 0.25


def test_an_ensemble_is_deterministic_under_its_seed():
    (xtr, ytr), (xva, yva), (xte, _) = split(*hidden_clusters(n_per_class=20))
    fast = {**FAST, "epochs": 3, "seed": 5, "ensemble": 2}
    first, second = head_from_yaml("siamese", **fast), head_from_yaml("siamese", **fast)
    first.fit_rows(xtr, ytr, xva, yva)
    keras.utils.set_random_seed(123)  # whatever random state comes before, the members start from their own seeds
    second.fit_rows(xtr, ytr, xva, yva)
    np.testing.assert_allclose(first.transform(xte), second.transform(xte), rtol=0, atol=1e-6)


def test_an_ensemble_saves_and_loads_as_one_model(ensemble, tmp_path):
    head, _, (*_, xte, _) = ensemble
    head.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.json", "model.keras", "scaler.npz"]
    assert json.loads((tmp_path / "head.json").read_text())["cfg"]["ensemble"] == 3
    loaded = load_head(tmp_path)
    np.testing.assert_allclose(loaded.transform(xte), head.transform(xte), rtol=0, atol=1e-6)
    assert [loaded.model.get_layer(f"member{k}").name for k in (1, 2, 3)] == ["member1", "member2", "member3"]


@pytest.fixture(scope="module")
def with_lda():
    """A head whose LDA share is chosen on validation among 0, 0.25 and 0.5 (the hidden clusters are linear: the
    projection finds them), its history and the data."""
    (xtr, ytr), (xva, yva), (xte, yte) = split(*hidden_clusters())
    head = head_from_yaml("siamese", **{**FAST, "seed": 0, "lda_share": [0, 0.25, 0.5]})
    return head, head.fit_rows(xtr, ytr, xva, yva), (xtr, ytr, xva, yva, xte, yte)


def test_an_lda_projection_joins_with_the_share_chosen_on_validation(with_lda, trained):
    """The share is the validation-best of the listed ones; the cosine is (1 − share) · the MLP's + share · that of
    an LDA (shrinkage chosen on validation, refitted on train + valid) of the standardised features."""
    from siamrec.models.heads import LDAHead

    head, history, (xtr, ytr, xva, yva, xte, yte) = with_lda
    scores = history["valid_map_by_lda_share"]
    assert set(scores) == {"0", "0.25", "0.5"} and history["lda_share"] == float(max(scores, key=scores.get)) > 0
    assert history["valid_map"] == scores[f"{history['lda_share']:g}"]  # the head's own, what train chooses by
    single, _, _ = trained  # the same MLP (seed, data, settings) without the projection
    lda = LDAHead(use_valid=True, shrinkage=head.cfg["lda_shrinkage"], train_on="songs")
    lda.fit_rows(head.scale(xtr), ytr, head.scale(xva), yva)
    mlp, proj = single.transform(xte), l2_normalise(lda.transform(head.scale(xte)))
    share, emb = history["lda_share"], head.transform(xte)
    assert emb.shape == (len(xte), FAST["dim"] + proj.shape[1])
    np.testing.assert_allclose(emb @ emb.T, (1 - share) * mlp @ mlp.T + share * proj @ proj.T, atol=1e-5)
    assert mean_ap(emb, yte) > mean_ap(mlp, yte)


def test_a_head_with_lda_saves_and_loads_as_one_model(with_lda, tmp_path):
    head, _, (*_, xte, _) = with_lda
    head.save(tmp_path)
    loaded = load_head(tmp_path)
    np.testing.assert_allclose(loaded.transform(xte), head.transform(xte), rtol=0, atol=1e-6)
    assert loaded.model.get_layer("lda").get_weights()[0].shape[1] == 4  # 5 labels: 4 discriminant directions


def test_no_lda_for_tags_and_the_first_share_without_validation():
    x, y = hidden_clusters(n_per_class=20)
    tags = y.copy()
    tags[::3, 0] = True  # some songs carry two tags: LDA cannot take them
    tagged = head_from_yaml("siamese", **{**FAST, "epochs": 2, "lda_share": [0, 0.5]})
    history = tagged.fit_rows(x[:60], tags[:60], x[60:80], tags[60:80])
    assert "lda_share" not in history and tagged.transform(x[80:]).shape[1] == FAST["dim"]
    fixed = head_from_yaml("siamese", **{**FAST, "epochs": 2, "lda_share": [0.25, 0.5]})
    history = fixed.fit_rows(x[:80], y[:80], None, None)
    assert history["lda_share"] == 0.25 and "valid_map_by_lda_share" not in history
    assert fixed.transform(x[80:]).shape[1] == FAST["dim"] + 4

