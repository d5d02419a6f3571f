"""LDAHead (scikit-learn's discriminant projection) and report_failures, each tested on its own."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from siamrec.errors import SiamrecError
from conftest import head_from_yaml
from siamrec.metrics import retrieval_metrics
from siamrec.models.heads import LDAHead, load_head


def separable(n_per_class=20, n_classes=3, dim=6, seed=0):
    """Classes around distinct centres plus isotropic noise, and one-hot labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(n_classes, dim))
    classes = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[classes] + rng.normal(size=(len(classes), dim))
    return x.astype(np.float32), np.eye(n_classes, dtype=bool)[classes], classes


def nearest_centroid_accuracy(z, classes):
    centroids = np.stack([z[classes == c].mean(axis=0) for c in np.unique(classes)])
    pred = np.argmin(((z[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    return float((pred == classes).mean())


def test_lda_projects_to_classes_minus_one_dims_and_separates_held_out_items():
    x, y, classes = separable(seed=0)
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(3, 6))  # the same centres as separable(seed=0), fresh noise
    classes_test = np.repeat(np.arange(3), 10)
    x_test = (centres[classes_test] + np.random.default_rng(9).normal(size=(30, 6))).astype(np.float32)
    head = head_from_yaml("lda", use_valid=False)
    head.fit_rows(x, y)
    z = head.transform(x_test)
    assert z.shape == (len(x_test), 2) and z.dtype == np.float32  # n_classes - 1 discriminant axes
    assert nearest_centroid_accuracy(z, classes_test) > 0.95
    # the projection is (x - mean) @ scalings: centred data maps to the origin
    np.testing.assert_allclose(head.transform(head.mean[None].astype(np.float32)), 0.0, atol=1e-5)


def test_lda_matches_scikit_learn_transform_up_to_its_centring():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y, classes = separable(seed=1)
    head = head_from_yaml("lda", use_valid=False, shrinkage=None)
    head.fit_rows(x, y)
    reference = LinearDiscriminantAnalysis(solver="svd").fit(x, classes).transform(x)
    np.testing.assert_allclose(head.transform(x), reference, rtol=1e-4, atol=1e-4)


def test_lda_uses_the_validation_items_only_when_asked():
    x, y, _ = separable(seed=2)
    xv, yv, _ = separable(seed=3, n_per_class=5)
    with_valid = head_from_yaml("lda", use_valid=True)
    with_valid.fit_rows(x, y, xv, yv)
    without = head_from_yaml("lda", use_valid=False)
    without.fit_rows(x, y, xv, yv)
    np.testing.assert_allclose(without.mean, x.astype(np.float64).mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(with_valid.mean, np.concatenate([x, xv]).astype(np.float64).mean(axis=0), atol=1e-5)
    assert np.abs(with_valid.mean - without.mean).max() > 1e-2


def test_lda_save_and_load_round_trip(tmp_path):
    x, y, _ = separable(seed=4)
    head = head_from_yaml("lda", use_valid=True)
    head.fit_rows(x, y)
    head.save(tmp_path)
    assert json.loads((tmp_path / "head.json").read_text()) == {
        "kind": "lda", "target": "siamrec.models.heads.LDAHead",
        "cfg": {"use_valid": True, "shrinkage": [None, 0.01, 0.03, 0.1, 0.3, "auto"], "train_on": "songs"},
        "label_free": False}
    loaded = load_head(tmp_path)
    assert isinstance(loaded, LDAHead)
    np.testing.assert_array_equal(loaded.transform(x), head.transform(x))


def test_lda_shrinkage_chosen_on_validation_beats_the_plain_projection_with_few_songs_for_many_dimensions():
    """A few hundred songs in as many dimensions (here 60 training songs, 150 dims; 236 songs in 200 dims on real
    audio): the plain projection fits the training songs' noise; the default chooses a shrinkage on validation."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=1.0, size=(4, 150))
    mixing = rng.normal(size=(150, 150)) / np.sqrt(150)  # correlated dimensions, like transfer features

    def songs(n_per_class):
        classes = np.repeat(np.arange(4), n_per_class)
        x = (centres[classes] + rng.normal(scale=3.0, size=(len(classes), 150))) @ mixing
        return x.astype(np.float32), np.eye(4, dtype=bool)[classes]

    (x, y), (xv, yv), (x_test, y_test) = songs(15), songs(5), songs(50)
    maps, heads = {}, {}
    for name, cfg in {"plain": {"shrinkage": None}, "default": {}}.items():
        heads[name] = head_from_yaml("lda", **cfg)
        history = heads[name].fit_rows(x, y, xv, yv)
        maps[name] = retrieval_metrics(heads[name].transform(x_test), y_test, ks=(10,))["map"]
    assert maps["default"] > maps["plain"] + 0.05, maps
    scores = history["valid_map_by_shrinkage"]
    assert history["shrinkage"] == max(scores, key=scores.get) != "None"


def test_lda_skips_a_shrinkage_its_covariance_cannot_take():
    """6 songs in 160 dimensions (a tiny trained run): a small shrinkage leaves the within-class covariance singular
    (scipy: 'not positive definite'); that candidate is skipped instead of ending the training."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 160)).astype(np.float32) @ np.diag(np.r_[np.ones(7), np.zeros(153)]).astype(np.float32)
    y = np.eye(2, dtype=bool)[[0, 0, 0, 1, 1, 1]]
    head = head_from_yaml("lda")
    history = head.fit_rows(x[:4], y[[0, 1, 3, 4]], x[[2, 5]], y[[2, 5]])
    assert head.transform(x).shape == (6, 1) and np.isfinite(head.transform(x)).all()
    assert "0.01" not in history["valid_map_by_shrinkage"], history


def test_lda_refuses_a_shrinkage_outside_zero_one():
    x, y, _ = separable(seed=5)
    with pytest.raises(SiamrecError, match="model.shrinkage: 2"):
        head_from_yaml("lda", shrinkage=[None, 2]).fit_rows(x, y)


@pytest.mark.parametrize("labels, words", [
    (np.array([[1, 1], [1, 0], [0, 1], [1, 0]], bool), "one label per item"),  # multi-label
    (np.array([[1, 0], [1, 0], [1, 0], [1, 0]], bool), "at least 2 labels"),   # one class only
])
def test_lda_refuses_multi_label_and_single_class_data(labels, words):
    x = np.random.default_rng(0).normal(size=(len(labels), 3)).astype(np.float32)
    with pytest.raises(SiamrecError, match=words):
        head_from_yaml("lda", use_valid=False).fit_rows(x, labels)


# ------------------------------------------------------------------------------------------------ report_failures


def test_report_failures_lists_them_and_stops_only_above_the_allowed_fraction(tmp_path, capsys):
    from siamrec.extractor import report_failures

    keys = [f"k{i}" for i in range(10)]
    paths = [f"/music/ਗੀਤ {i}.mp3" for i in range(10)]
    report_failures(tmp_path, keys, paths, [(3, "cannot decode"), (7, "file not found")], 0.2)
    with open(tmp_path / "failed.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"key": "k3", "path": paths[3], "reason": "cannot decode"},
                    {"key": "k7", "path": paths[7], "reason": "file not found"}]
    assert "skipped 2 of 10 files" in capsys.readouterr().out
    with pytest.raises(SiamrecError) as e:
        report_failures(tmp_path, keys, paths, [(i, "broken") for i in range(3)], 0.2)
    msg = str(e.value)
    assert "3 of 10" in msg and "data.max_failed_fraction=0.2" in msg and "failed.csv" in msg and "\n" not in msg
    # what to do: the fraction it names lets the same files go (skipped and listed), and no smaller one in hundredths
    for n, total in ((3, 10), (2, 7), (29, 100)):
        ks, ps, failed = [f"k{i}" for i in range(total)], [f"/music/{i}.mp3" for i in range(total)], \
            [(i, "broken") for i in range(n)]
        with pytest.raises(SiamrecError) as e:
            report_failures(tmp_path, ks, ps, failed, 0.0)
        assert "repair or remove them" in str(e.value)
        allowed = float(str(e.value).rsplit("data.max_failed_fraction=", 1)[1])
        report_failures(tmp_path, ks, ps, failed, allowed)
        with pytest.raises(SiamrecError):
            report_failures(tmp_path, ks, ps, failed, allowed - 0.01)


def test_a_systematic_failure_is_reported_by_cause_once_at_the_end(tmp_path, capsys):
    """52 of 315 files skipped (the MP3s a wrong reader dropped): their causes grouped, the sizes in a message not
    splitting one cause, kept for the end of the command and printed there only (one line now says so); a few bad
    files are reported at once, and not at the end."""
    from siamrec.extractor import report_failures
    from siamrec.runs import take_closing_notes

    take_closing_notes()
    keys = [f"k{i}" for i in range(315)]
    paths = [f"/music/ਗੀਤ {i}.mp3" for i in range(315)]
    broadcast = "cannot be decoded (ValueError: could not broadcast input array from shape ({},) into shape ({},))"
    failures = ([(i, broadcast.format(60000 + i, 68046 + i)) for i in range(40)] +
                [(i, "cannot be decoded: libsndfile: Format not recognised; audioread: no decoder") for i in
                 range(100, 112)])
    report_failures(tmp_path, keys, paths, failures, 0.2)
    now = capsys.readouterr().out
    with open(tmp_path / "failed.csv", newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 52
    assert now.strip() == ("skipped 52 of 315 files (16.5 %) that could not be decoded: their causes are listed at "
                           "the end")
    [out] = take_closing_notes()
    assert out.startswith(f"skipped 52 of 315 files (16.5 %) that could not be decoded, listed in {tmp_path}")
    assert f"40 × '{broadcast.format(60000, 68046)}' (e.g. ਗੀਤ 0.mp3, ਗੀਤ 1.mp3, ...)" in out
    assert "12 × 'cannot be decoded: libsndfile: Format not recognised; audioread: no decoder' (e.g. ਗੀਤ 100.mp3" in out
    assert out.index("40 ×") < out.index("12 ×")
    # 2 of 315 (under 1 %): reported now, not at the end
    report_failures(tmp_path, keys, paths, failures[:2], 0.2)
    assert "2 × " in capsys.readouterr().out and take_closing_notes() == []
    # too many: the error names the causes too, on one line
    with pytest.raises(SiamrecError) as e:
        report_failures(tmp_path, keys, paths, failures, 0.1)
    assert "52 of 315" in str(e.value) and "40 × " in str(e.value) and "12 × " in str(e.value)
    assert "\n" not in str(e.value)


def test_report_failures_without_failures_writes_nothing(tmp_path):
    from siamrec.extractor import report_failures

    report_failures(tmp_path, ["a"], ["/a.wav"], [], 0.0)
    assert not (tmp_path / "failed.csv").exists()
