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

# items.csv of every run and library folder. The song's metadata (title, artist, album, duration in seconds,
# MusicBrainz recording id) follows the first five; an empty cell is unknown. Folders written before the metadata
# columns existed (the first five only) are read with the metadata empty.
BASE_COLUMNS = ("key", "path", "labels", "split", "group")
META_COLUMNS = ("title", "artist", "album", "duration", "mbid")
ITEM_COLUMNS = BASE_COLUMNS + META_COLUMNS


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename. The file gets the
    user's usual permissions (0o666 minus the umask, as open() would give). A full, read-only or forbidden disk
    becomes a SiamrecError naming the path, and no temporary file is left behind."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SiamrecError(f"cannot write {path}: {disk_reason(exc)}") from None
        raise
    return path


def disk_reason(exc: OSError) -> str:
    """Why a write failed, and what to do, in a few words."""
    import errno

    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk is full; free some space or write elsewhere (hydra.run.dir=DIR)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is read-only or not yours; write elsewhere (hydra.run.dir=DIR)"
    return f"{exc.strerror or exc}"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj, ensure_ascii: bool = True) -> str:
    """Strict JSON text, indented (NaN and infinities, e.g. a metric with no scorable query, become null)."""
    return json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False, ensure_ascii=ensure_ascii) + "\n"


def write_json(path: str | os.PathLike, obj) -> Path:
    """Strict JSON (see strict_json), written atomically."""
    return atomic_write_text(path, strict_json(obj))


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


def printable(text):
    """A name as UTF-8 text: a file name whose bytes are not UTF-8 (held by Python as surrogate escapes) gets
    its undecodable bytes written as \\xNN, so it is stable, printable and can be stored in a CSV."""
    if not isinstance(text, str):
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")


_CLOSING_NOTES: list[str] = []


def closing_note(text: str) -> None:
    """Text the command line prints at the end of the command, just before where its outputs are (e.g. why many files
    were skipped: printed when extraction ends, it would scroll away behind a training's output)."""
    _CLOSING_NOTES.append(text)


def take_closing_notes() -> list[str]:
    notes = list(_CLOSING_NOTES)
    _CLOSING_NOTES.clear()
    return notes


def write_csv(path: str | os.PathLike, header, rows) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([printable(v) for v in row] for row in rows)
    return atomic_write_text(path, buf.getvalue())


def read_text(path: str | os.PathLike, what: str | None = None) -> str:
    """A user's text file (a manifest, a list of songs): UTF-8, with or without a byte-order mark (Excel's
    "CSV UTF-8"). Anything else is a SiamrecError naming the file, the line and what to do."""
    path = Path(path)
    label = f"{what}: {path}" if what else str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SiamrecError(f"{label}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SiamrecError(f"{label}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                           "save the file as UTF-8 (e.g. Excel: CSV UTF-8) and try again") from None


def read_csv(path: str | os.PathLike, what: str | None = None) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(read_text(path, what), newline="")))


def write_metrics(run_dir: str | os.PathLike, metrics: dict) -> Path:
    return write_json(Path(run_dir) / "metrics.json", metrics)


def meta_cells(meta: dict | None) -> tuple:
    """A song's metadata (a dict with some of META_COLUMNS) as items.csv cells: '' when unknown."""
    meta = meta or {}
    duration = meta.get("duration")
    cells = [meta.get(c) or "" for c in META_COLUMNS]
    cells[META_COLUMNS.index("duration")] = "" if duration in (None, "") else f"{float(duration):.3f}"
    return tuple(cells)


def write_embeddings(run_dir: str | os.PathLike, embeddings: np.ndarray, keys, paths, labels, splits,
                     groups=None, meta=None) -> None:
    """embeddings.npy (float32, one row per item) and items.csv (key, path, labels joined by '|', split, group:
    artist or recording, the key when unknown, then the metadata of META_COLUMNS, '' when unknown), same order."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    groups = list(keys) if groups is None else groups
    meta = [None] * len(keys) if meta is None else meta
    if not (len(embeddings) == len(keys) == len(paths) == len(labels) == len(splits) == len(groups) == len(meta)):
        raise ValueError("embeddings and item columns differ in length")
    rows = [(k, p or "", "|".join(lab), s or "", g or k, *meta_cells(m))
            for k, p, lab, s, g, m in zip(keys, paths, labels, splits, groups, meta)]
    write_npy(Path(run_dir) / "embeddings.npy", embeddings)
    write_csv(Path(run_dir) / "items.csv", ITEM_COLUMNS, rows)


def read_embeddings(run_dir: str | os.PathLike) -> tuple[np.ndarray, list[dict[str, str]]]:
    """embeddings.npy and items.csv of a run folder, checked: a missing, truncated or damaged file is a
    SiamrecError naming it."""
    run_dir = Path(run_dir)
    emb_path, items_path = run_dir / "embeddings.npy", run_dir / "items.csv"
    for p in (emb_path, items_path):
        if not p.is_file():
            raise SiamrecError(f"run={run_dir}: {p.name} is missing; pass the folder of a finished train or evaluate run")
    redo = "re-run the command that made this run folder"
    try:
        emb = np.load(emb_path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - truncated, not a .npy, pickled objects, ...
        raise SiamrecError(f"run={run_dir}: {emb_path.name} is damaged or truncated ({_gist(exc)}); {redo}") from None
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating) or not np.isfinite(emb).all():
        raise SiamrecError(f"run={run_dir}: {emb_path.name} is not a finite 2-D float matrix "
                           f"(shape {emb.shape}, {emb.dtype}); {redo}")
    try:
        text = items_path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SiamrecError(f"run={run_dir}: {items_path.name} is damaged or truncated ({_gist(exc)}); {redo}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    items = list(reader)
    if tuple(reader.fieldnames or ()) not in (ITEM_COLUMNS, BASE_COLUMNS):
        raise SiamrecError(f"run={run_dir}: {items_path.name} has columns {list(reader.fieldnames or [])}, not "
                           f"{','.join(ITEM_COLUMNS)}; {redo}")
    if not text.endswith("\n") or any(None in it.values() or None in it for it in items):
        raise SiamrecError(f"run={run_dir}: {items_path.name} is truncated (its last row is incomplete); {redo}")
    for it in items:  # an older folder: no metadata columns
        for c in META_COLUMNS:
            it.setdefault(c, "")
    if len(items) != len(emb):
        raise SiamrecError(f"run={run_dir}: embeddings.npy has {len(emb)} rows but items.csv {len(items)}; {redo}")
    return emb, items


def _gist(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def existing_run(path) -> Path:
    """The folder of an earlier run given as `run=PATH`, checked to exist."""
    if path in (None, ""):
        raise SiamrecError("run is not set: pass run=PATH/TO/RUN_FOLDER (a folder under outputs/ printed by train)")
    run = Path(str(path)).expanduser()
    if not (run / "items.csv").is_file():
        raise SiamrecError(f"run={run}: not a finished siamrec run (no items.csv); pass a folder printed by train")
    return run
