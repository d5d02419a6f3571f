"""Tests of siamrec.metrics: hand-computed rankings, a brute-force reference, blocking."""

import math
import tracemalloc

import numpy as np
import pytest

from siamrec.index import ExactIndex
from siamrec.metrics import retrieval_metrics


def angles(*degrees):
    """2-D unit vectors; a query at 0 degrees ranks them by increasing angle."""
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def multi_hot(label_sets, n_labels):
    y = np.zeros((len(label_sets), n_labels), dtype=bool)
    for row, labels in enumerate(label_sets):
        y[row, list(labels)] = True
    return y


QUERY = angles(0)
A, B, C = 0, 1, 2


# --------------------------------------------------------------------------- hand-computed

def test_single_label_hand_computed():
    # Gallery indices 0..4 sit at 30, 0, 40, 10, 20 degrees: ranking 1, 3, 4, 0, 2.
    gallery = angles(30, 0, 40, 10, 20)
    labels = multi_hot([{B}, {A}, {B}, {C}, {A}], 3)  # relevant (label A): 1 and 4
    # ranked relevance: 1 0 1 0 0, R = 2
    m = retrieval_metrics(QUERY, multi_hot([{A}], 3), gallery, labels, ks=(1, 3, 10))
    expected = {
        "map": (1 / 1 + 2 / 3) / 2,
        "map@r": (1 / 1) / 2,
        "r_precision": 1 / 2,
        "map@1": 1.0, "p@1": 1.0, "recall@1": 1 / 2, "ndcg@1": 1.0,
        "map@3": (1 / 1 + 2 / 3) / 2, "p@3": 2 / 3, "recall@3": 1.0,
        "ndcg@3": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)),
        "map@10": (1 / 1 + 2 / 3) / 2, "p@10": 2 / 10, "recall@10": 1.0,  # k > gallery size
        "ndcg@10": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)),
        "n_queries": 1, "n_skipped": 0,
    }
    assert m.keys() == expected.keys()
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name


def test_map_at_k_divides_by_min_of_r_and_k():
    gallery = angles(0, 10, 20, 30, 40)
    labels = multi_hot([{B}, {A}, {A}, {A}, {B}], 2)  # ranked relevance: 0 1 1 1 0, R = 3
    m = retrieval_metrics(QUERY, multi_hot([{A}], 2), gallery, labels, ks=(2, 4))
    assert m["map@2"] == pytest.approx((1 / 2) / 2)
    assert m["map@4"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    assert m["map@r"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert m["r_precision"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    assert m["recall@2"] == pytest.approx(1 / 3)


def test_ties_broken_by_gallery_index():
    # Items 0 and 1 are identical and most similar; 0 is non-relevant so it ranks first.
    gallery = angles(10, 10, 20)
    labels = multi_hot([{B}, {A}, {A}], 2)  # ranked relevance: 0 1 1
    m = retrieval_metrics(QUERY, multi_hot([{A}], 2), gallery, labels, ks=(1,))
    assert m["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["p@1"] == 0.0


def test_query_excluded_from_its_own_ranking_and_skipped_when_nothing_is_relevant():
    emb = angles(0, 10, 20, 30)
    labels = multi_hot([{A}, {B}, {A}, {C}], 3)
    m = retrieval_metrics(emb, labels, ks=(1,))
    # query 0 ranks 1, 2, 3 -> relevance 0 1 0; query 2 ranks 1, 3, 0 -> 0 0 1;
    # queries 1 and 3 have no other item with their label.
    assert (m["n_queries"], m["n_skipped"]) == (2, 2)
    assert m["map"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert m["p@1"] == 0.0


def test_self_index_excludes_the_named_gallery_row():
    gallery = angles(0, 10, 20)
    labels = multi_hot([{A}, {B}, {A}], 2)
    query_labels = multi_hot([{A}, {A}], 2)
    queries = angles(0, 0)
    with_self = retrieval_metrics(queries, query_labels, gallery, labels, self_index=[0, -1],
                                  ks=(1,))
    # query 0 (gallery row 0 excluded): ranking 1, 2 -> AP 1/2;
    # query 1: ranking 0, 1, 2 -> AP (1 + 2/3)/2
    assert with_self["map"] == pytest.approx((1 / 2 + (1 + 2 / 3) / 2) / 2)


def test_graded_ndcg_and_shared_relevance_multi_label():
    gallery = angles(0, 10, 20, 30)
    labels = multi_hot([{A}, {A, B}, {C}, {A, C}], 3)  # overlaps with {A, B}: 1 2 0 1
    m = retrieval_metrics(QUERY, multi_hot([{A, B}], 3), gallery, labels, ks=(2, 3))
    ideal3 = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx((1 + 2 / math.log2(3)) / ideal3)
    assert m["ndcg@2"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert m["map"] == pytest.approx((1 + 1 + 3 / 4) / 3)  # relevance 1 1 0 1
    assert m["p@3"] == pytest.approx(2 / 3)


def test_jaccard_relevance_and_gain():
    gallery = angles(0, 10, 20, 30)
    labels = multi_hot([{A, C}, {A}, {A, B}, {C}], 3)  # Jaccard with {A, B}: 1/3 1/2 1 0
    m = retrieval_metrics(QUERY, multi_hot([{A, B}], 3), gallery, labels, ks=(2,),
                          relevance="jaccard", jaccard_threshold=0.5)
    # relevant: items 1 and 2 at ranks 2 and 3, gains 1/2 and 1
    assert m["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["r_precision"] == pytest.approx(1 / 2)
    assert m["ndcg@2"] == pytest.approx((0.5 / math.log2(3)) / (1 + 0.5 / math.log2(3)))
    strict = retrieval_metrics(QUERY, multi_hot([{A, B}], 3), gallery, labels, ks=(2,),
                               relevance="jaccard", jaccard_threshold=1.0)
    assert strict["map"] == pytest.approx(1 / 3)


def test_no_evaluable_query_gives_nan():
    m = retrieval_metrics(angles(0, 10), multi_hot([{A}, {B}], 2))
    assert (m["n_queries"], m["n_skipped"]) == (0, 2)
    assert math.isnan(m["map"])


# --------------------------------------------------------------------------- brute force

def unit(v):
    norm = np.sqrt(v @ v)
    return v / norm if norm > 0 else v


def reference_metrics(q, yq, g, yg, self_index, ks, relevance="shared", threshold=0.5):
    """Plain per-query implementation of the metric definitions."""
    gn = np.array([unit(v) for v in np.asarray(g, dtype=np.float64)])
    totals, n_eval, n_skip = {}, 0, 0
    for i, qv in enumerate(np.asarray(q, dtype=np.float64)):
        sims = gn @ unit(qv)
        gains = []
        for j in range(len(gn)):
            shared = int(np.sum(yq[i] & yg[j]))
            if relevance == "shared":
                gains.append(float(shared))
            else:
                union = int(np.sum(yq[i] | yg[j]))
                jac = shared / union if union else 0.0
                gains.append(jac if jac >= threshold else 0.0)
        candidates = np.array([j for j in range(len(gn)) if j != self_index[i]], dtype=np.int64)
        ranked = candidates[np.argsort(-sims[candidates], kind="stable")]
        rel = [gains[j] > 0 for j in ranked]
        ranked_gains = [gains[j] for j in ranked]
        n_rel = sum(rel)
        if n_rel == 0:
            n_skip += 1
            continue
        n_eval += 1
        precisions = []  # (position, precision) of relevant positions
        hits = 0
        for pos, r in enumerate(rel, start=1):
            if r:
                hits += 1
                precisions.append((pos, hits / pos))
        values = {
            "map": sum(p for _, p in precisions) / n_rel,
            "map@r": sum(p for pos, p in precisions if pos <= n_rel) / n_rel,
            "r_precision": sum(rel[:n_rel]) / n_rel,
        }
        ideal = sorted(ranked_gains, reverse=True)
        for k in ks:
            values[f"map@{k}"] = sum(p for pos, p in precisions if pos <= k) / min(n_rel, k)
            values[f"p@{k}"] = sum(rel[:k]) / k
            values[f"recall@{k}"] = sum(rel[:k]) / n_rel
            dcg = sum(gain / math.log2(pos + 2) for pos, gain in enumerate(ranked_gains[:k]))
            idcg = sum(gain / math.log2(pos + 2) for pos, gain in enumerate(ideal[:k]))
            values[f"ndcg@{k}"] = dcg / idcg
        for name, value in values.items():
            totals[name] = totals.get(name, 0.0) + value
    out = {name: total / n_eval for name, total in totals.items()}
    out.update(n_queries=n_eval, n_skipped=n_skip)
    return out


def gaussian_data(seed, n, dim=16, n_labels=6, multi_label=False):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim))
    if multi_label:
        labels = rng.random((n, n_labels)) < 0.2
    else:
        labels = np.eye(n_labels, dtype=bool)[rng.integers(0, n_labels, n)]
    labels[: n // 10] = False  # label-less items: nothing is relevant to their queries
    return emb, labels


def exact_tie_data(seed, n, dim=6, n_labels=4, multi_label=True):
    """Embeddings whose cosines are exact multiples of 1/4: many exact ties and duplicates."""
    rng = np.random.default_rng(seed)
    emb = np.zeros((n, dim))
    for row in emb:
        support = rng.choice(dim, size=rng.choice([0, 1, 4]), replace=False)  # norm 0, 1 or 2
        row[support] = rng.choice([-1.0, 1.0], size=len(support))
    emb[1::7] = emb[0]  # duplicated rows with unrelated labels
    labels = (rng.random((n, n_labels)) < 0.35) if multi_label else \
        np.eye(n_labels, dtype=bool)[rng.integers(0, n_labels, n)]
    return emb * rng.choice([1.0, 3.0], size=(n, 1)), labels  # scale: same cosines


def assert_metrics_close(actual, expected, tol=1e-9):
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=tol, rel=0), name


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("multi_label", [False, True])
def test_matches_brute_force_on_random_data(seed, multi_label):
    emb, labels = gaussian_data(seed, 90, multi_label=multi_label)
    ks = (1, 5, 10, 200)
    expected = reference_metrics(emb, labels, emb, labels, np.arange(len(emb)), ks)
    assert expected["n_skipped"] > 0
    assert_metrics_close(retrieval_metrics(emb, labels, ks=ks), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("relevance", ["shared", "jaccard"])
def test_matches_brute_force_with_exact_ties(seed, relevance):
    emb, labels = exact_tie_data(seed, 80)
    ks = (1, 3, 10)
    expected = reference_metrics(emb, labels, emb, labels, np.arange(len(emb)), ks, relevance, 0.5)
    actual = retrieval_metrics(emb, labels, ks=ks, relevance=relevance, jaccard_threshold=0.5)
    assert_metrics_close(actual, expected)


@pytest.mark.parametrize("relevance", ["shared", "jaccard"])
def test_matches_brute_force_with_separate_gallery(relevance):
    emb, labels = exact_tie_data(5, 120, multi_label=True)
    gallery_rows = np.arange(30, 120)
    query_rows = np.arange(0, 60)  # 0..29 are not in the gallery, 30..59 are
    position = np.full(len(emb), -1)
    position[gallery_rows] = np.arange(len(gallery_rows))
    self_index = position[query_rows]
    assert (self_index == -1).any() and (self_index >= 0).any()
    ks = (1, 5, 10)
    args = (emb[query_rows], labels[query_rows], emb[gallery_rows], labels[gallery_rows])
    expected = reference_metrics(*args, self_index, ks, relevance, 1 / 3)
    actual = retrieval_metrics(*args, self_index=self_index, ks=ks, relevance=relevance,
                               jaccard_threshold=1 / 3)
    assert_metrics_close(actual, expected)


def test_single_label_ties_against_brute_force():
    emb, labels = exact_tie_data(3, 70, multi_label=False)
    expected = reference_metrics(emb, labels, emb, labels, np.arange(len(emb)), (1, 5))
    assert_metrics_close(retrieval_metrics(emb, labels, ks=(1, 5)), expected)


# --------------------------------------------------------------------------- blocking and memory

@pytest.mark.parametrize("data", [gaussian_data(7, 150, multi_label=True), exact_tie_data(7, 150)])
def test_block_size_does_not_change_results(data):
    emb, labels = data
    one_row_blocks = retrieval_metrics(emb, labels, max_block_bytes=1)
    few_row_blocks = retrieval_metrics(emb, labels, max_block_bytes=64 * 150 * 7)
    single_block = retrieval_metrics(emb, labels)
    assert one_row_blocks == single_block
    assert few_row_blocks == single_block


@pytest.mark.parametrize("search", [
    lambda emb, labels, budget: retrieval_metrics(emb, labels, max_block_bytes=budget),
    lambda emb, labels, budget: ExactIndex(emb, max_block_bytes=budget).search(emb, 10, exclude=np.arange(len(emb))),
], ids=["retrieval_metrics", "exact_index"])
def test_memory_stays_within_the_block_budget(search):
    n, budget = 4000, 2**20
    emb, labels = gaussian_data(0, n, dim=8)
    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        search(emb, labels, budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one n x n float64 matrix would be 128 MB; inputs, copies and outputs are O(n)
    assert peak < 6 * budget


# --------------------------------------------------------------------------- exact top-k search (siamrec.index)

def brute_force_topk(q, g, k, self_index):
    gn = np.array([unit(v) for v in np.asarray(g, dtype=np.float64)])
    indices, sims = [], []
    for i, qv in enumerate(np.asarray(q, dtype=np.float64)):
        s = gn @ unit(qv)
        candidates = np.array([j for j in range(len(gn)) if j != self_index[i]])
        top = candidates[np.argsort(-s[candidates], kind="stable")][:k]
        indices.append(top)
        sims.append(s[top])
    return np.array(indices), np.array(sims)


@pytest.mark.parametrize("data", [gaussian_data(3, 60), exact_tie_data(3, 60)])
@pytest.mark.parametrize("max_block_bytes", [1, 2**20])
def test_exact_top_k_matches_brute_force_and_excludes_self(data, max_block_bytes):
    emb, _ = data
    indices, sims = ExactIndex(emb, max_block_bytes=max_block_bytes).search(emb, 7, exclude=np.arange(len(emb)))
    expected_indices, expected_sims = brute_force_topk(emb, emb, 7, np.arange(len(emb)))
    assert indices.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(sims, expected_sims, atol=1e-6)
    assert not (indices == np.arange(len(emb))[:, None]).any()


def test_exact_top_k_with_separate_gallery_and_excluded_rows():
    emb, _ = exact_tie_data(4, 50)
    self_index = np.array([-1, 3, -1, 10, 0])
    indices, _ = ExactIndex(emb[5:], max_block_bytes=1).search(emb[:5], 45 - 1, exclude=self_index)
    expected, _ = brute_force_topk(emb[:5], emb[5:], 44, self_index)
    np.testing.assert_array_equal(indices, expected)


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, message", [
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((2, 2), bool)), "rows"),
    (dict(query_emb=np.ones(3), query_labels=np.ones((3, 2), bool)), "2-D"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones(3, bool)), "2-D"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.full((3, 2), 2)), "0 and 1"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((3, 2), bool), ks=(0,)), "ks"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((3, 2), bool), relevance="cos"),
     "relevance"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((3, 2), bool), relevance="jaccard",
          jaccard_threshold=0), "jaccard_threshold"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((3, 2), bool),
          gallery_emb=np.ones((4, 3)), gallery_labels=np.ones((4, 2), bool)), "dim"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((3, 2), bool),
          gallery_emb=np.ones((4, 2)), gallery_labels=np.ones((4, 3), bool)), "labels"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((3, 2), bool),
          gallery_emb=np.ones((4, 2)), gallery_labels=np.ones((4, 2), bool), self_index=[0, 4, -1]),
     "self_index"),
    (dict(query_emb=np.ones((3, 2)), query_labels=np.ones((3, 2), bool),
          gallery_emb=np.ones((4, 2))), "together"),
    (dict(query_emb=np.full((3, 2), np.nan), query_labels=np.ones((3, 2), bool)), "NaN"),
])
def test_invalid_inputs_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(**kwargs)


@pytest.mark.parametrize("k", [0, 5, 2.0])
def test_exact_top_k_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        ExactIndex(np.ones((5, 2))).search(np.ones((5, 2)), k, exclude=np.arange(5))
