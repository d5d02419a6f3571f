"""End-to-end metric learning (model.finetune_backbone=true): the Siamese loss trains the backbone's chosen
conv blocks together with the projection head, on decoded audio.

The head is first fitted on frozen (cached) features, then the whole chain — waveform → backbone → the chosen
blocks' pooled features → the head's standardisation → projection — is trained on class-balanced batches of
clips. Backbone and head share their layers with that chain, so both are saved as usual afterwards.
"""

from __future__ import annotations

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.models.backbone import check_blocks, set_trainable_blocks


def finetune_end_to_end(backbone, head, clips: np.ndarray, y: np.ndarray, blocks, model_cfg) -> dict:
    """Train backbone blocks `model.trainable_blocks` and `head` jointly on `clips`; returns the history."""
    import keras

    from siamrec.losses import MetricLoss
    from siamrec.samplers import ClassBalancedSampler, as_keras_dataset

    blocks = check_blocks(blocks)
    set_trainable_blocks(backbone, model_cfg.get("trainable_blocks", [4, 5]))
    pooled = [backbone.get_layer(f"gap{b}").output for b in blocks]
    feats = keras.layers.Concatenate(name="block_features")(pooled) if len(pooled) > 1 else pooled[0]
    scaled = keras.layers.Normalization(mean=head.mu, variance=np.square(head.sigma), name="standardise")(feats)
    chain = keras.Model(backbone.input, head.model(scaled), name="siamese_end_to_end")
    try:
        loss = MetricLoss(str(model_cfg.get("loss", "triplet_semihard")), **dict(model_cfg.get("loss_params") or {}))
        usable_labels = int((y.sum(axis=0) >= 2).sum())
        sampler = ClassBalancedSampler(y, min(int(model_cfg.get("classes_per_batch", 8)), max(usable_labels, 2)),
                                       int(model_cfg.get("m_per_class", 4)), seed=int(model_cfg.get("seed", 0)))
    except ValueError as exc:
        raise SiamrecError(f"model ({model_cfg.get('loss')}): {exc}") from None
    chain.compile(optimizer=keras.optimizers.Adam(float(model_cfg.get("backbone_lr", 1e-4))), loss=loss)
    history = chain.fit(as_keras_dataset(clips, y.astype(np.float32), sampler),
                        epochs=int(model_cfg.get("backbone_epochs", 5)), verbose=2)
    return {f"end_to_end_{k}": v for k, v in history.history.items()}
