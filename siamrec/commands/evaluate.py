"""`evaluate`: score embeddings by retrieval metrics — of the input features (+model=identity), of a trained
run on its own or another dataset (run=RUN), or of several runs side by side (runs=[...])."""

from __future__ import annotations

from siamrec.errors import SiamrecError
from siamrec.pipeline import base_features, finish_run, load_data, require_head


def evaluate(cfg, run_dir) -> dict:
    if cfg.study:
        from omegaconf import OmegaConf

        from siamrec.encoder import make_encoder
        from siamrec.pipeline import audio_features
        from siamrec.report import block_study

        data = load_data(cfg, run_dir)
        if not data.is_audio:
            raise SiamrecError("+study=blocks compares the backbone's parts: it needs audio (data=demo|folder|csv)")
        whole = OmegaConf.merge(cfg, {"features": {"parts": None, "combine": []}})  # every part of one backbone
        encoder = make_encoder(whole, data, all_parts=True)
        feats = audio_features(encoder, data, whole, run_dir)
        return block_study(cfg, run_dir, feats.data, encoder.main, feats.x)
    if cfg.runs:
        from siamrec.report import compare_runs

        return compare_runs(cfg, run_dir)
    if cfg.run:
        from siamrec.embedder import RunEmbedder, embed_with_run

        embedder = RunEmbedder(cfg.run)  # the run and its model checked before anything is written
        data = load_data(cfg, run_dir)
        data, emb = embed_with_run(embedder, cfg, data, run_dir)
        return finish_run(cfg, run_dir, data, emb, plots=False)
    head = require_head(cfg, "evaluate")
    head.untrained(cfg.model.name, "evaluate")  # a head that must be fitted first says so, before any work
    data = load_data(cfg, run_dir)
    feats = base_features(cfg, data, run_dir)
    return finish_run(cfg, run_dir, feats.data, head.transform(feats.x), plots=False)
