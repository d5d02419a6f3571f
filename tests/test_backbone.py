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
from siamrec.models.backbone import MSD_TAGS, build_backbone, concat_blocks, select_blocks
from siamrec.models.frontend import hann_dft_kernels, mel_filterbank
from siamrec.models.weights import FILES, load_pretrained, read_arrays, resolve_weights

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
    load_pretrained(model, shared / "weights" / "choi2017" / FILES[release]["file"], release)
    return model


@pytest.mark.parametrize("release", RELEASES)
def test_port_matches_numpy_reference_on_every_raga_clip(shared, raga_clips, release):
    from reference_choi2017 import reference_forward

    names, clips = raga_clips
    model = _pretrained(shared, release)
    out = model.predict(clips, batch_size=8, verbose=0)
    feats, tags = concat_blocks(out), np.asarray(out["tags"])
    h5 = shared / "weights" / "choi2017" / FILES[release]["file"]
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
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("release", RELEASES)
def test_stored_front_end_equals_hann_dft_and_slaney_mel(shared, release):
    arrays = read_arrays(shared / "weights" / "choi2017" / FILES[release]["file"], release)
    stored_real, stored_imag = arrays["stft/real"], arrays["stft/imag"]
    if release == "theano":  # the loader time-reverses them for Theano's flipping convolution: undo that
        stored_real, stored_imag = stored_real[::-1], stored_imag[::-1]
    real, imag = hann_dft_kernels()
    np.testing.assert_allclose(stored_real, real, atol=1e-6)
    np.testing.assert_allclose(stored_imag, imag, atol=1e-6)
    np.testing.assert_allclose(arrays["mel"], mel_filterbank(), atol=1e-6)


def test_untrained_backbone_shapes_and_block_selection():
    model = build_backbone("keras2")
    out = model.predict_on_batch(np.random.default_rng(0).normal(size=(2, 29 * 12000)).astype(np.float32))
    feats = concat_blocks(out)
    assert feats.shape == (2, 160) and np.isfinite(feats).all()
    assert out["tags"].shape == (2, len(MSD_TAGS))
    np.testing.assert_array_equal(select_blocks(feats, [2, 4]), np.concatenate([feats[:, 32:64], feats[:, 96:128]], 1))
    with pytest.raises(SiamrecError, match="features.blocks"):
        select_blocks(feats, [0, 6])


def test_saved_backbone_reloads_with_identical_outputs(tmp_path):
    import keras

    from siamrec.models.heads import save_keras

    model = build_backbone("theano", "per_clip")
    x = np.random.default_rng(1).normal(size=(1, 29 * 12000)).astype(np.float32)
    save_keras(model, tmp_path / "backbone.keras")
    again = keras.saving.load_model(tmp_path / "backbone.keras")
    np.testing.assert_allclose(concat_blocks(again.predict_on_batch(x)), concat_blocks(model.predict_on_batch(x)), atol=1e-6)


def _cfgs(tmp_path, **backbone):
    bcfg = OmegaConf.create({"release": "keras2", "weights": None, "download": True, "url": None, **backbone})
    paths = OmegaConf.create({"cache": str(tmp_path / "cache"), "shared": str(tmp_path / "no-shared")})
    return bcfg, paths


def test_weights_explicit_path_must_exist(tmp_path):
    bcfg, paths = _cfgs(tmp_path, weights=str(tmp_path / "missing.hdf5"))
    with pytest.raises(SiamrecError, match="backbone.weights=.*missing.hdf5"):
        resolve_weights(bcfg, paths)


def test_weights_found_in_shared_before_download(shared, tmp_path):
    bcfg, paths = _cfgs(tmp_path, url="http://127.0.0.1:9/never-called")
    paths.shared = str(shared)
    assert resolve_weights(bcfg, paths) == shared / "weights" / "choi2017" / FILES["keras2"]["file"]


def test_weights_download_checks_sha256_and_lands_in_cache(tmp_path, monkeypatch):
    source = tmp_path / "mirror.hdf5"
    source.write_bytes(b"not the real weights")
    bcfg, paths = _cfgs(tmp_path, url=source.as_uri())
    with pytest.raises(SiamrecError, match="sha256"):
        resolve_weights(bcfg, paths)
    cache_file = tmp_path / "cache" / "weights" / "choi2017" / FILES["keras2"]["file"]
    assert not cache_file.exists()
    # the same bytes with a matching checksum are accepted and cached
    monkeypatch.setitem(FILES["keras2"], "sha256", hashlib.sha256(source.read_bytes()).hexdigest())
    assert resolve_weights(bcfg, paths) == cache_file
    assert cache_file.read_bytes() == source.read_bytes()


def test_weights_missing_without_download_gives_advice(tmp_path):
    bcfg, paths = _cfgs(tmp_path, download=False)
    with pytest.raises(SiamrecError, match="backbone.pretrained=false") as info:
        resolve_weights(bcfg, paths)
    assert "\n" not in str(info.value)


def test_corrupt_weight_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"garbage")
    with pytest.raises(SiamrecError, match="bad.hdf5"):
        read_arrays(bad, "keras2")
    assert Path(bad).exists()


def test_dataset_batchnorm_statistics_are_those_of_the_clips(tmp_path, audio_folder):
    import keras

    from siamrec.models.backbone import estimate_dataset_bn

    paths = sorted(str(p) for p in audio_folder.rglob("*.flac"))[:4]
    clip_cfg = OmegaConf.create({"sr": 12000, "duration": 29.0, "offset": "start"})
    model = build_backbone("theano", "dataset")
    estimate_dataset_bn(model, paths, clip_cfg, batch_size=3, progress=False)
    clips = np.stack([load_clip(p, 12000, 29.0) for p in paths])
    for k in (1, 3):
        act = np.asarray(keras.Model(model.input, model.get_layer(f"conv{k}").output).predict(clips, verbose=0),
                         dtype=np.float64)
        mean, var = act.mean(axis=(0, 1, 2)), act.var(axis=(0, 1, 2))
        bn = model.get_layer(f"bn{k}")
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-3, atol=1e-4)
    # frozen statistics: a clip's features no longer depend on what else is in the batch
    alone = concat_blocks(model.predict_on_batch(clips[:1]))
    together = concat_blocks(model.predict_on_batch(clips))[:1]
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_tag_command_prints_top_tags_of_a_real_song(shared, tmp_path, cfg_factory, capsys):
    from siamrec.commands.tag import tag

    song = shared / "audio" / "ragaveda" / "Yaman" / "Yaman_raga-yaman_1.flac"
    results = tag(cfg_factory("tag", "tag.top=3", f"tag.files=[{song}]"), tmp_path)
    (path, best), = results
    assert path == str(song) and len(best) == 3
    assert all(name in MSD_TAGS for name, _ in best)
    probs = [p for _, p in best]
    assert probs == sorted(probs, reverse=True) and 0 < probs[-1] <= probs[0] < 1
    assert f"{best[0][0]} {best[0][1]:.2f}" in capsys.readouterr().out
    assert (tmp_path / "tags.csv").is_file()
