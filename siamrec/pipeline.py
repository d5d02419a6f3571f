"""Shared steps of the commands: load and split the data, compute the backbone's features, write a run's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamrec.data.library import Library
from siamrec.data.sources import load_library
from siamrec.data.split import make_split, write_split
from siamrec.errors import SiamrecError
from siamrec.runs import write_embeddings, write_json

MODELS = ("identity", "lda", "baseline", "siamese")


@dataclass
class Data:
    """A library, its split and its label matrix, restricted to the items that are usable."""

    lib: Library
    split: np.ndarray          # 'train' / 'valid' / 'test' / '' per item
    label_names: list[str]

    @property
    def y(self) -> np.ndarray:
        return self.lib.label_matrix(self.label_names)

    @property
    def is_audio(self) -> bool:
        return self.lib.features is None

    def mask(self, *names: str) -> np.ndarray:
        return np.isin(self.split, names)

    def subset(self, keep: np.ndarray) -> "Data":
        idx = np.flatnonzero(keep)
        return Data(self.lib.subset(idx), self.split[idx], self.label_names)


def require_model(cfg, command: str) -> str:
    name = cfg.get("model", {}).get("name") if cfg.get("model") else None
    if name is None:
        raise SiamrecError(f"no model chosen: run python -m siamrec {command} +model=baseline (or siamese, lda, identity)")
    if name not in MODELS:
        raise SiamrecError(f"model.name={name!r}: choose +model= one of {', '.join(MODELS)}")
    return name


def check_clip(clip_cfg) -> None:
    """Reject bad clip settings before any file is decoded."""
    from siamrec.data.audio import window_start

    for key in ("sr", "duration"):
        value = clip_cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise SiamrecError(f"clip.{key}={value!r}: must be a positive number")
    try:
        window_start(float(clip_cfg.duration), float(clip_cfg.duration), clip_cfg.get("offset", "start"))
    except ValueError as exc:
        raise SiamrecError(str(exc)) from None


def load_data(cfg, run_dir) -> Data:
    """Library + split of cfg.data / cfg.split; writes split.csv and data_report.json into the run folder."""
    lib = load_library(cfg.data, cfg.paths)
    split = make_split(lib, cfg.split)
    write_split(run_dir, lib, split)
    write_json(Path(run_dir) / "data_report.json", lib.report)
    dropped = lib.report.get("dropped_labels") or {}
    if dropped or lib.report.get("excluded_items"):
        print(f"label hygiene: dropped {len(dropped)} rare labels, excluded {len(lib.report['excluded_items'])} "
              "unlabelled items (see data_report.json)")
    return Data(lib, split, lib.label_names)


def audio_features(backbone, data: Data, cfg, run_dir, desc="features") -> tuple[Data, np.ndarray]:
    """160-d backbone features of every audio item (cached per file); items that fail to decode are dropped
    (listed in failed.csv). Returns the kept items and their features."""
    from siamrec.features import FeatureCache, decode_workers, extract_features, model_fingerprint, report_failures

    cache = None
    if cfg.features.get("cache", True):
        root = Path(str(cfg.paths.cache)).expanduser() / "features"
        cache = FeatureCache(root, model_fingerprint(backbone, cfg.clip))
    ext = extract_features(data.lib.paths, backbone, cfg.clip, cache=cache,
                           batch_size=int(cfg.features.get("batch_size", 8)), workers=decode_workers(cfg.features),
                           desc=desc)
    if ext.n_cached:
        print(f"{ext.n_cached} of {len(data.lib)} files' features came from the cache")
    report_failures(run_dir, data.lib.keys, data.lib.paths, ext.failures,
                    float(cfg.data.get("max_failed_fraction", 0.2)))
    ok = ext.ok
    return data.subset(ok), ext.features[ok]


def raw_features(cfg, data: Data, run_dir, backbone=None) -> tuple[Data, np.ndarray]:
    """All five blocks' features of the backbone (audio), or the given matrix (data=features)."""
    if not data.is_audio:
        return data, data.lib.features
    from siamrec.models.backbone import make_backbone

    if backbone is None:
        backbone = make_backbone(cfg, data)
    return audio_features(backbone, data, cfg, run_dir)


def base_features(cfg, data: Data, run_dir, backbone=None) -> tuple[Data, np.ndarray]:
    """The input features of the heads: the chosen blocks of the backbone (audio) or the given matrix."""
    from siamrec.models.backbone import select_blocks

    data, feats = raw_features(cfg, data, run_dir, backbone)
    return (data, select_blocks(feats, cfg.features.blocks)) if data.is_audio else (data, feats)


def save_embeddings(run_dir, data: Data, embeddings: np.ndarray) -> None:
    lib = data.lib
    write_embeddings(run_dir, embeddings, lib.keys, lib.paths, lib.labels, list(data.split))


def finish_run(cfg, run_dir, data: Data, emb: np.ndarray, history: dict | None = None,
               extra_test: dict | None = None, plots: bool = True) -> dict:
    """Write a run's embeddings, items, metrics, sample playlists and pictures; print the test scores."""
    from siamrec.evaluation import score_embeddings
    from siamrec.playlists import playlists, sample_seeds, write_playlists
    from siamrec.runs import write_metrics

    run_dir = Path(run_dir)
    save_embeddings(run_dir, data, emb)
    metrics = score_embeddings(emb, data.y, data.split, cfg.eval)
    metrics["test"].update(extra_test or {})
    metrics["model"] = (cfg.get("model") or {}).get("name", "identity")
    write_metrics(run_dir, metrics)
    if history:
        write_json(run_dir / "history.json", history)

    lib = data.lib
    seeds = sample_seeds(lib.labels, data.split, seed=int(cfg.seed))
    rows = playlists(emb[seeds], emb, lib.keys, lib.labels, lib.paths,
                     [(lib.keys[i], lib.labels[i]) for i in seeds], int(cfg.recommend.get("k", 10)),
                     self_index=np.asarray(seeds))
    write_playlists(run_dir / "playlists.csv", rows)
    from siamrec.plots import history_plot, tsne_plots

    if plots and cfg.get("plots", True):
        tsne_plots(run_dir, emb, lib.labels, seed=int(cfg.seed))
    history_plot(run_dir, history)
    print_scores(metrics)
    return metrics


def print_scores(metrics: dict) -> None:
    test = metrics["test"]
    shown = ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float) and
                      (k in ("map", "map@10", "p@10", "map@r", "accuracy", "micro_f1")))
    print(f"test ({metrics['protocol']}, {test['n_queries']} queries, {test['n_skipped']} skipped): {shown}")
