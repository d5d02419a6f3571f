"""Tests for siamrec.samplers."""

import keras
import numpy as np
import pytest

from siamrec.losses import TripletHard
from siamrec.samplers import ClassBalancedSampler, SampledDataset, as_keras_dataset


def single_label(n=60, n_classes=6, seed=0):
    ints = np.random.default_rng(seed).integers(0, n_classes, size=n)
    return np.eye(n_classes, dtype="float32")[ints]


def multi_label(n=60, n_labels=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.random((n, n_labels)) < 0.25
    labels[np.arange(n), rng.integers(0, n_labels, size=n)] = True
    return labels


def has_positive_pair(labels, batch):
    """Two distinct items of the batch share a label."""
    items = np.unique(batch)
    shared = labels[items].astype(int) @ labels[items].astype(int).T
    return bool((shared[~np.eye(len(items), dtype=bool)] > 0).any())


@pytest.mark.parametrize("labels", [single_label(), multi_label()], ids=["single", "multi"])
def test_every_batch_has_positive_pairs_and_right_shape(labels):
    sampler = ClassBalancedSampler(labels, classes_per_batch=3, m_per_class=4, seed=1)
    assert sampler.batch_size == 12
    assert len(sampler) == 5  # ceil(60 / 12)
    for _ in range(3):  # epochs
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for batch in batches:
            assert batch.dtype == np.int64 and batch.shape == (12,)
            assert batch.min() >= 0 and batch.max() < 60
            assert has_positive_pair(labels, batch)


def test_batch_groups_carry_their_class_and_are_distinct_when_possible():
    labels = single_label()
    sampler = ClassBalancedSampler(labels, classes_per_batch=3, m_per_class=4, seed=0)
    for batch in sampler:
        assert len(np.unique(batch)) == len(batch)  # single-label classes have >= 4 items
        groups = batch.reshape(3, 4)
        classes = labels[groups].argmax(axis=-1)
        assert (classes == classes[:, :1]).all()
        assert len(np.unique(classes[:, 0])) == 3


def test_multi_label_items_counted_for_each_label():
    # Item 0 carries labels 0 and 1; label 1 has only items 0 and 1.
    labels = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1]])
    sampler = ClassBalancedSampler(labels, classes_per_batch=3, m_per_class=2, seed=0)
    for batch in sampler:
        groups = batch.reshape(3, 2)
        for group in groups:
            shared = labels[group[0]] & labels[group[1]]
            assert shared.any() and group[0] != group[1]


def test_small_class_sampled_with_replacement():
    labels = np.eye(2)[[0, 0, 1, 1, 1, 1, 1, 1]]
    sampler = ClassBalancedSampler(labels, classes_per_batch=2, m_per_class=4, seed=0)
    for batch in sampler:
        small = [i for i in batch if i < 2]
        assert len(small) == 4 and set(small) == {0, 1}
        large = [i for i in batch if i >= 2]
        assert len(set(large)) == 4


def test_deterministic_given_seed():
    labels = multi_label()
    a = ClassBalancedSampler(labels, 3, 4, seed=42)
    b = ClassBalancedSampler(labels, 3, 4, seed=42)
    c = ClassBalancedSampler(labels, 3, 4, seed=43)
    epochs_a = [np.concatenate(list(a)) for _ in range(2)]
    epochs_b = [np.concatenate(list(b)) for _ in range(2)]
    np.testing.assert_array_equal(epochs_a[0], epochs_b[0])
    np.testing.assert_array_equal(epochs_a[1], epochs_b[1])
    assert not np.array_equal(epochs_a[0], epochs_a[1])  # new epoch, new batches
    assert not np.array_equal(epochs_a[0], np.concatenate(list(c)))


@pytest.mark.parametrize("labels", [single_label(), multi_label()], ids=["single", "multi"])
def test_every_class_covered_in_one_epoch(labels):
    sampler = ClassBalancedSampler(labels, classes_per_batch=2, m_per_class=5, seed=3)
    assert len(sampler) * sampler.classes_per_batch >= len(sampler.classes)
    for _ in range(3):
        seen = np.zeros(labels.shape[1], dtype=bool)
        for batch in sampler:
            seen |= labels[batch].any(axis=0)
        assert seen[sampler.classes].all()


def test_classes_need_two_items():
    labels = np.eye(4)[[0, 0, 1, 2, 3, 0]]  # only class 0 has >= 2 items
    with pytest.raises(ValueError, match="at least 2 labels carried by >= 2 items"):
        ClassBalancedSampler(labels, 2, 2)
    labels = np.eye(4)[[0, 0, 1, 1, 2, 3]]
    sampler = ClassBalancedSampler(labels, 2, 2, seed=0)
    np.testing.assert_array_equal(sampler.classes, [0, 1])
    with pytest.raises(ValueError, match="classes_per_batch=3 exceeds the 2 labels"):
        ClassBalancedSampler(labels, 3, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"classes_per_batch": 1, "m_per_class": 2}, "classes_per_batch must be an integer >= 2"),
        ({"classes_per_batch": 2, "m_per_class": 1}, "m_per_class must be an integer >= 2"),
        ({"classes_per_batch": 2.0, "m_per_class": 2}, "classes_per_batch"),
        ({"classes_per_batch": 2, "m_per_class": True}, "m_per_class"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassBalancedSampler(single_label(), **kwargs)


def test_integer_labels_rejected():
    with pytest.raises(ValueError, match="2-D multi-hot"):
        ClassBalancedSampler(np.array([0, 0, 1, 1]), 2, 2)


def test_keras_dataset_batches_and_epoch_resampling():
    labels = multi_label(n=40)
    x = np.arange(40, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    sampler = ClassBalancedSampler(labels, classes_per_batch=2, m_per_class=4, seed=0)
    ds = as_keras_dataset(x, labels, sampler)
    assert isinstance(ds, SampledDataset) and isinstance(ds, keras.utils.PyDataset)
    assert len(ds) == 5
    xb, yb = ds[0]
    assert xb.shape == (8, 3) and yb.shape == (8, 8) and yb.dtype == np.float32
    np.testing.assert_array_equal(yb, labels[xb[:, 0].astype(int)])
    first = [ds[i][0] for i in range(len(ds))]
    ds.on_epoch_end()
    second = [ds[i][0] for i in range(len(ds))]
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))


def test_keras_dataset_length_mismatch():
    labels = single_label(n=20)
    sampler = ClassBalancedSampler(labels, 2, 2)
    with pytest.raises(ValueError, match="disagree on the number of items"):
        as_keras_dataset(np.zeros((19, 3)), labels, sampler)


def test_model_fit_on_dataset():
    keras.utils.set_random_seed(0)
    labels = single_label(n=48, n_classes=4)
    x = np.random.default_rng(0).normal(size=(48, 5)).astype("float32")
    sampler = ClassBalancedSampler(labels, classes_per_batch=2, m_per_class=4, seed=0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    model.compile(optimizer="adam", loss=TripletHard(margin=0.2, soft=False, positive="shared", jaccard_threshold=0.5))
    ds = as_keras_dataset(x, labels, sampler)
    before = [ds[i][1] for i in range(len(ds))]
    history = model.fit(ds, epochs=2, verbose=0)
    after = [ds[i][1] for i in range(len(ds))]
    assert not all(np.array_equal(a, b) for a, b in zip(before, after))  # on_epoch_end resampled
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
