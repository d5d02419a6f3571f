"""A trained run as an embedder: its backbone (for audio) and head turn songs into the run's embedding space."""

from __future__ import annotations


import numpy as np

from siamrec.errors import SiamrecError
from siamrec.runs import existing_run


class RunEmbedder:
    """Loads `backbone.keras` (audio runs) and the head of a run folder."""

    def __init__(self, run_dir):
        from siamrec.models.heads import load_head

        self.run_dir = existing_run(run_dir)
        self.head = load_head(self.run_dir)
        self.blocks = self.head.cfg.get("blocks")
        self._backbone = None

    @property
    def audio(self) -> bool:
        return (self.run_dir / "backbone.keras").is_file()

    @property
    def backbone(self):
        if self._backbone is None:
            if not self.audio:
                raise SiamrecError(f"run={self.run_dir} was trained on precomputed features, so it cannot embed audio; "
                                   "use a run trained on audio (data=demo|folder|csv)")
            import keras

            import siamrec.models.backbone  # noqa: F401 - registers the custom layers (ours and kapre's) for loading

            self._backbone = keras.saving.load_model(self.run_dir / "backbone.keras")
        return self._backbone

    def from_features(self, feats160: np.ndarray) -> np.ndarray:
        from siamrec.models.backbone import select_blocks

        return self.head.transform(select_blocks(feats160, self.blocks) if self.blocks else feats160)


def embed_with_run(run, cfg, data, out_dir):
    """Embed the items of `data` with the run's model; returns (kept items, embeddings)."""
    from siamrec.pipeline import audio_features

    embedder = RunEmbedder(run)
    if data.is_audio:
        data, feats = audio_features(embedder.backbone, data, cfg, out_dir)
        return data, embedder.from_features(feats)
    if embedder.audio:
        raise SiamrecError(f"run={run} embeds audio; data={cfg.data.source} gives feature rows. Use audio data")
    return data, embedder.head.transform(data.lib.features)
