"""`recommend run=RUN seed=SONG k=10`: playlists of the run's library for a seed song.

The seed may be a song of the library (its stored embedding is used and it is left out of its own playlist),
a new song (cold start: embedded with the run's model), or a text file listing several seeds, one per line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamrec.data.audio import AUDIO_EXTENSIONS, AudioError, load_clip
from siamrec.data.split import stem
from siamrec.errors import SiamrecError
from siamrec.playlists import playlists, print_playlist, write_playlists
from siamrec.runs import existing_run, read_embeddings


def _seed_list(seed) -> list[str]:
    if seed in (None, ""):
        raise SiamrecError("no seed song: pass seed=PATH/TO/SONG (or seed=LIST.txt with one song per line)")
    if isinstance(seed, (list, tuple)) or hasattr(seed, "__iter__") and not isinstance(seed, str):
        return [str(s) for s in seed]
    p = Path(str(seed)).expanduser()
    if p.suffix.lower() in (".txt", ".lst", ".m3u") and p.is_file():
        return [line.strip() for line in p.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [str(seed)]


def _find_in_library(seed: str, items: list[dict]) -> int:
    """Row of `seed` in the library (by key, path or file stem), or −1."""
    target = str(Path(seed).expanduser().resolve()) if Path(seed).exists() else None
    for i, it in enumerate(items):
        if seed == it["key"] or (target and it["path"] and str(Path(it["path"]).resolve()) == target):
            return i
    matches = [i for i, it in enumerate(items) if stem(it["key"]) == stem(seed)]
    return matches[0] if len(matches) == 1 else -1


def recommend(cfg, run_dir) -> list[tuple]:
    run = existing_run(cfg.run)
    emb, items = read_embeddings(run)
    k = int(cfg.recommend.get("k", 10))
    if k < 1:
        raise SiamrecError(f"k={k}: must be at least 1")
    seeds = _seed_list(cfg.recommend.get("seed"))
    queries, self_index, names, embedder = [], [], [], None
    for s in seeds:
        row = _find_in_library(s, items)
        if row >= 0:
            queries.append(emb[row])
            self_index.append(row)
            names.append((items[row]["key"], tuple(filter(None, items[row]["labels"].split("|")))))
            continue
        if not Path(s).expanduser().is_file():
            raise SiamrecError(f"seed={s}: neither a song of run {run}'s library nor an existing audio file")
        if embedder is None:
            from siamrec.embedder import RunEmbedder
            from siamrec.models.backbone import concat_blocks

            embedder = RunEmbedder(run)
        try:
            clip = load_clip(s, int(cfg.clip.sr), float(cfg.clip.duration), cfg.clip.offset)
        except AudioError as exc:
            raise SiamrecError(f"seed={s}: cannot decode ({exc.reason}); supported: {', '.join(AUDIO_EXTENSIONS)}") from None
        feats = concat_blocks(embedder.backbone.predict_on_batch(clip[None]))
        queries.append(embedder.from_features(feats)[0])
        self_index.append(-1)
        names.append((s, ()))
    keys = [it["key"] for it in items]
    labels = [tuple(filter(None, it["labels"].split("|"))) for it in items]
    paths = [it["path"] for it in items]
    rows = playlists(np.stack(queries), emb, keys, labels, paths, names, k, self_index=np.asarray(self_index))
    print_playlist(rows)
    write_playlists(Path(run_dir) / "playlists.csv", rows)
    if cfg.recommend.get("out"):
        print(f"playlists written to {write_playlists(Path(str(cfg.recommend.out)).expanduser(), rows)}")
    return rows
