"""Train/valid/test splits: stratified (multi-label aware, group-preserving) or given by file lists.

A split kind is one class + one YAML: conf/split/NAME.yaml names it by `_target_` (and the option by `kind`); its
constructor's typed keyword parameters are its settings (siamrec.schema reads them); `split(lib)` splits.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path, PurePath
from typing import Annotated

import numpy as np

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.data.library import Library
from siamrec.errors import SiamrecError
from siamrec.runs import read_text, write_csv
from siamrec.schema import integer, number, path

SPLITS = ("train", "valid", "test")
KNOWN_EXTENSIONS = frozenset(AUDIO_EXTENSIONS) | {"npy", "txt", "csv"}


def make_split(lib: Library, split_cfg) -> np.ndarray:
    """One of 'train' / 'valid' / 'test' / '' (unused) per item, from the split kind the YAML names by `_target_`.
    Items without a label (a listener's library keeps them) are unused: they are embedded and recommended, never
    trained on or scored."""
    from siamrec.configs import construct

    splitter = construct(split_cfg, "split", "kind", Splitter, "a split kind")
    labelled = np.flatnonzero([bool(labs) for labs in lib.labels])
    if len(labelled) == len(lib):
        return splitter.split(lib)
    out = np.full(len(lib), "", dtype=object)
    if len(labelled):
        out[labelled] = splitter.split(lib.subset(labelled))
    return out.astype(str)


class Splitter:
    """Base of the split kinds: `split(lib)` → 'train' / 'valid' / 'test' / '' per item."""

    def split(self, lib: Library) -> np.ndarray:
        raise NotImplementedError


Fraction = Annotated[float, number(0, 1, hi_open=True)]
ListFile = Annotated[str | None, path(null=True)]


class Stratified(Splitter):
    """split=stratified: see stratified_split."""

    def __init__(self, *, valid: Fraction, test: Fraction, seed: Annotated[int, integer(0)]):
        self.valid, self.test, self.seed = valid, test, seed

    def split(self, lib: Library) -> np.ndarray:
        return stratified_split(lib, valid=self.valid, test=self.test, seed=self.seed)


class ByFiles(Splitter):
    """split=files: see files_split."""

    def __init__(self, *, train: ListFile, valid: ListFile, test: ListFile):
        self.lists = {"train": train, "valid": valid, "test": test}

    def split(self, lib: Library) -> np.ndarray:
        return files_split(lib, self.lists)


def stratified_split(lib: Library, valid: float, test: float, seed: int) -> np.ndarray:
    """Iterative stratification (Sechidis et al. 2011) over groups.

    Units are groups (an artist or recording: all its items go to one side). Rarest labels are placed first;
    each unit goes to the side that still wants most of that label, so every label is spread in proportion
    as far as group sizes allow.
    """
    for name, frac in (("split.valid", valid), ("split.test", test)):
        if not isinstance(frac, (int, float)) or not 0 <= frac < 1:
            raise SiamrecError(f"{name}={frac!r}: must be a fraction in [0, 1)")
    if valid + test >= 1:
        raise SiamrecError(f"split.valid + split.test = {valid + test}: must leave items for training (< 1)")
    rng = np.random.default_rng(seed)
    fractions = np.array([1.0 - valid - test, valid, test])
    names = lib.label_names
    y = lib.label_matrix(names).astype(np.int64)

    members = defaultdict(list)
    for i, g in enumerate(lib.groups):
        members[g].append(i)
    units = list(members.values())
    rng.shuffle(units)
    unit_labels = np.array([y[idx].sum(axis=0) for idx in units])  # units × labels
    unit_sizes = np.array([len(idx) for idx in units], dtype=float)

    want_label = fractions[:, None] * unit_labels.sum(axis=0)[None, :]  # sides × labels
    want_total = fractions * len(lib)
    side_of_unit = np.full(len(units), -1)
    remaining = np.ones(len(units), dtype=bool)
    while remaining.any():
        counts = unit_labels[remaining].sum(axis=0)
        present = np.flatnonzero(counts > 0)
        label = present[np.argmin(counts[present])]
        for u in np.flatnonzero(remaining & (unit_labels[:, label] > 0)):
            score = np.stack([want_label[:, label], want_total, rng.random(3)], axis=1)
            side = max(range(3), key=lambda s: tuple(score[s]))
            side_of_unit[u] = side
            remaining[u] = False
            want_label[side] -= unit_labels[u]
            want_total[side] -= unit_sizes[u]
    out = np.empty(len(lib), dtype=object)
    for u, idx in enumerate(units):
        out[idx] = SPLITS[side_of_unit[u]]
    return out.astype(str)


def _read_list(path) -> list[str]:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise SiamrecError(f"split list {p} not found; give a text file with one path or name per line")
    text = read_text(p, "split list")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def stem(name: str) -> str:
    """File name without a known audio/feature extension: 'blues/blues.00012.wav' and 'blues.00012' → 'blues.00012'."""
    p = PurePath(name.replace("\\", "/"))
    return p.stem if p.suffix.lower().lstrip(".") in KNOWN_EXTENSIONS else p.name


def _parts(name: str) -> tuple[str, ...]:
    """A name's folders and its stem: 'rock/1.ogg', './rock/1.mp3' and 'C:\\music\\rock\\1.wav' end in ('rock', '1')."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return (*parts[:-1], stem(parts[-1])) if parts else ()


class NameMatcher:
    """Items by every trailing part of their key ('a/rock/1.ogg' by ('a', 'rock', '1'), ('rock', '1') and ('1',)).
    An entry is matched by its longest trailing part that names any item: by its relative path first, by its stem
    only when nothing longer matches; a match of several items is ambiguous."""

    def __init__(self, keys):
        self.by_tail: dict[tuple, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            parts = _parts(key)
            for k in range(len(parts)):
                self.by_tail[parts[k:]].append(i)

    def find(self, entry: str) -> list[int]:
        parts = _parts(entry)
        for k in range(len(parts)):
            if parts[k:] in self.by_tail:
                return self.by_tail[parts[k:]]
        return []


def files_split(lib: Library, lists: dict) -> np.ndarray:
    """Items named in the train/valid/test lists (by relative path, or by file stem when that is unique; see
    NameMatcher); items in no list are unused ('')."""
    if not lists.get("test") and not lists.get("train"):
        raise SiamrecError("split=files needs split.test=FILE (and split.train=FILE to train)")
    matcher = NameMatcher(lib.keys)
    out = np.full(len(lib), "", dtype=object)
    for name in SPLITS:
        if lists.get(name) in (None, "", "???"):
            continue
        entries = _read_list(lists[name])
        found = {e: matcher.find(e) for e in entries}
        unmatched = [e for e in entries if not found[e]]
        if unmatched:
            raise SiamrecError(
                f"split.{name}={lists[name]}: {len(unmatched)} entries match no item, e.g. {unmatched[:3]}; "
                "fix the list or the data"
            )
        ambiguous = [e for e in entries if len(found[e]) > 1]
        if ambiguous:
            e = ambiguous[0]
            shown = ", ".join(lib.keys[i] for i in found[e][:4]) + (", ..." if len(found[e]) > 4 else "")
            raise SiamrecError(
                f"split.{name}={lists[name]}: {len(ambiguous)} entries match several items, e.g. {e!r} matches "
                f"{len(found[e])} ({shown}); write each entry's folder too (e.g. {lib.keys[found[e][0]]})")
        for e in entries:
            i = found[e][0]
            if out[i] not in ("", name):
                raise SiamrecError(f"split.{name}: {e!r} is also in split.{out[i]}; an item belongs to one split")
            out[i] = name
    return out.astype(str)


def write_split(run_dir, lib: Library, split: np.ndarray) -> None:
    write_csv(Path(run_dir) / "split.csv", ("key", "split"), zip(lib.keys, split))
