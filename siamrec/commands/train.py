"""`train`: fit the chosen model's head on the training split, embed every item, score and illustrate the run.

The head takes what it trains on from a TrainingSet (siamrec.pipeline): song or window rows, decoded windows, the
backbone to train through; whatever it is, this command does the same steps."""

from __future__ import annotations

from siamrec.errors import SiamrecError
from siamrec.pipeline import TrainingSet, finish_run, input_configs, load_data, require_head


def fit_head(head, inputs, data, run_dir):
    """(head, training set, history): `head` fitted on the one input, or, with several (input_configs), a head
    built afresh (so from the same seeds) fitted on each and the one with the best validation MAP kept, the first
    on a tie; the history then records every input's (`valid_map_by_input`). An input other than the first that
    cannot be made (SiamrecError: another backbone's weights missing offline, ...) is left out, saying why."""
    if len(inputs) == 1:
        training = TrainingSet(inputs[0][1], data, run_dir)
        return head, training, head.fit(training)
    print(f"{head.kind}: its input is chosen on the validation split among {len(inputs)}: "
          f"{', '.join(name for name, _ in inputs)} (model.inputs=[[]]: the first only)")
    fitted = []
    for k, (name, cfg) in enumerate(inputs):
        print(f"input {k + 1}/{len(inputs)}, {name}:")
        head = require_head(cfg, "train")
        training = TrainingSet(cfg, data, run_dir)
        try:
            history = head.fit(training)
        except SiamrecError as e:  # e.g. another backbone's weights not found offline: the others still count
            if not k:
                raise
            print(f"{head.kind}: input {name} left out: {e}")
            continue
        if "valid_map" not in history:  # e.g. no label has two validation songs
            print(f"{head.kind}: no validation MAP to choose the input by (too few validation songs: a label needs "
                  f"two); input {name} kept")
            return head, training, history
        fitted.append((name, head, training, history))
    scores = {name: history["valid_map"] for name, _, _, history in fitted}
    name, head, training, history = max(fitted, key=lambda f: f[3]["valid_map"])  # max keeps the first on a tie
    shown = ", ".join(f"{n}: {v:.4f}" for n, v in scores.items())
    print(f"{head.kind}: input {name} chosen on validation (MAP {shown})")
    return head, training, {**history, "input": name, "valid_map_by_input": scores}


def train(cfg, run_dir) -> dict:
    head = require_head(cfg, "train")
    data = load_data(cfg, run_dir)
    if not data.mask("train").any():
        raise SiamrecError("the train split is empty: give split.train=FILE (split=files) or use split=stratified")
    head, training, history = fit_head(head, input_configs(cfg, head, data), data, run_dir)
    vectors = training.song_vectors()
    training.save(run_dir)
    head.save(run_dir)
    return finish_run(cfg, run_dir, training.data, head.transform(vectors), history, head.test_metrics(training))
