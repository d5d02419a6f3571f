"""Fine-tuning the backbone as in the paper: drop the 50-tag layer, add one dense output per class.

Softmax for single-label data, sigmoid for multi-label; SGD (lr 0.01 by default; the report used 0.001, see conf/model/baseline.yaml), early stopping
on the validation loss, balanced class weights, and a choice of trainable blocks (model.trainable_blocks).
"""

from __future__ import annotations

import numpy as np

from siamrec.models.backbone import set_trainable_blocks
from siamrec.models.classifier import class_weights, early_stopping, is_multilabel


def build_classifier(backbone, n_classes: int, multilabel: bool, trainable_blocks):
    """The fine-tuning model: backbone up to block 5's pool → global max pool → Dense(n_classes)."""
    import keras

    set_trainable_blocks(backbone, trainable_blocks)
    top = backbone.get_layer("top_pool").output
    out = keras.layers.Dense(n_classes, activation="sigmoid" if multilabel else "softmax", name="classes")(top)
    return keras.Model(backbone.input, out, name="classifier")


def finetune(backbone, clips_train, y_train, clips_valid, y_valid, model_cfg):
    """Train the classifier on decoded clips; returns (classifier, history dict)."""
    import keras

    y_train = y_train.astype(np.float32)
    multilabel = is_multilabel(y_train)
    classifier = build_classifier(backbone, y_train.shape[1], multilabel, model_cfg.get("trainable_blocks", [1, 2, 3, 4, 5]))
    optimizer = keras.optimizers.SGD(learning_rate=float(model_cfg.get("lr", 1e-2)),
                                     momentum=float(model_cfg.get("momentum", 0.9)), nesterov=True)
    classifier.compile(optimizer=optimizer, loss="binary_crossentropy" if multilabel else "categorical_crossentropy")
    has_valid = len(clips_valid) > 0
    history = classifier.fit(
        clips_train, y_train,
        validation_data=(clips_valid, y_valid.astype(np.float32)) if has_valid else None,
        epochs=int(model_cfg.get("epochs", 20)), batch_size=int(model_cfg.get("batch_size", 8)),
        class_weight=class_weights(y_train) if model_cfg.get("class_weight", True) else None,
        callbacks=[early_stopping(has_valid, model_cfg.get("patience", 4))], verbose=2,
    )
    return classifier, history.history
