"""A toy loss and a toy head, added the way a user adds them: this module and a YAML each
(tests/toy_conf/loss/toy_cosine.yaml, tests/toy_conf/model/toy_centre.yaml), no siamrec module touched.
Their constructors' typed parameters are their settings (siamrec.schema reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from keras import ops

from siamrec.losses import MetricLoss, pair_masks
from siamrec.models.heads import Head
from siamrec.runs import atomic_write_bytes
from siamrec.schema import number


class ToyCosine(MetricLoss):
    """Positives pulled to cosine 1, negatives pushed below `margin`."""

    def __init__(self, *, margin: Annotated[float, number(-1, 1)]):
        super().__init__(margin=margin)

    def compute(self, labels, embeddings):
        pos, neg = pair_masks(labels)
        x = embeddings / ops.maximum(ops.norm(embeddings, axis=1, keepdims=True), 1e-12)
        sim = ops.matmul(x, ops.transpose(x))
        pos, neg = ops.cast(pos, "float32"), ops.cast(neg, "float32")
        pull = ops.sum((1.0 - sim) * pos) / ops.maximum(ops.sum(pos), 1.0)
        push = ops.sum(ops.relu(sim - self.params["margin"]) * neg) / ops.maximum(ops.sum(neg), 1.0)
        return pull + push


class ToyCentre(Head):
    """The features minus the training mean, times `scale`. It takes what it needs from the training set (siamrec's
    TrainingSet): the song rows of the train split."""

    kind = "toy_centre"

    def __init__(self, *, scale: Annotated[float, number(0, lo_open=True)]):
        super().__init__(scale=scale)

    def fit(self, training) -> dict:
        x_train, _ = training.rows("train")
        self.mean = np.asarray(x_train, dtype=np.float64).mean(axis=0)
        return {"fitted_on": [float(len(x_train))]}

    def transform(self, x):
        return ((np.asarray(x, dtype=np.float64) - self.mean) * self.cfg["scale"]).astype(np.float32)

    def save(self, run_dir) -> None:
        super().save(run_dir)
        import io

        buf = io.BytesIO()
        np.save(buf, self.mean)
        atomic_write_bytes(Path(run_dir) / "toy_mean.npy", buf.getvalue())

    def _load(self, run_dir) -> None:
        self.mean = np.load(Path(run_dir) / "toy_mean.npy")
