"""Data sources → Library: the demo corpus, a folder of labelled audio, a CSV manifest, precomputed features, a
folder of playlists (and, in siamrec.data.music, a listener's music folder or beets library).

A source is one class + one YAML: conf/data/NAME.yaml names it by `_target_` (and the option by `source`); the
class's constructor's typed keyword parameters are its settings, which siamrec.schema reads; `load(paths_cfg)`
reads its items.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.data.library import Library, apply_label_hygiene
from siamrec.errors import SiamrecError
from siamrec.runs import printable, read_npy, read_text
from siamrec.schema import integer, list_of, number, one_of, path, string

MANIFEST_COLUMNS = ("path", "labels", "group")

MinLabelCount = Annotated[int, integer(1)]  # labels carried by fewer items are dropped
FailedFraction = Annotated[float, number(0, 1)]  # more files than this fraction failing to decode stops the run
Extensions = Annotated[list | None, list_of(string(), min_len=1, null=True, what="a non-empty list of file extensions")]
File = Annotated[str, path()]
LabelSep = Annotated[str, string()]


class Source:
    """Base of the data sources: the settings (typed keyword parameters of a subclass's constructor) as `cfg`."""

    def __init__(self, **settings):
        from omegaconf import OmegaConf

        self.cfg = OmegaConf.create(settings)

    def load(self, paths_cfg) -> Library:
        raise NotImplementedError


def load_library(data_cfg, paths_cfg=None) -> Library:
    """Read the items of the configured source (the class its YAML names by `_target_`) and apply label
    hygiene."""
    from siamrec.configs import construct

    source = construct(data_cfg, "data", "source", Source, "a data source")
    lib = source.load(paths_cfg)
    return apply_label_hygiene(lib, data_cfg.min_label_count)


class Folder(Source):
    """data=folder: audio under ROOT/<label>/... (from_folder)."""

    def __init__(self, *, root: File, extensions: Extensions, min_label_count: MinLabelCount,
                 max_failed_fraction: FailedFraction):
        super().__init__(root=root, extensions=extensions, min_label_count=min_label_count,
                         max_failed_fraction=max_failed_fraction)

    def load(self, paths_cfg) -> Library:
        return from_folder(self.cfg)


class Csv(Source):
    """data=csv: a manifest with columns path,labels[,group] (read_manifest)."""

    def __init__(self, *, manifest: File, label_sep: LabelSep, min_label_count: MinLabelCount,
                 max_failed_fraction: FailedFraction):
        super().__init__(manifest=manifest, label_sep=label_sep, min_label_count=min_label_count,
                         max_failed_fraction=max_failed_fraction)

    def load(self, paths_cfg) -> Library:
        return from_csv(self.cfg)


class Demo(Source):
    """data=demo: the synthesised demo corpus, rendered on first use (siamrec.data.demo)."""

    def __init__(self, *, n_per_style: Annotated[int, integer(1)], duration: Annotated[float, number(0, lo_open=True)],
                 sample_rate: Annotated[int, integer(8000)], labels: Literal["genre", "tags"],
                 min_label_count: MinLabelCount, max_failed_fraction: FailedFraction):
        super().__init__(n_per_style=n_per_style, duration=duration, sample_rate=sample_rate, labels=labels,
                         min_label_count=min_label_count, max_failed_fraction=max_failed_fraction)

    def load(self, paths_cfg) -> Library:
        return demo(self.cfg, paths_cfg)


class Features(Source):
    """data=features: precomputed feature matrices and a label table (from_features)."""

    def __init__(self, *, features: Annotated[object, one_of(path(), list_of(path(), min_len=1),
                                                             allowed="a .npy file or a list of them")],
                 labels: File, label_column: Annotated[str, string()],
                 key_column: Annotated[str | None, string(null=True)], label_sep: LabelSep,
                 min_label_count: MinLabelCount):
        super().__init__(features=features, labels=labels, label_column=label_column, key_column=key_column,
                         label_sep=label_sep, min_label_count=min_label_count)

    def load(self, paths_cfg) -> Library:
        return from_features(self.cfg)


class Playlists(Source):
    """data=playlists: a folder of M3U/M3U8 playlists, each a tag (from_playlists)."""

    def __init__(self, *, playlists: File, min_label_count: MinLabelCount, max_failed_fraction: FailedFraction):
        super().__init__(playlists=playlists, min_label_count=min_label_count, max_failed_fraction=max_failed_fraction)

    def load(self, paths_cfg) -> Library:
        return from_playlists(self.cfg)


def _required(data_cfg, key: str) -> str:
    value = data_cfg.get(key)
    if value in (None, "", "???"):
        raise SiamrecError(f"data.{key} is not set: pass data.{key}=...")
    return value


def from_folder(data_cfg) -> Library:
    root = Path(str(_required(data_cfg, "root"))).expanduser()
    if not root.is_dir():
        raise SiamrecError(f"data.root={root}: no such folder; point it at a folder with one sub-folder per label")
    extensions = {f".{str(e).lower().lstrip('.')}" for e in (data_cfg.extensions or AUDIO_EXTENSIONS)}
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise SiamrecError(f"data.root={root}: no label sub-folders; put audio in {root}/<label>/...")
    keys, paths, labels, renamed = [], [], [], []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in extensions
                       and not any(part.startswith(".") for part in p.relative_to(root).parts)  # hidden, ._AppleDouble
                       and p.is_file())
        if not files:
            raise SiamrecError(
                f"data.root: class folder {class_dir} holds no audio ({', '.join(sorted(extensions))}); "
                "add songs or remove the folder"
            )
        for p in files:
            key = p.relative_to(root).as_posix()
            if printable(key) != key:  # a name whose bytes are not UTF-8: kept, under an escaped key
                renamed.append(printable(key))
            keys.append(printable(key))
            paths.append(str(p))
            labels.append((printable(class_dir.name),))
    lib = Library(keys=keys, paths=paths, labels=labels, groups=list(keys))
    if renamed:
        lib.report["non_utf8_names"] = renamed
        print(f"{len(renamed)} file names are not UTF-8; they are kept with their odd bytes written as \\xNN, "
              f"e.g. {renamed[0]} (listed in data_report.json)")
    return lib


def read_manifest(manifest: Path, label_column: str = "labels", label_sep: str = "|",
                  allowed_columns=MANIFEST_COLUMNS) -> Library:
    """Items of a CSV manifest (path, labels[, group]); paths relative to the manifest's folder."""
    if not manifest.is_file():
        raise SiamrecError(f"data.manifest={manifest}: no such file; give a CSV with columns path,labels[,group]")
    reader = csv.DictReader(io.StringIO(read_text(manifest, "data.manifest"), newline=""))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except csv.Error as exc:
        raise SiamrecError(f"data.manifest: {manifest}, line {reader.line_num}: not a valid CSV row ({exc})") from None
    if not columns:
        raise SiamrecError(f"data.manifest: {manifest} is empty; give a CSV with a header row path,labels[,group]")
    missing = [c for c in ("path", label_column) if c not in columns]
    unknown = [c for c in columns if c not in allowed_columns]
    if missing or unknown:
        what = f"missing column(s) {missing}" if missing else f"unknown column(s) {unknown}"
        raise SiamrecError(f"{manifest}: {what}; the columns must be {','.join(allowed_columns)}")
    base = manifest.parent
    keys, paths, labels, groups = [], [], [], []
    for line, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        if not rel:
            raise SiamrecError(f"{manifest}, line {line}: empty path")
        path = Path(rel).expanduser()
        path = path if path.is_absolute() else base / path
        keys.append(rel)
        paths.append(str(path))
        labels.append(tuple(t.strip() for t in (row.get(label_column) or "").split(label_sep) if t.strip()))
        groups.append((row.get("group") or "").strip() or rel)
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise SiamrecError(f"{manifest}: path {dup} is listed twice; list each song once")
    if not keys:
        raise SiamrecError(f"{manifest}: no rows; list one song per row")
    lib = Library(keys=keys, paths=paths, labels=labels, groups=groups)
    lib.report["label_source"] = f"{manifest} (column {label_column}, labels separated by {label_sep!r})"
    return lib


def from_csv(data_cfg) -> Library:
    manifest = Path(str(_required(data_cfg, "manifest"))).expanduser()
    return read_manifest(manifest, label_sep=data_cfg.label_sep)


def demo(data_cfg, paths_cfg) -> Library:
    from siamrec.data.demo import ensure_demo

    label_kind = data_cfg.labels
    columns = {"genre": "labels", "tags": "tags"}
    if label_kind not in columns:
        raise SiamrecError(f"data.labels={label_kind!r}: use genre (single-label) or tags (multi-label)")
    cache = Path(str(paths_cfg.cache)).expanduser() / "demo"
    folder = ensure_demo(cache, n_per_style=int(data_cfg.n_per_style), duration=float(data_cfg.duration),
                         sr=int(data_cfg.sample_rate))
    return read_manifest(folder / "manifest.csv", label_column=columns[label_kind],
                         allowed_columns=("path", "labels", "tags", "group"))


def from_features(data_cfg) -> Library:
    files = data_cfg.features
    if files in (None, "", "???"):
        raise SiamrecError("data.features is not set: pass data.features=[A.npy,B.npy,...]")
    if isinstance(files, str):
        files = [files]
    blocks = []
    for f in files:
        p = Path(str(f)).expanduser()
        if not p.is_file():
            raise SiamrecError(f"data.features: {p} not found; give existing .npy files")
        a = read_npy(p, "data.features")
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise SiamrecError(f"data.features: {p} has shape {a.shape}; need a 2-D (items × dims) matrix")
        blocks.append(a.astype(np.float32))
    if len({len(b) for b in blocks}) != 1:
        raise SiamrecError(f"data.features: the matrices have different row counts {[len(b) for b in blocks]}")
    x = np.concatenate(blocks, axis=1)
    if not np.all(np.isfinite(x)):
        raise SiamrecError("data.features: the matrices hold NaN or infinite values; clean them first")

    labels_path = Path(str(_required(data_cfg, "labels"))).expanduser()
    if not labels_path.is_file():
        raise SiamrecError(f"data.labels={labels_path}: no such file; give the CSV of labels, one row per feature row")
    reader = csv.DictReader(io.StringIO(read_text(labels_path, "data.labels"), newline=""))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except csv.Error as exc:
        raise SiamrecError(f"data.labels: {labels_path}, line {reader.line_num}: not a valid CSV row ({exc})") from None
    label_column, key_column = data_cfg.label_column, data_cfg.key_column
    for setting, col in (("label_column", label_column), ("key_column", key_column)):
        if col is not None and col not in columns:
            raise SiamrecError(f"data.{setting}={col!r}: not a column of {labels_path} (columns: {columns})")
    if len(rows) != len(x):
        raise SiamrecError(f"data.labels: {labels_path} has {len(rows)} rows but the features {len(x)}; they must align")
    sep = data_cfg.label_sep
    labels = [tuple(t.strip() for t in str(r[label_column]).split(sep) if t.strip()) for r in rows]
    keys = [str(r[key_column]) for r in rows] if key_column else [str(i) for i in range(len(rows))]
    if len(set(keys)) != len(keys):
        raise SiamrecError(f"data.key_column={key_column!r}: values are not unique; pick a column that names each item")
    lib = Library(keys=keys, paths=[None] * len(keys), labels=labels, groups=list(keys), features=x)
    lib.report["label_source"] = f"data.labels={labels_path} (column {label_column}, labels separated by {sep!r})"
    return lib


PLAYLIST_SUFFIXES = (".m3u", ".m3u8")
LISTED_MISSING = 1000  # missing entries listed in data_report.json (all are counted)


def from_playlists(data_cfg) -> Library:
    """A folder of M3U/M3U8 playlists as multi-label data: each playlist is a tag, so two songs are positives
    when they share a playlist. Entries are paths relative to their playlist file (or absolute, or file://
    URLs); #EXTM3U/#EXTINF lines are skipped; .m3u8 is UTF-8, .m3u UTF-8 with a latin-1 fallback. Entries
    that are not existing files are counted and listed in the data report (data_report.json)."""
    from siamrec.m3u import read_entries

    folder = Path(str(_required(data_cfg, "playlists"))).expanduser()
    if not folder.is_dir():
        raise SiamrecError(f"data.playlists={folder}: no such folder; point it at a folder of .m3u/.m3u8 files")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PLAYLIST_SUFFIXES)
    if not files:
        raise SiamrecError(f"data.playlists={folder}: no .m3u or .m3u8 playlists in it")
    tags: dict[str, set[str]] = {}  # song path -> playlists holding it
    meta: dict[str, dict] = {}      # song path -> what the first #EXTINF line before it says
    missing: list[dict] = []
    n_entries = 0
    for playlist in files:
        tag = playlist.relative_to(folder).with_suffix("").as_posix()
        for line, path, extinf in read_entries(playlist):  # the reader of siamrec.m3u, the writer's counterpart
            n_entries += 1
            if path is None:
                missing.append({"playlist": tag, "entry": line, "reason": "not a local file"})
                continue
            if not os.path.isfile(path):
                missing.append({"playlist": tag, "entry": line, "reason": "not found"})
                continue
            tags.setdefault(path, set()).add(tag)
            if extinf:
                meta.setdefault(path, extinf)
    if not tags:
        raise SiamrecError(f"data.playlists={folder}: none of the {n_entries} entries of {len(files)} playlists is "
                           "an existing file; entries are paths relative to their playlist file (or absolute)")
    paths = sorted(tags)
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    keys = [Path(os.path.relpath(p, root)).as_posix() for p in paths]
    if missing:
        print(f"data.playlists: {len(missing)} of {n_entries} playlist entries not found (listed in data_report.json)")
    lib = Library(keys=keys, paths=paths, labels=[tuple(sorted(tags[p])) for p in paths], groups=list(keys),
                  meta=[meta.get(p, {}) for p in paths])
    lib.report.update({"source": "playlists", "playlists": len(files), "entries": n_entries,
                       "songs": len(paths), "missing_entries": len(missing), "missing": missing[:LISTED_MISSING]})
    return lib
