"""Run folders: atomic writes of metrics, embeddings, item tables and other artifacts, and reading them back."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError

ITEM_COLUMNS = ("key", "path", "labels", "split", "group")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    """Strict JSON (NaN, e.g. a metric with no scorable query, becomes null)."""
    return atomic_write_text(path, json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def write_csv(path: str | os.PathLike, header, rows) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_metrics(run_dir: str | os.PathLike, metrics: dict) -> Path:
    return write_json(Path(run_dir) / "metrics.json", metrics)


def write_embeddings(run_dir: str | os.PathLike, embeddings: np.ndarray, keys, paths, labels, splits,
                     groups=None) -> None:
    """embeddings.npy (float32, one row per item) and items.csv (key, path, labels joined by '|', split, group:
    artist or recording, the key when unknown), same order."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    groups = list(keys) if groups is None else groups
    if not (len(embeddings) == len(keys) == len(paths) == len(labels) == len(splits) == len(groups)):
        raise ValueError("embeddings and item columns differ in length")
    rows = [(k, p or "", "|".join(lab), s or "", g or k)
            for k, p, lab, s, g in zip(keys, paths, labels, splits, groups)]
    write_npy(Path(run_dir) / "embeddings.npy", embeddings)
    write_csv(Path(run_dir) / "items.csv", ITEM_COLUMNS, rows)


def read_embeddings(run_dir: str | os.PathLike) -> tuple[np.ndarray, list[dict[str, str]]]:
    run_dir = Path(run_dir)
    emb_path, items_path = run_dir / "embeddings.npy", run_dir / "items.csv"
    for p in (emb_path, items_path):
        if not p.is_file():
            raise SiamrecError(f"run={run_dir}: {p.name} is missing; pass the folder of a finished train or evaluate run")
    emb = np.load(emb_path)
    items = read_csv(items_path)
    if len(items) != len(emb):
        raise SiamrecError(f"run={run_dir}: embeddings.npy has {len(emb)} rows but items.csv {len(items)}; re-run it")
    return emb, items


def existing_run(path) -> Path:
    """The folder of an earlier run given as `run=PATH`, checked to exist."""
    if path in (None, ""):
        raise SiamrecError("run is not set: pass run=PATH/TO/RUN_FOLDER (a folder under outputs/ printed by train)")
    run = Path(str(path)).expanduser()
    if not (run / "items.csv").is_file():
        raise SiamrecError(f"run={run}: not a finished siamrec run (no items.csv); pass a folder printed by train")
    return run
