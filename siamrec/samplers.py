"""Class-balanced batch sampling for metric learning, plus a Keras ``PyDataset`` over it.

Batch losses need positive pairs in every batch; random batches over many
labels rarely have them. :class:`ClassBalancedSampler` builds each batch from
``classes_per_batch`` labels with ``m_per_class`` items carrying each label.
"""

import math
from collections import deque

import keras
import numpy as np


def _positive_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class ClassBalancedSampler:
    """Batches of item indices: ``m_per_class`` items for each of ``classes_per_batch`` labels.

    Multi-label aware: an item counts for every label it carries. Only labels
    carried by at least 2 items are sampled, so every batch holds positive
    pairs of distinct items. Labels are visited in shuffled rounds (every
    sampled label appears once before any appears again), so one epoch covers
    all of them when ``len(self) * classes_per_batch`` is at least their number.
    For each label the items are drawn without replacement, preferring items
    not yet in the batch (an item already drawn for another of its labels is
    only repeated when the label has no other item left); a label with fewer
    than ``m_per_class`` items contributes all of them plus repeats drawn with
    replacement. Each batch is ordered label by label.

    Args:
        labels: ``(n_items, n_labels)`` multi-hot matrix (non-zero = present).
        classes_per_batch: labels per batch, >= 2.
        m_per_class: items per label, >= 2.
        seed: seed of the sampler's random generator. Each iteration draws a
            new epoch from it, so two samplers with the same seed yield the
            same sequence of epochs.

    Attributes:
        batch_size: ``classes_per_batch * m_per_class``.
        n_items: number of items (rows of ``labels``).
        classes: the sampled label indices (those with >= 2 items).
    """

    def __init__(self, labels, classes_per_batch, m_per_class, seed=None):
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(
                "labels must be a 2-D multi-hot matrix (n_items, n_labels), "
                f"got shape {labels.shape}; one-hot encode integer class ids first"
            )
        self.classes_per_batch = _positive_int("classes_per_batch", classes_per_batch, 2)
        self.m_per_class = _positive_int("m_per_class", m_per_class, 2)
        self.batch_size = self.classes_per_batch * self.m_per_class
        self.n_items = labels.shape[0]
        present = labels != 0
        self.classes = np.flatnonzero(present.sum(axis=0) >= 2)
        if len(self.classes) < 2:
            raise ValueError(
                f"need at least 2 labels carried by >= 2 items each, got {len(self.classes)}"
            )
        if self.classes_per_batch > len(self.classes):
            raise ValueError(
                f"classes_per_batch={self.classes_per_batch} exceeds the {len(self.classes)} labels "
                "carried by >= 2 items"
            )
        self._items = {c: np.flatnonzero(present[:, c]) for c in self.classes}
        self._rng = np.random.default_rng(seed)

    def __len__(self):
        """Batches per epoch: ``ceil(n_items / batch_size)``."""
        return math.ceil(self.n_items / self.batch_size)

    def __iter__(self):
        """Yield one epoch of ``int64`` index arrays of length ``batch_size``."""
        queue = deque()
        for _ in range(len(self)):
            chosen, deferred = [], []
            while len(chosen) < self.classes_per_batch:
                if not queue:
                    queue.extend(self._rng.permutation(self.classes))
                c = queue.popleft()
                (deferred if c in chosen else chosen).append(c)
            queue.extendleft(reversed(deferred))
            yield self._draw_batch(chosen)

    def _draw_batch(self, classes):
        batch = []
        for c in classes:
            items = self._items[c]
            if len(items) < self.m_per_class:
                extra = self._rng.choice(items, self.m_per_class - len(items), replace=True)
                batch.extend(self._rng.permutation(items))
                batch.extend(extra)
                continue
            fresh_mask = ~np.isin(items, batch)
            fresh, used = items[fresh_mask], items[~fresh_mask]
            n_fresh = min(len(fresh), self.m_per_class)
            batch.extend(self._rng.choice(fresh, n_fresh, replace=False))
            batch.extend(self._rng.choice(used, self.m_per_class - n_fresh, replace=False))
        return np.asarray(batch, dtype=np.int64)


class SampledDataset(keras.utils.PyDataset):
    """``PyDataset`` yielding ``(x[batch], labels[batch])`` for the batches of a sampler.

    The batches of an epoch are drawn up front and redrawn in ``on_epoch_end``.
    """

    def __init__(self, x, labels, sampler):
        super().__init__()
        self.x = x
        self.labels = np.asarray(labels, dtype="float32")
        self.sampler = sampler
        self._batches = list(sampler)

    def __len__(self):
        return len(self._batches)

    def __getitem__(self, index):
        batch = self._batches[index]
        return self.x[batch], self.labels[batch]

    def on_epoch_end(self):
        self._batches = list(self.sampler)


def as_keras_dataset(x, labels, sampler):
    """Wrap arrays and a :class:`ClassBalancedSampler` as a dataset for ``model.fit``.

    Args:
        x: array-like indexable by an index array, first axis = items.
        labels: ``(n_items, n_labels)`` multi-hot labels, yielded as float32.
        sampler: sampler built over the same items.

    Returns:
        A :class:`SampledDataset` (a ``keras.utils.PyDataset``) re-sampled every epoch.
    """
    if not len(x) == len(labels) == sampler.n_items:
        raise ValueError(
            f"x, labels and sampler disagree on the number of items: "
            f"{len(x)}, {len(labels)}, {sampler.n_items}"
        )
    return SampledDataset(x, labels, sampler)
