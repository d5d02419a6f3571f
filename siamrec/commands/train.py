"""`train`: fit the chosen model's head on the training split, embed every item, score and illustrate the run.

The head takes what it trains on from a TrainingSet (siamrec.pipeline): song or window rows, decoded windows, the
backbone to train through; whatever it is, this command does the same steps."""

from __future__ import annotations

from siamrec.errors import SiamrecError
from siamrec.pipeline import TrainingSet, finish_run, load_data, require_head


def train(cfg, run_dir) -> dict:
    head = require_head(cfg, "train")
    data = load_data(cfg, run_dir)
    if not data.mask("train").any():
        raise SiamrecError("the train split is empty: give split.train=FILE (split=files) or use split=stratified")
    training = TrainingSet(cfg, data, run_dir)
    history = head.fit(training)
    vectors = training.song_vectors()
    training.save(run_dir)
    head.save(run_dir)
    return finish_run(cfg, run_dir, training.data, head.transform(vectors), history, head.test_metrics(training))
