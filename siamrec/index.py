"""Cosine nearest-neighbour search over a catalogue's embeddings, exact or approximate, behind one interface.

`build_index(emb, method)` returns an Index whose `search(queries, k, exclude=...)` gives the k most
cosine-similar rows of each query (most similar first, the row `exclude[i]` of query i left out):

* `exact` (the default): the gallery L2-normalised once to float32, queries searched in blocks whose
  similarity matrix stays within `max_block_bytes`, ties broken by row as in siamrec.metrics;
* `hnsw` / `ivf`: a faiss inner-product index over the normalised rows (faiss is optional and imported only
  here, when asked for). `save(path)` / `load_index(path)` store it.

`open_index(run_dir, emb, index_cfg)` is what the commands use: the kind its YAML's `_target_` names, `index=exact`
(ExactSearch), or `index=faiss` (FaissSearch), which picks the method by catalogue size (conf/index/faiss.yaml: exact below `exact_below` items, HNSW up to `ivf_above`, IVF
above) and keeps the built index in `index.faiss` next to the embeddings, rebuilt when they or the build
settings change.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.metrics import DEFAULT_MAX_BLOCK_BYTES, top_k
from siamrec.runs import atomic_write_bytes, write_json
from siamrec.schema import integer

METHODS = ("exact", "hnsw", "ivf")
INDEX_FILE, META_FILE = "index.faiss", "index.json"
_CELL_BYTES = 16  # per (query, gallery) cell of a block: sims, their negation, the top-k masks and counts


def normalise(x) -> np.ndarray:
    """Rows scaled to unit length as C-contiguous float32 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or 0 in x.shape or not np.isfinite(x).all():
        raise ValueError(f"embeddings must be a non-empty finite 2-D array, got shape {x.shape}")
    # not np.linalg.norm: it squares a copy of the whole matrix first (a server's first ruled playlist of 100,000
    # 128-d songs waited 240 ms for that copy's fresh memory; this takes 3 ms)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


class Index:
    """Search interface; `n` rows of dimension `dim`."""

    method = "base"
    vectors: np.ndarray | None = None  # the unit vectors searched, (n, dim), when the index keeps them as one array
    expand = 0  # query expansion (with_expansion): a seed is searched as itself plus its `expand` nearest rows

    def __init__(self, n: int, dim: int):
        self.n, self.dim = n, dim

    def with_expansion(self, expand: int) -> "Index":
        """This index, its `expanded` queries taking `expand` neighbours (0: none); returns self."""
        if isinstance(expand, bool) or not isinstance(expand, (int, np.integer)) or expand < 0:
            raise ValueError(f"expand must be an integer >= 0, got {expand!r}")
        self.expand = int(expand)
        return self

    def rows(self, idx) -> np.ndarray:
        """The unit vectors of rows `idx` (any shape), shape idx.shape + (dim,)."""
        return self.vectors[np.asarray(idx, dtype=np.int64)]

    def expanded(self, queries, exclude=None) -> np.ndarray:
        """Average query expansion: each unit query plus the unit vectors of its `expand` nearest rows, re-normalised;
        the row `exclude[i]` (the seed, as in `search`) and rows equal to the query (the seed itself, a copy of it)
        are not taken. A playlist ranked by the expanded query is ranked by the seed's neighbourhood, not by the seed
        alone: it measured better on every real data set with labels (README, "Query expansion"). With `expand` 0,
        or nothing else in the index, the queries normalised."""
        queries = normalise(queries)
        wanted = min(self.expand + 1, self.n - (0 if exclude is None or (np.asarray(exclude) < 0).all() else 1))
        if self.expand == 0 or wanted < 1:
            return queries
        idx, sims = self._nearest_for_expansion(queries, wanted, exclude)
        take = sims < 1.0 - 1e-6  # not the query itself
        take &= np.cumsum(take, axis=1) <= self.expand
        summed = np.einsum("qk,qkd->qd", take.astype(np.float32), self.rows(idx))
        return normalise(queries + summed)

    def search(self, queries, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64, similarities float32), both (n_queries, k), most similar first; `exclude[i]` is a row
        left out of query i's results (or -1; None: nothing left out)."""
        return self._search(*self._checked(queries, k, exclude))

    def _checked(self, queries, k, exclude) -> tuple[np.ndarray, int, np.ndarray | None]:
        """`search`'s arguments checked: the queries normalised, k an int, `exclude` int64 (None when nothing is
        left out)."""
        queries = normalise(queries)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dim {queries.shape[1]} but the index {self.dim}")
        available = self.n
        if exclude is not None:
            exclude = np.asarray(exclude, np.int64)
            if exclude.shape != (len(queries),) or ((exclude < -1) | (exclude >= self.n)).any():
                raise ValueError(f"exclude must hold one row in [-1, {self.n}) per query")
            if (exclude >= 0).any():
                available -= 1
            else:
                exclude = None  # nothing to leave out: the searches skip that work (a ruled playlist's search)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
            raise ValueError(f"k must be an integer in [1, {available}] for this index, got {k!r}")
        return queries, int(k), exclude

    def _nearest_for_expansion(self, queries, wanted: int, exclude):
        """The `wanted` rows a query is expanded with (`search`'s, unless a kind finds them more cheaply)."""
        return self.search(queries, wanted, exclude)

    def _search(self, queries, k, exclude):
        raise NotImplementedError


class ExactIndex(Index):
    """Exact blocked search over the normalised gallery (ties: lower row first)."""

    method = "exact"

    def __init__(self, emb, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES):
        self.gallery = self.vectors = normalise(emb)
        super().__init__(*self.gallery.shape)
        self.block_rows = max(1, max_block_bytes // (_CELL_BYTES * self.n))

    def _search(self, queries, k, exclude):
        indices = np.empty((len(queries), k), dtype=np.int64)
        sims = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), self.block_rows):
            rows = slice(start, start + self.block_rows)
            block = queries[rows] @ self.gallery.T
            if exclude is not None:
                own = np.flatnonzero(exclude[rows] >= 0)
                block[own, exclude[rows][own]] = -np.inf
            indices[rows] = top_k(block, k)
            sims[rows] = np.take_along_axis(block, indices[rows], axis=1)
        return indices, sims


class FaissIndex(Index):
    """A faiss HNSW or IVF inner-product index over the normalised rows."""

    def __init__(self, index, ef_search: int = 128, nprobe: int = 32):
        super().__init__(index.ntotal, index.d)
        faiss = import_faiss()
        self.method = "hnsw" if isinstance(index, faiss.IndexHNSW) else "ivf"
        self.index, self.ef_search, self.nprobe = index, int(ef_search), int(nprobe)
        if self.method == "hnsw":  # HNSW keeps the vectors in a flat array: a view of it (valid while self.index is)
            storage = faiss.downcast_index(index.storage)
            if isinstance(storage, faiss.IndexFlat):
                self.vectors = faiss.rev_swig_ptr(storage.get_xb(), self.n * self.dim).reshape(self.n, self.dim)

    def _nearest_for_expansion(self, queries, wanted: int, exclude):
        """HNSW: a narrow search (ef_search 4·wanted, at least 16) finds the few neighbours a seed is averaged with:
        at 100,000 songs 0.18 ms per seed instead of 0.47 ms at ef_search 128 (scripts/bench_serve.py's catalogue)."""
        if self.method != "hnsw":
            return super()._nearest_for_expansion(queries, wanted, exclude)
        return self._search(*self._checked(queries, wanted, exclude), ef=max(16, 4 * wanted))

    def _search(self, queries, k, exclude, ef: int | None = None):
        faiss = import_faiss()
        wanted = k if exclude is None else k + 1
        if self.method == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search if ef is None else ef, wanted))
        else:
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        sims, indices = self.index.search(queries, wanted, params=params)
        if exclude is not None:
            keep = np.argsort(indices == exclude[:, None], axis=1, kind="stable")[:, :k]  # the excluded row moves last
            indices, sims = np.take_along_axis(indices, keep, axis=1), np.take_along_axis(sims, keep, axis=1)
        if (indices < 0).any():
            raise SiamrecError(f"the faiss {self.method} index found fewer than k={k} neighbours; raise "
                               "index.ef_search / index.ivf_nprobe or use index=exact")
        return indices.astype(np.int64, copy=False), sims

    def rows(self, idx) -> np.ndarray:
        if self.vectors is not None:
            return super().rows(idx)
        idx = np.asarray(idx, dtype=np.int64)
        if self.method == "ivf" and not getattr(self, "_direct_map", False):  # reconstructing needs it: made once
            import_faiss().extract_index_ivf(self.index).make_direct_map()
            self._direct_map = True
        return self.index.reconstruct_batch(idx.reshape(-1)).reshape(*idx.shape, self.dim)

    def save(self, path) -> Path:
        return atomic_write_bytes(path, import_faiss().serialize_index(self.index).tobytes())


def import_faiss():
    """The faiss module, or a one-line error saying how to get it."""
    try:
        import faiss
    except ImportError:
        raise SiamrecError("index=faiss needs the faiss package: pip install faiss-cpu (or use index=exact)") from None
    return faiss


def build_index(emb, method: str = "exact", *, hnsw_m: int = 32, ef_construction: int = 100, ef_search: int = 128,
                ivf_nlist: int | None = None, ivf_nprobe: int = 32) -> Index:
    """An index of `method` (exact | hnsw | ivf) over the rows of `emb`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "exact":
        return ExactIndex(emb)
    faiss = import_faiss()
    x = normalise(emb)
    n, d = x.shape
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
    else:
        nlist = int(ivf_nlist or max(1, round(4 * np.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)
        index.train(x[np.sort(sample)])
    index.add(x)
    return FaissIndex(index, ef_search, ivf_nprobe)


def load_index(path, ef_search: int = 128, ivf_nprobe: int = 32) -> FaissIndex:
    """A faiss index saved by FaissIndex.save."""
    return FaissIndex(import_faiss().read_index(str(path)), ef_search, ivf_nprobe)


class ExactSearch:
    """index=exact (conf/index/exact.yaml): every query against every row, in memory-bounded blocks."""

    def __init__(self):
        pass

    def method_for(self, n: int) -> str:
        return "exact"

    def open(self, run_dir, emb, save: bool = True) -> Index:
        return ExactIndex(emb)


class FaissSearch:
    """index=faiss (conf/index/faiss.yaml): a faiss index chosen by catalogue size, kept in run_dir/index.faiss."""

    def __init__(self, *, method: Literal["auto", "hnsw", "ivf"], exact_below: Annotated[int, integer(0)],
                 ivf_above: Annotated[int, integer(1)], hnsw_m: Annotated[int, integer(1)],
                 ef_construction: Annotated[int, integer(1)], ef_search: Annotated[int, integer(1)],
                 ivf_nlist: Annotated[int, integer(1)] | None, ivf_nprobe: Annotated[int, integer(1)]):
        if method not in ("auto", "hnsw", "ivf"):
            raise SiamrecError(f"index.method={method!r}: choose auto, hnsw or ivf")
        self.method, self.exact_below, self.ivf_above = method, int(exact_below), int(ivf_above)
        self.build = {"hnsw_m": int(hnsw_m), "ef_construction": int(ef_construction), "ivf_nlist": ivf_nlist}
        self.search = {"ef_search": int(ef_search), "ivf_nprobe": int(ivf_nprobe)}

    def method_for(self, n: int) -> str:
        if self.method != "auto":
            return self.method
        if n < self.exact_below:
            return "exact"
        return "hnsw" if n < self.ivf_above else "ivf"

    def open(self, run_dir, emb, save: bool = True) -> Index:
        """Loaded from run_dir/index.faiss when it was built from these embeddings with these settings, else built
        and saved there (only kept in memory with save=False, as the web app does: it never writes the run's
        index)."""
        method = self.method_for(len(emb))
        if method == "exact":
            return ExactIndex(emb)
        import_faiss()
        build = {"method": method, **self.build}
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        h = hashlib.sha256(json.dumps({**build, "shape": emb.shape}, sort_keys=True).encode())
        h.update(memoryview(emb).cast("B"))
        fingerprint = h.hexdigest()[:20]
        path, meta = Path(run_dir) / INDEX_FILE, Path(run_dir) / META_FILE
        if path.is_file() and meta.is_file():
            try:  # a saved index is a cache: one that is stale, damaged or truncated is built again
                saved = json.loads(meta.read_text(encoding="utf-8"))
                if saved.get("fingerprint") == fingerprint:
                    if saved.get("bytes", path.stat().st_size) != path.stat().st_size:
                        raise ValueError(f"{path.stat().st_size} bytes, {saved['bytes']} when it was saved")
                    return load_index(path, **self.search)
            except Exception as exc:  # noqa: BLE001 - faiss's RuntimeError, JSON errors, ...
                print(f"{path} or {meta.name} is damaged ({(str(exc).splitlines() or [type(exc).__name__])[0][:120]}); "
                      "building the index again")
        started = time.perf_counter()
        index = build_index(emb, **build, **self.search)
        if not save:
            print(f"built a faiss {method} index of {len(emb)} items in memory in {time.perf_counter() - started:.1f} s")
            return index
        index.save(path)
        write_json(meta, {"fingerprint": fingerprint, "n": len(emb), "bytes": path.stat().st_size, **build,
                          "build_s": round(time.perf_counter() - started, 1)})
        print(f"built a faiss {method} index of {len(emb)} items in {time.perf_counter() - started:.1f} s: {path}")
        return index


def index_kind(index_cfg):
    """The search the `index` config asks for (its YAML's `_target_`: ExactSearch, FaissSearch, or a user's own)."""
    from siamrec.configs import build

    return build(index_cfg, "index")


def choose_method(n: int, index_cfg) -> str:
    """The method (exact | hnsw | ivf) the `index` config uses over a catalogue of n items."""
    return index_kind(index_cfg).method_for(n)


def open_index(run_dir, emb, index_cfg, save: bool = True, expand: int = 0) -> Index:
    """The configured index over a run's embeddings `emb` (see FaissSearch.open for what is kept in run_dir), its
    queries expanded with `expand` neighbours (the config's `query_expansion`)."""
    return index_kind(index_cfg).open(run_dir, emb, save).with_expansion(expand)
