"""Playlists: the k songs of a library most cosine-similar to a seed song (expanded with its nearest songs when
the index expands queries: siamrec.index.Index.expanded), the seed itself left out, found with a siamrec.index
search (exact unless an approximate index is given)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamrec.index import ExactIndex, Index
from siamrec.runs import write_csv, write_json

COLUMNS = ("seed", "seed_labels", "rank", "key", "labels", "similarity", "path")


def playlists(query_emb, gallery: Index | np.ndarray, gallery_keys, gallery_labels, gallery_paths, seeds, k: int,
              self_index=None) -> list[tuple]:
    """Rows (seed, seed_labels, rank, key, labels, similarity, path) for each query; `gallery` is an Index of
    the gallery (its query expansion applied) or its embeddings (searched exactly, no expansion); `seeds` are
    (name, labels) of the queries; `similarity` is the cosine to the (expanded) query;
    `self_index[i]` is query i's row in the gallery (left out), or −1."""
    k = min(int(k), len(gallery_keys) - (0 if self_index is None else 1))
    if k < 1:
        return []
    index = gallery if isinstance(gallery, Index) else ExactIndex(gallery)
    idx, sims = index.search(index.expanded(query_emb, self_index), k, exclude=self_index)
    rows = []
    for (name, seed_labels), row_idx, row_sims in zip(seeds, idx, sims):
        for rank, (j, s) in enumerate(zip(row_idx, row_sims), start=1):
            rows.append((name, "|".join(seed_labels), rank, gallery_keys[j], "|".join(gallery_labels[j]),
                         round(float(s), 6), gallery_paths[j] or ""))
    return rows


def sample_seeds(labels: list[tuple[str, ...]], split: np.ndarray, seed: int = 0) -> list[int]:
    """One seed item per label, preferring test items (the songs the model did not train on)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for name in sorted({lab for labs in labels for lab in labs}):
        carriers = [i for i, labs in enumerate(labels) if name in labs]
        test = [i for i in carriers if split[i] == "test"]
        pool = test or carriers
        pick = int(rng.choice(pool))
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def write_playlists(path: str | Path, rows: list[tuple]) -> Path:
    """CSV (or JSON when the name ends in .json) of playlist rows."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        out: dict = {}
        for row in rows:
            out.setdefault(row[0], {"labels": row[1], "playlist": []})["playlist"].append(dict(zip(COLUMNS[2:], row[2:])))
        return write_json(path, out)
    return write_csv(path, COLUMNS, rows)


def print_playlist(rows: list[tuple]) -> None:
    current = None
    for seed, seed_labels, rank, key, labels, sim, _path in rows:
        if seed != current:
            print(f"\nplaylist for {seed} [{seed_labels}]")
            current = seed
        print(f"{rank:3d}. {sim:+.3f}  {key}  [{labels}]")
