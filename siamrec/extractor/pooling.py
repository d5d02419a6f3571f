"""Pooling: a song's window features to one song vector (clip.pool), and the columns of its parts."""

from __future__ import annotations

import numpy as np

def pooled_parts(parts: dict[str, int], pool: str) -> dict[str, int]:
    """The layout of a pooled song vector: the parts (means), then with mean_std the parts' standard deviations."""
    return {**parts, **{f"{p}_std": w for p, w in parts.items()}} if pool == "mean_std" else dict(parts)


def part_columns(layout: dict[str, int], names, owner: str = "the backbone") -> np.ndarray:
    """Columns of the chosen parts (names of the backbone's parts; null = all) in a pooled song vector."""
    from siamrec.backbones.base import part_columns as columns

    if names is None:
        return np.arange(sum(layout.values()))
    names = [str(n) for n in names]
    return columns(layout, names + [f"{n}_std" for n in names if f"{n}_std" in layout], owner)


def pool_windows(feats: np.ndarray, pool: str, parts: dict[str, int]) -> np.ndarray:
    """One vector from a song's (n_windows, dim) window features, whose columns are `parts` in order: their mean;
    `mean_std` appends their standard deviation; `unit_mean` first scales each window's vector of each part to unit
    length (a loud or dense window weighs no more than a quiet one)."""
    if pool == "unit_mean":
        feats = np.array(feats, dtype=np.float32)
        start = 0
        for width in parts.values():
            block = feats[:, start:start + width]
            norms = np.sqrt(np.einsum("ij,ij->i", block, block))[:, None]
            feats[:, start:start + width] = block / np.where(norms > 0, norms, 1.0)
            start += width
    mean = feats.mean(axis=0)
    return np.concatenate([mean, feats.std(axis=0)]) if pool == "mean_std" else mean
