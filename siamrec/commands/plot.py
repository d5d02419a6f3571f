"""`plot run=RUN`: t-SNE pictures of a run's embeddings (with and without PCA) and its training curves."""

from __future__ import annotations

import json

from siamrec.errors import SiamrecError
from siamrec.plots import history_plot, run_name, tsne_plots
from siamrec.runs import existing_run, read_embeddings


def plot(cfg, run_dir) -> list:
    run = existing_run(cfg.run)
    emb, items = read_embeddings(run)
    labels = [tuple(filter(None, it["labels"].split("|"))) for it in items]
    written = tsne_plots(run_dir, emb, labels, seed=int(cfg.seed), splits=[it["split"] for it in items],
                         name=run_name(run))
    history = run / "history.json"
    if history.is_file():
        try:
            saved = json.loads(history.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SiamrecError(f"run={run}: history.json is damaged ({exc}); re-run the training") from None
        path = history_plot(run_dir, saved if isinstance(saved, dict) else {})
        written += [path] if path else []
    if len(emb) < 5:
        print(f"no t-SNE picture: run {run} has {len(emb)} embeddings, t-SNE needs at least 5")
    for p in written:
        print(f"wrote {p}")
    return written
