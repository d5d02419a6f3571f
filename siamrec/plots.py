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
    """Save through runs.atomic_write_bytes (a temporary name, an atomic rename, the user's usual permissions; a
    full or read-only disk is a SiamrecError naming the picture and leaves no temporary file)."""
    import io

    from siamrec.runs import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def run_name(run_dir) -> str:
    """A run named as its folder is (outputs/DATE/TIME: 'DATE/TIME')."""
    return "/".join(Path(run_dir).resolve().parts[-2:])


MARKERS = {"train": "o", "valid": "s", "test": "^", "": "D"}
SPLIT_NAMES = {"train": "training", "valid": "validation", "test": "test", "": "unused"}


def tsne_plots(run_dir, emb: np.ndarray, labels: list[tuple[str, ...]], seed: int = 0, max_points: int = 3000,
               splits=None, name: str | None = None, progress: bool = True) -> list[Path]:
    """tsne_pca.png (PCA to 50 dims, then t-SNE) and tsne.png (t-SNE directly), coloured by first label; with
    `splits` (one of train/valid/test/'' per item) the marker shape tells training from test songs. The title
    names the run (`name`, default the run folder's name). A line before and after each t-SNE shows progress."""
    import time

    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    plt = _pyplot()
    rng = np.random.default_rng(seed)
    idx = np.arange(len(emb)) if len(emb) <= max_points else np.sort(rng.choice(len(emb), max_points, replace=False))
    x = np.asarray(emb, dtype=np.float64)[idx]
    first = np.array([labels[i][0] if labels[i] else "?" for i in idx], dtype=object)
    part = np.array([str(splits[i]) if splits is not None else "" for i in idx], dtype=object)
    names = sorted(set(first))
    if len(x) < 5:
        return []
    name = name or run_name(run_dir)
    written = []
    for fname, use_pca in (("tsne_pca.png", True), ("tsne.png", False)):
        pca = use_pca and x.shape[1] > 50 and len(x) > 50
        what = ("PCA(50) → " if pca else "") + f"t-SNE of {len(x)} embeddings" + (
            f" ({x.shape[1]}-d, no PCA needed)" if use_pca and not pca else "")
        if progress:
            print(f"{what} ...", flush=True)
        started = time.perf_counter()
        z = PCA(50, random_state=seed).fit_transform(x) if pca else x
        perplexity = float(min(30.0, (len(x) - 1) / 3.0))
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
        fig, ax = plt.subplots(figsize=(7, 6))
        cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
        shown_parts = [p for p in ("train", "valid", "test", "") if (part == p).any()]
        for j, label in enumerate(names):
            in_legend = False
            for p in shown_parts:
                sel = (first == label) & (part == p)
                if sel.any():
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=cmap(j % cmap.N),
                               marker=MARKERS[p] if splits is not None else "o",
                               label=None if in_legend else label, edgecolors="none")
                    in_legend = True
        if splits is not None and len(shown_parts) > 1:  # a key to the marker shapes, in grey
            for p in shown_parts:
                ax.scatter([], [], marker=MARKERS[p], color="0.4", label=f"{SPLIT_NAMES[p]} songs")
        ax.set_title(f"{name}: {what}")
        ax.set_xticks([])
        ax.set_yticks([])
        if len(names) <= 20:
            ax.legend(fontsize=7, markerscale=1.5, loc="best")
        written.append(_save(fig, Path(run_dir) / fname))
        plt.close(fig)
        if progress:
            print(f"{what}: done in {time.perf_counter() - started:.1f} s", flush=True)
    return written


def chosen_epoch(history: dict) -> int | None:
    """The epoch (1-based) whose model was kept: history['chosen_epoch'] when the trainer records it, else the
    epoch of least validation loss (Keras early stopping restores those weights)."""
    chosen = history.get("chosen_epoch")
    if isinstance(chosen, (int, float)) and not isinstance(chosen, bool) and chosen >= 1:
        return int(chosen)
    val = history.get("val_loss")
    if isinstance(val, list) and val and all(isinstance(v, (int, float)) for v in val):
        return int(np.argmin(val)) + 1
    return None


def history_plot(run_dir, history: dict) -> Path | None:
    """training_curves.png: every logged series (loss, val_loss, val_map, ...) per epoch, one panel for losses
    and one for scores, only those that have a series; the chosen epoch marked by a dashed line."""
    series = {k: v for k, v in (history or {}).items() if isinstance(v, list) and v
              and all(isinstance(x, (int, float)) for x in v)}
    if not series:
        return None
    plt = _pyplot()
    panels = {"loss": {}, "validation score": {}}
    for key, values in series.items():
        panels["validation score" if ("map" in key or "acc" in key) else "loss"][key] = values
    panels = {title: group for title, group in panels.items() if group}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    chosen = chosen_epoch(history)
    for ax, (title, group) in zip(axes[0], panels.items()):
        for key, values in group.items():
            ax.plot(range(1, len(values) + 1), values, label=key)
        if chosen is not None:
            ax.axvline(chosen, color="0.3", linestyle="--", linewidth=1, label=f"chosen epoch ({chosen})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    path = _save(fig, Path(run_dir) / "training_curves.png")
    plt.close(fig)
    return path
