"""The paper's baseline (+model=baseline): a classifier whose penultimate layer, or fine-tuned backbone, embeds.

On precomputed features (data=features): a dense classifier on the standardised rows; the embedding is its
penultimate layer. On audio: the backbone fine-tuned on the labels with a new last layer (siamrec.models.finetune);
the embedding is the fine-tuned backbone's pooled song vectors, so the run saves an identity head beside it.
Multi-class (softmax) or multi-label (sigmoid, predicted where p ≥ threshold), chosen from the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from siamrec.models.finetune import class_weights, early_stopping, finetune, is_multilabel
from siamrec.models.heads import (IdentityHead, KerasHead, Trainable, TrainOn, epoch_progress, save_keras,
                                  seed_component)
from siamrec.schema import integer, number

__all__ = ["ClassifierHead", "class_weights", "is_multilabel"]

Positive = Annotated[float, number(0, lo_open=True)]
Fraction = Annotated[float, number(0, 1, hi_open=True)]
Count = Annotated[int, integer(1)]
Patience = Annotated[int, integer(0)]


class ClassifierHead(KerasHead):
    kind = "classifier"

    def __init__(self, *, trainable: Trainable, train_on: TrainOn, lr: Positive, momentum: Fraction, epochs: Count,
                 batch_size: Count, patience: Patience, class_weight: bool,
                 threshold: Annotated[float, number(0, 1, lo_open=True, hi_open=True)], hidden: Count,
                 dropout: Fraction, head_lr: Positive, head_epochs: Count, head_batch_size: Count,
                 head_patience: Patience, seed: Annotated[int, integer(0)]):
        super().__init__(trainable=trainable, train_on=train_on, lr=lr, momentum=momentum, epochs=epochs,
                         batch_size=batch_size, patience=patience, class_weight=class_weight, threshold=threshold,
                         hidden=hidden, dropout=dropout, head_lr=head_lr, head_epochs=head_epochs,
                         head_batch_size=head_batch_size, head_patience=head_patience, seed=seed)
        self.train_on = train_on
        self.fine_tuned = None  # on audio: the fine-tuned backbone with its new last layer (a Keras model)

    def fit(self, training) -> dict:
        """Rows (data=features): the dense classifier (fit_rows). Audio: fine-tune the backbone on the windows."""
        if not training.is_audio:
            return super().fit(training)
        member = training.backbone("+model=baseline on audio (fine-tuning)")
        clips_tr, y_tr = training.clips("train", self.train_on)
        clips_va, y_va = training.clips("valid", self.train_on)
        print(f"fine-tuning on {len(clips_tr)} windows of {training.count('train')} songs ({len(clips_va)} for "
              f"validation), {y_tr.shape[1]} labels")
        extractor = member.extractor
        self.fine_tuned, history = finetune(extractor.bundle, extractor.model, clips_tr, y_tr, clips_va, y_va,
                                            self.cfg)
        return history

    def fit_rows(self, x_train, y_train, x_valid=None, y_valid=None):
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

    def test_metrics(self, training) -> dict:
        """Accuracy (single-label) or F1 (multi-label) of the test songs; on audio, each song's probabilities are
        the mean over its windows."""
        from siamrec.evaluation import classification_metrics

        if self.fine_tuned is None:
            x, y = training.rows("test")
            proba = self.predict_proba(x) if len(x) else None
        else:
            windows, y = training.song_windows("test")
            proba = None
            if windows:
                counts = [len(w) for w in windows]
                flat = self.fine_tuned.predict(np.concatenate(windows), batch_size=training.batch_size, verbose=0)
                proba = np.stack([p.mean(axis=0) for p in np.split(flat, np.cumsum(counts)[:-1])])
        return {} if proba is None else classification_metrics(y, proba, float(self.cfg["threshold"]))

    def transform(self, x):
        if self.fine_tuned is not None:  # the fine-tuned backbone's song vectors are the embedding
            return IdentityHead().transform(x)
        return super().transform(x)

    def save(self, run_dir):
        if self.fine_tuned is None:
            return super().save(run_dir)
        save_keras(self.fine_tuned, Path(run_dir) / "model.keras")
        # what embeds is the fine-tuned backbone (saved with the run's encoder): trained on labels
        IdentityHead().save(run_dir, label_free=False)
