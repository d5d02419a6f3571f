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
# MusicBrainz recording id, the codec the tag scan read) follows the first five; an empty cell is unknown. Folders
# written before some metadata columns existed are read with those empty.
BASE_COLUMNS = ("key", "path", "labels", "split", "group")
META_COLUMNS = ("title", "artist", "album", "duration", "mbid", "codec")
ITEM_COLUMNS = BASE_COLUMNS + META_COLUMNS
# items.csv as older siamrecs wrote it: without metadata, and without the codec
OLDER_ITEM_COLUMNS = (BASE_COLUMNS, ITEM_COLUMNS[:-1])


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
    """JSON-safe values: NaN and infinity as null, names as UTF-8 text."""
    if isinstance(obj, dict):
        return {printable(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    if isinstance(obj, str):
        return printable(obj)  # a name that is not UTF-8: its odd bytes as \\xNN, never a lone surrogate in JSON
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


CHECKSUM = "__sha256__"


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_checked_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """An .npz of named arrays holding the sha256 of their contents (see read_checked_npz), written atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{CHECKSUM: np.array(_arrays_digest(arrays))})
    return atomic_write_bytes(path, buf.getvalue())


def read_checked_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a write_checked_npz file, checked against the sha256 it holds: a damaged (bit-flipped,
    truncated) or foreign file raises ValueError, never gives other numbers."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.asarray(z[k]) for k in z.files}
    stored = arrays.pop(CHECKSUM, None)
    if stored is None or str(stored) != _arrays_digest(arrays):
        raise ValueError(f"{path}: its contents do not match the sha256 it holds")
    return arrays


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    """A .npy array of numbers; anything else (a text file named .npy, pickled Python objects, a truncated file) is
    a SiamrecError naming the file and saying what it is instead."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise SiamrecError(f"{what}: {path}: cannot read it ({exc.strerror or exc})") from None
    if head != NPY_MAGIC:
        kind = "an .npz archive" if head.startswith(b"PK") else "empty" if not head else \
            "text" if _looks_like_text(path) else "not NumPy data"
        raise SiamrecError(f"{what}: {path} is not a .npy file (it is {kind}); save the matrix with numpy.save")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise SiamrecError(f"{what}: {path} holds Python objects, not numbers; save a numeric matrix with "
                               "numpy.save (e.g. x.astype('float32'))") from None
        raise SiamrecError(f"{what}: {path} is damaged or truncated ({_gist(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated, damaged header
        raise SiamrecError(f"{what}: {path} is damaged or truncated ({_gist(exc)})") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise SiamrecError(f"{what}: {path} holds {array.dtype} values, not numbers; save a numeric matrix")
    return array


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as f:
        sample = f.read(4096)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(sample) - 4  # cut in the middle of a character
    return b"\x00" not in sample


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


def first_few(names, shown: int = 3) -> str:
    """The first `shown` names, printable, and ' ...' when there are more (a one-line message's list)."""
    names = list(names)
    return ", ".join(printable(n) for n in names[:shown]) + (" ..." if len(names) > shown else "")


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
        emb = read_npy(emb_path, f"run={run_dir}")
    except SiamrecError as exc:
        raise SiamrecError(f"{exc}; {redo}") from None
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating) or not np.isfinite(emb).all():
        raise SiamrecError(f"run={run_dir}: {emb_path.name} is not a finite 2-D float matrix "
                           f"(shape {emb.shape}, {emb.dtype}); {redo}")
    try:
        text = items_path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SiamrecError(f"run={run_dir}: {items_path.name} is damaged or truncated ({_gist(exc)}); {redo}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    items = list(reader)
    if tuple(reader.fieldnames or ()) not in OLDER_ITEM_COLUMNS + (ITEM_COLUMNS,):
        raise SiamrecError(f"run={run_dir}: {items_path.name} has columns {list(reader.fieldnames or [])}, not "
                           f"{','.join(ITEM_COLUMNS)}; {redo}")
    if not text.endswith("\n") or any(None in it.values() or None in it for it in items):
        raise SiamrecError(f"run={run_dir}: {items_path.name} is truncated (its last row is incomplete); {redo}")
    for it in items:  # an older folder: fewer metadata columns
        for c in META_COLUMNS:
            it.setdefault(c, "")
    if len(items) != len(emb):
        raise SiamrecError(f"run={run_dir}: embeddings.npy has {len(emb)} rows but items.csv {len(items)}; {redo}")
    return emb, items


def _gist(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


# The completion marker: written last (atomically) by the commands whose output folder is a run for `run=`
# (train and evaluate at the end of finish_run, extract at its end). It records every file of the run that a
# later command reads, with its size and sha256; a folder without it is unfinished (its command failed or was
# interrupted, or a siamrec older than the marker made it) and is refused.
FINISHED = "finished.json"
# The files of a run folder that make up its model (those present are recorded, hashed and copied by extract).
MODEL_FILES = ("extractor.json", "head.json", "model.keras", "lda.npz", "scaler.npz")
DATA_FILES = ("embeddings.npy", "items.csv")  # large; checked by size here and by their content when read


def model_files(run_dir) -> list[Path]:
    """The run's model files that exist: its head and encoder files and every backbone model (backbone*.keras)."""
    run_dir = Path(run_dir)
    return [run_dir / n for n in MODEL_FILES if (run_dir / n).is_file()] + sorted(run_dir.glob("backbone*.keras"))


def sha256_file(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mark_finished(run_dir) -> Path:
    """Write the run's completion marker, last: its data and model files with their size and sha256."""
    run_dir = Path(run_dir)
    files = [run_dir / n for n in DATA_FILES if (run_dir / n).is_file()] + model_files(run_dir)
    return write_json(run_dir / FINISHED, {"files": {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                                                     for p in files}})


def unmark_finished(folder) -> None:
    """A command about to write into `folder` makes it unfinished until it writes the marker again."""
    try:
        (Path(folder) / FINISHED).unlink(missing_ok=True)
    except OSError as exc:
        raise SiamrecError(f"cannot write {folder}: {disk_reason(exc)}") from None


def label_free(run_dir) -> bool:
    """Whether the run's embedding owes nothing to labels: the pretrained song vectors of an identity model's run or a
    library's index (head.json's `label_free`) or of an evaluate run (no head.json), not a head trained on labels nor
    a backbone fine-tuned on them. A head.json of before 2026-12-05 has no `label_free`: there an identity head
    without a fine-tuned model.keras beside it is label-free."""
    if not (Path(run_dir) / "head.json").is_file():
        return True
    head = read_run_file(run_dir, "head.json", lambda p: json.loads(p.read_text(encoding="utf-8")))
    if not isinstance(head, dict):
        return False
    if "label_free" in head:
        return head["label_free"] is True
    return head.get("kind") == "identity" and not (Path(run_dir) / "model.keras").is_file()


def read_run_file(run_dir, name: str, read):
    """`read(path)` of the run's file `name`; a missing, damaged or foreign file is a SiamrecError naming it (one
    line), whatever the reader raised."""
    path = Path(run_dir) / name
    redo = "restore it, or train the run again"
    if not isinstance(name, str) or Path(name).name != name:
        raise SiamrecError(f"run={run_dir}: names the model file {name!r}, which is not a file of the run folder")
    if not path.is_file():
        raise SiamrecError(f"run={run_dir}: {name} is missing; {redo}")
    try:
        return read(path)
    except SiamrecError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated, garbage, another format, another shape
        raise SiamrecError(f"run={run_dir}: {name} is damaged or not a siamrec model file ({_gist(exc)}); "
                           f"{redo}") from None


def read_arrays(path, shapes: dict[str, int]) -> dict[str, np.ndarray]:
    """The named finite float arrays of an .npz (no pickles), each of the given number of dimensions."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.asarray(z[k]) for k in shapes}
    for k, ndim in shapes.items():
        a = arrays[k]
        if a.ndim != ndim or not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise ValueError(f"{k} is not a finite {ndim}-D float array ({a.dtype}, shape {a.shape})")
    return arrays


def load_keras(run_dir, name: str):
    """A Keras model file of a run, loaded with safe_mode (no code in it runs): a damaged file or one holding
    code (a Lambda layer) is a SiamrecError naming it."""
    def read(path):
        import keras

        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001
            text = str(exc)
            if "arbitrary code" in text or "Lambda" in text or "safe_mode" in text:
                raise SiamrecError(f"run={run_dir}: {name} holds code (a Lambda layer or a Python function), "
                                   "which siamrec never runs; it is not a siamrec model: use a run you trained, "
                                   "or train it again") from None
            if "File not found" in text or "zip" in text.lower():
                raise ValueError("not a Keras .keras archive") from None
            raise

    return read_run_file(run_dir, name, read)


def existing_run(path) -> Path:
    """The folder of an earlier run given as `run=PATH`, checked to be finished: its completion marker is there
    and every file it records is present with the recorded size (and, for the model files, the recorded
    sha256), so a half-written, damaged or tampered run is one line naming the file, never a later traceback."""
    if path in (None, ""):
        raise SiamrecError("run is not set: pass run=PATH/TO/RUN_FOLDER (a folder printed by train or extract)")
    run = Path(str(path)).expanduser()
    if not run.is_dir():
        raise SiamrecError(f"run={run}: not a finished siamrec run (no such folder); pass a folder printed by train")
    marker = run / FINISHED
    redo = "run the command that made it (train, evaluate or extract) again"
    if not marker.is_file():
        if not (run / "items.csv").is_file() and not (run / ".hydra").is_dir():
            raise SiamrecError(f"run={run}: not a siamrec run folder (no {FINISHED}, no items.csv); "
                               "pass a folder printed by train")
        raise SiamrecError(f"run={run}: not a finished siamrec run: {FINISHED}, written last when train, evaluate or "
                           "extract completes, is missing (the command failed or was interrupted, or a siamrec "
                           f"older than this marker made the folder); {redo}")
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        recorded = {str(name): (int(v["size"]), str(v["sha256"])) for name, v in files.items()}
    except Exception as exc:  # noqa: BLE001 - truncated, not JSON, another shape
        raise SiamrecError(f"run={run}: {FINISHED} is damaged ({_gist(exc)}); {redo}") from None
    for name, (size, digest) in recorded.items():
        p = run / name
        if Path(name).name != name or not p.is_file():
            raise SiamrecError(f"run={run}: {name} is missing ({FINISHED} records it); copy the run folder whole, "
                               f"or {redo}")
        if p.stat().st_size != size:
            raise SiamrecError(f"run={run}: {name} is damaged or truncated ({p.stat().st_size} bytes; the finished "
                               f"run wrote {size}); restore it, or {redo}")
        if name not in DATA_FILES and sha256_file(p) != digest:
            raise SiamrecError(f"run={run}: {name} was damaged or replaced after the run finished (its sha256 "
                               f"differs from the one in {FINISHED}); restore it, or {redo}")
    return run
