"""`train`: fit the chosen model on the training split, embed every item, score and illustrate the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.pipeline import Data, base_features, finish_run, load_data, require_head

TRAIN_ON = ("songs", "windows")


def train(cfg, run_dir) -> dict:
    head = require_head(cfg, "train")
    train_on = cfg.model.get("train_on", "songs")  # identity has none: it trains nothing
    if train_on not in TRAIN_ON:
        raise SiamrecError(f"model.train_on={train_on!r}: use songs (one row per song) or windows (one per window)")
    if train_on == "windows" and cfg.clip.pool != "mean":
        raise SiamrecError("model.train_on=windows trains on window vectors, which have no standard deviation: "
                           "use clip.pool=mean with it")
    data = load_data(cfg, run_dir)
    if not data.mask("train").any():
        raise SiamrecError("the train split is empty: give split.train=FILE (split=files) or use split=stratified")
    if head.fine_tunes_backbone and data.is_audio:
        return _finetune_audio(cfg, data, run_dir)
    return _fit_head(cfg, data, run_dir, head)


def _fit_head(cfg, data: Data, run_dir, head) -> dict:
    """Heads on fixed features (the backbone's song vectors, or the given feature rows); with
    model.finetune_backbone=true the Siamese head then trains on through the backbone."""
    from siamrec.encoder import make_encoder
    from siamrec.evaluation import classification_metrics

    train_on = cfg.model.get("train_on", "songs") if data.is_audio else "songs"  # identity trains nothing
    through_backbone = bool(cfg.model.get("finetune_backbone"))  # siamese only
    encoder = make_encoder(cfg, data, normalise=not through_backbone) if data.is_audio else None
    feats = base_features(cfg, data, run_dir, encoder, keep_windows=train_on == "windows")
    data, y = feats.data, feats.data.y
    x_tr, y_tr = feats.rows("train", train_on=train_on)
    x_va, y_va = feats.rows("valid")
    print(f"fitting {head.kind} on {len(x_tr)} training {train_on} of {data.mask('train').sum()} songs "
          f"({feats.x.shape[1]}-d features)")
    history = head.fit(x_tr, y_tr, x_va, y_va)
    if through_backbone:
        if not head.trains_through_backbone or encoder is None:
            raise SiamrecError("model.finetune_backbone=true needs +model=siamese on audio (data=demo|folder|csv)")
        feats, more = _train_through_backbone(cfg, data, one_backbone(encoder, "model.finetune_backbone"), head,
                                              run_dir)
        data = feats.data
        history = {**(history or {}), **more}
    if encoder is not None:
        encoder.save(run_dir)
    head.save(run_dir)
    extra = {}
    te = data.mask("test")
    if hasattr(head, "predict_proba") and te.any():
        extra = classification_metrics(y[te], head.predict_proba(feats.x[te]), float(cfg.model.threshold))
    return finish_run(cfg, run_dir, data, head.transform(feats.x), history, extra)


def one_backbone(encoder, what: str):
    """The one member (extractor and parts) of a single-backbone encoder: training through a backbone takes one."""
    if encoder.combined:
        raise SiamrecError(f"{what} trains through one backbone; drop features.combine")
    return encoder.members[0]


def decode_all(extractor, data: Data, cfg, run_dir) -> tuple[Data, list[np.ndarray]]:
    """Every item's windows in memory (for training through the backbone); failures are skipped and reported."""
    from tqdm.auto import tqdm

    from siamrec.extractor import report_failures

    windows, failures = [None] * len(data.lib), []
    stream = extractor.decode(list(enumerate(data.lib.paths)))
    for i, w, error, _ in tqdm(stream, total=len(data.lib), desc="decoding", unit="file"):
        if error is None:
            windows[i] = w
        else:
            failures.append((i, error))
    report_failures(run_dir, data.lib.keys, data.lib.paths, failures, float(cfg.data.max_failed_fraction))
    ok = np.array([w is not None for w in windows])
    return data.subset(ok), [w for w in windows if w is not None]


def _training_windows(windows: list[np.ndarray], y: np.ndarray, idx: np.ndarray, train_on: str):
    """Clips and labels of the items `idx`: every window (train_on=windows) or each song's first window."""
    from siamrec.pipeline import window_rows

    if not len(idx):
        return np.empty((0, 0), np.float32), y[idx]
    return window_rows(windows, y, idx, first_only=train_on != "windows")


def _song_vectors(member, windows: list[np.ndarray]) -> np.ndarray:
    """Pooled song vectors of in-memory windows with the member's model, in its parts (as its encoder saves them)."""
    return member.extractor.pool_songs(member.extractor.features_of(windows))[:, member.columns]


def _train_through_backbone(cfg, data: Data, member, head, run_dir):
    """End-to-end Siamese training on decoded windows; returns the kept items' new features and the history."""
    from siamrec.models.end_to_end import finetune_end_to_end
    from siamrec.pipeline import Features

    if cfg.clip.pool != "mean":
        raise SiamrecError("model.finetune_backbone=true trains on windows: use clip.pool=mean with it")
    extractor = member.extractor
    data, windows = decode_all(extractor, data, cfg, run_dir)
    clips, y = _training_windows(windows, data.y, np.flatnonzero(data.mask("train")), cfg.model.train_on)
    print(f"training the backbone and the head end to end on {len(clips)} windows")
    history = finetune_end_to_end(extractor.bundle, extractor.model, head, clips, y, member.parts, cfg.model)
    return Features(data, _song_vectors(member, windows)), history


def _finetune_audio(cfg, data: Data, run_dir) -> dict:
    """The paper's baseline: fine-tune the backbone on the labels; the embedding is its pooled song vectors."""
    from siamrec.evaluation import classification_metrics
    from siamrec.encoder import make_encoder
    from siamrec.models.finetune import finetune
    from siamrec.models.heads import IdentityHead, save_keras

    encoder = make_encoder(cfg, data, normalise=False)  # the fine-tuned backbone's raw song vectors are the embedding
    member = one_backbone(encoder, "+model=baseline on audio (fine-tuning)")
    extractor = member.extractor
    data, windows = decode_all(extractor, data, cfg, run_dir)
    y = data.y
    tr, va, te = (np.flatnonzero(data.mask(s)) for s in ("train", "valid", "test"))
    clips_tr, y_tr = _training_windows(windows, y, tr, cfg.model.train_on)
    clips_va, y_va = _training_windows(windows, y, va, cfg.model.train_on)
    print(f"fine-tuning on {len(clips_tr)} windows of {len(tr)} songs ({len(clips_va)} for validation), "
          f"{y.shape[1]} labels")
    classifier, history = finetune(extractor.bundle, extractor.model, clips_tr, y_tr, clips_va, y_va, cfg.model)
    save_keras(classifier, Path(run_dir) / "model.keras")
    encoder.save(run_dir)
    IdentityHead().save(run_dir)
    extra = {}
    if len(te):
        counts = [len(windows[i]) for i in te]
        proba = classifier.predict(np.concatenate([windows[i] for i in te]), batch_size=int(cfg.features.batch_size),
                                   verbose=0)
        song_proba = np.stack([p.mean(axis=0) for p in np.split(proba, np.cumsum(counts)[:-1])])
        extra = classification_metrics(y[te], song_proba, float(cfg.model.threshold))
    return finish_run(cfg, run_dir, data, _song_vectors(member, windows), history, extra)
