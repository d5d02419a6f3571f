"""`extract run=RUN data=...`: embed a whole library with a run's model into embeddings.npy + items.csv."""

from __future__ import annotations

from siamrec.embedder import embed_with_run
from siamrec.errors import SiamrecError
from siamrec.pipeline import Data, save_embeddings


def extract(cfg, run_dir):
    from siamrec.data.sources import load_library

    if not cfg.get("run"):
        raise SiamrecError("extract needs a trained model: pass run=RUN_FOLDER (printed by train)")
    lib = load_library(cfg.data, cfg.paths)
    import numpy as np

    data = Data(lib, np.full(len(lib), "", dtype=object).astype(str), lib.label_names)
    data, emb = embed_with_run(cfg.run, cfg, data, run_dir)
    save_embeddings(run_dir, data, emb)
    print(f"embedded {len(data.lib)} items")
    return emb
