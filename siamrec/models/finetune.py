"""Fine-tuning the backbone as in the paper: drop the tag layer, add one dense output per class.

Softmax for single-label data, sigmoid for multi-label; SGD (lr 0.01 by default; the report used 0.001, see
conf/model/baseline.yaml), early stopping on the validation loss, balanced class weights, and a choice of the
bundle's layer groups to train (model.trainable). The head that does it is siamrec.models.classifier.ClassifierHead.
"""

from __future__ import annotations

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.models.heads import seed_component


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


def trainable_groups(bundle, spec) -> list[str]:
    """model.trainable → the bundle's group names: `all`, `last:N` (the N groups nearest the output), or a list of
    group names ([] = none: only what sits on top of the backbone trains)."""
    groups = list(bundle.groups)
    if isinstance(spec, str):
        if spec == "all":
            return groups
        if spec.startswith("last:") and spec[5:].isdigit() and 0 <= int(spec[5:]) <= len(groups):
            return groups[len(groups) - int(spec[5:]):]
        raise SiamrecError(f"model.trainable={spec!r}: use all, last:N (N <= {len(groups)}) or a list of "
                           f"{bundle.name}'s groups {groups}")
    return [str(g) for g in (spec or [])]


def build_classifier(bundle, backbone, n_classes: int, multilabel: bool, trainable):
    """The fine-tuning model: the backbone up to the bundle's classifier input → Dense(n_classes)."""
    import keras

    bundle.set_trainable(backbone, trainable_groups(bundle, trainable))
    out = keras.layers.Dense(n_classes, activation="sigmoid" if multilabel else "softmax",
                             name="classes")(bundle.classifier_input(backbone))
    return keras.Model(backbone.input, out, name="classifier")


def finetune(bundle, backbone, clips_train, y_train, clips_valid, y_valid, settings: dict):
    """Train the classifier on decoded windows with the baseline's `settings` (conf/model/baseline.yaml);
    returns (classifier, history dict)."""
    import keras

    c = settings
    y_train = y_train.astype(np.float32)
    multilabel = is_multilabel(y_train)
    seed_component(int(c["seed"]))  # the new last layer and the batch order: from the model's own seed
    classifier = build_classifier(bundle, backbone, y_train.shape[1], multilabel, c["trainable"])
    optimizer = keras.optimizers.SGD(learning_rate=float(c["lr"]), momentum=float(c["momentum"]), nesterov=True)
    classifier.compile(optimizer=optimizer, loss="binary_crossentropy" if multilabel else "categorical_crossentropy")
    has_valid = len(clips_valid) > 0
    history = classifier.fit(
        clips_train, y_train,
        validation_data=(clips_valid, y_valid.astype(np.float32)) if has_valid else None,
        epochs=int(c["epochs"]), batch_size=int(c["batch_size"]),
        class_weight=class_weights(y_train) if c["class_weight"] else None,
        callbacks=[early_stopping(has_valid, c["patience"])], verbose=2,
    )
    return classifier, history.history
