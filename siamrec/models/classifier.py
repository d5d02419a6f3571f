"""The baseline on precomputed features: a dense classifier whose penultimate layer is the embedding.

Multi-class (softmax) or multi-label (sigmoid, predicted where p ≥ threshold), chosen from the data.
"""

from __future__ import annotations

import numpy as np

from siamrec.models.heads import KerasHead, epoch_progress, seed_component


def is_multilabel(y: np.ndarray) -> bool:
    return bool((np.asarray(y).sum(axis=1) > 1).any())


def class_weights(y: np.ndarray) -> dict[int, float] | None:
    """'balanced' weights n / (k · n_c) for single-label data (None for multi-label)."""
    if is_multilabel(y):
        return None
    counts = y.sum(axis=0).astype(float)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(v) for i, v in enumerate(w)}


def early_stopping(monitor_valid: bool, patience: int):
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_loss" if monitor_valid else "loss", patience=int(patience),
                                         restore_best_weights=True)


class ClassifierHead(KerasHead):
    kind = "classifier"
    fine_tunes_backbone = True  # the paper's baseline on audio: siamrec.models.finetune (train's _finetune_audio)

    def fit(self, x_train, y_train, x_valid=None, y_valid=None):
        import keras

        c = self.cfg
        y_train = y_train.astype(np.float32)
        self.multilabel = is_multilabel(y_train)
        self.standardiser(x_train)
        seed_component(int(c["seed"]))
        inp = keras.Input((x_train.shape[1],), name="features")
        h = keras.layers.Dropout(float(c["dropout"]))(inp)
        h = keras.layers.Dense(int(c["hidden"]), activation="relu", name=self.embedding_layer)(h)
        out = keras.layers.Dense(y_train.shape[1], activation="sigmoid" if self.multilabel else "softmax",
                                 name="classes")(keras.layers.Dropout(float(c["dropout"]))(h))
        self.model = keras.Model(inp, out, name="classifier")
        self.model.compile(optimizer=keras.optimizers.Adam(float(c["head_lr"])),
                           loss="binary_crossentropy" if self.multilabel else "categorical_crossentropy")
        has_valid = x_valid is not None and len(x_valid) > 0
        history = self.model.fit(
            self.scale(x_train), y_train, epochs=int(c["head_epochs"]), batch_size=int(c["head_batch_size"]),
            validation_data=(self.scale(x_valid), y_valid.astype(np.float32)) if has_valid else None,
            class_weight=class_weights(y_train),
            callbacks=[early_stopping(has_valid, c["head_patience"]), epoch_progress(int(c["head_epochs"]), "classifier")],
            verbose=0,
        )
        self.embedder = keras.Model(self.model.input, self.model.get_layer(self.embedding_layer).output)
        return history.history

    def predict_proba(self, x):
        return np.asarray(self.model.predict(self.scale(x), batch_size=1024, verbose=0))
