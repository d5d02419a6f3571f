"""Pictures of a run: t-SNE of the embeddings coloured by label (with and without PCA(50) first, as the paper's
figures 4.2–4.6) and training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import os

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def tsne_plots(run_dir, emb: np.ndarray, labels: list[tuple[str, ...]], seed: int = 0, max_points: int = 3000) -> list[Path]:
    """tsne_pca.png (PCA to 50 dims, then t-SNE) and tsne.png (t-SNE directly), coloured by first label."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    plt = _pyplot()
    rng = np.random.default_rng(seed)
    idx = np.arange(len(emb)) if len(emb) <= max_points else np.sort(rng.choice(len(emb), max_points, replace=False))
    x = np.asarray(emb, dtype=np.float64)[idx]
    first = [labels[i][0] if labels[i] else "?" for i in idx]
    names = sorted(set(first))
    if len(x) < 5:
        return []
    written = []
    for fname, use_pca in (("tsne_pca.png", True), ("tsne.png", False)):
        z = x
        if use_pca and x.shape[1] > 50 and len(x) > 50:
            z = PCA(50, random_state=seed).fit_transform(x)
        perplexity = float(min(30.0, (len(x) - 1) / 3.0))
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
        fig, ax = plt.subplots(figsize=(7, 6))
        cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
        for j, name in enumerate(names):
            sel = np.array([f == name for f in first])
            ax.scatter(xy[sel, 0], xy[sel, 1], s=12, color=cmap(j % cmap.N), label=name)
        ax.set_title(("PCA(50) → " if use_pca else "") + f"t-SNE of {len(x)} embeddings")
        ax.set_xticks([])
        ax.set_yticks([])
        if len(names) <= 20:
            ax.legend(fontsize=7, markerscale=1.5, loc="best")
        written.append(_save(fig, Path(run_dir) / fname))
        plt.close(fig)
    return written


def history_plot(run_dir, history: dict) -> Path | None:
    """training_curves.png: every logged series (loss, val_loss, val_map, ...) per epoch."""
    series = {k: v for k, v in (history or {}).items() if isinstance(v, list) and v}
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, values in series.items():
        ax = axes[1] if "map" in name or "acc" in name else axes[0]
        ax.plot(range(1, len(values) + 1), values, label=name)
    for ax, title in zip(axes, ("loss", "validation score")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if ax.lines:
            ax.legend()
    path = _save(fig, Path(run_dir) / "training_curves.png")
    plt.close(fig)
    return path
