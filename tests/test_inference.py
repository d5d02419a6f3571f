"""Inference runtimes (siamrec.inference): musicnn exported to ONNX Runtime gives the Keras model's outputs, the
exported graph is cached by the model's fingerprint (a changed weight exports again), and a missing runtime or a
graph that cannot be exported falls back to TensorFlow with one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from siamrec import inference
from siamrec.backbones import musicnn as mn
from siamrec.extractor import Extractor

CLIP = {"sr": mn.SR, "duration": mn.WINDOW_SAMPLES / mn.SR, "windows": "all", "offset": "start", "hop": None,
        "max_windows": 64, "pool": "mean"}


@pytest.fixture(scope="module")
def bundle_and_model():
    import keras

    keras.utils.set_random_seed(0)
    return mn.MusicnnMSD(pretrained=False), mn.build_musicnn()


def windows(n=3, seed=1):
    t = np.arange(mn.WINDOW_SAMPLES) / mn.SR
    rng = np.random.default_rng(seed)
    return np.stack([0.3 * np.sin(2 * np.pi * (200 + 300 * k) * t) + 0.05 * rng.standard_normal(t.size)
                     for k in range(n)]).astype(np.float32)


def test_numpy_frontend_is_the_layer():
    """musicnn's NumPy front end (for runtimes without the float64 FFT) equals the in-model layer: no float16 step
    apart, float32 rounding of the log only."""
    x = windows(4)
    got, ref = mn.logmel_numpy(x), np.asarray(mn.MusicnnLogMel()(x))
    assert got.shape == ref.shape == (4, mn.N_FRAMES, mn.N_MELS) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 5e-6


def test_onnxruntime_gives_the_keras_outputs_and_caches_the_graph(bundle_and_model, tmp_path, monkeypatch):
    bundle, model = bundle_and_model
    runner = inference.make_runner(bundle, model, "onnxruntime", 1, "k1", tmp_path)
    assert runner.name == "onnxruntime"
    x = windows()
    ref, got = model.predict_on_batch(x), runner(x)
    for part in ("penultimate", "max_pool", "taggram"):
        np.testing.assert_allclose(got[part], np.asarray(ref[part]), rtol=1e-4, atol=1e-4)
    two = inference.OnnxRunner(str(next((tmp_path / "onnx").glob("*.onnx"))), 2, mn.logmel_numpy)
    for part, value in two(x).items():  # the batch split over two threads: the same rows, in order
        np.testing.assert_allclose(value, got[part], rtol=1e-5, atol=1e-6)
    cached = list((tmp_path / "onnx").glob("musicnn_msd-*.onnx"))
    assert len(cached) == 1

    def no_export(_model):
        raise AssertionError("exported again")

    monkeypatch.setattr(inference, "export_onnx", no_export)
    again = inference.make_runner(bundle, model, "onnxruntime", 1, "k1", tmp_path)
    assert again.name == "onnxruntime"  # from the cache
    np.testing.assert_array_equal(again(x)["penultimate"], got["penultimate"])


def test_tensorflow_runs_a_batch_as_parts_at_once_and_gives_the_same_rows(bundle_and_model):
    bundle, model = bundle_and_model
    x = windows()
    one, two = inference.make_runner(bundle, model, "tensorflow", 1, "k", None), \
        inference.make_runner(bundle, model, "tensorflow", 2, "k", None)
    got, ref = two(x), one(x)
    assert two._pool is not None and one._pool is None  # two parts on two threads; one part in the caller's
    for part, value in ref.items():
        np.testing.assert_allclose(got[part], value, rtol=1e-5, atol=1e-5)


def test_changed_weights_get_a_new_graph(bundle_and_model, tmp_path):
    """The extractor keys its runner by the fingerprint of the current weights: fine-tuning re-exports."""
    bundle, model = bundle_and_model
    ex = Extractor(bundle, model, OmegaConf.create(CLIP), batch_size=2, runtime="onnxruntime",
                   model_cache=tmp_path)
    x = windows(2)
    before = ex.embed_windows(x)
    layer = model.get_layer("backend_logits")
    kernel, bias = layer.get_weights()
    try:
        layer.set_weights([kernel, bias + 1.0])
        after = ex.embed_windows(x)
        keras_after = np.asarray(model.predict_on_batch(x)["taggram"])
    finally:
        layer.set_weights([kernel, bias])
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2
    taggram = ex.columns(["taggram"])
    assert np.abs(before[:, taggram] - after[:, taggram]).max() > 0.01
    np.testing.assert_allclose(after[:, taggram], keras_after, rtol=1e-4, atol=1e-5)


def test_falls_back_to_tensorflow_when_export_fails(bundle_and_model, tmp_path, monkeypatch, capsys):
    bundle, model = bundle_and_model

    def broken(_model):
        raise ValueError("layers without an ONNX form: Weird")

    monkeypatch.setattr(inference, "export_onnx", broken)
    monkeypatch.setattr(inference, "_warned", set())
    runner = inference.make_runner(bundle, model, "onnxruntime", 1, "k2", tmp_path)
    assert runner.name == "tensorflow"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Weird" in err[0] and "TensorFlow" in err[0]
    assert not (tmp_path / "onnx").exists()


def test_falls_back_to_tensorflow_without_onnxruntime(bundle_and_model, tmp_path, monkeypatch, capsys):
    bundle, model = bundle_and_model
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    monkeypatch.setattr(inference, "_warned", set())
    runner = inference.make_runner(bundle, model, "onnxruntime", 1, "k3", tmp_path)
    assert runner.name == "tensorflow"
    err = capsys.readouterr().err
    assert "onnxruntime is not installed" in err and len(err.strip().splitlines()) == 1


def test_unknown_runtime_is_one_clear_error(bundle_and_model):
    from siamrec.errors import SiamrecError

    bundle, model = bundle_and_model
    with pytest.raises(SiamrecError, match="features.runtime='openvino'"):
        inference.make_runner(bundle, model, "openvino", 1, "k4", None)
