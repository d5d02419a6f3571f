"""The dataset abstraction: a Library of items (key, audio path or feature row, labels, group) and label hygiene."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from siamrec.errors import SiamrecError


@dataclass
class Library:
    """Items of one data source, in a fixed order.

    keys: unique item ids (relative path, or the key column for features); paths: audio files (None for
    feature rows); labels: tuple of label names per item; groups: artist/recording id (items of one group stay
    on one side of a split); features: the precomputed matrix for data=features (else None).
    """

    keys: list[str]
    paths: list[str | None]
    labels: list[tuple[str, ...]]
    groups: list[str]
    features: np.ndarray | None = None
    report: dict = field(default_factory=dict)
    meta: list[dict] | None = None     # per item: title, artist, album, duration, mbid (siamrec.runs.META_COLUMNS)
                                       # and the other tags read (absent: unknown); None: none known
    keep_unlabelled: bool = False      # a listener's library: items without a label stay (embedded, listed,
                                       # recommended), only left out of training and scoring

    def __post_init__(self):
        n = len(self.keys)
        if self.meta is None:
            self.meta = [{} for _ in range(n)]
        if not (len(self.paths) == len(self.labels) == len(self.groups) == len(self.meta) == n):
            raise ValueError("library columns differ in length")
        if self.features is not None and len(self.features) != n:
            raise ValueError("library features and items differ in length")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def label_names(self) -> list[str]:
        return sorted({lab for labs in self.labels for lab in labs})

    @property
    def multilabel(self) -> bool:
        return any(len(labs) > 1 for labs in self.labels)

    def label_matrix(self, label_names: list[str] | None = None) -> np.ndarray:
        """Multi-hot (n_items × n_labels) boolean matrix over `label_names` (default: this library's labels)."""
        names = self.label_names if label_names is None else list(label_names)
        index = {name: j for j, name in enumerate(names)}
        y = np.zeros((len(self), len(names)), dtype=bool)
        for i, labs in enumerate(self.labels):
            for lab in labs:
                if lab in index:
                    y[i, index[lab]] = True
        return y

    def subset(self, idx) -> "Library":
        idx = np.asarray(idx, dtype=np.int64)
        return Library(
            keys=[self.keys[i] for i in idx],
            paths=[self.paths[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            features=None if self.features is None else self.features[idx],
            report=dict(self.report),
            meta=[self.meta[i] for i in idx],
            keep_unlabelled=self.keep_unlabelled,
        )


def apply_label_hygiene(lib: Library, min_label_count: int) -> Library:
    """Drop labels carried by fewer than `min_label_count` items, then items left with no label (unless the library
    keeps them: `keep_unlabelled`).

    What was dropped is recorded in lib.report (written to the run folder).
    """
    if not isinstance(min_label_count, int) or min_label_count < 1:
        raise SiamrecError(f"data.min_label_count={min_label_count!r}: must be an integer >= 1")
    counts = Counter(lab for labs in lib.labels for lab in labs)
    dropped = {lab: c for lab, c in sorted(counts.items()) if c < min_label_count}
    labels = [tuple(lab for lab in labs if lab not in dropped) for labs in lib.labels]
    keep = [i for i, labs in enumerate(labels) if labs or lib.keep_unlabelled]
    excluded = [lib.keys[i] for i, labs in enumerate(labels) if not labs and not lib.keep_unlabelled]
    out = lib.subset(keep)
    out.labels = [labels[i] for i in keep]
    out.report.update(
        {
            "min_label_count": min_label_count,
            "dropped_labels": dropped,
            "excluded_items": excluded,
            "unlabelled_items": sum(not labs for labs in out.labels),
            "n_items": len(out),
            "n_labels": len(out.label_names),
        }
    )
    if len(out) == 0:
        if not counts:  # the labels themselves are missing: lowering min_label_count would not help
            source = lib.report.get("label_source")
            raise SiamrecError(
                (f"{source}: " if source else "") + f"none of the {len(lib)} items has a label (every labels value "
                "is empty or only separators); fill in the labels column of the manifest or label table"
            )
        raise SiamrecError(
            f"data.min_label_count={min_label_count}: no item keeps a label; lower it (labels: {dict(counts)})"
        )
    return out
