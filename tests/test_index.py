"""siamrec.index: exact search against brute force, faiss recall on clustered data, the saved index, and
recommend with many seeds writing CSV and JSON (on a run made of stored embeddings, no model needed)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from siamrec.commands.recommend import recommend
from siamrec.errors import SiamrecError
from siamrec.index import INDEX_FILE, build_index, choose_method, open_index
from siamrec.runs import mark_finished, read_csv, write_embeddings


def clustered(n: int, d: int = 32, centres: int = 50, seed: int = 0) -> np.ndarray:
    """Rows around random centres, varying in a low-dimensional subspace (like real embeddings)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    basis = rng.normal(size=(8, d)) / np.sqrt(8)
    x = c[rng.integers(0, centres, n)] + 0.7 * rng.normal(size=(n, 8)) @ basis + 0.05 * rng.normal(size=(n, d))
    return x.astype(np.float32)


def brute_force(queries, gallery, k, exclude):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ g.astype(np.float64).T
    sims[np.arange(len(q))[exclude >= 0], exclude[exclude >= 0]] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k], np.sort(sims, axis=1)[:, ::-1][:, :k]


@pytest.mark.parametrize("max_block_bytes", [1, 2**20])
def test_exact_index_matches_brute_force_and_leaves_excluded_rows_out(max_block_bytes):
    from siamrec.index import ExactIndex

    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(500, 24)).astype(np.float32)
    queries = np.concatenate([gallery[:20], rng.normal(size=(10, 24)).astype(np.float32)])
    exclude = np.concatenate([np.arange(20), np.full(10, -1)])
    index = ExactIndex(gallery, max_block_bytes=max_block_bytes)
    idx, sims = index.search(queries, 7, exclude=exclude)
    ref_idx, ref_sims = brute_force(queries, gallery, 7, exclude)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert not (idx[:20] == np.arange(20)[:, None]).any()
    with pytest.raises(ValueError, match="k must be"):
        index.search(queries, 500, exclude=exclude)
    # nothing left out (None, or -1 for every query): each gallery query finds itself first
    ref_idx, _ = brute_force(queries, gallery, 7, np.full(30, -1))
    for nothing in (None, np.full(30, -1)):
        np.testing.assert_array_equal(index.search(queries, 7, exclude=nothing)[0], ref_idx)
    assert (ref_idx[:20, 0] == np.arange(20)).all()
    index.search(queries, 500)  # the whole gallery, when nothing is left out


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_faiss_recall_on_clustered_data(method):
    pytest.importorskip("faiss")
    data = clustered(20200)
    gallery, queries = data[:20000], data[20000:]  # new songs of the same kind as the catalogue
    exact, _ = build_index(gallery).search(queries, 10)
    index = build_index(gallery, method, ivf_nlist=100, ivf_nprobe=8)
    approx, sims = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall >= 0.95, recall
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # most similar first
    # a query from the gallery never gets itself back when excluded
    own, _ = index.search(gallery[:50], 10, exclude=np.arange(50))
    assert not (own == np.arange(50)[:, None]).any()
    # and finds itself first when nothing is left out (None, or -1 for each), as int64 rows
    for nothing in (None, np.full(50, -1)):
        found, sims = index.search(gallery[:50], 10, exclude=nothing)
        assert found.dtype == np.int64 and found.shape == sims.shape == (50, 10)
        assert (found[:, 0] == np.arange(50)).mean() >= 0.95


def test_an_index_shows_the_unit_vectors_it_searches_when_it_keeps_them(tmp_path):
    """The radio rules read the unit vectors of the songs a search has just returned from the index's own copy
    (still in the CPU's caches): ExactIndex's gallery and HNSW's flat storage, also once saved and loaded; faiss
    IVF keeps no such array (None: the rules scale the embeddings)."""
    from siamrec.index import ExactIndex, load_index

    emb = clustered(600, d=16) * np.linspace(0.5, 3, 600, dtype=np.float32)[:, None]
    units = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_allclose(ExactIndex(emb).vectors, units, atol=1e-6)
    pytest.importorskip("faiss")
    hnsw = build_index(emb, "hnsw")
    np.testing.assert_allclose(hnsw.vectors, units, atol=1e-6)
    loaded = load_index(hnsw.save(tmp_path / "index.faiss"))
    np.testing.assert_allclose(loaded.vectors[[5, 599, 0]], units[[5, 599, 0]], atol=1e-6)
    assert build_index(emb, "ivf", ivf_nlist=4).vectors is None


def test_auto_method_follows_the_catalogue_size(cfg_factory):
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(cfg_factory("recommend", "index=faiss").index, {"exact_below": 100, "ivf_above": 1000})
    assert [choose_method(n, cfg) for n in (99, 100, 999, 1000)] == ["exact", "hnsw", "hnsw", "ivf"]
    assert choose_method(10**7, cfg_factory("recommend", "index=exact").index) == "exact"
    with pytest.raises(SiamrecError, match=r"index=.*not a component \(no _target_\); choose one of \['exact', 'faiss'\]"):
        choose_method(10, OmegaConf.create({"kind": "annoy"}))


def test_an_index_kind_is_its_class_and_its_settings_are_the_constructors(cfg_factory):
    from siamrec import schema
    from siamrec.index import ExactSearch, FaissSearch, index_kind

    assert isinstance(index_kind(cfg_factory("recommend").index), ExactSearch)  # the default
    assert isinstance(index_kind(cfg_factory("recommend", "index=faiss").index), FaissSearch)
    spec = schema.constructor_spec("siamrec.index.FaissSearch")
    assert set(spec) == {"method", "exact_below", "ivf_above", "hnsw_m", "ef_construction", "ef_search",
                         "ivf_nlist", "ivf_nprobe"}
    assert spec["ivf_nlist"].ok(None) and spec["ivf_nlist"].ok(8) and not spec["ivf_nlist"].ok(0)
    assert schema.problems({**_job(cfg_factory, "index=faiss"), "index": {
        "_target_": "siamrec.index.FaissSearch", "method": "annoy"}}) == [
        "index.method='annoy': must be one of auto|hnsw|ivf"]


def _job(cfg_factory, *overrides):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg_factory("recommend", *overrides), resolve=True)


def test_faiss_index_is_saved_reused_and_rebuilt_when_the_embeddings_change(tmp_path, cfg_factory, monkeypatch):
    pytest.importorskip("faiss")
    import siamrec.index as index_module

    cfg = cfg_factory("recommend", "index=faiss", "index.method=hnsw").index
    emb = clustered(2000)
    first = open_index(tmp_path, emb, cfg)
    assert first.method == "hnsw" and (tmp_path / INDEX_FILE).is_file()
    built = []
    monkeypatch.setattr(index_module, "build_index", lambda *a, **kw: built.append(1) or build_index(*a, **kw))
    again = open_index(tmp_path, emb, cfg)
    assert not built
    np.testing.assert_array_equal(again.search(emb[:5], 5)[0], first.search(emb[:5], 5)[0])
    changed = emb.copy()
    changed[0] += 1.0
    open_index(tmp_path, changed, cfg)
    assert built == [1]


def fake_run(tmp_path, n=300):
    """A run folder holding only embeddings.npy + items.csv (what recommend reads for library seeds)."""
    run = tmp_path / "run"
    emb = clustered(n, d=16)
    keys = [f"genre{i % 3}/song{i}.mp3" for i in range(n)]
    write_embeddings(run, emb, keys, [f"/music/{k}" for k in keys], [(k.split("/")[0],) for k in keys], [""] * n)
    mark_finished(run)
    return run, emb, keys


@pytest.mark.parametrize("index", ["exact", "faiss"])
def test_recommend_with_a_list_of_seeds_writes_csv_and_json(tmp_path, cfg_factory, index):
    if index == "faiss":
        pytest.importorskip("faiss")
    run, emb, keys = fake_run(tmp_path)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# three songs of the library, by key, path and stem\ngenre0/song0.mp3\n/music/genre1/song1.mp3\n"
                     "song2\n")
    out = tmp_path / "out"
    out.mkdir()
    extra = ["index.method=hnsw"] if index == "faiss" else []
    for name in ("playlists.csv", "playlists.json"):
        recommend(cfg_factory("recommend", f"run={run}", f"recommend.seed={seeds}", "recommend.k=5",
                              f"recommend.out={tmp_path / name}", f"index={index}", *extra), out)
    rows = read_csv(tmp_path / "playlists.csv")
    assert [r["seed"] for r in rows] == [k for k in keys[:3] for _ in range(5)]
    assert all(r["seed"] != r["key"] for r in rows)
    playlists = json.loads((tmp_path / "playlists.json").read_text())
    assert list(playlists) == keys[:3] and all(len(p["playlist"]) == 5 for p in playlists.values())
    # ranked by each seed expanded with its nearest songs (query_expansion), then searched exactly
    expanding = build_index(emb).with_expansion(int(cfg_factory("recommend").query_expansion))
    exact, _ = expanding.search(expanding.expanded(emb[:3], np.arange(3)), 5, exclude=np.arange(3))
    assert [[r["key"] for r in p["playlist"]] for p in playlists.values()] == [[keys[j] for j in row] for row in exact]
    assert (run / INDEX_FILE).is_file() == (index == "faiss")


def test_index_faiss_without_faiss_is_a_one_line_error(tmp_path, cfg_factory, monkeypatch):
    run, _, keys = fake_run(tmp_path)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails as if it were not installed
    cfg = cfg_factory("recommend", f"run={run}", f"recommend.seed={keys[0]}", "index=faiss", "index.method=hnsw")
    with pytest.raises(SiamrecError, match="pip install faiss-cpu") as err:
        recommend(cfg, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["index_garbage", "index_truncated", "meta_garbage"])
def test_a_damaged_saved_index_is_built_again_not_a_traceback(tmp_path, cfg_factory, capsys, damage):
    pytest.importorskip("faiss")
    from siamrec.index import META_FILE

    cfg = cfg_factory("recommend", "index=faiss", "index.method=hnsw").index
    emb = clustered(500)
    first = open_index(tmp_path, emb, cfg)
    target = tmp_path / (META_FILE if damage == "meta_garbage" else INDEX_FILE)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if damage == "index_truncated" else b"\x00 not an index {")
    capsys.readouterr()
    again = open_index(tmp_path, emb, cfg)
    assert "building the index again" in capsys.readouterr().out
    np.testing.assert_array_equal(again.search(emb[:5], 5)[0], first.search(emb[:5], 5)[0])
    assert open_index(tmp_path, emb, cfg).search(emb[:5], 5)[0].tolist() == first.search(emb[:5], 5)[0].tolist()


def expanded_by_hand(emb, queries, expand, exclude):
    """Average query expansion written out: each unit query plus the unit vectors of its `expand` most similar rows
    other than the excluded one and rows equal to the query."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    out = []
    for q, ex in zip(queries, exclude):
        q = q / np.linalg.norm(q)
        sims = unit @ q
        order = [j for j in np.argsort(-sims, kind="stable") if j != ex and sims[j] < 1 - 1e-6][:expand]
        v = q + unit[order].sum(axis=0)
        out.append(v / np.linalg.norm(v))
    return np.array(out)


@pytest.mark.parametrize("method", ["exact", "hnsw", "ivf"])
def test_query_expansion_adds_the_nearest_other_songs(method):
    if method != "exact":
        pytest.importorskip("faiss")
    emb = clustered(2000, d=16)
    emb[7] = emb[3]  # a copy of song 3: no more a neighbour of its twin than the song itself
    index = build_index(emb, method, ivf_nprobe=64).with_expansion(4)
    queries, exclude = emb[[3, 10, 11]], np.array([3, 10, -1])
    np.testing.assert_allclose(index.rows([[3, 10]]), (emb / np.linalg.norm(emb, axis=1, keepdims=True))[[[3, 10]]],
                               atol=1e-6)
    np.testing.assert_allclose(index.expanded(queries, exclude), expanded_by_hand(emb, queries, 4, exclude), atol=1e-5)
    plain = build_index(emb, method, ivf_nprobe=64)
    np.testing.assert_allclose(plain.expanded(queries, exclude), queries / np.linalg.norm(queries, axis=1)[:, None],
                               atol=1e-6)
    with pytest.raises(ValueError, match="expand must be an integer >= 0"):
        plain.with_expansion(-1)


def test_query_expansion_ranks_a_noisy_seed_by_its_cluster():
    """A seed far out in its cluster is ranked by its neighbourhood: more of its own cluster comes first."""
    from siamrec.metrics import retrieval_metrics

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 20, 1000)
    emb = (rng.normal(size=(20, 16))[labels] + 0.9 * rng.normal(size=(1000, 16))).astype(np.float32)
    y = np.eye(20, dtype=bool)[labels]
    own = np.arange(1000)
    index = build_index(emb).with_expansion(5)
    plain = retrieval_metrics(emb, y, emb, y, self_index=own)["map"]
    expanded = retrieval_metrics(index.expanded(emb, own), y, emb, y, self_index=own)["map"]
    assert expanded > plain + 0.02, (plain, expanded)
