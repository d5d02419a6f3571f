"""Protocols, classification metrics, the side-by-side report and the layer study, on small feature sets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from siamrec.commands.evaluate import evaluate
from siamrec.commands.train import train
from siamrec.errors import SiamrecError
from siamrec.evaluation import classification_metrics, score_embeddings
from siamrec.metrics import retrieval_metrics
from siamrec.runs import read_csv, read_embeddings

EVAL = OmegaConf.create({"protocol": "test", "ks": [1, 5, 10], "relevance": "shared", "jaccard_threshold": 0.5})


def clustered(n_per=12, labels=4, dim=160, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels, dim))
    y = np.repeat(np.eye(labels, dtype=bool), n_per, axis=0)
    x = centres[y.argmax(1)] + spread * rng.normal(size=(len(y), dim))
    split = np.array(["train", "valid", "test", "test"] * (len(y) // 4))
    return x.astype(np.float32), y, split


def test_protocol_test_scores_each_split_on_itself():
    x, y, split = clustered()
    out = score_embeddings(x, y, split, EVAL)
    for name in ("train", "valid", "test"):
        m = split == name
        assert out[name]["map"] == pytest.approx(retrieval_metrics(x[m], y[m])["map"], abs=1e-12)
    assert out["n_queries"] == out["test"]["n_queries"] == (split == "test").sum()


def test_protocol_test_vs_all_searches_the_whole_library():
    x, y, split = clustered()
    out = score_embeddings(x, y, split, OmegaConf.merge(EVAL, {"protocol": "test_vs_all"}))
    te = np.flatnonzero(split == "test")
    expected = retrieval_metrics(x[te], y[te], x, y, self_index=te)
    assert out["test"]["map"] == pytest.approx(expected["map"], abs=1e-12)
    assert out["test"]["map"] != pytest.approx(score_embeddings(x, y, split, EVAL)["test"]["map"], abs=1e-6)


def test_protocol_cross_uses_every_item():
    x, y, split = clustered()
    out = score_embeddings(x, y, split, OmegaConf.merge(EVAL, {"protocol": "cross"}))
    assert out["test"]["n_queries"] == len(x)
    with pytest.raises(SiamrecError, match="eval.protocol"):
        score_embeddings(x, y, split, OmegaConf.merge(EVAL, {"protocol": "sideways"}))


def test_classification_metrics_single_and_multi_label():
    y = np.eye(3, dtype=bool)[[0, 1, 2, 2]]
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.0, 0.1, 0.9], [0.3, 0.3, 0.4]])
    assert classification_metrics(y, proba)["accuracy"] == pytest.approx(0.75)
    ym = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=bool)
    pm = np.array([[0.9, 0.6, 0.1], [0.7, 0.8, 0.2], [0.9, 0.1, 0.3]])
    out = classification_metrics(ym, pm, threshold=0.5)
    assert out["exact_match"] == pytest.approx(1 / 3)
    assert out["accuracy"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert out["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))


@pytest.fixture
def features_data(tmp_path):
    x, y, _ = clustered(n_per=15, labels=3, seed=1, spread=3.0)
    np.save(tmp_path / "f.npy", x)
    names = ["rock", "raga", "bhangra"]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "key"])
        for i, row in enumerate(y):
            w.writerow([names[row.argmax()], f"song{i:03d}.wav"])
    return ["data=features", f"data.features=[{tmp_path / 'f.npy'}]", f"data.labels={tmp_path / 'labels.csv'}",
            "data.key_column=key", "split.valid=0.2", "split.test=0.3"]


def test_report_compares_runs_on_the_same_items(tmp_path, cfg_factory, features_data, capsys):
    runs = []
    for model in ("identity", "lda"):  # ranked with 5 neighbours, as the report below
        run = tmp_path / model
        run.mkdir()
        train(cfg_factory("train", f"+model={model}", *features_data, "query_expansion=5"), run)
        runs.append(run)
    out = tmp_path / "report"
    out.mkdir()
    capsys.readouterr()
    results = evaluate(cfg_factory("evaluate", f"runs=[{runs[0]},{runs[1]}]", "query_expansion=5"), out)
    # ~4 test songs per label, 3 relevant others, below an expansion of 5: said once, after the table
    assert max(m["median_relevant"] for m in results.values()) < 5
    printed = capsys.readouterr().out
    assert printed.count("note: each query is expanded") == 1 and printed.index("note:") > printed.index("| lda")
    rows = read_csv(out / "report.csv")
    assert [r["model"] for r in rows] == ["identity", "lda"]
    for run, row in zip(runs, rows):
        saved = json.loads((run / "metrics.json").read_text())["test"]
        assert float(row["map"]) == pytest.approx(saved["map"], abs=1e-9)
        assert int(row["n_queries"]) == saved["n_queries"]
    assert (out / "report.md").read_text().count("\n|") >= 3 and (out / "map_at_k.png").is_file()
    assert set(results) == {str(r) for r in runs}


def test_report_refuses_runs_on_different_items(tmp_path, cfg_factory, features_data):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    train(cfg_factory("train", "+model=identity", *features_data), a)
    train(cfg_factory("train", "+model=identity", *features_data, "seed=5"), b)
    with pytest.raises(SiamrecError, match="another split"):
        evaluate(cfg_factory("evaluate", f"runs=[{a},{b}]"), tmp_path)


def test_layer_study_scores_each_part_set(tmp_path, cfg_factory, audio_folder):
    out = tmp_path / "study"
    out.mkdir()
    # songs ranked by the seed alone: the folder's songs of one label are near copies, whose expansion (copies are
    # not taken) would hang on float rounding between the two paths
    audio = ["data=folder", f"data.root={audio_folder}", "backbone.pretrained=false", "split.test=0.34",
             "query_expansion=0"]
    results = evaluate(cfg_factory("evaluate", "+study=blocks", *audio), out)
    names = [f"block{k}" for k in range(1, 6)]
    assert list(results) == ["+".join(names[:n]) for n in range(1, 6)]
    # the 1-2 set scores exactly what the first 64 columns of the identity run's features score
    ident = tmp_path / "identity"
    ident.mkdir()
    evaluate(cfg_factory("evaluate", "+model=identity", *audio), ident)
    x, items = read_embeddings(ident)
    labels = [it["labels"] for it in items]
    y = np.array([[lab == n for n in sorted(set(labels))] for lab in labels])
    te = np.array([it["split"] for it in items]) == "test"
    expected = retrieval_metrics(x[te][:, :64], y[te])["map"]
    assert results["block1+block2"]["test"]["map"] == pytest.approx(expected, abs=1e-9)
    rows = read_csv(out / "report.csv")
    assert [int(r["dims"]) for r in rows] == [32, 64, 96, 128, 160]


# ------------------------------------------------------------------------------------------ issue 10: no silent results


def test_one_label_is_an_error_not_a_map_of_one():
    x, _, split = clustered()
    y = np.ones((len(x), 1), dtype=bool)
    with pytest.raises(SiamrecError, match="one label only"):
        score_embeddings(x, y, split, EVAL)


def test_a_label_every_song_carries_is_an_error_under_shared_relevance_only():
    x, y, split = clustered()
    y = np.concatenate([y, np.ones((len(y), 1), bool)], axis=1)  # every song also tagged "music"
    with pytest.raises(SiamrecError, match="every song carries the label 'music'"):
        score_embeddings(x, y, split, EVAL, label_names=["a", "b", "c", "d", "music"])
    jaccard = OmegaConf.merge(EVAL, {"relevance": "jaccard", "jaccard_threshold": 0.6})
    assert 0 < score_embeddings(x, y, split, jaccard)["test"]["map"] <= 1


def test_a_test_split_without_a_scorable_query_names_the_cause():
    x, y, _ = clustered(n_per=4, labels=4)
    split = np.array(["train"] * len(x))
    split[[0, 4, 8, 12]] = "test"  # one test song per label: none has a relevant song in the test split
    with pytest.raises(SiamrecError) as e:
        score_embeddings(x, y, split, EVAL)
    assert "no test query can be scored" in str(e.value) and "4 test songs" in str(e.value)
    assert "test_vs_all" in str(e.value)  # what to do instead
    vs_all = OmegaConf.merge(EVAL, {"protocol": "test_vs_all"})
    assert score_embeddings(x, y, split, vs_all)["test"]["n_queries"] == 4  # the advice works


def test_p_at_10_ceiling_is_what_a_perfect_embedding_reaches():
    from siamrec.metrics import retrieval_metrics

    x, y, split = clustered(n_per=12, labels=4)  # 6 test songs per label: at most 5 relevant others each
    out = score_embeddings(x, y, split, EVAL)
    assert out["p@10_ceiling"] == pytest.approx(0.5)
    perfect = y.astype(np.float32) + 1e-3 * np.random.default_rng(0).normal(size=y.shape)  # label = embedding
    test = split == "test"
    assert retrieval_metrics(perfect[test], y[test])["p@10"] == pytest.approx(out["p@10_ceiling"])
    vs_all = score_embeddings(x, y, split, OmegaConf.merge(EVAL, {"protocol": "test_vs_all"}))
    assert vs_all["p@10_ceiling"] == pytest.approx(1.0)  # 11 relevant others in the whole library


def test_scoring_ranks_each_query_expanded_with_its_nearest_songs_of_the_gallery():
    """With expand=k every query is scored as a playlist ranks it: its unit vector plus those of its k nearest other
    songs of the gallery (the query left out), re-normalised; train, valid and test each their own gallery."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 90)
    emb = (rng.normal(size=(3, 8))[labels] + 1.2 * rng.normal(size=(90, 8))).astype(np.float32)
    y = np.eye(3, dtype=bool)[labels]
    split = np.array(["train"] * 50 + ["valid"] * 10 + ["test"] * 30)
    got = score_embeddings(emb, y, split, EVAL, expand=3)
    for part in ("valid", "test"):
        rows = np.flatnonzero(split == part)
        unit = emb[rows] / np.linalg.norm(emb[rows], axis=1, keepdims=True)
        queries = []
        for i, q in enumerate(unit):
            near = [j for j in np.argsort(-(unit @ q), kind="stable") if j != i][:3]
            v = q + unit[near].sum(axis=0)
            queries.append(v / np.linalg.norm(v))
        expected = retrieval_metrics(np.array(queries), y[rows], emb[rows], y[rows], self_index=np.arange(len(rows)),
                                     ks=tuple(EVAL["ks"]))["map"]
        assert got[part]["map"] == pytest.approx(expected, abs=1e-6)
    assert got["test"]["map"] != score_embeddings(emb, y, split, EVAL)["test"]["map"]


def test_a_test_split_with_fewer_relevant_songs_than_the_expansion_says_so(capsys):
    """Expansion adds a query's k nearest songs; when a test query has fewer than k relevant songs in its gallery
    some of them are necessarily of another label, so the printed scores say so (once), and only then."""
    from siamrec.pipeline import print_scores

    x, y, split = clustered(n_per=12, labels=4)  # 6 test songs per label: 5 relevant others each
    few = score_embeddings(x, y, split, EVAL, expand=8)
    assert few["median_relevant"] == 5 and few["query_expansion"] == 8
    print_scores(few)
    out = capsys.readouterr().out
    assert out.count("note:") == 1 and "query_expansion=8" in out and "5 relevant songs" in out
    print_scores({**few, "median_relevant": 1})
    assert "has 1 relevant song in its gallery" in capsys.readouterr().out
    for enough in (score_embeddings(x, y, split, EVAL, expand=5), score_embeddings(x, y, split, EVAL)):
        print_scores(enough)
        assert "note:" not in capsys.readouterr().out
    vs_all = score_embeddings(x, y, split, OmegaConf.merge(EVAL, {"protocol": "test_vs_all"}), expand=8)
    assert vs_all["median_relevant"] == 11  # the whole library holds 11 other songs of each label
    print_scores(vs_all)
    assert "note:" not in capsys.readouterr().out
