"""Heads: what turns input features into the embedding used for playlists.

identity (the features as they are), lda (scikit-learn's linear discriminant projection), classifier (the paper's
baseline: a dense classifier on the features, or the backbone fine-tuned on audio) and siamese (an MLP projection
trained with a metric-learning loss).

Every head is one class + one YAML (conf/model/NAME.yaml names it by `_target_`; the YAML's other keys but `name`
are its constructor's typed keyword parameters, which siamrec.schema reads as its settings) and has one interface,
which `train` and `evaluate` call without asking what kind of head it is:

* `fit(training)` → history dict: fit on a training set (siamrec.pipeline.TrainingSet) that offers, each made when
  first asked for, the song (or window) rows of a split, the decoded windows and the backbone to train through;
  a head takes what it needs. Row heads only implement `fit_rows`.
* `transform(x)` → embeddings of song vectors (as the run's encoder gives them).
* `test_metrics(training)` → extra test scores (classification heads), {} by default.
* `input_choices()` → the inputs `train` chooses the head's among on the validation split (extra backbones
  appended to the song vector); only the configured input by default.
* `save(run_dir)` / `load_head(run_dir)`: head.json + its weights.
* `label_free`: True for a head that learns nothing from labels (identity), so the run's distances are the
  pretrained space's, where the radio rules' sound-duplicate distances were measured (siamrec.rules).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.runs import atomic_write_bytes, load_keras, read_arrays, read_run_file, write_json
from siamrec.schema import choice, list_of, number, one_of, pattern, string

TrainOn = Literal["songs", "windows"]  # songs: one row per song | windows: one per window, with its song's labels
Trainable = Annotated[object, one_of(choice("all"), pattern(r"last:\d+"), list_of(string()),
                                     allowed="all, last:N or a list of the backbone's layer groups (e.g. [block4, block5])")]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


class Head:
    """Base of the heads (see the module's doc). Subclasses state their settings as typed keyword parameters of
    their constructor and pass them on here."""

    kind = "base"
    label_free = False  # whether the embedding owes nothing to labels (siamrec.runs.label_free reads it)
    train_on = "songs"  # the rows a row head fits on; a head with a train_on setting sets its own

    def __init__(self, **settings):
        self.cfg = dict(settings)

    def fit(self, training) -> dict:
        """Fit on `training`'s rows of the train and valid splits (fit_rows); returns the history."""
        x_tr, y_tr = training.rows("train", train_on=self.train_on, subsets=self.subsets())
        x_va, y_va = training.rows("valid")
        unit, songs = training.unit(self.train_on), training.count("train")
        rows = {"songs": f"{len(x_tr)} training songs",
                "windows": f"{len(x_tr)} training windows of {songs} songs",
                "subsets": f"{len(x_tr)} training rows ({songs} songs and {len(x_tr) - songs} of their window "
                           "subsets)"}[unit]
        if unit != self.train_on:
            rows += f" (model.train_on={self.train_on} needs the windows of audio; these features have none)"
        print(f"fitting {self.kind} on {rows} and {len(x_va)} validation songs ({x_tr.shape[1]}-d features)")
        return self.fit_rows(x_tr, y_tr, x_va, y_va)

    def fit_rows(self, x_train, y_train, x_valid=None, y_valid=None) -> dict:
        return {}

    def subsets(self) -> tuple[int, float, int] | None:
        """With train_on=subsets: (vectors per song, fraction of its windows, seed) (siamrec.pipeline.Features)."""
        return None

    def transform(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def test_metrics(self, training) -> dict:
        """Scores of the test songs beyond retrieval (a classifier's accuracy, F1); none by default."""
        return {}

    def input_choices(self) -> list[list]:
        """The inputs `train` chooses among on the validation split, each a list of backbones appended to the
        configured input (features.combine entries; [] is the input as configured): none to choose by default."""
        return [[]]

    def untrained(self, name: str, command: str) -> None:
        """Used without training (`command` without run=): a head that must be fitted first says so."""
        raise SiamrecError(f"+model={name} must be trained first: python -m siamrec train +model={name} ..., "
                           f"then python -m siamrec {command} run=THAT_RUN_FOLDER")

    def save(self, run_dir, label_free: bool | None = None) -> None:
        """head.json; `label_free` (default: the head's own) says whether the run's embedding owes nothing to labels:
        an identity head on a backbone fine-tuned on them does."""
        target = f"{type(self).__module__}.{type(self).__qualname__}"
        write_json(Path(run_dir) / "head.json", {"kind": self.kind, "target": target, "cfg": self.cfg,
                                                 "label_free": self.label_free if label_free is None else label_free})

    def _load(self, run_dir) -> None:
        """Read the head's own weights (subclasses)."""


class IdentityHead(Head):
    """No training: the input features are the embedding."""

    kind = "identity"
    label_free = True

    def __init__(self):
        super().__init__()

    def transform(self, x):
        return np.asarray(x, dtype=np.float32)

    def untrained(self, name: str, command: str) -> None:
        """Nothing to fit: usable as it is."""


OneShrinkage = one_of(choice("auto"), number(0, 1, null=True), allowed="null, auto or a fraction in [0, 1]")
Shrinkage = Annotated[object, one_of(OneShrinkage, list_of(OneShrinkage, min_len=1),
                                     allowed="null, auto, a fraction in [0, 1], or a list of them (chosen on validation)")]


class LDAHead(Head):
    """scikit-learn LinearDiscriminantAnalysis on the training (+ validation) items; single-label only.

    With a few hundred songs and as many dimensions the within-class covariance is estimated badly and the plain
    projection overfits the training songs; shrinking it towards a multiple of the identity (`solver=eigen`) cures
    that, but costs where songs are plenty. `shrinkage` is a list of candidates — null (no shrinkage: the `svd`
    solver), a fraction in [0, 1], `auto` (Ledoit-Wolf, estimated from the data) — chosen by the validation MAP of
    a projection fitted on the training items (without validation items: `auto` when listed, else the first), or
    one value used as is."""

    kind = "lda"

    def __init__(self, *, use_valid: bool, shrinkage: Shrinkage, train_on: TrainOn):
        super().__init__(use_valid=use_valid, shrinkage=shrinkage, train_on=train_on)
        self.train_on = train_on

    def fit_rows(self, x_train, y_train, x_valid=None, y_valid=None):
        x, y = x_train, y_train
        has_valid = x_valid is not None and len(x_valid) > 1
        if has_valid and self.cfg["use_valid"]:
            x, y = np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid])
        if (y.sum(axis=1) != 1).any():
            raise SiamrecError("model=lda needs one label per item; for tagged (multi-label) data use +model=siamese")
        if len(np.unique(y.argmax(axis=1))) < 2:
            raise SiamrecError("model=lda needs training items of at least 2 labels")
        candidates = self.cfg["shrinkage"]
        candidates = list(candidates) if isinstance(candidates, (list, tuple)) else [candidates]
        for c in candidates:
            if not (c is None or c == "auto" or isinstance(c, (int, float)) and 0 <= c <= 1):
                raise SiamrecError(f"model.shrinkage: {c!r} is not null, auto or a fraction in [0, 1]")
        history = {}
        if len(candidates) == 1:
            chosen = candidates[0]
        elif has_valid:
            from siamrec.metrics import retrieval_metrics

            scores = {}
            for c in candidates:
                try:
                    self._fit(x_train, y_train, c)
                except (np.linalg.LinAlgError, ValueError):  # too little shrinkage for a singular within-class
                    # covariance, or fewer training songs than labels: this candidate cannot be judged
                    scores[str(c)] = float("-inf")
                    continue
                scores[str(c)] = retrieval_metrics(self.transform(x_valid), y_valid, ks=(10,))["map"]
            chosen = candidates[int(np.argmax(list(scores.values())))]
            scores = {k: v for k, v in scores.items() if np.isfinite(v)}
            history = {"valid_map_by_shrinkage": scores}
            print(f"lda: shrinkage {chosen} chosen on validation (MAP {max(scores.values(), default=float('nan')):.4f}; "
                  + ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()) + ")")
        else:
            chosen = "auto" if "auto" in candidates else candidates[0]
        try:
            self._fit(x, y, chosen)
        except np.linalg.LinAlgError:  # a singular within-class covariance: the plain projection (svd) still works
            print(f"lda: shrinkage {chosen} cannot be fitted on these songs (singular covariance); no shrinkage")
            chosen = None
            self._fit(x, y, chosen)
        return {**history, "shrinkage": str(chosen)}

    def _fit(self, x, y, shrinkage) -> None:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        classes = y.argmax(axis=1)
        solver = "svd" if shrinkage is None else "eigen"
        lda = LinearDiscriminantAnalysis(solver=solver, shrinkage=shrinkage).fit(x, classes)
        n = min(lda.scalings_.shape[1], len(np.unique(classes)) - 1)
        # svd centres on the data's mean (xbar_); eigen does not centre: centre on the same mean for the cosine
        mean = lda.xbar_ if solver == "svd" else np.asarray(x, dtype=np.float64).mean(axis=0)
        self.mean, self.scalings = mean.astype(np.float64), lda.scalings_[:, :n].astype(np.float64)

    def transform(self, x):
        return ((np.asarray(x, dtype=np.float64) - self.mean) @ self.scalings).astype(np.float32)

    def save(self, run_dir):
        super().save(run_dir)
        import io

        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, scalings=self.scalings)
        atomic_write_bytes(Path(run_dir) / "lda.npz", buf.getvalue())

    def _load(self, run_dir):
        z = read_run_file(run_dir, "lda.npz", lambda p: _consistent(read_arrays(p, {"mean": 1, "scalings": 2}),
                                                                    "mean", "scalings"))
        self.mean, self.scalings = z["mean"], z["scalings"]


class KerasHead(Head):
    """A Keras model on standardised features; saves model.keras (the trained network) and the scaler."""

    embedding_layer = "embedding"

    def standardiser(self, x_train):
        self.mu = x_train.mean(axis=0)
        self.sigma = x_train.std(axis=0) + 1e-6

    def scale(self, x):
        return ((np.asarray(x, dtype=np.float32) - self.mu) / self.sigma).astype(np.float32)

    def transform(self, x):
        return np.asarray(self.embedder.predict(self.scale(x), batch_size=1024, verbose=0), dtype=np.float32)

    def save(self, run_dir):
        super().save(run_dir)
        import io

        buf = io.BytesIO()
        np.savez(buf, mu=self.mu, sigma=self.sigma)
        atomic_write_bytes(Path(run_dir) / "scaler.npz", buf.getvalue())
        save_keras(self.model, Path(run_dir) / "model.keras")

    def _load(self, run_dir):
        import keras

        z = read_run_file(run_dir, "scaler.npz", lambda p: _consistent(read_arrays(p, {"mu": 1, "sigma": 1}),
                                                                       "mu", "sigma"))
        self.mu, self.sigma = z["mu"], z["sigma"]
        self.model = load_keras(run_dir, "model.keras")
        self.embedder = read_run_file(run_dir, "model.keras", lambda p: keras.Model(
            self.model.input, self.model.get_layer(self.embedding_layer).output))
        if tuple(self.model.input.shape[1:]) != (len(self.mu),):
            raise SiamrecError(f"run={run_dir}: model.keras takes inputs of shape {tuple(self.model.input.shape[1:])} "
                               f"but scaler.npz has {len(self.mu)} features; restore them, or train the run again")


def _consistent(arrays: dict, a: str, b: str) -> dict:
    if len(arrays[a]) != len(arrays[b]):
        raise ValueError(f"{a} has {len(arrays[a])} rows, {b} {len(arrays[b])}")
    return arrays


def seed_component(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow right before a trainable component is built, from that component's own seed:
    its initial weights, dropout and shuffling then do not depend on what consumed random state before it (through
    audio a backbone is built first; through data=features none is), so the same features and seed give the same
    model whichever path built it."""
    import keras

    keras.utils.set_random_seed(int(seed))


def epoch_progress(epochs: int, desc: str):
    """A Keras callback showing training as one tqdm bar over epochs, with the latest logs as its postfix."""
    import keras
    from tqdm.auto import tqdm

    class EpochProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc=desc, unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items()}, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochProgress()


def save_keras(model, path: Path) -> None:
    """model.save into a private temporary folder (removed whatever happens), then into place through
    runs.atomic_write_bytes: the run folder never holds a partial model or a temporary file."""
    import tempfile

    from siamrec.runs import disk_reason

    with tempfile.TemporaryDirectory(prefix="siamrec-model-") as tmp:
        saved = Path(tmp) / "model.keras"
        try:
            model.save(saved)
        except OSError as exc:
            raise SiamrecError(f"cannot write {path}: {disk_reason(exc)}") from None
        atomic_write_bytes(path, saved.read_bytes())


def head_from_config(model_cfg) -> Head:
    """The head of `model`: its YAML's `_target_` built with the YAML's settings (all keys but `name`, which names
    the option: +model=NAME). A failure is one line naming the model."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    node = {k: v for k, v in model_cfg.items() if k != "name"}
    try:  # _recursive_=False: its components (model.loss) stay settings, built when it trains
        head = instantiate(node, _convert_="all", _recursive_=False)
    except Exception as exc:  # noqa: BLE001 - hydra wraps whatever the constructor raised
        cause = exc.__cause__ or exc
        if isinstance(cause, SiamrecError):
            raise cause from None
        raise SiamrecError(f"model: cannot build {node.get('_target_')} ({' '.join(str(cause).split())})") from None
    if not isinstance(head, Head):
        raise SiamrecError(f"model: {node.get('_target_')} is not a siamrec head (siamrec.models.heads.Head)")
    return head


def load_head(run_dir) -> Head:
    from hydra.utils import get_class

    p = Path(run_dir) / "head.json"
    if not p.is_file():
        raise SiamrecError(f"run={run_dir}: head.json is missing; pass the folder of a finished train run")
    from siamrec.trust import check_plain, check_target

    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
        target, params = spec["target"], spec.get("cfg") or {}
    except Exception:  # noqa: BLE001 - damaged, foreign or older head.json
        raise SiamrecError(f"run={run_dir}: head.json is not a siamrec head of this version; train the run again") from None
    if not isinstance(params, dict):
        raise SiamrecError(f"run={run_dir}: head.json: its cfg is not a group of settings; train the run again")
    check_target(target, f"run={run_dir}: head.json")  # before anything is imported
    check_plain(params, f"run={run_dir}: head.json: cfg")
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - damaged, foreign or older head.json
        raise SiamrecError(f"run={run_dir}: head.json is not a siamrec head of this version; train the run again") from None
    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise SiamrecError(f"run={run_dir}: head.json names {target}, which is not a siamrec head")
    params = {k: v for k, v in params.items() if k != "name"}  # runs of before typed heads stored the option's name
    try:
        head = cls(**params)
    except TypeError:  # settings this version's head does not take
        raise SiamrecError(f"run={run_dir}: head.json is not a siamrec head of this version; train the run again") from None
    head._load(run_dir)
    return head
