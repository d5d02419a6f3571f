"""`tag FILE...`: the pretrained MSD convnet's 50-tag predictions for songs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamrec.data.audio import AudioError, load_clip
from siamrec.errors import SiamrecError
from siamrec.runs import write_csv


def tag(cfg, run_dir) -> list[tuple[str, list[tuple[str, float]]]]:
    from siamrec.models.backbone import MSD_TAGS, make_backbone

    files = [str(f) for f in cfg.tag.files]
    if not files:
        raise SiamrecError("no song given: python -m siamrec tag SONG.mp3 [MORE ...]")
    if not cfg.backbone.get("pretrained", True):
        raise SiamrecError("backbone.pretrained=false has no trained tagger; drop that setting")
    from omegaconf import OmegaConf

    tag_cfg = OmegaConf.merge(cfg, {"backbone": {"release": cfg.tag.get("release", "keras2"), "bn_stats": "per_clip"}})
    model = make_backbone(tag_cfg)
    top = int(cfg.tag.get("top", 5))
    results, rows = [], []
    for f in files:
        try:
            clip = load_clip(f, int(cfg.clip.sr), float(cfg.clip.duration), cfg.clip.offset)
        except AudioError as exc:
            print(f"{f}: skipped: {exc.reason}")
            continue
        proba = np.asarray(model.predict_on_batch(clip[None])["tags"])[0]
        best = [(MSD_TAGS[j], float(proba[j])) for j in np.argsort(-proba)[:top]]
        results.append((f, best))
        print(f"{f}: " + ", ".join(f"{name} {p:.2f}" for name, p in best))
        rows += [(f, rank, name, round(p, 6)) for rank, (name, p) in enumerate(best, start=1)]
    if not results:
        raise SiamrecError(f"none of the {len(files)} files could be decoded")
    write_csv(Path(run_dir) / "tags.csv", ("path", "rank", "tag", "probability"), rows)
    return results
