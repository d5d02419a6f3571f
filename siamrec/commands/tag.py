"""`tag FILE...`: the backbone tagger's predictions for songs (musicnn: MSD or MagnaTagATune tags; Choi: MSD)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.runs import write_csv


def tag(cfg, run_dir) -> list[tuple[str, list[tuple[str, float]]]]:
    """The backbone's tagger on each song: the tag probabilities of its windows (clip.windows), averaged."""
    from siamrec.extractor import decode_stream, make_bundle, padding_note, window_plan

    files = [str(f) for f in cfg.tag.files]
    if not files:
        raise SiamrecError("no song given: python -m siamrec tag SONG.mp3 [MORE ...]")
    bundle = make_bundle(cfg.backbone)
    if not bundle.tags:
        raise SiamrecError(f"backbone {bundle.name} has no tagger; use backbone=choi2017_keras2")
    if not bundle.pretrained:
        raise SiamrecError("backbone.pretrained=false has no trained tagger; drop that setting")
    if bundle.needs_preparation:
        raise SiamrecError(f"backbone {bundle.name} estimates statistics over a library first; tag with the default "
                           "backbone, backbone=choi2017_keras2 or backbone.bn_stats=per_clip")
    model = bundle.build(cfg.paths)
    top = int(cfg.tag.top)
    results, rows = [], []
    for i, windows, error, _ in decode_stream(list(enumerate(files)), window_plan(bundle, cfg.clip)):
        f = files[i]
        if error is not None:
            print(f"{f}: skipped: {error}")
            continue
        proba = np.asarray(model.predict(windows, batch_size=8, verbose=0)["tags"]).mean(axis=0)
        best = [(bundle.tags[j], float(proba[j])) for j in np.argsort(-proba)[:top]]
        results.append((f, best))
        note = padding_note(f, bundle.window_seconds, "song")
        if note:
            print(note)
        print(f"{f}: " + ", ".join(f"{name} {p:.2f}" for name, p in best))
        rows += [(f, rank, name, round(p, 6)) for rank, (name, p) in enumerate(best, start=1)]
    if not results:
        raise SiamrecError(f"none of the {len(files)} files could be decoded")
    write_csv(Path(run_dir) / "tags.csv", ("path", "rank", "tag", "probability"), rows)
    return results
