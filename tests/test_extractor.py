"""The one extractor: window plans and seeking, pooling, the fingerprint, and a third backbone that plugs in
through its own module and YAML only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from siamrec.data.audio import WARMUP_FRAMES, WARMUP_SECONDS, WindowPlan, decode_windows, parse_windows
from siamrec.errors import SiamrecError
from siamrec.extractor import Extractor, check_clip, fingerprint, pool_windows, pooled_parts

TOY = [f"hydra.searchpath=[file://{Path(__file__).parent / 'toy_conf'}]", "backbone=toy8k"]


def toy_extractor(clip=None, **kw):
    from toy_bundle import Toy8k

    bundle = Toy8k()
    clip = {"sr": 8000, "duration": 1.0, "windows": "first", "offset": "start", "hop": None, "max_windows": 64,
            "pool": "mean", **(clip or {})}
    return Extractor(bundle, bundle.build(None), OmegaConf.create(clip), batch_size=3, **kw)


# --- window plans -------------------------------------------------------------------------------------------------
def test_window_plans():
    plan = dict(sr=100, window=100, hop=100)
    assert WindowPlan(**plan).starts(1000) == [0]
    assert WindowPlan(**plan, offset="middle").starts(1000) == [450]
    assert WindowPlan(**plan, mode="spread", count=4).starts(1000) == [0, 300, 600, 900]
    assert WindowPlan(**plan, mode="spread", count=4).starts(150) == [0, 25, 50]  # at most 3/4 overlap
    assert WindowPlan(**plan, mode="spread", count=4).starts(110) == [0]
    assert WindowPlan(**plan, mode="all").starts(1000) == list(range(0, 1000, 100))
    assert WindowPlan(**plan, mode="all").starts(1050) == list(range(0, 1000, 100))  # the partial tail is dropped
    assert WindowPlan(**plan, mode="all", max_windows=3).starts(1000) == [0, 400, 900]  # spread evenly when capped
    for mode in ("spread", "all"):  # a song shorter than a window: one (padded) window
        assert WindowPlan(**plan, mode=mode, count=3).starts(60) == [0]
    # a model reading `context` samples around its window: a window is complete when its body is inside the song
    assert WindowPlan(sr=100, window=120, context=10, hop=100, mode="all").starts(300) == [0, 100, 200]
    assert [parse_windows(s) for s in ("first", "spread:3", "all")] == [("first", 1), ("spread", 3), ("all", 0)]
    for bad in ("spread", "spread:0", "spread:x", "every", "all:2"):
        with pytest.raises(ValueError, match="clip.windows"):
            parse_windows(bad)


@pytest.mark.parametrize("native", [8000, 22050, 44100])
def test_windows_are_read_by_seeking_and_equal_the_whole_song_resampled(tmp_path, native, monkeypatch):
    import soxr

    rng = np.random.default_rng(0)
    frames_read = []
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, n=-1, *a, **k: frames_read.append(n) or real_read(self, n, *a, **k))
    plan = WindowPlan(sr=8000, window=8000, hop=8000, mode="spread", count=4)
    per_song = {}
    for minutes in (1, 3):
        x = (0.1 * rng.normal(size=int(native * 60 * minutes))).astype(np.float32)
        path = tmp_path / f"{minutes}.flac"
        sf.write(path, x, native, subtype="PCM_24")
        frames_read.clear()
        windows = decode_windows(path, plan)
        assert windows.shape == (4, 8000)
        per_song[minutes] = sum(frames_read)
        # K windows with their margins and the decoder's warm-up, and the last second (the song's real end):
        # never the whole song
        assert per_song[minutes] < 4 * (1.1 * native + max(WARMUP_SECONDS * native, WARMUP_FRAMES)) + native
        # each window equals the same samples of the whole song resampled at once
        decoded = sf.read(path, dtype="float32")[0]
        whole = decoded if native == 8000 else soxr.resample(decoded, native, 8000, quality="HQ")
        for w, s in zip(windows, plan.starts(len(x) * 8000 // native)):
            ref = whole[s:s + 8000]
            assert np.abs(w[:len(ref)] - ref).max() <= (0 if native == 8000 else 2e-3)
    assert per_song[3] == per_song[1]  # decoding cost does not grow with the song's length


def test_a_short_song_gives_one_padded_window(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, np.ones(3000, np.float32) * 0.5, 8000)
    for mode, count in (("first", 1), ("spread", 4), ("all", 0)):
        w = decode_windows(path, WindowPlan(sr=8000, window=8000, hop=8000, mode=mode, count=count))
        assert w.shape == (1, 8000) and np.all(w[0, :3000] == 0.5) and np.all(w[0, 3000:] == 0)


def test_context_reads_zeros_before_the_song_and_real_samples_after_the_window_start(tmp_path):
    x = (np.arange(2000) + 1).astype(np.float32) / 4000
    path = tmp_path / "ramp.wav"
    sf.write(path, x, 1000, subtype="FLOAT")
    w = decode_windows(path, WindowPlan(sr=1000, window=600, context=100, hop=400, mode="all"))
    assert len(w) == 5  # bodies of 400 samples at 0, 400, 800, 1200, 1600 (the last one ends at the song's end)
    np.testing.assert_array_equal(w[4, :500], x[1500:])
    np.testing.assert_array_equal(w[4, 500:], 0)
    np.testing.assert_array_equal(w[0, :100], 0)
    np.testing.assert_array_equal(w[0, 100:], x[:500])
    np.testing.assert_array_equal(w[1], x[300:900])


# --- pooling and the extractor ------------------------------------------------------------------------------------
def test_the_same_songs_through_the_same_model_are_extracted_once_per_process(tmp_path, monkeypatch):
    """Without the feature cache, a second extractor of the same model (each head input builds its own) gets the
    songs' vectors without decoding them again; a changed file, or another model, is extracted afresh."""
    import os

    from siamrec.extractor.batching import Extractor
    from toy_bundle import song

    calls = []
    stream = Extractor.stream

    def counted(self, items, *args, **kwargs):
        calls.append(len(items))
        return stream(self, items, *args, **kwargs)

    monkeypatch.setattr(Extractor, "stream", counted)
    paths = [str(song(tmp_path / f"{n}.wav", [f])) for n, f in (("a", 220), ("b", 880))]
    first = toy_extractor().song_features(paths)
    again = toy_extractor().song_features(paths)
    assert calls == [2] and np.array_equal(first.vectors, again.vectors)
    again.vectors[:] = 0  # the caller's copy: what is remembered is not changed through it
    assert np.array_equal(toy_extractor().song_features(paths).vectors, first.vectors) and calls == [2]
    os.utime(paths[1], ns=(1, 1))  # the file changed (its mtime)
    toy_extractor().song_features(paths)
    other = toy_extractor({"pool": "mean_std"}).song_features(paths)
    assert calls == [2, 2, 2] and other.vectors.shape[1] == 2 * first.vectors.shape[1]


def test_a_song_of_two_halves_pools_between_its_halves(tmp_path):
    from toy_bundle import song

    ex = toy_extractor({"windows": "spread:2"})
    a, b, both = (song(tmp_path / f"{n}.wav", h) for n, h in (("a", [220]), ("b", [1760]), ("ab", [220, 1760])))
    sf_ = ex.song_features([str(a), str(b), str(both)], keep_windows=True)
    va, vb, vab = sf_.vectors
    assert [len(w) for w in sf_.windows] == [1, 1, 2]
    np.testing.assert_allclose(vab, (va + vb) / 2, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(va - vb) > 0.1  # the halves really differ
    std = toy_extractor({"windows": "spread:2", "pool": "mean_std"}).song_features([str(both)]).vectors[0]
    assert std.shape == (48,)
    np.testing.assert_allclose(std[:24], vab, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std[24:], np.abs(va - vb) / 2, rtol=1e-4, atol=1e-6)


def test_stream_keeps_the_order_and_reports_failures_in_place(tmp_path):
    from toy_bundle import song

    paths = [str(song(tmp_path / f"{i}.wav", [200 + 100 * i] * (1 + i % 3))) for i in range(7)]
    (tmp_path / "bad.wav").write_bytes(b"RIFF junk")
    paths.insert(3, str(tmp_path / "bad.wav"))
    ex = toy_extractor({"windows": "all"})
    got = list(ex.stream(list(enumerate(paths))))
    assert [g[0] for g in got] == list(range(8))
    assert got[3][1] is None and got[3][2]
    one_by_one = [ex.embed_windows(decode_windows(p, ex.plan)) for p in paths if "bad" not in p]
    for (_, feats, _, _), ref in zip([g for g in got if g[2] is None], one_by_one):
        np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-6)  # batches never mix songs up


def test_pooled_layout_and_pooling():
    assert pooled_parts({"a": 2, "b": 3}, "mean_std") == {"a": 2, "b": 3, "a_std": 2, "b_std": 3}
    assert pooled_parts({"a": 2, "b": 3}, "unit_mean") == {"a": 2, "b": 3}
    f = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(pool_windows(f, "mean", {"a": 2}), [2, 4])
    np.testing.assert_allclose(pool_windows(f, "mean_std", {"a": 2}), [2, 4, 1, 2])


def test_unit_mean_pooling_weighs_every_window_of_every_part_alike():
    """clip.pool=unit_mean: each window's vector of each part scaled to unit length, then the mean; a window ten
    times louder in one part weighs no more there, and the other part is untouched by it."""
    rng = np.random.default_rng(0)
    parts = {"a": 3, "b": 2}
    f = rng.normal(size=(4, 5)).astype(np.float32)
    a, b = f[:, :3], f[:, 3:]
    want = np.concatenate([(a / np.linalg.norm(a, axis=1, keepdims=True)).mean(0),
                           (b / np.linalg.norm(b, axis=1, keepdims=True)).mean(0)])
    before = f.copy()
    np.testing.assert_allclose(pool_windows(f, "unit_mean", parts), want, rtol=1e-5)
    np.testing.assert_array_equal(f, before)  # the window features are not changed in place
    loud = f.copy()
    loud[0, :3] *= 10
    np.testing.assert_allclose(pool_windows(loud, "unit_mean", parts), want, rtol=1e-5)
    assert not np.allclose(pool_windows(loud, "mean", parts), pool_windows(f, "mean", parts))
    silent = f.copy()
    silent[1, 3:] = 0  # a zero window stays zero (no division by zero)
    got = pool_windows(silent, "unit_mean", parts)
    assert np.isfinite(got).all() and np.allclose(got[:3], want[:3])


def test_the_fingerprint_changes_with_every_clip_and_backbone_setting(monkeypatch):
    import siamrec.extractor.fingerprints as fingerprints
    from toy_bundle import Toy8k

    ex = toy_extractor()
    base = ex.fingerprint
    assert toy_extractor().fingerprint == base  # deterministic
    for change in ({"windows": "spread:2"}, {"windows": "all"}, {"offset": "middle"}, {"hop": 0.5},
                   {"max_windows": 8}, {"pool": "mean_std"}, {"some_new_setting": 1}):
        assert toy_extractor(change).fingerprint != base, change
    other = Toy8k(seed=8)
    assert fingerprint(other, other.build(None), ex.clip) != base  # other weights
    assert fingerprint(Toy8k(pretrained=False), ex.model, ex.clip) != base  # another bundle spec
    # features decoded by an earlier reader (one that read MP3s wrongly) are not reused
    monkeypatch.setattr(fingerprints, "DECODER_VERSION", fingerprints.DECODER_VERSION - 1)
    assert ex.fingerprint != base


def test_clip_settings_that_contradict_the_backbone_are_refused():
    from toy_bundle import Toy8k

    good = {"sr": 8000, "duration": 1.0, "windows": "first", "offset": "start", "hop": None, "max_windows": 4,
            "pool": "mean"}
    check_clip(good, Toy8k())
    for bad, words in (({"sr": 12000}, "clip.sr=12000"), ({"duration": 2.0}, "clip.duration"),
                       ({"windows": "most"}, "clip.windows"), ({"pool": "max"}, "clip.pool"),
                       ({"hop": -1}, "clip.hop"), ({"max_windows": 0}, "clip.max_windows")):
        with pytest.raises(SiamrecError, match=words):
            check_clip({**good, **bad}, Toy8k())


# --- a third backbone through its own module and YAML ---------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_library(tmp_path_factory):
    from toy_bundle import song

    root = tmp_path_factory.mktemp("toy_library")
    for label, base in (("low", 150), ("mid", 700), ("high", 2500)):
        (root / label).mkdir()
        for i in range(6):
            song(root / label / f"{label}_{i}.wav", [base * (1 + 0.05 * i), base * (1.1 + 0.05 * i)], sr=16000)
    return root


def test_a_third_backbone_trains_evaluates_extracts_and_recommends(toy_library, tmp_path, cfg_factory):
    from siamrec.commands.evaluate import evaluate
    from siamrec.commands.extract import extract
    from siamrec.commands.recommend import recommend
    from siamrec.commands.train import train
    from siamrec.runs import read_embeddings

    data = ["data=folder", f"data.root={toy_library}", "split.valid=0.17", "split.test=0.34", *TOY,
            "clip.windows=spread:2", "plots=false"]
    ident = tmp_path / "identity"
    ident.mkdir()
    metrics = evaluate(cfg_factory("evaluate", "+model=identity", *data), ident)
    assert read_embeddings(ident)[0].shape == (18, 24) and metrics["test"]["map"] > 0
    run = tmp_path / "siamese"
    run.mkdir()
    train(cfg_factory("train", "+model=siamese", "model.epochs=2", "model.m_per_class=2", "model.train_on=windows",
                      "model.ensemble=2",
                      "features.parts=[high]", *data), run)
    (member,) = json.loads((run / "extractor.json").read_text())["members"]
    assert member["backbone"]["_target_"] == "toy_bundle.Toy8k" and member["parts"] == ["high"]
    out = tmp_path / "extracted"
    extract(cfg_factory("extract", f"run={run}", f"data.root={toy_library}", "data=folder",
                        f"extract.out={out}", *TOY), tmp_path)
    emb, items = read_embeddings(out)
    ref, ref_items = read_embeddings(run)
    ref_by_key = {it["key"]: r for it, r in zip(ref_items, ref)}
    for it, row in zip(items, emb):
        np.testing.assert_allclose(row, ref_by_key[it["key"]], rtol=1e-4, atol=1e-5)
    seed = toy_library / "low" / "low_2.wav"
    rows = recommend(cfg_factory("recommend", f"run={out}", f"recommend.seed={seed}", "recommend.k=3"), tmp_path)
    assert len(rows) == 3 and all(r[3] != "low/low_2.wav" for r in rows)
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    train(cfg_factory("train", "+model=baseline", "model.epochs=1", "model.trainable=[frames]", *data), baseline)
    assert read_embeddings(baseline)[0].shape == (18, 24)


def test_combined_backbones_are_standardised_saved_and_reapplied(toy_library, tmp_path, cfg_factory, shared):
    """features.combine appends another backbone's parts, each backbone standardised and scaled by 1/sqrt(width);
    a run re-encodes new songs with the saved statistics."""
    from siamrec.embedder import embed_new_songs
    from siamrec.commands.train import train
    from siamrec.runs import read_embeddings

    run = tmp_path / "combined"
    run.mkdir()
    cfg = cfg_factory("train", "+model=identity", "data=folder", f"data.root={toy_library}", *TOY,
                      "features.parts=[low]", "plots=false", f"paths.shared={shared}", "split.test=0.34",
                      "features.combine=[{backbone:choi2017_keras2,parts:[block5]}]")
    train(cfg, run)
    emb, items = read_embeddings(run)
    assert emb.shape == (18, 12 + 32)
    spec = json.loads((run / "extractor.json").read_text())
    assert [m["model"] for m in spec["members"]] == ["backbone.keras", "backbone_2.keras"]
    low, block5 = emb[:, :12], emb[:, 12:]
    for block in (low, block5):  # standardised over the library, then scaled so both weigh alike
        np.testing.assert_allclose(block.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose((block ** 2).sum(axis=1).mean(), 1.0, rtol=1e-3)
    song = toy_library / "mid" / "mid_3.wav"
    again = embed_new_songs(run, [str(song)], cfg)
    row = [it["key"] for it in items].index("mid/mid_3.wav")
    np.testing.assert_allclose(again[0], emb[row], rtol=1e-4, atol=1e-5)
    # extract carries every backbone's model and the statistics: its rows are the run's
    from siamrec.commands.extract import extract

    out = tmp_path / "extracted"
    extract(cfg_factory("extract", f"run={run}", "data=folder", f"data.root={toy_library}", f"extract.out={out}",
                        *TOY), tmp_path)
    assert (out / "backbone_2.keras").is_file()
    ext, ext_items = read_embeddings(out)
    by_key = {it["key"]: r for it, r in zip(items, emb)}
    for it, r in zip(ext_items, ext):
        np.testing.assert_allclose(r, by_key[it["key"]], rtol=1e-4, atol=1e-5)


def test_train_chooses_the_heads_input_on_validation_and_keeps_the_chosen_one(toy_library, tmp_path, cfg_factory,
                                                                              shared, capsys):
    """model.inputs: train fits the head on each input (another backbone appended or not) and keeps the one with the
    best validation MAP: the history records both, the run saves the chosen input's encoder, and the run is the
    very run trained on that input alone (the head built afresh, from the same seeds)."""
    from siamrec.commands.train import train
    from siamrec.embedder import embed_new_songs
    from siamrec.runs import read_embeddings

    other = "{backbone:choi2017_keras2,parts:[block5]}"
    data = ["data=folder", f"data.root={toy_library}", *TOY, "features.parts=[low]", "plots=false",
            f"paths.shared={shared}", "split.valid=0.34", "split.test=0.34", "+model=siamese", "model.epochs=3",
            "model.m_per_class=2", "model.branches=1", "model.ensemble=1", "model.lda_share=[0]"]
    chosen_run = tmp_path / "chosen"
    chosen_run.mkdir()
    train(cfg_factory("train", *data, f"model.inputs=[[],[{other}]]"), chosen_run)
    said = capsys.readouterr().out
    assert ("siamese: its input is chosen on the validation split among 2: toy8k, toy8k + choi2017_keras2 "
            "(model.inputs=[[]]: the first only)") in said
    assert "input 1/2, toy8k:" in said and "input 2/2, toy8k + choi2017_keras2:" in said
    history = json.loads((chosen_run / "history.json").read_text())
    scores = history["valid_map_by_input"]
    assert list(scores) == ["toy8k", "toy8k + choi2017_keras2"]
    assert history["input"] == max(scores, key=scores.get)
    members = json.loads((chosen_run / "extractor.json").read_text())["members"]
    combined = history["input"] == "toy8k + choi2017_keras2"
    assert len(members) == (2 if combined else 1)

    alone_run = tmp_path / "alone"
    alone_run.mkdir()
    cfg = cfg_factory("train", *data, "model.inputs=[[]]", f"features.combine=[{other if combined else ''}]")
    train(cfg, alone_run)
    assert "valid_map_by_input" not in json.loads((alone_run / "history.json").read_text())
    emb, items = read_embeddings(chosen_run)
    np.testing.assert_allclose(emb, read_embeddings(alone_run)[0], rtol=1e-5, atol=1e-6)
    row = [it["key"] for it in items].index("mid/mid_3.wav")  # new songs get the chosen input too
    np.testing.assert_allclose(embed_new_songs(chosen_run, [str(toy_library / "mid" / "mid_3.wav")], cfg)[0],
                               emb[row], rtol=1e-4, atol=1e-5)
    print(f"chosen: {history['input']} ({scores})")

    few_run = tmp_path / "few"  # one validation song per label: no validation MAP, so the first input is kept
    few_run.mkdir()
    capsys.readouterr()
    train(cfg_factory("train", *data, f"model.inputs=[[],[{other}]]", "split.valid=0.17"), few_run)
    assert "no validation MAP to choose the input by (too few validation songs: a label needs two); input toy8k " \
           "kept" in capsys.readouterr().out
    assert len(json.loads((few_run / "extractor.json").read_text())["members"]) == 1


def test_an_input_that_cannot_be_made_is_left_out_of_the_choice_saying_why(toy_library, tmp_path, cfg_factory,
                                                                           monkeypatch, capsys):
    """Offline without Choi 2017's weights, the choice goes on with the inputs that can be made."""
    import siamrec.backbones.choi2017 as choi

    from siamrec.commands.train import train

    def offline(*args, **kwargs):
        raise SiamrecError("choi2017: no local copy of the weights, and the download failed (offline)")

    monkeypatch.setattr(choi, "resolve_file", offline)
    run = tmp_path / "run"
    run.mkdir()
    train(cfg_factory("train", "data=folder", f"data.root={toy_library}", *TOY, "features.parts=[low]", "plots=false",
                      "split.valid=0.34", "split.test=0.34", "+model=siamese", "model.epochs=2", "model.m_per_class=2",
                      "model.branches=1", "model.ensemble=1", "model.inputs=[[],[{backbone:choi2017}]]"), run)
    out = capsys.readouterr().out
    assert "siamese: input toy8k + choi2017_theano left out: choi2017: no local copy of the weights" in out
    assert json.loads((run / "history.json").read_text())["valid_map_by_input"].keys() == {"toy8k"}
    assert len(json.loads((run / "extractor.json").read_text())["members"]) == 1


def test_training_through_the_backbone_uses_its_default_parts_as_the_saved_run_does(toy_library, tmp_path,
                                                                                     cfg_factory, monkeypatch):
    """With features.parts null, fine-tuning and end-to-end training embed the library in the backbone's default
    parts — the parts the run saves — so a song embedded again as a new song gets its library row back."""
    import toy_bundle

    from siamrec.embedder import embed_new_songs
    from siamrec.commands.train import train
    from siamrec.runs import label_free, read_embeddings

    monkeypatch.setattr(toy_bundle.Toy8k, "default_parts", ("high",))
    data = ["data=folder", f"data.root={toy_library}", "split.valid=0.17", "split.test=0.34", "plots=false", *TOY]
    for name, model in (("baseline", ["+model=baseline", "model.epochs=1"]),
                        ("end_to_end", ["+model=siamese", "model.epochs=2", "model.m_per_class=2", "model.branches=1",
                                        "model.finetune_backbone=true", "model.backbone_epochs=1"])):
        run = tmp_path / name
        run.mkdir()
        cfg = cfg_factory("train", *model, *data)
        train(cfg, run)
        emb, items = read_embeddings(run)
        assert not label_free(run)  # fine-tuned on labels, the baseline's identity head.json notwithstanding
        if name == "baseline":
            assert emb.shape == (18, 12)  # the "high" part only
        row = [it["key"] for it in items].index("mid/mid_3.wav")
        again = embed_new_songs(run, [str(toy_library / "mid" / "mid_3.wav")], cfg)
        np.testing.assert_allclose(again[0], emb[row], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["centre", "whiten"])
def test_the_label_free_normalisation_is_fitted_on_the_library_saved_and_applied_to_new_songs(
        toy_library, tmp_path, cfg_factory, kind):
    """features.normalise is fitted on the library's songs (no labels) and saved with the run: recommend (new songs)
    and extract give every song the row the run gave it."""
    from siamrec.commands.extract import extract
    from siamrec.commands.recommend import embed_new_songs
    from siamrec.commands.train import train
    from siamrec.runs import read_embeddings

    run = tmp_path / "run"
    run.mkdir()
    data = ["data=folder", f"data.root={toy_library}", *TOY, "split.test=0.34", "plots=false"]
    cfg = cfg_factory("train", "+model=identity", f"features.normalise={kind}", *data)
    train(cfg, run)
    emb, items = read_embeddings(run)
    np.testing.assert_allclose(emb.mean(axis=0), 0.0, atol=1e-4)  # centred on the library's mean song
    eig = np.linalg.eigvalsh(np.cov(emb, rowvar=False))
    if kind == "whiten":  # eigenvalue λ becomes λ / (λ + eps·mean λ) < 1: the dominant directions are flattened
        assert eig[-1] < 1.0 and eig[-1] / eig[-3] < 3
    assert json.loads((run / "extractor.json").read_text())["normalise"]["kind"] == kind
    song = toy_library / "mid" / "mid_3.wav"
    row = [it["key"] for it in items].index("mid/mid_3.wav")
    np.testing.assert_allclose(embed_new_songs(run, [str(song)], cfg)[0], emb[row], rtol=1e-4, atol=1e-4)
    out = tmp_path / "extracted"
    extract(cfg_factory("extract", f"run={run}", f"data.root={toy_library}", "data=folder", f"extract.out={out}",
                        *TOY), tmp_path)
    ext, ext_items = read_embeddings(out)
    by_key = {it["key"]: r for it, r in zip(items, emb)}
    for it, r in zip(ext_items, ext):
        np.testing.assert_allclose(r, by_key[it["key"]], rtol=1e-4, atol=1e-4)


def test_a_library_indexed_without_a_run_is_normalised_over_its_songs_and_new_songs_alike(
        toy_library, tmp_path, cfg_factory):
    """extract without run= (the pretrained backbone as it is) fits features.normalise on the library's songs: its
    rows are centred, a new song gets the row its file got, the store keeps the raw vectors (a second extract with one
    song more reuses every stored song and refits on all of them), and a run= extract of that folder embeds alike."""
    import shutil

    from siamrec.commands.extract import extract
    from siamrec.commands.recommend import embed_new_songs
    from siamrec.runs import read_embeddings

    root = tmp_path / "music"
    shutil.copytree(toy_library, root)
    extra = root / "mid" / "later.wav"
    shutil.move(root / "mid" / "mid_5.wav", extra.with_suffix(".keep"))
    out = tmp_path / "index"
    cfg = cfg_factory("extract", "data=folder", f"data.root={root}", f"extract.out={out}", *TOY)
    extract(cfg, tmp_path / "run1")
    emb, items = read_embeddings(out)
    assert len(emb) == 17
    np.testing.assert_allclose(emb.mean(axis=0), 0.0, atol=1e-5)  # features.normalise=centre (the default)
    assert json.loads((out / "library_normalise.json").read_text())["kind"] == "centre"
    row = [it["key"] for it in items].index("mid/mid_3.wav")
    np.testing.assert_allclose(embed_new_songs(out, [str(root / "mid" / "mid_3.wav")], cfg)[0], emb[row],
                               rtol=1e-4, atol=1e-5)
    raw = emb + json.loads((out / "library_normalise.json").read_text())["mean"]

    shutil.move(extra.with_suffix(".keep"), extra)  # one song more: the others come from the store, all refitted
    extract(cfg, tmp_path / "run2")
    emb2, items2 = read_embeddings(out)
    assert len(emb2) == 18 and json.loads((out / "extract.json").read_text())["reused"] == 17
    mean2 = np.asarray(json.loads((out / "library_normalise.json").read_text())["mean"])
    by_key = {it["key"]: r for it, r in zip(items2, emb2 + mean2)}
    for it, r in zip(items, raw):
        np.testing.assert_allclose(by_key[it["key"]], r, rtol=1e-4, atol=1e-5)  # stored raw, refitted on all
    np.testing.assert_allclose(emb2.mean(axis=0), 0.0, atol=1e-5)
    assert not np.allclose(mean2, raw.mean(axis=0), atol=1e-4)  # the new song moved the library's mean

    again = tmp_path / "again"
    extract(cfg_factory("extract", f"run={out}", "data=folder", f"data.root={root}", f"extract.out={again}", *TOY),
            tmp_path / "run3")
    emb3, items3 = read_embeddings(again)
    by_key = {it["key"]: r for it, r in zip(items2, emb2)}
    for it, r in zip(items3, emb3):
        np.testing.assert_allclose(r, by_key[it["key"]], rtol=1e-4, atol=1e-5)


def test_normaliser_is_the_identity_until_fitted_and_round_trips_through_its_spec():
    from siamrec.encoder import Normaliser

    x = np.random.default_rng(0).normal(loc=3.0, scale=[1.0, 10.0, 0.1], size=(50, 3)).astype(np.float32)
    for kind in ("none", "centre", "centre_sqrt", "standardise", "whiten"):
        norm = Normaliser(kind)
        np.testing.assert_array_equal(norm(x), x)
        norm.fit(x)
        again = Normaliser(**json.loads(json.dumps(norm.spec())))
        np.testing.assert_allclose(again(x), norm(x), rtol=1e-6)
    std = Normaliser("standardise")
    std.fit(x)
    np.testing.assert_allclose(std(x).std(axis=0), 1.0, rtol=1e-3)
    root = Normaliser("centre_sqrt")
    root.fit(x)
    centred = x - x.mean(axis=0)
    np.testing.assert_allclose(root(x), np.sign(centred) * np.sqrt(np.abs(centred)), rtol=1e-4, atol=1e-5)
    with pytest.raises(SiamrecError, match="features.normalise='pca'"):
        Normaliser("pca")


# --- progress ---------------------------------------------------------------------------------------------------
def test_the_bar_shows_songs_done_of_total_their_rate_and_what_is_left(tmp_path, capsys):
    from toy_bundle import song

    paths = [str(song(tmp_path / f"{i}.wav", [300 + 100 * i])) for i in range(3)]
    toy_extractor(progress=True).song_features(paths, desc="extract")
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("extract: 100%") and "3/3 [" in bar and "file/s]" in bar and "<00:00" in bar


def test_progress_json_carries_done_total_rate_and_eta(tmp_path, monkeypatch):
    from siamrec import progress as progress_module

    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "time", lambda: now[0])
    progress = progress_module.Progress(tmp_path)
    progress.start_embedding(total=10, reused=2)
    assert progress_module.read_progress(tmp_path)["eta_s"] is None  # no rate yet
    for _ in range(4):
        now[0] += 0.5
        progress.song()
    progress.song(failed=True)
    now[0] += 0.5
    progress.write()
    got = progress_module.read_progress(tmp_path)
    # 5 songs worked on in 2.5 s: 2 songs per second, the 3 songs left in 1.5 s
    assert (got["done"], got["total"], got["embedded"], got["failed"]) == (7, 10, 4, 1)
    assert got["songs_per_s"] == pytest.approx(2.0, abs=1e-3) and got["eta_s"] == pytest.approx(1.5, abs=0.05)


@pytest.mark.parametrize("combined", [False, True], ids=["one backbone", "combined"])
def test_training_rows_of_window_subsets(toy_library, tmp_path, cfg_factory, request, combined):
    """model.train_on=subsets: each training song's vector, then `count` more per song, each pooled (and normalised)
    from a random fraction of each backbone's windows of the song, as the song's own vector is from all of them;
    the same seed gives the same rows. Combined backbones each give their own windows."""
    from itertools import combinations

    from siamrec.commands.train import train
    from siamrec.pipeline import TrainingSet, load_data
    from siamrec.runs import read_embeddings

    data = ["data=folder", f"data.root={toy_library}", "split.valid=0.17", "split.test=0.34", *TOY,
            "clip.windows=spread:4", "clip.pool=unit_mean", "features.normalise=centre_sqrt", "plots=false"]
    combine = [f"paths.shared={request.getfixturevalue('shared')}",
               "features.combine=[{backbone:choi2017_keras2,parts:[block5]}]"] if combined else []
    cfg = cfg_factory("train", "+model=siamese", "model.train_on=subsets", *combine, *data)
    run = tmp_path / "rows"
    run.mkdir()
    training = TrainingSet(cfg, load_data(cfg, run), run)
    songs, labels = training.rows("train")
    x, y = training.rows("train", train_on="subsets", subsets=(3, 0.5, 0))
    n = len(songs)
    assert x.shape == (4 * n, songs.shape[1]) and np.array_equal(x[:n], songs)
    assert np.array_equal(y, np.concatenate([labels, np.repeat(labels, 3, axis=0)]))
    encoder, features = training._encoder, training._features
    train_idx = np.flatnonzero(training.data.mask("train"))
    for j, i in enumerate(train_idx[:3]):
        windows = features.windows[i]
        assert [len(w) for w in windows] == ([4, 1] if combined else [4])  # Choi's 29 s: one padded window
        pairs = encoder.pooled([[windows[0][list(p)], *windows[1:]] for p in combinations(range(4), 2)])
        for row in x[n + 3 * j:n + 3 * j + 3]:
            assert not np.allclose(row, songs[j], atol=1e-4)  # half of the windows: not the song's vector
            assert min(np.abs(row - p).max() for p in pairs) < 1e-5  # two of its four windows (and Choi's one)
    whole, _ = training.rows("train", train_on="subsets", subsets=(2, 1.0, 0))
    np.testing.assert_allclose(whole[n:], np.repeat(songs, 2, axis=0), atol=1e-5)
    again, _ = training.rows("train", train_on="subsets", subsets=(3, 0.5, 0))
    other, _ = training.rows("train", train_on="subsets", subsets=(3, 0.5, 1))
    assert np.array_equal(again, x) and not np.allclose(other[n:], x[n:])
    run = tmp_path / "siamese"
    run.mkdir()
    train(cfg_factory("train", "+model=siamese", "model.epochs=2", "model.m_per_class=2", "model.train_on=subsets",
                      "model.subsets=2", "model.ensemble=1", *combine, *data), run)
    assert read_embeddings(run)[0].shape[0] == 18


def test_songs_of_one_window_get_no_subset_rows(toy_library, tmp_path, cfg_factory):
    """A song read as one window (clip.windows=first) has no subsets but its own vector: train_on=subsets gives it
    no repeated rows."""
    from siamrec.pipeline import TrainingSet, load_data

    cfg = cfg_factory("train", "+model=siamese", "data=folder", f"data.root={toy_library}", "split.valid=0.17",
                      "split.test=0.34", *TOY, "clip.windows=first", "plots=false")
    training = TrainingSet(cfg, load_data(cfg, tmp_path), tmp_path)
    songs, labels = training.rows("train")
    x, y = training.rows("train", train_on="subsets", subsets=(3, 0.5, 0))
    assert len(songs) > 2 and all(len(w) == 1 for song in training._features.windows for w in song)
    assert np.array_equal(x, songs) and np.array_equal(y, labels)


def test_the_end_to_end_phase_trains_on_each_songs_first_window_unless_asked_for_every_window(
        toy_library, tmp_path, cfg_factory):
    """TrainingSet.clips: the decoded windows the backbone is trained through; train_on=subsets (whose rows are
    pooled) takes each song's first window, as songs does; only train_on=windows takes all of them."""
    from siamrec.pipeline import TrainingSet, load_data

    cfg = cfg_factory("train", "+model=siamese", "data=folder", f"data.root={toy_library}", "split.valid=0.17",
                      "split.test=0.34", *TOY, "clip.windows=spread:4", "plots=false")
    training = TrainingSet(cfg, load_data(cfg, tmp_path), tmp_path)
    training.backbone("the test")
    songs = training.count("train")
    every, y_every = training.clips("train", "windows")
    first, y_first = training.clips("train", "songs")
    subsets, y_subsets = training.clips("train", "subsets")
    assert len(every) == 4 * songs and len(first) == songs and np.array_equal(every[::4], first)
    assert np.array_equal(subsets, first) and np.array_equal(y_subsets, y_first)
