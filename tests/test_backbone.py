"""The Choi 2017 port: Keras 3 model vs an independent NumPy forward pass on real audio, batch independence,
the front end's arrays, weight resolution and saving."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from siamrec.data.audio import load_clip
from siamrec.errors import SiamrecError
from siamrec.backbones.base import WeightFile, resolve_file
from siamrec.backbones.choi2017 import FILES, MSD_TAGS, Choi2017, build_backbone, load_pretrained, read_arrays
from siamrec.backbones.layers import hann_dft_kernels, mel_filterbank

BUNDLE = Choi2017(release="keras2", bn_stats="per_clip")


def concat_blocks(outputs):
    return BUNDLE.feature_vector(outputs)

RELEASES = ("keras2", "theano")


@pytest.fixture(scope="module")
def raga_clips(shared):
    """Every raga clip: its first 29 s at 12 kHz (zero-padded when shorter)."""
    paths = sorted((shared / "audio" / "ragaveda").rglob("*.*"))
    paths = [p for p in paths if p.suffix in (".flac", ".mp3")]
    assert len(paths) == 69
    return [p.name for p in paths], np.stack([load_clip(p, 12000, 29.0) for p in paths])


def _pretrained(shared, release):
    model = build_backbone(release)
    load_pretrained(model, shared / "weights" / "choi2017" / FILES[release].file, release)
    return model


@pytest.mark.parametrize("release", RELEASES)
def test_port_matches_numpy_reference_on_every_raga_clip(shared, raga_clips, release):
    from reference_choi2017 import reference_forward

    names, clips = raga_clips
    model = _pretrained(shared, release)
    out = model.predict(clips, batch_size=8, verbose=0)
    feats, tags = concat_blocks(out), np.asarray(out["tags"])
    h5 = shared / "weights" / "choi2017" / FILES[release].file
    worst = 0.0
    for i, name in enumerate(names):
        ref = reference_forward(str(h5), release, clips[i].astype(np.float64))
        worst = max(worst, float(np.abs(feats[i] - ref["features"]).max()))
        assert list(np.argsort(-tags[i])[:5]) == list(np.argsort(-ref["tags"])[:5]), f"top-5 tags differ on {name}"
    assert worst <= 2e-3, f"{release}: max |Keras − NumPy| over 160 features = {worst}"


@pytest.mark.parametrize("release", RELEASES)
def test_features_do_not_depend_on_the_batch(shared, raga_clips, release):
    _, clips = raga_clips
    model = _pretrained(shared, release)
    loud_and_quiet = np.stack([clips[0], clips[1] * 0.01, clips[2] * 50])
    together = concat_blocks(model.predict_on_batch(loud_and_quiet))
    alone = np.concatenate([concat_blocks(model.predict_on_batch(c[None])) for c in loud_and_quiet])
    # per-clip arithmetic in float32: equal up to rounding relative to the features' scale
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5 * np.abs(alone).max())


@pytest.mark.parametrize("release", RELEASES)
def test_stored_front_end_equals_hann_dft_and_slaney_mel(shared, release):
    arrays = read_arrays(shared / "weights" / "choi2017" / FILES[release].file, release)
    stored_real, stored_imag = arrays["stft/real"], arrays["stft/imag"]
    if release == "theano":  # the loader time-reverses them for Theano's flipping convolution: undo that
        stored_real, stored_imag = stored_real[::-1], stored_imag[::-1]
    real, imag = hann_dft_kernels()
    np.testing.assert_allclose(stored_real, real, atol=1e-6)
    np.testing.assert_allclose(stored_imag, imag, atol=1e-6)
    np.testing.assert_allclose(arrays["mel"], mel_filterbank(), atol=1e-6)


def test_untrained_backbone_shapes_and_part_selection():
    model = build_backbone("keras2")
    out = model.predict_on_batch(np.random.default_rng(0).normal(size=(2, 29 * 12000)).astype(np.float32))
    feats = concat_blocks(out)
    assert feats.shape == (2, BUNDLE.dim) == (2, 160) and np.isfinite(feats).all()
    assert out["tags"].shape == (2, len(MSD_TAGS))
    cols = BUNDLE.part_columns(["block4", "block2"])  # in the bundle's order, whatever the order asked
    np.testing.assert_array_equal(feats[:, cols], np.concatenate([feats[:, 32:64], feats[:, 96:128]], 1))
    with pytest.raises(SiamrecError, match="features.parts"):
        BUNDLE.part_columns(["block0", "block6"])


def test_the_bundle_says_everything_model_specific():
    theano = Choi2017()
    assert (theano.sample_rate, theano.window_samples, theano.hop_samples) == (12000, 348000, 348000)
    assert theano.needs_preparation and not BUNDLE.needs_preparation
    assert list(theano.parts) == [f"block{k}" for k in range(1, 6)] and theano.groups == tuple(theano.parts)
    assert Choi2017(window_seconds=10).window_samples == 120000
    assert theano.spec() != BUNDLE.spec() and theano.spec() != Choi2017(window_seconds=10).spec()
    for bad in ({"release": "theano2"}, {"bn_stats": "batch"}, {"sample_rate": 16000}, {"window_seconds": 0}):
        with pytest.raises(SiamrecError, match="backbone."):
            Choi2017(**bad)
    model = build_backbone("keras2")
    BUNDLE.set_trainable(model, ["block2"])
    assert {layer.name for layer in model.layers if layer.trainable} == {"conv2", "bn2"}
    with pytest.raises(SiamrecError, match="trainable"):
        BUNDLE.set_trainable(model, ["block9"])


def test_saved_backbone_reloads_with_identical_outputs(tmp_path):
    import keras

    from siamrec.models.heads import save_keras

    model = build_backbone("theano", "per_clip")
    x = np.random.default_rng(1).normal(size=(1, 29 * 12000)).astype(np.float32)
    save_keras(model, tmp_path / "backbone.keras")
    again = keras.saving.load_model(tmp_path / "backbone.keras")
    np.testing.assert_allclose(concat_blocks(again.predict_on_batch(x)), concat_blocks(model.predict_on_batch(x)), atol=1e-6)


def _paths(tmp_path):
    return OmegaConf.create({"cache": str(tmp_path / "cache"), "shared": str(tmp_path / "no-shared")})


def test_weights_explicit_path_must_exist(tmp_path):
    with pytest.raises(SiamrecError, match="backbone.weights=.*missing.hdf5"):
        Choi2017(release="keras2", bn_stats="per_clip", weights=str(tmp_path / "missing.hdf5")).build(_paths(tmp_path))


def test_weights_found_in_shared_before_download(shared, tmp_path):
    paths = _paths(tmp_path)
    paths.shared = str(shared)
    found = resolve_file(FILES["keras2"], "choi2017", paths, url="http://127.0.0.1:9/never-called")
    assert found == shared / "weights" / "choi2017" / FILES["keras2"].file


def test_weights_download_checks_sha256_and_lands_in_cache(tmp_path):
    source = tmp_path / "mirror.hdf5"
    source.write_bytes(b"not the real weights")
    paths = _paths(tmp_path)
    with pytest.raises(SiamrecError, match="sha256"):
        resolve_file(FILES["keras2"], "choi2017", paths, url=source.as_uri())
    cache_file = tmp_path / "cache" / "weights" / "choi2017" / FILES["keras2"].file
    assert not cache_file.exists()
    # the same bytes with a matching checksum are accepted and cached
    matching = WeightFile(FILES["keras2"].file, hashlib.sha256(source.read_bytes()).hexdigest(), source.as_uri())
    assert resolve_file(matching, "choi2017", paths) == cache_file
    assert cache_file.read_bytes() == source.read_bytes()


def test_weights_missing_without_download_gives_advice(tmp_path):
    with pytest.raises(SiamrecError, match="backbone.pretrained=false") as info:
        resolve_file(FILES["keras2"], "choi2017", _paths(tmp_path), download_ok=False)
    assert "\n" not in str(info.value)


def test_a_weight_file_with_nan_or_the_wrong_shapes_is_refused(shared, tmp_path):
    import h5py
    import shutil

    for damage in ("nan", "shape"):
        bad = tmp_path / f"{damage}.hdf5"
        shutil.copy(shared / "weights" / "choi2017" / FILES["keras2"].file, bad)
        with h5py.File(bad, "r+") as h5:
            group = h5["model_weights"]["conv2d_3"]["conv2d_3"]
            kernel = np.asarray(group["kernel:0"])
            del group["kernel:0"]
            if damage == "nan":
                kernel[0, 0, 0, 0] = np.nan
                group["kernel:0"] = kernel
            else:
                group["kernel:0"] = kernel[:2]
        with pytest.raises(SiamrecError, match=f"backbone.weights=.*{damage}.hdf5"):
            Choi2017(release="keras2", bn_stats="per_clip", weights=str(bad)).build(_paths(tmp_path))


def test_corrupt_weight_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"garbage")
    with pytest.raises(SiamrecError, match="bad.hdf5"):
        read_arrays(bad, "keras2")
    assert Path(bad).exists()


def test_dataset_batchnorm_statistics_are_those_of_the_clips(tmp_path, audio_folder):
    import keras

    from siamrec.backbones.choi2017 import estimate_dataset_bn

    paths = sorted(str(p) for p in audio_folder.rglob("*.flac"))[:4]
    model = build_backbone("theano", "dataset")
    clips = np.stack([load_clip(p, 12000, 29.0) for p in paths])
    estimate_dataset_bn(model, clips, batch_size=3)
    for k in (1, 3):
        act = np.asarray(keras.Model(model.input, model.get_layer(f"conv{k}").output).predict(clips, verbose=0),
                         dtype=np.float64)
        mean, var = act.mean(axis=(0, 1, 2)), act.var(axis=(0, 1, 2))
        bn = model.get_layer(f"bn{k}")
        # float32 convolutions summed in another order (batch 3 vs 4): equal relative to the values' scale
        scale = np.abs(mean).max() + np.sqrt(var.max())
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-3, atol=1e-4 * scale)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-3, atol=1e-4 * scale**2)
    # frozen statistics: a clip's features no longer depend on what else is in the batch
    alone = concat_blocks(model.predict_on_batch(clips[:1]))
    together = concat_blocks(model.predict_on_batch(clips))[:1]
    np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-5 * np.abs(alone).max())


def test_tag_command_prints_top_tags_of_a_real_song(shared, tmp_path, cfg_factory, capsys):
    from siamrec.commands.tag import tag

    song = shared / "audio" / "ragaveda" / "Yaman" / "Yaman_raga-yaman_1.flac"
    results = tag(cfg_factory("tag", "backbone=choi2017_keras2", "tag.top=3", f"tag.files=[{song}]"), tmp_path)
    (path, best), = results
    assert path == str(song) and len(best) == 3
    assert all(name in MSD_TAGS for name, _ in best)
    probs = [p for _, p in best]
    assert probs == sorted(probs, reverse=True) and 0 < probs[-1] <= probs[0] < 1
    assert f"{best[0][0]} {best[0][1]:.2f}" in capsys.readouterr().out
    assert (tmp_path / "tags.csv").is_file()


def test_tag_says_a_song_shorter_than_the_window_was_padded(shared, tmp_path, cfg_factory, capsys):
    import soundfile as sf

    from siamrec.commands.tag import tag

    short = tmp_path / "half a second.wav"
    sf.write(short, (0.1 * np.sin(np.arange(6000) / 3)).astype(np.float32), 12000)
    tag(cfg_factory("tag", "backbone=choi2017_keras2", "tag.top=3", f"tag.files=[{short}]"), tmp_path)
    assert f"song {short} is 0.5 s, shorter than the backbone's 29 s window: padded with silence" in \
        capsys.readouterr().out
