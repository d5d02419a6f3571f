"""Scoring a run: retrieval metrics of the embeddings under a protocol, and classification metrics.

Protocols (eval.protocol): `test` — queries and gallery are the same split (reported for train, valid and test);
`test_vs_all` — test queries against the whole library, as a deployed recommender sees it; `cross` — every item
of a (new) dataset against all of it, for a model trained elsewhere.
"""

from __future__ import annotations

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.index import ExactIndex
from siamrec.metrics import retrieval_metrics

PROTOCOLS = ("test", "test_vs_all", "cross")


def retrieval(emb, y, queries: np.ndarray, gallery: np.ndarray, eval_cfg, expand: int = 0) -> dict:
    """Retrieval metrics of the rows `queries` of `emb` ranking the rows `gallery` (a query in the gallery is left out
    of its own ranking), each query expanded with its `expand` nearest songs of the gallery as playlists are."""
    position = np.full(len(emb), -1)
    position[gallery] = np.arange(len(gallery))
    seeds = emb[queries]
    if expand:  # the ranking a playlist uses: each seed expanded with its nearest songs of the gallery
        seeds = ExactIndex(emb[gallery]).with_expansion(expand).expanded(seeds, exclude=position[queries])
    return retrieval_metrics(
        seeds, y[queries], emb[gallery], y[gallery], self_index=position[queries],
        ks=tuple(int(k) for k in eval_cfg["ks"]), relevance=eval_cfg["relevance"],
        jaccard_threshold=float(eval_cfg["jaccard_threshold"]),
    )


def relevant_counts(yq: np.ndarray, yg: np.ndarray, self_index: np.ndarray, relevance: str = "shared",
                    jaccard_threshold: float = 0.5, block: int = 1024) -> np.ndarray:
    """How many gallery items are relevant to each query (the query itself left out), in blocks of queries."""
    yq, yg = np.asarray(yq, dtype=np.float32), np.asarray(yg, dtype=np.float32)
    counts = np.zeros(len(yq), dtype=np.int64)
    gallery_sizes = yg.sum(axis=1)
    for start in range(0, len(yq), block):
        shared = yq[start:start + block] @ yg.T
        if relevance == "jaccard":
            union = yq[start:start + block].sum(axis=1)[:, None] + gallery_sizes[None, :] - shared
            rel = shared / np.maximum(union, 1.0) >= jaccard_threshold
        else:
            rel = shared > 0
        rows = np.arange(rel.shape[0])
        own = np.asarray(self_index[start:start + block])
        mine = own >= 0
        rel[rows[mine], own[mine]] = False
        counts[start:start + block] = rel.sum(axis=1)
    return counts


def scorable_relevant_counts(emb_len: int, y, queries, gallery, eval_cfg) -> np.ndarray:
    """How many relevant songs each scorable query has in its gallery (the query itself left out; 0s dropped)."""
    position = np.full(emb_len, -1)
    position[gallery] = np.arange(len(gallery))
    counts = relevant_counts(y[queries], y[gallery], position[queries], eval_cfg["relevance"],
                             float(eval_cfg["jaccard_threshold"]))
    return counts[counts > 0]


def _check_labels(y: np.ndarray, relevance: str, label_names=None) -> None:
    """Refuse labels that make every song relevant to every other (MAP 1.0 whatever the embedding)."""
    carried = np.flatnonzero(y.any(axis=0)) if y.ndim == 2 and len(y) else np.array([], dtype=int)
    if len(carried) == 0:
        raise SiamrecError("no song has a label, so nothing can be scored; give songs with labels")
    if len(carried) == 1:
        raise SiamrecError("the library has one label only: every song is relevant to every other, so MAP would be "
                           "1.0 whatever the embedding; give songs of at least two labels to score them")
    everywhere = np.flatnonzero(y.all(axis=0))
    if relevance == "shared" and len(everywhere):
        name = repr(label_names[everywhere[0]]) if label_names is not None else f"number {everywhere[0] + 1}"
        raise SiamrecError(f"every song carries the label {name}: every "
                           "song is relevant to every other, so MAP would be 1.0; drop that label or use "
                           "eval.relevance=jaccard")


def score_embeddings(emb: np.ndarray, y: np.ndarray, split: np.ndarray, eval_cfg, label_names=None,
                     expand: int = 0) -> dict:
    """metrics.json content: {'train'|'valid'|'test': {metric: value}, 'n_queries', 'skipped', 'protocol'}.
    Songs are ranked as playlists rank them: for each query, by the query expanded with its `expand` nearest
    songs of the gallery (the config's `query_expansion`; siamrec.index.Index.expanded).

    Labels that make the score meaningless (one label, or one every song carries) and a test split without a
    single scorable query are errors, not a MAP of 1.0 or NaN. 'p@10_ceiling' is the best P@10 any embedding
    could reach on the test queries (below 1 when they have fewer than 10 relevant songs each); 'median_relevant' is
    the median number of relevant songs a test query has in its gallery, 'query_expansion' the `expand` used."""
    protocol = eval_cfg["protocol"]
    if protocol not in PROTOCOLS:
        raise SiamrecError(f"eval.protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    emb = np.asarray(emb)
    _check_labels(np.asarray(y, dtype=bool), eval_cfg["relevance"], label_names)
    everything = np.flatnonzero(np.asarray(y, dtype=bool).any(axis=1))  # songs without a label are not scored
    out: dict = {"protocol": protocol}
    if protocol == "cross":
        out["test"] = retrieval(emb, y, everything, everything, eval_cfg, expand)
    else:
        for name in ("train", "valid", "test"):
            members = np.intersect1d(np.flatnonzero(split == name), everything)
            if len(members) < 2:
                continue
            gallery = everything if (protocol == "test_vs_all" and name == "test") else members
            out[name] = retrieval(emb, y, members, gallery, eval_cfg, expand)
    if "test" not in out:
        raise SiamrecError("the test split has fewer than 2 items: give more data or a larger split.test")
    if out["test"]["n_queries"] == 0:
        n_test = len(everything) if protocol == "cross" else len(np.intersect1d(np.flatnonzero(split == "test"),
                                                                                   everything))
        where = "in the test split" if protocol == "test" else "in the library"
        raise SiamrecError(
            f"no test query can be scored: none of the {n_test} test songs has a relevant song (one sharing a label) "
            f"{where}, so MAP is undefined; give more songs per label "
            "or a larger split.test" + (", or eval.protocol=test_vs_all" if protocol == "test" else "")
        )
    out["n_queries"] = out["test"]["n_queries"]
    out["skipped"] = out["test"]["n_skipped"]
    test_queries = everything if protocol == "cross" else np.intersect1d(np.flatnonzero(split == "test"), everything)
    test_gallery = everything if protocol in ("cross", "test_vs_all") else test_queries
    counts = scorable_relevant_counts(len(emb), np.asarray(y, dtype=bool), test_queries, test_gallery, eval_cfg)
    # the best P@10 any embedding could reach: a query with fewer than 10 relevant songs cannot fill 10 places
    out["p@10_ceiling"] = float(np.mean(np.minimum(counts, 10) / 10))
    out["median_relevant"] = float(np.median(counts))
    out["query_expansion"] = int(expand)
    return out


def expansion_note(metrics: dict) -> str | None:
    """A line for scores whose test queries have fewer relevant songs (median) than query expansion adds to them:
    some added songs are then of another label, so the scores understate the model (None when that is not so)."""
    expand, relevant = metrics.get("query_expansion", 0), metrics.get("median_relevant")
    if not expand or relevant is None or relevant >= expand:
        return None
    songs = "song" if relevant == 1 else "songs"
    return (f"note: each query is expanded with its {expand} nearest songs (query_expansion={expand}), but a test "
            f"query has {relevant:g} relevant {songs} in its gallery (median), so expansion pulls in songs of other "
            "labels and can lower these scores; a larger test split or eval.protocol=test_vs_all gives it more, "
            "query_expansion=0 ranks by the seed alone")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict:
    """Single-label: accuracy (argmax). Multi-label (sigmoid, predicted where p ≥ threshold): sample-wise
    accuracy |y∩ŷ|/|y∪ŷ|, exact match, micro and macro F1."""
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true, dtype=bool)
    proba = np.asarray(proba)
    if not (y_true.sum(axis=1) > 1).any():
        pred = proba.argmax(axis=1)
        truth = y_true.argmax(axis=1)
        return {"accuracy": float((pred == truth).mean()),
                "macro_f1": float(f1_score(truth, pred, average="macro", labels=np.unique(truth), zero_division=0))}
    pred = proba >= threshold
    inter = (pred & y_true).sum(axis=1)
    union = (pred | y_true).sum(axis=1)
    return {
        "accuracy": float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0))),
        "exact_match": float(np.mean((pred == y_true).all(axis=1))),
        "micro_f1": float(f1_score(y_true, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, pred, average="macro", zero_division=0)),
    }
