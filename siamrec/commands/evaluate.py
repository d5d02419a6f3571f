"""`evaluate`: score embeddings by retrieval metrics — of the input features (+model=identity), of a trained
run on its own or another dataset (run=RUN), or of several runs side by side (runs=[...])."""

from __future__ import annotations

from siamrec.errors import SiamrecError
from siamrec.pipeline import base_features, finish_run, load_data, require_head


def evaluate(cfg, run_dir) -> dict:
    if cfg.get("study"):
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
    if cfg.get("runs"):
        from siamrec.report import compare_runs

        return compare_runs(cfg, run_dir)
    if cfg.get("run"):
        from siamrec.embedder import RunEmbedder, embed_with_run

        embedder = RunEmbedder(cfg.run)  # the run and its model checked before anything is written
        data = load_data(cfg, run_dir)
        data, emb = embed_with_run(embedder, cfg, data, run_dir)
        return finish_run(cfg, run_dir, data, emb, plots=False)
    if require_head(cfg, "evaluate").trains:
        name = cfg.model.name
        raise SiamrecError(
            f"+model={name} must be trained first: python -m siamrec train +model={name} ..., "
            "then python -m siamrec evaluate run=THAT_RUN_FOLDER"
        )
    data = load_data(cfg, run_dir)
    feats = base_features(cfg, data, run_dir)
    return finish_run(cfg, run_dir, feats.data, feats.x, plots=False)
