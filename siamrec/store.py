"""The feature store of an extraction: embeddings written in shards as they are computed.

`store/shard-00000.npz`, `shard-00001.npz`, ... each hold `keys` (the items' keys) and `embeddings` (float32,
one row per key) and are written atomically, so a shard on disk is always complete. An interrupted extraction
keeps every finished shard; started again with the same folder it skips their keys. `store/meta.json` records
the fingerprint of the model and clip settings, so rows of two different models never mix.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.runs import atomic_write_bytes, write_json

# The files of a run folder that make up its model (those present are hashed and copied).
MODEL_FILES = ("backbone.keras", "head.json", "model.keras", "lda.npz", "scaler.npz")


def run_fingerprint(run_dir, clip_cfg) -> str:
    """Hash of the run's model files and the clip settings: equal fingerprints give equal embeddings."""
    h = hashlib.sha256()
    for name in MODEL_FILES:
        path = Path(run_dir) / name
        if path.is_file():
            h.update(name.encode())
            h.update(path.read_bytes())
    h.update(json.dumps({k: str(clip_cfg[k]) for k in ("sr", "duration", "offset")}, sort_keys=True).encode())
    return h.hexdigest()[:20]


class FeatureStore:
    """The shards under `folder`, for the model with `fingerprint`."""

    def __init__(self, folder, fingerprint: str):
        self.dir = Path(folder)
        meta = self.dir / "meta.json"
        if meta.is_file():
            stored = json.loads(meta.read_text()).get("fingerprint")
            if stored != fingerprint:
                raise SiamrecError(f"extract.out={self.dir.parent}: its store holds embeddings of another model or "
                                   "clip settings; choose a new extract.out")
        else:
            write_json(meta, {"fingerprint": fingerprint})
        self.shards = sorted(self.dir.glob("shard-*.npz"))

    def _load(self, shard: Path, *names: str) -> list[np.ndarray]:
        try:
            with np.load(shard, allow_pickle=False) as z:
                return [z[name] for name in names]
        except Exception as exc:  # noqa: BLE001 - only a damaged disk can make an atomically written shard unreadable
            raise SiamrecError(f"{shard}: unreadable shard ({type(exc).__name__}); delete it to recompute "
                               "its files") from None

    def keys(self) -> set[str]:
        """Keys of every stored row."""
        return {str(k) for shard in self.shards for k in self._load(shard, "keys")[0]}

    def write(self, keys: list[str], embeddings: np.ndarray) -> Path:
        """Store rows as the next shard (atomically)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if len(keys) != len(embeddings):
            raise ValueError("keys and embeddings differ in length")
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys, dtype=str), embeddings=embeddings)
        path = atomic_write_bytes(self.dir / f"shard-{len(self.shards):05d}.npz", buf.getvalue())
        self.shards.append(path)
        return path

    def rows(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `keys` that are stored, their embeddings in that order)."""
        where = {k: i for i, k in enumerate(keys)}
        found, blocks = [], []
        for shard in self.shards:
            shard_keys, emb = self._load(shard, "keys", "embeddings")
            pos = np.array([where.get(str(k), -1) for k in shard_keys], dtype=np.int64)
            found.append(pos[pos >= 0])
            blocks.append(emb[pos >= 0])
        if not found:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        found, first = np.unique(np.concatenate(found), return_index=True)  # sorted; a repeated key counts once
        return found, np.concatenate(blocks)[first]
