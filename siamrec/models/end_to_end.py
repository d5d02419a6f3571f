"""End-to-end metric learning (model.finetune_backbone=true): the Siamese loss trains the backbone's chosen layer
groups together with the projection head, on decoded windows.

The head is first fitted on frozen (cached) features, then the whole chain — waveform → backbone → the chosen
parts → the head's standardisation → projection — is trained on class-balanced batches of windows. Backbone and
head share their layers with that chain, so both are saved as usual afterwards.
"""

from __future__ import annotations

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.models.finetune import trainable_groups


def finetune_end_to_end(bundle, backbone, head, clips: np.ndarray, y: np.ndarray, parts, settings: dict) -> dict:
    """Train the groups `model.trainable` of the backbone and `head` jointly on `clips`, with the Siamese head's
    `settings` (conf/model/siamese.yaml); returns the history."""
    import keras

    from siamrec.losses import build_loss
    from siamrec.samplers import ClassBalancedSampler, as_keras_dataset

    bundle.set_trainable(backbone, trainable_groups(bundle, settings["trainable"]))
    names = [p for p in bundle.parts if parts is None or p in list(parts)]
    outputs = backbone.output
    pooled = [outputs[p] for p in names]
    feats = keras.layers.Concatenate(name="part_features")(pooled) if len(pooled) > 1 else pooled[0]
    scaled = keras.layers.Normalization(mean=head.mu, variance=np.square(head.sigma), name="standardise")(feats)
    chain = keras.Model(backbone.input, head.model(scaled), name="siamese_end_to_end")
    try:
        loss = build_loss(settings["loss"])
        usable_labels = int((y.sum(axis=0) >= 2).sum())
        sampler = ClassBalancedSampler(y, min(int(settings["classes_per_batch"]), max(usable_labels, 2)),
                                       int(settings["m_per_class"]), seed=int(settings["seed"]))
    except ValueError as exc:
        raise SiamrecError(f"model=siamese: {exc}") from None
    chain.compile(optimizer=keras.optimizers.Adam(float(settings["backbone_lr"])), loss=loss)
    history = chain.fit(as_keras_dataset(clips, y.astype(np.float32), sampler),
                        epochs=int(settings["backbone_epochs"]), verbose=2)
    return {f"end_to_end_{k}": v for k, v in history.history.items()}
