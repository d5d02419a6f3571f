"""The Siamese variant: an MLP projection of the features trained with a metric-learning loss.

Songs sharing a label (or a tag) are pulled together, others pushed apart, on class-balanced batches
(siamrec.samplers); the output is L2-normalised so cosine playlists use it directly. The weights kept are those
of the epoch with the best validation MAP (or the last epoch when there is no validation split).
"""

from __future__ import annotations

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.models.heads import KerasHead


def build_projection(in_dim: int, hidden: list[int], dim: int, dropout: float, name="siamese"):
    import keras

    inp = keras.Input((in_dim,), name="features")
    h = inp
    for i, width in enumerate(hidden, start=1):
        h = keras.layers.Dropout(dropout, name=f"dropout{i}")(h)
        h = keras.layers.Dense(width, activation="relu", name=f"hidden{i}")(h)
    h = keras.layers.Dropout(dropout, name="dropout_out")(h)
    h = keras.layers.Dense(dim, name="projection")(h)
    out = keras.layers.UnitNormalization(name="embedding")(h)
    return keras.Model(inp, out, name=name)


class ValidationMAP:
    """Keras callback factory: full-ranking MAP on the validation items each epoch; keeps the best weights."""

    @staticmethod
    def make(x_valid, y_valid, every: int = 1):
        import keras

        from siamrec.metrics import retrieval_metrics

        class _Callback(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best, self.best_weights, self.best_epoch = -1.0, None, -1

            def on_epoch_end(self, epoch, logs=None):
                if epoch % every:
                    return
                emb = self.model.predict(x_valid, batch_size=1024, verbose=0)
                value = retrieval_metrics(emb, y_valid, ks=(10,))["map"]
                if logs is not None:
                    logs["val_map"] = value
                if value > self.best:
                    self.best, self.best_weights, self.best_epoch = value, self.model.get_weights(), epoch

            def on_train_end(self, logs=None):
                if self.best_weights is not None:
                    self.model.set_weights(self.best_weights)

        return _Callback()


class SiameseHead(KerasHead):
    kind = "siamese"

    def fit(self, x_train, y_train, x_valid=None, y_valid=None):
        import keras

        from siamrec.losses import MetricLoss
        from siamrec.samplers import ClassBalancedSampler, as_keras_dataset

        c = self.cfg
        self.standardiser(x_train)
        hidden = [int(h) for h in c.get("hidden", [512])]
        self.model = build_projection(x_train.shape[1], hidden, int(c.get("dim", 128)), float(c.get("dropout", 0.2)))
        loss_params = dict(c.get("loss_params") or {})
        try:
            loss = MetricLoss(str(c.get("loss", "triplet_semihard")), **loss_params)
            sampler = ClassBalancedSampler(y_train, int(c.get("classes_per_batch", 8)), int(c.get("m_per_class", 4)),
                                           seed=int(c.get("seed", 0)))
        except ValueError as exc:
            raise SiamrecError(f"model ({c.get('loss')}): {exc}") from None
        self.model.compile(optimizer=keras.optimizers.Adam(float(c.get("lr", 1e-3))), loss=loss)
        callbacks = []
        has_valid = x_valid is not None and len(x_valid) > 1 and y_valid.any()
        if has_valid:
            callbacks.append(ValidationMAP.make(self.scale(x_valid), y_valid))
        dataset = as_keras_dataset(self.scale(x_train), y_train.astype(np.float32), sampler)
        history = self.model.fit(dataset, epochs=int(c.get("epochs", 100)), callbacks=callbacks, verbose=0)
        self.embedder = self.model
        return history.history
