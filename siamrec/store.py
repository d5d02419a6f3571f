"""The feature store of an extraction: song embeddings in shards, keyed by the file's content.

`OUT/store/` holds `meta.json` (the fingerprint of the run's model and clip settings: rows of two models never
mix), shards `shard-<time>-<pid>-<random>.npz`, and `.lock`. A shard holds, per row, the song's key, its file's
size, mtime and sha256, and its embedding. Shards get unique names and are created exclusively (written to a
temporary file, then hard-linked to their name): no shard is ever overwritten, and a shard on disk is complete.

A song's stored row is served only when it still describes the file: same key with the same size and mtime (the
fast check), or, when those changed, the same content (sha256): a song edited in place is embedded again, a song
merely touched or copied is not. A shard that cannot be read is set aside (`*.damaged`) and its songs are
recomputed; a deleted shard's songs are recomputed; other shards are never touched. One `extract` at a time
writes into a store (an exclusive lock on `.lock`; a second one is refused with one line).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamrec.data.audio import DECODER_VERSION
from siamrec.errors import SiamrecError
from siamrec.extractor import file_stat
from siamrec.runs import model_files, sha256_file, write_json

FIELDS = ("keys", "sizes", "mtimes", "digests", "embeddings")


def run_fingerprint(run_dir) -> str:
    """Hash of the decoder's version and the run's model files (its bundle, clip settings, weights and head): equal
    fingerprints give equal embeddings."""
    h = hashlib.sha256(f"decoder {DECODER_VERSION}".encode())
    for path in model_files(run_dir):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


@dataclass
class Record:
    size: int
    mtime: int
    digest: str
    shard: Path
    row: int


class FeatureStore:
    """The shards under `folder`, for the model with `fingerprint`."""

    def __init__(self, folder, fingerprint: str):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if meta.is_file():
            try:
                stored = json.loads(meta.read_text(encoding="utf-8"))["fingerprint"]
            except Exception as exc:  # noqa: BLE001 - truncated, not JSON, another shape
                raise SiamrecError(f"extract.out={self.dir.parent}: {meta} is damaged ({type(exc).__name__}), so "
                                   "which model its embeddings come from is unknown; choose a new extract.out "
                                   f"(or delete {self.dir} to embed everything again)") from None
            if stored != fingerprint:
                raise SiamrecError(f"extract.out={self.dir.parent}: its store holds embeddings of another model, "
                                   "clip settings or decoder version; choose a new extract.out (or delete "
                                   f"{self.dir} to embed the library again)")
        else:
            write_json(meta, {"fingerprint": fingerprint})
        self._lock = None
        self.damaged: list[Path] = []

    # --- locking ------------------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the store's exclusive lock (released when the process ends or by unlock())."""
        f = open(self.dir / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise SiamrecError(f"extract.out={self.dir.parent}: another extract is writing into it; wait for it to "
                               "finish, or choose another extract.out") from None
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- reading --------------------------------------------------------------------------------------------------
    @property
    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz"))

    def _load(self, shard: Path, *names: str):
        try:
            with np.load(shard, allow_pickle=False) as z:
                return [z[name] for name in names]
        except Exception:  # noqa: BLE001 - unreadable: set aside, its songs are recomputed
            damaged = shard.with_name(shard.name + ".damaged")
            try:
                os.replace(shard, damaged)
            except OSError:
                pass
            self.damaged.append(damaged)
            print(f"warning: {shard} could not be read; set aside as {damaged.name}, its songs will be embedded again")
            return None

    def records(self) -> dict[str, list[Record]]:
        """Every stored row's description by key, oldest shard first."""
        out: dict[str, list[Record]] = {}
        for shard in self.shards:
            loaded = self._load(shard, *FIELDS[:4])
            if loaded is None:
                continue
            for row, (key, size, mtime, digest) in enumerate(zip(*loaded)):
                out.setdefault(str(key), []).append(Record(int(size), int(mtime), str(digest), shard, row))
        return out

    def lookup(self, keys: list[str], paths: list[str], records=None) -> tuple[dict[int, Record], list[int]]:
        """For each song (key, path): its stored record, if one still describes the file; else it is to do.
        Returns ({position: record}, [positions to do]). A record found by content under a changed size or mtime
        is stored again with the new ones (so the next look-up is a fast one)."""
        records = self.records() if records is None else records
        by_digest = {r.digest: r for recs in records.values() for r in recs}
        found, todo, refresh = {}, [], []
        for i, (key, path) in enumerate(zip(keys, paths)):
            recs = records.get(key)
            try:
                size, mtime = file_stat(path)
            except OSError:
                todo.append(i)           # the extractor reports why it cannot be read
                continue
            same = [r for r in recs or [] if r.size == size and r.mtime == mtime]
            if same:
                found[i] = same[-1]
                continue
            if recs:                     # changed size or mtime: compare the content
                digest = sha256_file(path)
                match = by_digest.get(digest)
                if match is not None:
                    found[i] = match
                    refresh.append((i, size, mtime, digest))
                    continue
            todo.append(i)
        if refresh:
            emb = self.embeddings([found[i] for i, *_ in refresh])
            self.write([keys[i] for i, *_ in refresh], [r[1] for r in refresh], [r[2] for r in refresh],
                       [r[3] for r in refresh], emb)
        return found, todo

    def embeddings(self, records: list[Record]) -> np.ndarray:
        """The embeddings of `records`, in order."""
        if not records:
            return np.empty((0, 0), np.float32)
        out = None
        by_shard: dict[Path, list[int]] = {}
        for pos, r in enumerate(records):
            by_shard.setdefault(r.shard, []).append(pos)
        for shard, positions in by_shard.items():
            loaded = self._load(shard, "embeddings")
            if loaded is None:
                raise SiamrecError(f"{shard} became unreadable during the run; run the same command again")
            emb = loaded[0]
            if out is None:
                out = np.empty((len(records), emb.shape[1]), np.float32)
            out[positions] = emb[[records[p].row for p in positions]]
        return out

    # --- writing --------------------------------------------------------------------------------------------------
    def write(self, keys, sizes, mtimes, digests, embeddings) -> Path:
        """Store rows as a new shard: a unique name, created exclusively and completely, never overwritten."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if not (len(keys) == len(sizes) == len(mtimes) == len(digests) == len(embeddings)):
            raise ValueError("store rows differ in length")
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys, dtype=str), sizes=np.asarray(sizes, dtype=np.int64),
                 mtimes=np.asarray(mtimes, dtype=np.int64), digests=np.asarray(digests, dtype=str),
                 embeddings=embeddings)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".shard-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            while True:
                path = self.dir / f"shard-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.npz"
                try:
                    os.link(tmp, path)   # fails if the name exists: never overwrites
                    break
                except FileExistsError:
                    continue
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path
