"""train / evaluate / recommend / plot on a tiny synthetic audio library, called as pure functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamrec.commands.evaluate import evaluate
from siamrec.commands.plot import plot
from siamrec.commands.recommend import recommend
from siamrec.commands.train import train
from siamrec.errors import SiamrecError
from siamrec.runs import read_csv, read_embeddings

SMALL = ["backbone.pretrained=false", "split.valid=0.17", "split.test=0.34", "features.batch_size=6"]


def audio_args(folder):
    return ["data=folder", f"data.root={folder}", *SMALL]


@pytest.fixture
def baseline_run(tmp_path, cfg_factory, audio_folder):
    run = tmp_path / "baseline"
    run.mkdir()
    from siamrec.cli import seed_everything

    cfg = cfg_factory("train", "+model=baseline", "model.epochs=2", "model.batch_size=4", *audio_args(audio_folder))
    seed_everything(0)  # the same random backbone as test_fine_tuning_changes_the_features' frozen one
    metrics = train(cfg, run)
    return run, metrics


def test_baseline_writes_every_artifact_and_the_model_reloads(baseline_run):
    import keras

    import siamrec.backbones.choi2017  # noqa: F401 - registers custom layers

    run, metrics = baseline_run
    for name in ("model.keras", "backbone.keras", "extractor.json", "embeddings.npy", "items.csv", "metrics.json", "split.csv",
                 "playlists.csv", "history.json", "training_curves.png", "tsne.png", "tsne_pca.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) >= {"train", "test", "n_queries", "skipped"}
    assert 0.0 <= saved["test"]["accuracy"] <= 1.0 and 0.0 < saved["test"]["map"] <= 1.0
    emb, items = read_embeddings(run)
    assert emb.shape == (18, 160) and len(items) == 18
    classifier = keras.saving.load_model(run / "model.keras")
    assert classifier.output_shape == (None, 3)
    # the playlist sample: one seed per label, never recommending the seed itself
    rows = read_csv(run / "playlists.csv")
    assert len({r["seed"] for r in rows}) == 3
    assert all(r["seed"] != r["key"] for r in rows)


def test_fine_tuning_changes_the_features(baseline_run, cfg_factory, audio_folder, tmp_path):
    """Against the same starting weights (both reseeded): a fine-tuning that did nothing would give the frozen
    features back."""
    from siamrec.cli import seed_everything

    run, _ = baseline_run
    fine_tuned, _ = read_embeddings(run)
    ident = tmp_path / "identity"
    ident.mkdir()
    cfg = cfg_factory("evaluate", "+model=identity", *audio_args(audio_folder))
    seed_everything(0)
    evaluate(cfg, ident)
    frozen, _ = read_embeddings(ident)
    again = tmp_path / "again"
    again.mkdir()
    seed_everything(0)
    evaluate(cfg, again)
    np.testing.assert_array_equal(read_embeddings(again)[0], frozen)  # the comparison point is reproducible
    assert frozen.shape == fine_tuned.shape
    assert np.abs(frozen - fine_tuned).max() > 1e-3 * np.abs(frozen).max()


def test_recommend_leaves_the_seed_out_and_embeds_a_new_song(baseline_run, cfg_factory, audio_folder, tmp_path):
    import shutil

    run, _ = baseline_run
    out = tmp_path / "rec"
    out.mkdir()
    seed = audio_folder / "drone" / "drone_1.flac"
    plain = "recommend.rules=none"  # the nearest songs as they are (a copy of a song is a duplicate to the radio rules)
    rows = recommend(cfg_factory("recommend", f"run={run}", f"recommend.seed={seed}", "recommend.k=5", plain), out)
    assert len(rows) == 5 and all(r[3] != "drone/drone_1.flac" for r in rows)
    sims = [r[5] for r in rows]
    assert sims == sorted(sims, reverse=True)
    # a song outside the library (cold start): same audio under a new name gets its twin ranked first
    new = tmp_path / "new_song.flac"
    shutil.copy(seed, new)
    rows = recommend(cfg_factory("recommend", f"run={run}", f"recommend.seed={new}", "recommend.k=3", plain,
                                 "query_expansion=0"), out)
    assert rows[0][3] == "drone/drone_1.flac" and rows[0][5] == pytest.approx(1.0, abs=1e-4)
    rows = recommend(cfg_factory("recommend", f"run={run}", f"recommend.seed={new}", "recommend.k=3", plain), out)
    assert "drone/drone_1.flac" in [r[3] for r in rows]  # ranked by its neighbourhood: the twin is still in it
    with pytest.raises(SiamrecError, match="seed="):
        recommend(cfg_factory("recommend", f"run={run}", f"recommend.seed={tmp_path / 'nope.mp3'}"), out)
    # a file that exists but holds no audio: it cannot be decoded, and why (libsndfile calls it "File does not exist")
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(SiamrecError) as e:
        recommend(cfg_factory("recommend", f"run={run}", f"recommend.seed={broken}"), out)
    assert str(e.value).startswith(f"seed={broken}: cannot be decoded: libsndfile: data not recognised as audio; ")
    assert "not exist" not in str(e.value) and "\n" not in str(e.value)


def test_plot_command_writes_pictures(baseline_run, cfg_factory, tmp_path):
    run, _ = baseline_run
    out = tmp_path / "plots"
    out.mkdir()
    written = plot(cfg_factory("plot", f"run={run}"), out)
    assert {p.name for p in written} == {"tsne.png", "tsne_pca.png", "training_curves.png"}


@pytest.mark.parametrize("model", ["identity", "siamese"])
def test_a_second_run_over_the_same_library_decodes_no_audio(tmp_path, cfg_factory, audio_folder, monkeypatch, model):
    """Features and the dataset BatchNorm statistics (the default theano backbone's) both come from the cache."""
    import siamrec.extractor.decoding as decoding
    from siamrec.cli import seed_everything

    command, function = ("evaluate", evaluate) if model == "identity" else ("train", train)
    cfg = cfg_factory(command, f"+model={model}", "model.epochs=2" if model == "siamese" else "seed=0", "plots=false",
                      "clip.windows=spread:2", *audio_args(audio_folder))
    decoded = []
    real = decoding.decode_windows
    monkeypatch.setattr(decoding, "decode_windows", lambda path, plan: decoded.append(path) or real(path, plan))
    first = tmp_path / "first"
    first.mkdir()
    seed_everything(0)  # the same seed gives the same random backbone, hence the same cache key
    function(cfg, first)
    assert len(decoded) > 18  # every song, and the training songs again for the statistics
    decoded.clear()
    second = tmp_path / "second"
    second.mkdir()
    seed_everything(0)
    function(cfg, second)
    assert decoded == []
    np.testing.assert_allclose(np.load(first / "embeddings.npy"), np.load(second / "embeddings.npy"), atol=1e-6)


def test_a_corrupt_file_is_skipped_counted_and_listed(tmp_path, cfg_factory, audio_folder):
    (audio_folder / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage, not audio")
    run = tmp_path / "run"
    run.mkdir()
    evaluate(cfg_factory("evaluate", "+model=identity", *audio_args(audio_folder)), run)
    failed = read_csv(run / "failed.csv")
    assert [f["key"] for f in failed] == ["high/broken.wav"]
    _, items = read_embeddings(run)
    assert len(items) == 18 and "high/broken.wav" not in {it["key"] for it in items}


def test_the_causes_of_skipped_files_are_printed_at_the_end_of_the_command(tmp_path, audio_folder, capsys):
    """Through the command line: 2 of 20 files skipped (over 1 %): their causes come last, before the run folder,
    where a training's output cannot push them out of sight."""
    from siamrec import cli
    from siamrec.data.audio import AUDIO_EXTENSIONS

    assert "mp3" in AUDIO_EXTENSIONS
    (audio_folder / "high" / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(3000))
    (audio_folder / "beats" / "text.wav").write_bytes(b"not audio")
    run = tmp_path / "run"
    code = cli.main(["evaluate", "+model=identity", *audio_args(audio_folder), f"paths.cache={tmp_path / 'cache'}",
                     "features.workers=0", "backbone=choi2017", f"hydra.run.dir={run}"])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[-1] == str(run)
    assert lines[-4].startswith("skipped 2 of 20 files (10.0 %) that could not be decoded, listed in ")
    assert out.count("1 × ") == 2  # the causes are printed once, at the end
    text, noise = sorted(lines[-3:-1])  # audioread's reason depends on the decoders installed
    assert text.startswith("  1 × 'cannot be decoded: libsndfile: Format not recognised; audioread: ")
    assert noise.startswith("  1 × 'cannot be decoded: libsndfile: data not recognised as audio; audioread: ")
    assert text.endswith("' (e.g. text.wav)") and noise.endswith("' (e.g. noise.mp3)")


@pytest.mark.parametrize("bad", [1, 5])
def test_the_same_files_skipped_again_in_one_run_are_not_reported_twice(tmp_path, capsys, bad):
    """train reads the library once per input it chooses among: the same failures of the same run are said once,
    whether at once (1 of 200 files) or at the end (5 of 200)."""
    from siamrec.extractor import report_failures
    from siamrec.runs import take_closing_notes

    take_closing_notes()
    keys = [f"song{i}" for i in range(200)]
    failures = [(i, "cannot be decoded: the file is empty (0 bytes)") for i in range(bad)]
    for _ in range(2):
        report_failures(tmp_path, keys, [f"/music/{k}.mp3" for k in keys], failures, 0.2)
    out, notes = capsys.readouterr().out, take_closing_notes()
    said = out + "".join(notes)
    assert said.count(f"skipped {bad} of 200 files") == 1 + (bad == 5)  # at the end: one line now, the report last
    assert said.count(f"{bad} × 'cannot be decoded: the file is empty (0 bytes)'") == 1
    assert len(notes) == (bad == 5)
    report_failures(tmp_path / "other", keys, [f"/music/{k}.mp3" for k in keys], failures, 0.2)  # another run: said
    assert f"{bad} × " in capsys.readouterr().out + "".join(take_closing_notes())


def test_too_many_failures_stop_the_run(tmp_path, cfg_factory, audio_folder):
    for label in ("drone", "high", "beats"):
        for i in range(3):
            (audio_folder / label / f"bad{i}.wav").write_bytes(b"junk")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(SiamrecError, match="max_failed_fraction"):
        evaluate(cfg_factory("evaluate", "+model=identity", *audio_args(audio_folder)), run)
    assert (run / "failed.csv").is_file()


def test_lda_on_audio_features_and_evaluate_run(tmp_path, cfg_factory, audio_folder):
    run = tmp_path / "lda"
    run.mkdir()
    train(cfg_factory("train", "+model=lda", *audio_args(audio_folder)), run)
    again = tmp_path / "again"
    again.mkdir()
    metrics = evaluate(cfg_factory("evaluate", f"run={run}", *audio_args(audio_folder)), again)
    saved = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["map"] == pytest.approx(saved["test"]["map"], abs=1e-6)


def test_siamese_end_to_end_updates_the_backbone_and_reloads(tmp_path, cfg_factory, audio_folder):
    import keras

    from siamrec.backbones.choi2017 import Choi2017, build_backbone
    from siamrec.embedder import RunEmbedder

    run = tmp_path / "e2e"
    run.mkdir()
    cfg = cfg_factory("train", "+model=siamese", "model.finetune_backbone=true", "model.backbone_epochs=1",
                      "model.epochs=3", "model.branches=1", "model.m_per_class=2", "model.trainable=[block5]",
                      "model.backbone_lr=0.01", "plots=false", *audio_args(audio_folder))
    keras.utils.set_random_seed(0)
    train(cfg, run)
    history = json.loads((run / "history.json").read_text())
    assert "end_to_end_loss" in history
    tuned = keras.saving.load_model(run / "backbone.keras", safe_mode=True)
    keras.utils.set_random_seed(0)
    untouched = build_backbone("theano", "dataset")  # the same random initialisation as the run's backbone
    changed = {k: not np.allclose(tuned.get_layer(f"conv{k}").get_weights()[0],
                                  untouched.get_layer(f"conv{k}").get_weights()[0]) for k in (1, 5)}
    assert changed == {1: False, 5: True}  # only the trainable block moved
    emb, items = read_embeddings(run)
    song = Choi2017().feature_vector(tuned.predict_on_batch(np.zeros((1, 29 * 12000), np.float32)))
    clip_feats = RunEmbedder(run).from_features(song)
    assert clip_feats.shape == (1, emb.shape[1])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_the_same_song_vectors_and_seed_give_the_same_siamese_head_from_audio_or_from_features(
        tmp_path, cfg_factory, audio_folder, capsys):
    """Through audio a (random, unseeded) backbone is built before the head and consumes random state; through
    data=features nothing is. The head must not depend on that: it is seeded from its own seed when built. (The
    same song vectors: model.train_on=songs; the default, subsets, also trains on the windows of audio, which
    saved features do not hold, and a run on features says so.)"""
    import keras

    from siamrec.cli import seed_everything
    from siamrec.embedder import RunEmbedder

    head = ["+model=siamese", "model.epochs=3", "model.hidden=[16]", "model.dim=8", "model.branches=2",
            "model.m_per_class=2", "model.dropout=0.3", "plots=false", "backbone.bn_stats=per_clip"]
    audio = tmp_path / "audio"
    audio.mkdir()
    seed_everything(0)
    cfg = cfg_factory("train", *head, "model.train_on=songs", *audio_args(audio_folder))
    train(cfg, audio)
    # the run's own pre-head song vectors, in the library's order, with its split, as precomputed features
    _, items = read_embeddings(audio)
    vectors = RunEmbedder(audio).encoder(cfg).song_features([it["path"] for it in items], use_cache=False).vectors
    np.save(tmp_path / "x.npy", vectors)
    (tmp_path / "labels.csv").write_text("key,label\n" + "".join(f"{it['key']},{it['labels']}\n" for it in items))
    lists = {}
    for name in ("train", "valid", "test"):
        lists[name] = tmp_path / f"{name}.txt"
        lists[name].write_text("".join(f"{it['key']}\n" for it in items if it["split"] == name))
    on_features = ["data=features", f"data.features=[{tmp_path / 'x.npy'}]", f"data.labels={tmp_path / 'labels.csv'}",
                   "data.key_column=key", "split=files", *(f"split.{n}={p}" for n, p in lists.items())]
    feats = tmp_path / "features"
    feats.mkdir()
    seed_everything(0)
    keras.random.uniform((3,))  # whatever consumed random state before the head must not matter
    train(cfg_factory("train", *head, "model.train_on=songs", *on_features), feats)
    a = keras.saving.load_model(audio / "model.keras", safe_mode=True).get_weights()
    b = keras.saving.load_model(feats / "model.keras", safe_mode=True).get_weights()
    assert len(a) == len(b)
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_allclose(read_embeddings(audio)[0], read_embeddings(feats)[0], atol=1e-6)
    # subsets of windows on features without windows: the songs' own rows, and the run says so
    subsets = tmp_path / "subsets"
    subsets.mkdir()
    capsys.readouterr()
    train(cfg_factory("train", *head, *on_features, "model.train_on=subsets"), subsets)
    assert "model.train_on=subsets needs the windows of audio; these features have none" in capsys.readouterr().out
    for wa, wb in zip(b, keras.saving.load_model(subsets / "model.keras", safe_mode=True).get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_the_inputs_to_choose_among_need_audio_a_validation_split_and_a_backbone_not_yet_in_the_input(cfg_factory):
    """input_configs: each model.inputs entry appended to features.combine (a backbone already in the input is not
    appended again, a repeated choice not tried twice); nothing to choose without audio or without validation songs,
    or when the head trains through the backbone."""
    from types import SimpleNamespace

    from siamrec.pipeline import input_configs, require_head

    def data(audio=True, valid=True):
        return SimpleNamespace(is_audio=audio, mask=lambda *names: np.array([valid and "valid" in names]))

    inputs = "model.inputs=[[],[{backbone:musicnn_msd}],[{backbone:choi2017}],[{backbone:musicnn_msd}]]"
    cfg = cfg_factory("train", "+model=siamese", inputs)
    head = require_head(cfg, "train")
    choices = input_configs(cfg, head, data())
    assert [name for name, _ in choices] == ["choi2017_theano", "choi2017_theano + musicnn_msd"]
    assert list(choices[0][1].features.combine) == []
    assert [dict(c) for c in choices[1][1].features.combine] == [{"backbone": "musicnn_msd"}]
    assert [name for name, _ in input_configs(cfg, head, data(valid=False))] == ["choi2017_theano"]
    assert [name for name, _ in input_configs(cfg, head, data(audio=False))] == ["choi2017_theano"]
    given = cfg_factory("train", "+model=siamese", inputs, "features.combine=[{backbone:choi2017_keras2}]")
    assert [name for name, _ in input_configs(given, require_head(given, "train"), data())] == [
        "choi2017_theano + choi2017_keras2", "choi2017_theano + choi2017_keras2 + musicnn_msd"]
    through = cfg_factory("train", "+model=siamese", inputs, "model.finetune_backbone=true")
    assert len(input_configs(through, require_head(through, "train"), data())) == 1
    unknown = cfg_factory("train", "+model=siamese", "model.inputs=[[],[{backbone:nosuch}]]")
    with pytest.raises(SiamrecError, match=r"^model.inputs: no backbone 'nosuch'; choose from .*musicnn_msd"):
        input_configs(unknown, require_head(unknown, "train"), data())
