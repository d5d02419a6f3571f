"""Retrieval metrics (mAP, MAP@k, MAP@R, precision, recall, nDCG) and the top-k selection shared with siamrec.index.

Queries are ranked against a gallery by cosine similarity computed in float64
(rows L2-normalised, an all-zero row stays zero).  A query is never returned
for itself, and ties in similarity are broken by gallery index (the order of a
stable sort of -similarity).  Queries are processed in blocks so that the
block's similarity matrix and its temporaries stay within ``max_block_bytes``;
no query x gallery matrix is ever built in full.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

DEFAULT_MAX_BLOCK_BYTES = 256 * 2**20

# Upper bounds on the bytes held per (query, gallery) cell of a block.
_METRICS_CELL_BYTES = 64  # sims, rank keys, sorted keys, label overlaps, relevant-pair arrays

# Rank keys: trunc(-sim * 2**30) as int32 orders items like -sim, only coarser;
# items whose keys collide are re-ordered exactly by (-sim, index).
_KEY_SCALE = 2.0**30
_EXCLUDED_KEY = np.iinfo(np.int32).max  # sorts after every real item

_RELEVANCE_MODES = ("shared", "jaccard")


def retrieval_metrics(query_emb, query_labels, gallery_emb=None, gallery_labels=None, *,
                      self_index=None, ks=(1, 5, 10), relevance="shared", jaccard_threshold=0.5,
                      max_block_bytes=DEFAULT_MAX_BLOCK_BYTES) -> dict[str, float | int]:
    """Rank the gallery for every query and average retrieval metrics over the queries.

    Args:
        query_emb: (n_queries, dim) embeddings.
        query_labels: (n_queries, n_labels) boolean (or 0/1) multi-hot labels.
        gallery_emb, gallery_labels: the gallery; both None to use the queries
            themselves, each query then being excluded from its own ranking.
        self_index: with an explicit gallery, ``self_index[i]`` is the gallery row
            of query ``i`` (excluded from its ranking) or -1; None means no query
            is in the gallery.
        ks: cut-offs for ``map@k``, ``p@k``, ``recall@k`` and ``ndcg@k``.  Positions
            beyond the end of a small gallery count as non-relevant.
        relevance: ``"shared"`` - a gallery item is relevant when it shares at least
            one label with the query (nDCG gain = number of shared labels);
            ``"jaccard"`` - relevant when |Yq & Yg| / |Yq | Yg| >= ``jaccard_threshold``
            (nDCG gain = that Jaccard index, 0 below the threshold).
        jaccard_threshold: in (0, 1]; only used with ``relevance="jaccard"``.
        max_block_bytes: memory budget of one block of queries (at least one query
            is processed at a time).

    Returns:
        ``map``, ``map@r``, ``r_precision`` and, for each k in ``ks``, ``map@k``,
        ``p@k``, ``recall@k``, ``ndcg@k`` as floats averaged over the queries that
        have at least one relevant gallery item (NaN when there is none), plus
        ``n_queries`` (queries averaged over) and ``n_skipped`` (queries without a
        relevant item).
    """
    queries, gallery, self_index = _retrieval_inputs(query_emb, gallery_emb, self_index,
                                                     max_block_bytes)
    if (gallery_emb is None) != (gallery_labels is None):
        raise ValueError("gallery_emb and gallery_labels must be given together")
    ks = _as_ks(ks)
    if relevance not in _RELEVANCE_MODES:
        raise ValueError(f"relevance must be one of {_RELEVANCE_MODES}, got {relevance!r}")
    if relevance == "jaccard" and not 0.0 < jaccard_threshold <= 1.0:
        raise ValueError(f"jaccard_threshold must be in (0, 1], got {jaccard_threshold!r}")
    query_labels = _as_labels(query_labels, len(queries), "query_labels")
    if gallery_labels is None:
        gallery_labels = query_labels
    else:
        gallery_labels = _as_labels(gallery_labels, len(gallery), "gallery_labels")
        if gallery_labels.shape[1] != query_labels.shape[1]:
            raise ValueError(f"query_labels has {query_labels.shape[1]} labels but "
                             f"gallery_labels has {gallery_labels.shape[1]}")

    gallery_labels_t = np.ascontiguousarray(gallery_labels.T, dtype=np.float32)
    query_label_counts = query_labels.sum(axis=1, dtype=np.float64)
    gallery_label_counts = gallery_labels.sum(axis=1, dtype=np.float64)
    n_relevant = np.zeros(len(queries), dtype=np.int64)
    per_query: dict[str, np.ndarray] = {}
    for rows, sims, own_rows, own_cols in _similarity_blocks(queries, gallery, self_index,
                                                             _METRICS_CELL_BYTES, max_block_bytes):
        keys = _rank_keys(sims, own_rows, own_cols)
        overlap = _label_overlap(query_labels[rows], gallery_labels_t)
        overlap[own_rows, own_cols] = 0
        pair_rows, pair_cols, gains = _relevant_pairs(
            overlap, query_label_counts[rows], gallery_label_counts, relevance, jaccard_threshold)
        del overlap
        ranks = _ranks(sims, keys, pair_rows, pair_cols)
        n_relevant[rows] = np.bincount(pair_rows, minlength=len(sims))
        for name, values in _query_scores(ranks, pair_rows, gains, len(sims), ks).items():
            if name not in per_query:
                per_query[name] = np.empty(len(queries))
            per_query[name][rows] = values

    evaluated = n_relevant > 0
    n_evaluated = int(evaluated.sum())
    result: dict[str, float | int] = {
        name: float(values[evaluated].mean()) if n_evaluated else float("nan")
        for name, values in per_query.items()}
    result["n_queries"] = n_evaluated
    result["n_skipped"] = len(queries) - n_evaluated
    return result


# --------------------------------------------------------------------------- inputs

def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _as_embeddings(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or 0 in x.shape or x.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a non-empty 2-D numeric array, "
                         f"got shape {x.shape} dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _as_labels(y, n_rows: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2 or y.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a 2-D boolean or 0/1 array, "
                         f"got shape {y.shape} dtype {y.dtype}")
    if y.shape[0] != n_rows:
        raise ValueError(f"{name} has {y.shape[0]} rows but its embeddings have {n_rows}")
    if y.dtype != bool:
        if not ((y == 0) | (y == 1)).all():
            raise ValueError(f"{name} must contain only 0 and 1")
        y = y != 0
    return y


def _as_ks(ks) -> tuple[int, ...]:
    ks = tuple(ks) if isinstance(ks, (list, tuple, np.ndarray, range)) else (ks,)
    if not ks or not all(_is_int(k) and k >= 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of integers >= 1, got {ks!r}")
    return tuple(dict.fromkeys(int(k) for k in ks))


def _retrieval_inputs(query_emb, gallery_emb, self_index, max_block_bytes):
    """Validate embeddings, ``self_index`` and the block budget shared by both entry points."""
    if not _is_int(max_block_bytes) or max_block_bytes < 1:
        raise ValueError(f"max_block_bytes must be a positive integer, got {max_block_bytes!r}")
    queries = _as_embeddings(query_emb, "query_emb")
    if gallery_emb is None:
        if self_index is not None:
            raise ValueError("self_index is only accepted with an explicit gallery")
        return queries, queries, np.arange(len(queries), dtype=np.int64)
    gallery = _as_embeddings(gallery_emb, "gallery_emb")
    if gallery.shape[1] != queries.shape[1]:
        raise ValueError(f"query_emb has dim {queries.shape[1]} but gallery_emb has dim "
                         f"{gallery.shape[1]}")
    if self_index is None:
        return queries, gallery, np.full(len(queries), -1, dtype=np.int64)
    self_index = np.asarray(self_index)
    if self_index.shape != (len(queries),) or self_index.dtype.kind not in "iu":
        raise ValueError(f"self_index must be an integer array of shape ({len(queries)},), "
                         f"got shape {self_index.shape} dtype {self_index.dtype}")
    if ((self_index < -1) | (self_index >= len(gallery))).any():
        raise ValueError(f"self_index values must be -1 or in [0, {len(gallery)})")
    return queries, gallery, self_index.astype(np.int64)


# --------------------------------------------------------------------------- blocks

def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _similarity_blocks(queries, gallery, self_index, cell_bytes, max_block_bytes
                       ) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, sims, own_rows, own_cols)`` for consecutive blocks of queries.

    ``sims`` is the float64 cosine similarity of the queries ``rows`` to the whole
    gallery; ``sims[own_rows, own_cols]`` are the entries of queries found in the
    gallery, which the caller must exclude.  A block holds as many queries as fit
    ``max_block_bytes`` at ``cell_bytes`` per similarity entry (at least one).
    """
    gallery = _normalise(gallery)
    n_rows = max(1, max_block_bytes // (cell_bytes * len(gallery)))
    for start in range(0, len(queries), n_rows):
        rows = slice(start, min(start + n_rows, len(queries)))
        sims = _normalise(queries[rows]) @ gallery.T
        own_rows = np.flatnonzero(self_index[rows] >= 0)
        yield rows, sims, own_rows, self_index[rows][own_rows]


def top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries per row, by similarity then index."""
    kth = np.negative(sims)
    kth.partition(k - 1, axis=1)
    kth = -kth[:, k - 1:k]
    above = sims > kth
    tied = sims == kth
    tied &= np.cumsum(tied, axis=1, dtype=np.int32) <= k - above.sum(axis=1, keepdims=True)
    chosen = np.nonzero(above | tied)[1].reshape(len(sims), k)  # ascending index per row
    order = np.argsort(-np.take_along_axis(sims, chosen, axis=1), axis=1, kind="stable")
    return np.take_along_axis(chosen, order, axis=1)


# --------------------------------------------------------------------------- ranking

def _rank_keys(sims, own_rows, own_cols) -> np.ndarray:
    """int32 keys non-decreasing in -sims (excluded entries last), cheap to sort."""
    keys = np.empty(sims.shape, dtype=np.int32)
    np.multiply(sims, -_KEY_SCALE, out=keys, casting="unsafe")  # truncates; |sims| <= 1
    keys[own_rows, own_cols] = _EXCLUDED_KEY
    return keys


def _label_overlap(query_labels, gallery_labels_t) -> np.ndarray:
    """Number of labels each query shares with each gallery item (exact in float32).

    Adds one gallery-label row per (query, label) pair, which for sparse labels is
    much cheaper than a dense (n_queries x n_labels x n_gallery) product.
    """
    overlap = np.zeros((len(query_labels), gallery_labels_t.shape[1]), dtype=np.float32)
    for label in np.flatnonzero(query_labels.any(axis=0)):
        overlap[query_labels[:, label]] += gallery_labels_t[label]
    return overlap


def _relevant_pairs(overlap, query_counts, gallery_counts, relevance, threshold):
    """``(rows, cols, gains)`` of the relevant (query, gallery) pairs, row-major.

    ``overlap`` holds the number of shared labels (0 for excluded entries).
    """
    rows, cols = np.divmod(np.flatnonzero(overlap > 0), overlap.shape[1])  # faster than 2-D nonzero
    shared = overlap[rows, cols].astype(np.float64)
    if relevance == "shared":
        return rows, cols, shared
    jaccard = shared / (query_counts[rows] + gallery_counts[cols] - shared)
    keep = jaccard >= threshold
    return rows[keep], cols[keep], jaccard[keep]


def _ranks(sims, keys, rows, cols) -> np.ndarray:
    """0-based position of each pair's column in its row's ranking.

    The ranking is a stable sort of -sims with excluded entries last.  Positions
    come from the sorted keys; pairs whose key is shared by other items are
    resolved exactly by :func:`_offsets_among_equal_keys`.  ``rows`` must be sorted.
    """
    sorted_keys = np.sort(keys, axis=1)
    pair_keys = keys[rows, cols]
    by_key = np.lexsort((pair_keys, rows))  # searchsorted is much faster on sorted needles
    pair_keys, cols = pair_keys[by_key], cols[by_key]
    bounds = np.searchsorted(rows, np.arange(len(keys) + 1))
    ranks = np.empty(len(rows), dtype=np.int64)
    for i in np.flatnonzero(np.diff(bounds)):
        pairs = slice(bounds[i], bounds[i + 1])
        first = np.searchsorted(sorted_keys[i], pair_keys[pairs], side="left")
        # The key's run in sorted_keys starts at `first`; the next entry tells whether another
        # item shares it (clipping at the row's end only sends a lone key down the exact path).
        shared = sorted_keys[i].take(first + 1, mode="clip") == pair_keys[pairs]
        if shared.any():
            first[shared] += _offsets_among_equal_keys(keys[i], sims[i], cols[pairs][shared])
        ranks[by_key[pairs]] = first
    return ranks


def _offsets_among_equal_keys(keys, sims, cols) -> np.ndarray:
    """Position of each of ``cols`` among the row's items with the same key, in ranking order."""
    candidates = np.flatnonzero(np.isin(keys, keys[cols]))  # ascending index
    order = np.lexsort((candidates, -sims[candidates]))  # keys are non-decreasing along it
    position = np.empty(len(candidates), dtype=np.int64)
    position[order] = np.arange(len(candidates))
    group_start = np.searchsorted(keys[candidates[order]], keys[cols], side="left")
    return position[np.searchsorted(candidates, cols)] - group_start


def _query_scores(ranks, rows, gains, n_rows, ks) -> dict[str, np.ndarray]:
    """Per-query metric values of one block, from its relevant pairs.

    ``rows`` is sorted (row-major pairs) and ``ranks`` are 0-based positions.  Values
    of queries without a relevant item are meaningless; the caller drops them.
    """
    n_relevant = np.bincount(rows, minlength=n_rows)
    n_relevant_safe = np.maximum(n_relevant, 1)
    hits_before = np.arange(len(rows)) - (np.cumsum(n_relevant) - n_relevant)[rows]

    def per_query(weights):
        return np.bincount(rows, weights=weights, minlength=n_rows)

    by_rank = np.lexsort((ranks, rows))
    rank = ranks[by_rank] + 1.0
    precision = (hits_before + 1) / rank  # precision at the rank of each relevant item
    within_r = rank <= n_relevant[rows]
    discounted_gain = gains[by_rank] / np.log2(rank + 1)
    ideal_gain = gains[np.lexsort((-gains, rows))] / np.log2(hits_before + 2.0)

    scores = {
        "map": per_query(precision) / n_relevant_safe,
        "map@r": per_query(precision * within_r) / n_relevant_safe,
        "r_precision": per_query(within_r) / n_relevant_safe,
    }
    for k in ks:
        top = rank <= k
        ideal = per_query(ideal_gain * (hits_before < k))
        scores[f"map@{k}"] = per_query(precision * top) / np.minimum(n_relevant_safe, k)
        scores[f"p@{k}"] = per_query(top) / k
        scores[f"recall@{k}"] = per_query(top) / n_relevant_safe
        scores[f"ndcg@{k}"] = per_query(discounted_gain * top) / np.where(ideal > 0, ideal, 1.0)
    return scores
