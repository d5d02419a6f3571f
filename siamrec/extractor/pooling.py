"""Pooling: a song's window features to one song vector (clip.pool), and the columns of its parts."""

from __future__ import annotations

import numpy as np

def pooled_parts(parts: dict[str, int], pool: str) -> dict[str, int]:
    """The layout of a pooled song vector: the parts (means), then with mean_std the parts' standard deviations."""
    return dict(parts) if pool == "mean" else {**parts, **{f"{p}_std": w for p, w in parts.items()}}


def part_columns(layout: dict[str, int], names, owner: str = "the backbone") -> np.ndarray:
    """Columns of the chosen parts (names of the backbone's parts; null = all) in a pooled song vector."""
    from siamrec.backbones.base import part_columns as columns

    if names is None:
        return np.arange(sum(layout.values()))
    names = [str(n) for n in names]
    return columns(layout, names + [f"{n}_std" for n in names if f"{n}_std" in layout], owner)


def pool_windows(feats: np.ndarray, pool: str) -> np.ndarray:
    """One vector from a song's (n_windows, dim) window features."""
    mean = feats.mean(axis=0)
    return mean if pool == "mean" else np.concatenate([mean, feats.std(axis=0)])
