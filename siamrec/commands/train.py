"""`train`: fit the chosen model on the training split, embed every item, score and illustrate the run."""

from __future__ import annotations

from pathlib import Path

from siamrec.errors import SiamrecError
from siamrec.pipeline import Data, base_features, finish_run, load_data, require_model


def train(cfg, run_dir) -> dict:
    name = require_model(cfg, "train")
    data = load_data(cfg, run_dir)
    if not data.mask("train").any():
        raise SiamrecError("the train split is empty: give split.train=FILE (split=files) or use split=stratified")
    if name == "baseline" and data.is_audio:
        return _finetune_audio(cfg, data, run_dir)
    return _fit_head(cfg, data, run_dir)


def _fit_head(cfg, data: Data, run_dir) -> dict:
    """Heads on fixed features (backbone features of audio, or the given feature rows); with
    model.finetune_backbone=true the Siamese head then trains on through the backbone."""
    from siamrec.evaluation import classification_metrics
    from siamrec.models.backbone import make_backbone
    from siamrec.models.heads import head_from_config, save_keras

    backbone = make_backbone(cfg, data) if data.is_audio else None
    data, x = base_features(cfg, data, run_dir, backbone)
    y = data.y
    head = head_from_config(cfg.model)
    tr, va, te = data.mask("train"), data.mask("valid"), data.mask("test")
    print(f"fitting {head.kind} on {tr.sum()} training items ({x.shape[1]}-d features)")
    history = head.fit(x[tr], y[tr], x[va], y[va])
    if cfg.model.get("finetune_backbone", False):
        data, x, more = _train_through_backbone(cfg, data, backbone, head, run_dir)
        history = {**(history or {}), **more}
    if backbone is not None:
        head.cfg["blocks"] = list(cfg.features.blocks)
        save_keras(backbone, Path(run_dir) / "backbone.keras")
    head.save(run_dir)
    extra = {}
    if hasattr(head, "predict_proba") and te.any():
        extra = classification_metrics(y[te], head.predict_proba(x[te]), float(cfg.model.get("threshold", 0.5)))
    return finish_run(cfg, run_dir, data, head.transform(x), history, extra)


def _train_through_backbone(cfg, data: Data, backbone, head, run_dir):
    """End-to-end Siamese training on decoded clips; returns the kept items, their new features, the history."""
    from siamrec.errors import SiamrecError
    from siamrec.features import decode_all
    from siamrec.models.backbone import concat_blocks, select_blocks
    from siamrec.models.end_to_end import finetune_end_to_end

    if head.kind != "siamese" or backbone is None:
        raise SiamrecError("model.finetune_backbone=true needs +model=siamese on audio (data=demo|folder|csv)")
    data, clips = decode_all(data, cfg, run_dir)
    tr = data.mask("train")
    print(f"training the backbone and the head end to end on {tr.sum()} clips")
    history = finetune_end_to_end(backbone, head, clips[tr], data.y[tr], cfg.features.blocks, cfg.model)
    outputs = backbone.predict(clips, batch_size=int(cfg.features.batch_size), verbose=0)
    return data, select_blocks(concat_blocks(outputs), cfg.features.blocks), history


def _finetune_audio(cfg, data: Data, run_dir) -> dict:
    """The paper's baseline: fine-tune the backbone on the labels; the embedding is its block features."""
    from siamrec.evaluation import classification_metrics
    from siamrec.features import decode_all
    from siamrec.models.backbone import concat_blocks, make_backbone, select_blocks
    from siamrec.models.finetune import finetune
    from siamrec.models.heads import IdentityHead, save_keras

    backbone = make_backbone(cfg, data)
    data, clips = decode_all(data, cfg, run_dir)
    y = data.y
    tr, va, te = data.mask("train"), data.mask("valid"), data.mask("test")
    print(f"fine-tuning on {tr.sum()} clips ({va.sum()} for validation), {y.shape[1]} labels")
    classifier, history = finetune(backbone, clips[tr], y[tr], clips[va], y[va], cfg.model)
    save_keras(classifier, Path(run_dir) / "model.keras")
    save_keras(backbone, Path(run_dir) / "backbone.keras")
    head = IdentityHead({"blocks": list(cfg.features.blocks)})
    head.save(run_dir)
    extra = {}
    if te.any():
        proba = classifier.predict(clips[te], batch_size=int(cfg.features.batch_size), verbose=0)
        extra = classification_metrics(y[te], proba, float(cfg.model.get("threshold", 0.5)))
    outputs = backbone.predict(clips, batch_size=int(cfg.features.batch_size), verbose=0)
    emb = select_blocks(concat_blocks(outputs), cfg.features.blocks)
    return finish_run(cfg, run_dir, data, emb, history, extra)
