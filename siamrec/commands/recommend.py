"""`recommend run=RUN seed=SONG k=10`: playlists of the run's library for one seed song or many.

A seed may be a song of the library (its stored embedding is used and it is left out of its own playlist),
a new song (cold start: embedded with the run's model; many new songs are decoded in worker processes and
embedded in batches), or a text file listing seeds, one per line. The library is searched with the configured
index (`index=exact`, the default, or `index=faiss`; see siamrec.index). The playlists go to playlists.csv in
the command's run folder and, with `out=FILE.csv|.json`, to that file.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.data.split import stem
from siamrec.errors import SiamrecError
from siamrec.index import open_index
from siamrec.playlists import playlists, print_playlist, write_playlists
from siamrec.runs import existing_run, read_embeddings

MAX_PRINTED = 10  # playlists printed in full; with more seeds only the files are named


def _seed_list(seed) -> list[str]:
    if seed in (None, ""):
        raise SiamrecError("no seed song: pass seed=PATH/TO/SONG (or seed=LIST.txt with one song per line)")
    if isinstance(seed, (list, tuple)) or hasattr(seed, "__iter__") and not isinstance(seed, str):
        return [str(s) for s in seed]
    p = Path(str(seed)).expanduser()
    if p.suffix.lower() in (".txt", ".lst", ".m3u") and p.is_file():
        return [line.strip() for line in p.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [str(seed)]


class _Catalogue:
    """Finds a seed among the run's items: by key, by path (as given, then resolved), or, for a seed that is
    not an existing file, by a file stem that names exactly one item. Lookups are dictionaries, built once."""

    def __init__(self, items: list[dict]):
        self.items = items
        self.by_key = {it["key"]: i for i, it in enumerate(items)}

    @cached_property
    def by_path(self) -> dict[str, int]:
        return {os.path.abspath(it["path"]): i for i, it in enumerate(self.items) if it["path"]}

    @cached_property
    def by_real_path(self) -> dict[str, int]:
        return {os.path.realpath(it["path"]): i for i, it in enumerate(self.items) if it["path"]}

    @cached_property
    def by_stem(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            out.setdefault(stem(it["key"]), []).append(i)
        return out

    def find(self, seed: str) -> int:
        """Row of `seed`, or −1."""
        if seed in self.by_key:
            return self.by_key[seed]
        path = os.path.abspath(os.path.expanduser(seed))
        if os.path.isfile(path):
            row = self.by_path.get(path)
            return self.by_real_path.get(os.path.realpath(path), -1) if row is None else row
        matches = self.by_stem.get(stem(seed), [])
        return matches[0] if len(matches) == 1 else -1


def embed_new_songs(run, songs: list[str], cfg) -> np.ndarray:
    """Embeddings of songs outside the library: decoded in worker processes, embedded in batches."""
    from siamrec.embedder import RunEmbedder
    from siamrec.features import N_FEATURES, decode_workers, stream_features

    embedder = RunEmbedder(run)
    feats = np.empty((len(songs), N_FEATURES), dtype=np.float32)
    for indices, batch, failures in stream_features(list(enumerate(songs)), embedder.backbone, cfg.clip,
                                                    int(cfg.features.batch_size), decode_workers(cfg.features),
                                                    progress=len(songs) > 1, desc="new songs"):
        if failures:
            i, reason = failures[0]
            raise SiamrecError(f"seed={songs[i]}: cannot decode ({reason}); supported: {', '.join(AUDIO_EXTENSIONS)}")
        feats[indices] = batch
    return embedder.from_features(feats)


def recommend(cfg, run_dir) -> list[tuple]:
    run = existing_run(cfg.run)
    emb, items = read_embeddings(run)
    k = int(cfg.recommend.get("k", 10))
    if k < 1:
        raise SiamrecError(f"k={k}: must be at least 1")
    seeds = _seed_list(cfg.recommend.get("seed"))
    catalogue = _Catalogue(items)
    self_index = np.array([catalogue.find(s) for s in seeds], dtype=np.int64)
    new_songs = list(dict.fromkeys(s for s, row in zip(seeds, self_index) if row < 0))
    for s in new_songs:
        if not Path(s).expanduser().is_file():
            raise SiamrecError(f"seed={s}: neither a song of run {run}'s library nor an existing audio file")
    queries = emb[np.maximum(self_index, 0)]
    if new_songs:
        new_emb = dict(zip(new_songs, embed_new_songs(run, [str(Path(s).expanduser()) for s in new_songs], cfg)))
        queries[self_index < 0] = [new_emb[s] for s, row in zip(seeds, self_index) if row < 0]
    names = [(items[row]["key"], tuple(filter(None, items[row]["labels"].split("|")))) if row >= 0 else (s, ())
             for s, row in zip(seeds, self_index)]
    keys = [it["key"] for it in items]
    labels = [tuple(filter(None, it["labels"].split("|"))) for it in items]
    paths = [it["path"] for it in items]
    index = open_index(run, emb, cfg.index)
    rows = playlists(queries, index, keys, labels, paths, names, k, self_index=self_index)
    if len(seeds) <= MAX_PRINTED:
        print_playlist(rows)
    written = write_playlists(Path(run_dir) / "playlists.csv", rows)
    if cfg.recommend.get("out"):
        written = write_playlists(Path(str(cfg.recommend.out)).expanduser(), rows)
    print(f"{len(seeds)} playlists ({len(new_songs)} new songs embedded, {index.method} search) written to {written}")
    return rows
