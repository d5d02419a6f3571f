"""`plot run=RUN`: t-SNE pictures of a run's embeddings (with and without PCA) and its training curves."""

from __future__ import annotations

import json

from siamrec.plots import history_plot, tsne_plots
from siamrec.runs import existing_run, read_embeddings


def plot(cfg, run_dir) -> list:
    run = existing_run(cfg.run)
    emb, items = read_embeddings(run)
    labels = [tuple(filter(None, it["labels"].split("|"))) for it in items]
    written = tsne_plots(run_dir, emb, labels, seed=int(cfg.seed))
    history = run / "history.json"
    if history.is_file():
        path = history_plot(run_dir, json.loads(history.read_text()))
        written += [path] if path else []
    for p in written:
        print(f"wrote {p}")
    return written
