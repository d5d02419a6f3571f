"""A trained run as an embedder: its backbone bundle, model and clip settings (extractor.json + backbone.keras,
for audio runs) and its head turn songs into the run's embedding space, through the one extractor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.runs import existing_run


class RunEmbedder:
    """The model of a run folder: `extractor(cfg)` embeds audio as the run did, `from_features` applies the head."""

    def __init__(self, run_dir):
        from siamrec.models.heads import load_head

        self.run_dir = existing_run(run_dir)
        self.head = load_head(self.run_dir)
        spec = self.run_dir / "extractor.json"
        self.spec = json.loads(spec.read_text(encoding="utf-8")) if spec.is_file() else None
        if self.spec is None and (self.run_dir / "backbone.keras").is_file():
            raise SiamrecError(f"run={self.run_dir} was made by an older siamrec (no extractor.json); train it again")
        self._extractor = self._bundle = None

    @property
    def audio(self) -> bool:
        return self.spec is not None

    @property
    def clip(self) -> dict:
        return dict(self.spec["clip"]) if self.audio else {}

    @property
    def bundle(self):
        if self._bundle is None:
            from siamrec.extractor import make_bundle

            self._bundle = make_bundle(self.spec["backbone"])  # imports the bundle's module: registers its layers
        return self._bundle

    def extractor(self, cfg):
        """The run's extractor (its bundle, its saved model, its clip settings); batch size, workers and the
        cache come from `cfg.features`."""
        if not self.audio:
            raise SiamrecError(f"run={self.run_dir} was trained on precomputed features, so it cannot embed audio; "
                               "use a run trained on audio (data=demo|folder|csv)")
        if self._extractor is None:
            import keras

            from siamrec.extractor import Extractor, decode_workers

            bundle = self.bundle
            model = keras.saving.load_model(self.run_dir / "backbone.keras", compile=False, safe_mode=True)
            cache = Path(str(cfg.paths.cache)).expanduser() if cfg.features.cache else None
            self._extractor = Extractor(bundle, model, self.spec["clip"], batch_size=int(cfg.features.batch_size),
                                        workers=decode_workers(cfg.features), cache_root=cache)
        return self._extractor

    def from_features(self, vectors: np.ndarray) -> np.ndarray:
        """Embeddings of song vectors (all parts of the run's extractor, pooled), through the run's head."""
        if self.audio and self.spec.get("parts"):
            from siamrec.extractor import part_columns, pooled_parts

            layout = pooled_parts(self.bundle.parts, self.clip.get("pool", "mean"))
            vectors = vectors[:, part_columns(layout, self.spec["parts"], self.bundle.name)]
        return self.head.transform(vectors)

    def embed_files(self, paths: list[str], cfg, use_cache: bool = False, desc: str = "new songs"):
        """(embeddings (n, d) with NaN rows for files that failed, failures [(index, reason)])."""
        extractor = self.extractor(cfg)
        sf = extractor.song_features(paths, use_cache=use_cache, desc=desc)
        out = np.full((len(paths), self.dim(cfg)), np.nan, dtype=np.float32)
        if sf.ok.any():
            out[sf.ok] = self.from_features(sf.vectors[sf.ok])
        return out, sf.failures

    def dim(self, cfg) -> int:
        probe = np.zeros((1, self.extractor(cfg).dim), dtype=np.float32)
        return int(self.from_features(probe).shape[1])


def embed_with_run(run, cfg, data, out_dir):
    """Embed the items of `data` with the run's model; returns (kept items, embeddings)."""
    from siamrec.pipeline import audio_features

    embedder = RunEmbedder(run)
    if data.is_audio:
        feats = audio_features(embedder.extractor(cfg), data, cfg, out_dir)
        return feats.data, embedder.from_features(feats.x)
    if embedder.audio:
        raise SiamrecError(f"run={run} embeds audio; data={cfg.data.source} gives feature rows. Use audio data")
    return data, embedder.head.transform(data.lib.features)
