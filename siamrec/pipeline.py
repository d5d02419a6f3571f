"""Shared steps of the commands: load and split the data, compute the backbone's features, write a run's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamrec.data.library import Library
from siamrec.data.sources import load_library
from siamrec.data.split import make_split, write_split
from siamrec.errors import SiamrecError
from siamrec.schema import windows_pool_problem
from siamrec.runs import mark_finished, write_embeddings, write_json


@dataclass
class Data:
    """A library, its split and its label matrix, restricted to the items that are usable."""

    lib: Library
    split: np.ndarray          # 'train' / 'valid' / 'test' / '' per item
    label_names: list[str]

    @property
    def y(self) -> np.ndarray:
        return self.lib.label_matrix(self.label_names)

    @property
    def is_audio(self) -> bool:
        return self.lib.features is None

    def mask(self, *names: str) -> np.ndarray:
        return np.isin(self.split, names)

    def subset(self, keep: np.ndarray) -> "Data":
        idx = np.flatnonzero(keep)
        return Data(self.lib.subset(idx), self.split[idx], self.label_names)


def require_head(cfg, command: str):
    """The head of the chosen model (built from its `_target_`), or a clear error when no model is chosen."""
    from siamrec.models.heads import head_from_config

    if not cfg.get("model") or "_target_" not in cfg.model:
        raise SiamrecError(f"no model chosen: run python -m siamrec {command} +model=baseline (or siamese, lda, identity)")
    return head_from_config(cfg.model)


def load_data(cfg, run_dir) -> Data:
    """Library + split of cfg.data / cfg.split; writes split.csv and data_report.json into the run folder."""
    lib = load_library(cfg.data, cfg.paths)
    split = make_split(lib, cfg.split)
    write_split(run_dir, lib, split)
    write_json(Path(run_dir) / "data_report.json", lib.report)
    dropped = lib.report.get("dropped_labels") or {}
    if dropped or lib.report.get("excluded_items"):
        print(f"label hygiene: dropped {len(dropped)} rare labels, excluded {len(lib.report['excluded_items'])} "
              "unlabelled items (see data_report.json)")
    return Data(lib, split, lib.label_names)


@dataclass
class Features:
    """The input features of the heads: one row per kept item (`x`), and, when asked for, each song's window
    features (one array per backbone) with the encoder that turns them into rows."""

    data: Data
    x: np.ndarray
    windows: list | None = None
    encoder: object | None = None  # siamrec.encoder.SongEncoder

    def rows(self, *splits: str, train_on: str = "songs", subsets: tuple[int, float, int] | None = None):
        """(features, labels) of the items in `splits`: one row per song; with train_on=windows one per window,
        each with its song's labels; with train_on=subsets each song's row followed by `subsets` = (count,
        fraction, seed): count more rows per song of more than one window, each pooled from a random fraction of each
        backbone's windows of the song (a song's windows stay in its split). Without windows (data=features): one
        row per song."""
        idx = np.flatnonzero(self.data.mask(*splits))
        y = self.data.y
        if train_on == "songs" or self.windows is None or not len(idx):
            return self.x[idx], y[idx]
        if train_on == "windows":
            # one backbone (TrainingSet.rows refuses combined ones): each window's vector, normalised
            return window_rows({i: self.encoder.normaliser(self.windows[i][0]) for i in idx}, y, idx)
        count, fraction, seed = subsets
        rng = np.random.default_rng(seed)
        rows, labels = [self.x[idx]], [y[idx]]
        for i in idx:
            song = self.windows[i]
            if max(len(w) for w in song) < 2:  # one window: every subset would be the song's own vector
                continue
            rows.append(self.encoder.pooled([[w[np.sort(rng.choice(len(w), max(1, round(len(w) * fraction)),
                                                                replace=False))] for w in song] for _ in range(count)]))
            labels.append(np.repeat(y[i][None], count, axis=0))
        return np.concatenate(rows).astype(np.float32), np.concatenate(labels)


def window_rows(windows, y: np.ndarray, idx: np.ndarray, first_only: bool = False):
    """(rows, labels): the windows of the songs `idx` (`windows[i]`: song i's rows; only each one's first with
    `first_only`), each window with its song's labels."""
    chosen = [windows[i][:1] if first_only else windows[i] for i in idx]
    return np.concatenate(chosen), np.concatenate([np.repeat(y[i][None], len(w), axis=0) for i, w in zip(idx, chosen)])


def audio_features(encoder, data: Data, cfg, run_dir, keep_windows: bool = False, fit: bool = False,
                   desc="features") -> Features:
    """Song vectors of every audio item (cached per file, see siamrec.encoder); items that fail to decode are
    dropped (listed in failed.csv). `fit`: fit the standardisation of combined backbones on these songs."""
    from siamrec.extractor import report_failures

    sf = encoder.song_features(data.lib.paths, keep_windows=keep_windows, desc=desc, fit=fit)
    if sf.n_cached:
        print(f"{sf.n_cached} of {len(data.lib)} files' features came from the cache")
    report_failures(run_dir, data.lib.keys, data.lib.paths, sf.failures, float(cfg.data.max_failed_fraction))
    ok = sf.ok
    windows = [w for w, keep in zip(sf.windows, ok) if keep] if keep_windows else None
    return Features(data.subset(ok), sf.vectors[ok], windows, encoder)


def base_features(cfg, data: Data, run_dir, encoder=None, keep_windows: bool = False) -> Features:
    """The input features of the heads: the song vectors of the configured backbone(s) (audio; features.parts,
    features.combine), or the given matrix (data=features)."""
    if not data.is_audio:
        return Features(data, data.lib.features)
    from siamrec.encoder import make_encoder

    return audio_features(encoder or make_encoder(cfg, data), data, cfg, run_dir, keep_windows, fit=True)


def input_configs(cfg, head, data: Data) -> list[tuple[str, object]]:
    """The inputs `train` chooses the head's among on the validation split (Head.input_choices), as (name, config)
    pairs, the config's features.combine extended by the choice; a backbone already in the input is not appended
    twice. Only the first when there is nothing to choose by: given features (data=features) or no validation
    split."""
    from omegaconf import OmegaConf

    from siamrec.encoder import backbone_config

    def named(item, setting="model.inputs") -> str:  # the backbone's own name (choi2017 is choi2017_theano)
        return str(backbone_config(str(item["backbone"]), setting)["name"])

    entries = head.input_choices()
    if not data.is_audio or not data.mask("valid").any():
        entries = entries[:1]  # nothing to choose by: no other input is looked at
    given = [(named(item, "features.combine"), dict(item)) for item in cfg.features.get("combine") or []]
    present = {str(cfg.backbone.name), *(name for name, _ in given)}
    choices = {}
    for entry in entries:
        added = [(named(item), dict(item)) for item in entry]
        combine = given + [(name, item) for name, item in added if name not in present]
        name = " + ".join([str(cfg.backbone.name), *(name for name, _ in combine)])
        choices.setdefault(name, OmegaConf.merge(cfg, {"features": {"combine": [item for _, item in combine]}}))
    return list(choices.items())


class TrainingSet:
    """What a head trains on (Head.fit), each part made when the head first asks for it, so each head takes what
    it needs and nothing else is computed:

    * `rows(*splits, train_on=)`: (features, labels) of the songs of `splits`: their song vectors (the configured
      backbone(s), normalised as features.normalise says; or the rows of data=features), or with
      train_on=windows every window's vector with its song's labels, or with train_on=subsets each song's vector
      and more pooled from random parts of its windows (Features.rows);
    * `backbone(what)`: the one backbone (extractor and parts) the head trains through; asked for before the rows,
      as the song vectors are then the backbone's own (not normalised), and after training they come from it;
    * `clips(split, train_on)`, `song_windows(split)`: the decoded windows of a split's songs (after `backbone`);
    * `song_vectors()`: the vectors of every kept item, to embed once the head has trained.

    `data` holds the kept items (files that fail to decode are dropped and listed in failed.csv)."""

    def __init__(self, cfg, data: Data, run_dir):
        self.cfg, self.data, self.run_dir = cfg, data, run_dir
        self._encoder = None
        self._features: Features | None = None
        self._member = None    # the backbone the head trains through
        self._windows: list[np.ndarray] | None = None

    @property
    def is_audio(self) -> bool:
        return self.data.is_audio

    @property
    def batch_size(self) -> int:
        """Windows per batch through the backbone (features.batch_size)."""
        return int(self.cfg.features.batch_size)

    def count(self, split: str) -> int:
        return int(self.data.mask(split).sum())

    def unit(self, train_on: str) -> str:
        """What a row is: songs or windows (only audio has windows)."""
        return train_on if self.is_audio else "songs"

    def rows(self, *splits: str, train_on: str = "songs", subsets: tuple[int, float, int] | None = None):
        problem = windows_pool_problem(train_on, "audio" if self.is_audio else "features", self.cfg.clip.pool)
        if problem:  # the schema refuses it before any work; this guards a train(cfg) called without it
            raise SiamrecError(problem)
        if train_on == "windows" and self.is_audio and self.cfg.features.get("combine"):
            raise SiamrecError("model.train_on=windows needs one backbone: the windows of combined backbones differ "
                               "in length; use model.train_on=songs or subsets with features.combine")
        return self._song_features(keep_windows=train_on != "songs").rows(*splits, train_on=train_on,
                                                                          subsets=subsets)

    def backbone(self, what: str, head_on_windows: bool = False):
        """The one member (extractor and parts) of the encoder, to train through; `what` names the setting for
        messages. `head_on_windows`: the head is applied to single windows' vectors (needs clip.pool=mean)."""
        if not self.is_audio:
            raise SiamrecError(f"{what} trains through the backbone: it needs audio (data=demo|folder|csv)")
        if head_on_windows and self.cfg.clip.pool != "mean":
            raise SiamrecError(f"{what} trains on windows: use clip.pool=mean with it")
        if self._encoder is not None:
            raise RuntimeError("TrainingSet.backbone: ask for the backbone before the rows")
        from siamrec.encoder import make_encoder

        self._encoder = make_encoder(self.cfg, self.data, normalise=False)  # the trained backbone's own vectors
        if self._encoder.combined:
            raise SiamrecError(f"{what} trains through one backbone; drop features.combine")
        self._member = self._encoder.members[0]
        return self._member

    def clips(self, split: str, train_on: str) -> tuple[np.ndarray, np.ndarray]:
        """Decoded windows and their songs' labels: every window (train_on=windows) or each song's first (songs, and
        subsets, whose rows are pooled: the end-to-end phase trains on one window a song unless asked for all)."""
        windows, idx = self._decoded(), np.flatnonzero(self.data.mask(split))
        if not len(idx):
            return np.empty((0, 0), np.float32), self.data.y[idx]
        return window_rows(windows, self.data.y, idx, first_only=train_on != "windows")

    def song_windows(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        """Each song's decoded windows, and the labels of the songs."""
        windows, idx = self._decoded(), np.flatnonzero(self.data.mask(split))
        return [windows[i] for i in idx], self.data.y[idx]

    def song_vectors(self) -> np.ndarray:
        """Every kept item's vector: from the backbone as the head trained it, else the features of `rows`."""
        if self._member is None:
            return self._song_features(keep_windows=False).x
        extractor = self._member.extractor
        return extractor.pool_songs(extractor.features_of(self._decoded()))[:, self._member.columns]

    def save(self, run_dir) -> None:
        """The song encoder (audio): extractor.json and the backbone models, as trained."""
        if self._encoder is not None:
            self._encoder.save(run_dir)

    def _song_features(self, keep_windows: bool) -> Features:
        keep_windows = keep_windows and self.is_audio
        if self._features is None or (keep_windows and self._features.windows is None):
            if self._encoder is None and self.is_audio:
                from siamrec.encoder import make_encoder

                self._encoder = make_encoder(self.cfg, self.data)
            self._features = base_features(self.cfg, self.data, self.run_dir, self._encoder, keep_windows)
            self.data = self._features.data
        return self._features

    def _decoded(self) -> list[np.ndarray]:
        """Every kept item's windows in memory (through the backbone's extractor); failures are skipped and
        reported."""
        if self._windows is None:
            if self._member is None:
                raise RuntimeError("TrainingSet: ask for the backbone before its windows")
            self.data, self._windows = decode_all(self._member.extractor, self.data, self.cfg, self.run_dir)
        return self._windows


def decode_all(extractor, data: Data, cfg, run_dir) -> tuple[Data, list[np.ndarray]]:
    """Every item's windows in memory (for training through the backbone); failures are skipped and reported."""
    from tqdm.auto import tqdm

    from siamrec.extractor import report_failures

    windows, failures = [None] * len(data.lib), []
    stream = extractor.decode(list(enumerate(data.lib.paths)))
    for i, w, error, _ in tqdm(stream, total=len(data.lib), desc="decoding", unit="file"):
        if error is None:
            windows[i] = w
        else:
            failures.append((i, error))
    report_failures(run_dir, data.lib.keys, data.lib.paths, failures, float(cfg.data.max_failed_fraction))
    ok = np.array([w is not None for w in windows])
    return data.subset(ok), [w for w in windows if w is not None]


def save_embeddings(run_dir, data: Data, embeddings: np.ndarray) -> None:
    lib = data.lib
    write_embeddings(run_dir, embeddings, lib.keys, lib.paths, lib.labels, list(data.split), lib.groups, lib.meta)


def finish_run(cfg, run_dir, data: Data, emb: np.ndarray, history: dict | None = None,
               extra_test: dict | None = None, plots: bool = True) -> dict:
    """Write a run's embeddings, items, metrics, sample playlists and pictures; print the test scores."""
    from siamrec.evaluation import score_embeddings
    from siamrec.index import ExactIndex
    from siamrec.playlists import playlists, sample_seeds, write_playlists
    from siamrec.runs import write_metrics

    run_dir = Path(run_dir)
    save_embeddings(run_dir, data, emb)
    expand = int(cfg.query_expansion)
    metrics = score_embeddings(emb, data.y, data.split, cfg.eval, label_names=data.label_names, expand=expand)
    metrics["test"].update(extra_test or {})
    metrics["model"] = cfg.model.name if cfg.get("model") else "identity"
    write_metrics(run_dir, metrics)
    if history:
        write_json(run_dir / "history.json", history)

    lib = data.lib
    seeds = sample_seeds(lib.labels, data.split, seed=int(cfg.seed))
    rows = playlists(emb[seeds], ExactIndex(emb).with_expansion(expand), lib.keys, lib.labels, lib.paths,
                     [(lib.keys[i], lib.labels[i]) for i in seeds], int(cfg.recommend.k),
                     self_index=np.asarray(seeds))
    write_playlists(run_dir / "playlists.csv", rows)
    from siamrec.plots import history_plot, tsne_plots

    if plots and cfg.plots:
        from siamrec.plots import run_name

        tsne_plots(run_dir, emb, lib.labels, seed=int(cfg.seed), splits=list(data.split), name=run_name(run_dir))
    history_plot(run_dir, history)
    mark_finished(run_dir)  # last: from now on the folder is a finished run for run=
    print_scores(metrics)
    return metrics


def print_scores(metrics: dict) -> None:
    from siamrec.evaluation import expansion_note

    test = metrics["test"]
    shown = ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float) and
                      (k in ("map", "map@10", "p@10", "map@r", "accuracy", "micro_f1")))
    ceiling, capped = metrics.get("p@10_ceiling"), ""
    if "p@10" in test and isinstance(ceiling, float) and ceiling < 0.999:
        capped = (f" (P@10 can reach at most {ceiling:.4f} here: the test queries have fewer than 10 relevant "
                  "songs each; eval.protocol=test_vs_all ranks the whole library)")
    print(f"test ({metrics['protocol']}, {test['n_queries']} queries, {test['n_skipped']} skipped): {shown}{capped}")
    note = expansion_note(metrics)
    if note:
        print(note)
