"""The musicnn (MSD) port: front end against librosa, window offsets against whole-song frames, weight checks, and
equality with the ORIGINAL musicnn model code on the real raga clips.

The equality test imports the original model definition (`musicnn.models`, PyPI musicnn 0.1.0, ISC licence) as a
test-only dependency, installed with `pip install --no-deps musicnn==0.1.0` plus `tf_keras` (for
`tf.compat.v1.layers` under TensorFlow 2.20); it skips with a reason when they are missing. Only `musicnn.models`
is imported: `musicnn.extractor` would switch TensorFlow's eager execution off for the whole process.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import shared_root
from siamrec.backbones import musicnn as mn
from siamrec.errors import SiamrecError
from siamrec.inference import make_runner

SR = mn.SR


def patch_windows(y: np.ndarray) -> np.ndarray:
    """The extractor's windows for every whole patch of a song: patch i is the samples
    [47872·i − 256, 47872·i − 256 + 48128), zeros outside the song."""
    n_patches = (1 + len(y) // mn.HOP) // mn.N_FRAMES
    padded = np.concatenate([np.zeros(mn.CONTEXT_SAMPLES, np.float32), y.astype(np.float32),
                             np.zeros(mn.WINDOW_SAMPLES, np.float32)])
    return np.stack([padded[i * mn.PATCH_SAMPLES: i * mn.PATCH_SAMPLES + mn.WINDOW_SAMPLES]
                     for i in range(n_patches)])


def librosa_logmel(y: np.ndarray, float16: bool) -> np.ndarray:
    """(frames, 96) log-mel of a whole song as the original extractor computes it (musicnn/extractor.py,
    batch_data): float16 rounding of the mel, then cast to float32 before the log (under NumPy 2 the float16
    product 10000·x overflows to inf)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=mn.HOP, n_fft=mn.N_FFT, n_mels=mn.N_MELS).T
    mel = mel.astype(np.float16).astype(np.float32) if float16 else mel.astype(np.float32)
    return np.log10(10000 * mel + 1)


def mel_patches(logmel: np.ndarray) -> np.ndarray:
    """Non-overlapping 187-frame patches, trailing partial patch dropped (as the original)."""
    starts = range(0, logmel.shape[0] - mn.N_FRAMES + 1, mn.N_FRAMES)
    return np.stack([logmel[s: s + mn.N_FRAMES] for s in starts])


def synthetic_song(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t * (1 + 0.1 * np.sin(t)))
    y += 0.05 * rng.normal(size=t.size) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    y += 0.01 * rng.normal(size=t.size)
    return y.astype(np.float32)


def random_checkpoint_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in mn.CHECKPOINT_SHAPES.items():
        a = rng.normal(scale=0.05, size=shape).astype(np.float32)
        if name.endswith("moving_variance") or name.endswith("gamma"):
            a = np.abs(a) + 1.0
        arrays[name] = a
    return arrays


def write_checkpoint(prefix: str, arrays: dict[str, np.ndarray]) -> None:
    import tensorflow as tf

    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])


@pytest.fixture(scope="module")
def random_model():
    return mn.build_musicnn()


# --- no shared data needed --------------------------------------------------------------------------------------
def test_frontend_matches_librosa():
    """The in-model log-mel equals librosa's centred mel + log10(10000·x + 1) on the same frames: to ~1e-6 in
    float32 (the mel is computed as librosa does, bit for bit on CPU); with the original's float16 rounding too,
    where a 1-ulp difference would show as a full float16 step (~5e-4 on the log scale)."""
    y = synthetic_song(2 * mn.PATCH_SAMPLES / SR + 0.5)
    windows = patch_windows(y)
    port = np.asarray(mn.MusicnnLogMel(float16=False)(windows))  # (patches, 187, 96)
    ref = mel_patches(librosa_logmel(y, float16=False))
    assert port.shape == ref.shape == (2, mn.N_FRAMES, mn.N_MELS)
    np.testing.assert_allclose(port, ref, rtol=1e-6, atol=2e-6)
    # and the mel itself, before the log, to ~1e-5 relative of its scale
    mel_port = (10.0 ** port.astype(np.float64) - 1) / 10000
    mel_ref = (10.0 ** ref.astype(np.float64) - 1) / 10000
    assert np.max(np.abs(mel_port - mel_ref)) <= 1e-5 * np.max(mel_ref)

    port16 = np.asarray(mn.MusicnnLogMel()(windows))
    ref16 = mel_patches(librosa_logmel(y, float16=True))
    diff = np.abs(port16 - ref16)
    assert np.mean(diff <= 2e-6) > 0.999 and diff.max() < 5e-4


def test_window_offsets_reproduce_whole_song_frames(random_model):
    """Windows read at 47872·i − 256 give the same patches as the whole song's centred frames; a song's vector
    (the mean over its patches) equals the one computed from the full-song mel patches."""
    mel_model = mn.mel_input_model(random_model)
    y = synthetic_song(3 * mn.PATCH_SAMPLES / SR + 1.234, seed=1)  # 3 whole patches and a partial one dropped
    windows = patch_windows(y)
    assert len(windows) == 3
    from_windows = random_model.predict_on_batch(windows)
    from_mel = mel_model.predict_on_batch(mel_patches(librosa_logmel(y, float16=True)))
    for part in mn.MusicnnMSD.parts:
        a, b = np.asarray(from_windows[part]).mean(0), np.asarray(from_mel[part]).mean(0)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())), err_msg=part)


def test_bundle_interface(random_model):
    b = mn.MusicnnMSD()
    assert (b.sample_rate, b.window_samples, b.hop_samples, b.context_samples) == (16000, 48128, 47872, 256)
    assert b.parts == {"penultimate": 200, "max_pool": 753, "taggram": 50} and b.dim == 1003
    assert len(b.tags) == 50 and b.tags[:2] == ("rock", "pop") and b.tags[-1] == "happy"
    out = random_model.predict_on_batch(np.zeros((2, b.window_samples), np.float32))
    assert {k: v.shape for k, v in out.items()} == {"penultimate": (2, 200), "max_pool": (2, 753),
                                                     "taggram": (2, 50), "tags": (2, 50)}
    assert b.classifier_input(random_model).shape[-1] == 200
    names = {g: {layer.name for layer in b.layers_of(random_model, g)} for g in b.groups}
    assert not (names["frontend"] & names["midend"]) and "backend_bn_dense" in names["backend"]
    b.set_trainable(random_model, ["backend"])
    assert all(layer.trainable == (layer.name in names["backend"]) for layer in random_model.layers)
    with pytest.raises(SiamrecError):
        mn.MusicnnMSD(sample_rate=22050)


def test_saved_model_reloads(random_model, tmp_path):
    import keras

    x = synthetic_song(mn.WINDOW_SAMPLES / SR)[None, : mn.WINDOW_SAMPLES]
    random_model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    a, b = random_model.predict_on_batch(x), again.predict_on_batch(x)
    for part in a:
        np.testing.assert_array_equal(a[part], b[part])
    np.testing.assert_array_equal(a["tags"], a["taggram"])


def test_conf_instantiates_the_bundle():
    from hydra.utils import instantiate

    cfg = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "backbone" / "musicnn_msd.yaml")
    b = instantiate(cfg)
    assert isinstance(b, mn.MusicnnMSD) and b.pretrained and b.sample_rate == 16000


def test_conversion_loads_a_checkpoint_and_caches_it(tmp_path):
    arrays = random_checkpoint_arrays()
    write_checkpoint(str(tmp_path / "ckpt" / "model"), arrays)
    b = mn.MusicnnMSD(weights=str(tmp_path / "ckpt"))
    model = b.build(OmegaConf.create({"cache": str(tmp_path / "cache")}))
    k = model.get_layer("midend_conv1").get_weights()[0]
    np.testing.assert_array_equal(k, arrays["conv2d_5/kernel"][:, :, 0, :])
    np.testing.assert_array_equal(model.get_layer("backend_bn_pool").get_weights()[3],
                                  arrays["batch_normalization_9/moving_variance"])
    # a converted file is accepted as backbone.weights too
    np.savez(tmp_path / "converted.npz", **mn.keras_arrays(arrays))
    again = mn.MusicnnMSD(weights=str(tmp_path / "converted.npz")).build(OmegaConf.create({"cache": str(tmp_path)}))
    np.testing.assert_array_equal(again.get_layer("frontend_timbral77_conv").get_weights()[0], arrays["conv2d_1/kernel"])


@pytest.mark.parametrize("fault", ["nan", "shape"])
def test_conversion_refuses_a_bad_checkpoint(tmp_path, fault):
    arrays = random_checkpoint_arrays()
    if fault == "nan":
        arrays["conv2d_6/kernel"][3, 2, 0, 1] = np.nan
    else:
        arrays["dense/kernel"] = arrays["dense/kernel"][:, :100]
    write_checkpoint(str(tmp_path / "bad" / "model"), arrays)
    b = mn.MusicnnMSD(weights=str(tmp_path / "bad"))
    with pytest.raises(SiamrecError, match="NaN or infinite" if fault == "nan" else "shape"):
        b.build(OmegaConf.create({"cache": str(tmp_path / "cache")}))


# --- equality with the original, on real audio ------------------------------------------------------------------
def _shared_checkpoint():
    root = shared_root()
    ckpt = root / "weights" / "musicnn" / "MSD_musicnn"
    audio = root / "audio" / "ragaveda" / "labels.csv"
    if not (ckpt / ".index").is_file() or not audio.is_file():
        pytest.skip(f"musicnn checkpoint or raga clips not found under {root} (set SIAMREC_SHARED)")
    return root, ckpt


def _tf_with_legacy_layers():
    """`tensorflow`, except that `compat.v1.layers` are tf_keras's TF-1 layers.

    Under Keras 3, TensorFlow routes `tf.compat.v1.layers` to tf_keras only when TF_USE_LEGACY_KERAS is set before
    the first use, which would also switch `tf.keras` for the whole test process; instead the original module is
    given this proxy (same TensorFlow, same graph functions; only the layers namespace is pointed at tf_keras)."""
    import importlib
    import types

    import tensorflow as tf

    legacy_layers = importlib.import_module("tf_keras.api._v1.keras.__internal__.legacy.layers")

    class V1(types.ModuleType):
        layers = legacy_layers

        def __getattr__(self, item):
            return getattr(tf.compat.v1, item)

    class TF(types.ModuleType):
        compat = types.SimpleNamespace(v1=V1("tensorflow.compat.v1"))

        def __getattr__(self, item):
            return getattr(tf, item)

    return TF("tensorflow")


def _original_model(ckpt, monkeypatch, release: str = "MSD_musicnn"):
    """The original musicnn graph (musicnn.models.define_model), in its own tf.Graph, restored from `ckpt`."""
    for module in ("musicnn", "tf_keras"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (test-only: pip install --no-deps musicnn==0.1.0; "
                        "pip install tf_keras==2.20.*)")
    import tensorflow as tf
    from musicnn import models as original  # the model definition only (see the module docstring)

    monkeypatch.setattr(original, "tf", _tf_with_legacy_layers())
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, mn.N_FRAMES, mn.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        logits, _, _, _, _, _, _, max_pool, penultimate = original.define_model(x, is_training, release, 50)
        fetch = {"taggram": tf.nn.sigmoid(logits), "max_pool": max_pool, "penultimate": penultimate}
        sess = tf.compat.v1.Session(graph=graph)
        tf.compat.v1.train.Saver().restore(sess, str(ckpt) + "/")

    def run(patches):
        return sess.run(fetch, feed_dict={x: patches, is_training: False})

    return run, sess


def test_tag_names_are_the_originals():
    if importlib.util.find_spec("musicnn") is None:
        pytest.skip("musicnn not installed (test-only: pip install --no-deps musicnn==0.1.0)")
    from musicnn import configuration

    assert list(mn.MusicnnMSD.tags) == list(configuration.MSD_LABELS)
    assert list(mn.MusicnnMTT.tags) == list(configuration.MTT_LABELS)


def _packaged_checkpoint(folder: str):
    """A checkpoint folder of the installed musicnn package (test-only; the wheel ships MSD_musicnn and MTT_musicnn)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None:
        pytest.skip("musicnn not installed (test-only: pip install --no-deps musicnn==0.1.0)")
    return Path(list(spec.submodule_search_locations)[0]) / folder


def _cache_holding(release, ckpt: Path, root: Path) -> Path:
    """A paths.cache folder holding the release's published files, copied from `ckpt`, where lookups find them."""
    import shutil

    folder = root / "weights" / release.subdir
    folder.mkdir(parents=True)
    for f in release.files:
        shutil.copyfile(ckpt / f.file, folder / f.file)
    return root


@pytest.mark.filterwarnings("ignore:`tf.layers.*deprecated:UserWarning")  # the original's TF-1 layers
def test_mtt_release_equals_the_original(tmp_path, monkeypatch):
    """musicnn_mtt: its published files are found in the cache by their sha256 (no download), converted, and the
    port gives what the ORIGINAL graph restored from the same checkpoint gives, on songs made here."""
    from hydra.utils import instantiate

    ckpt = _packaged_checkpoint("MTT_musicnn")
    cache = _cache_holding(mn.MTT_RELEASE, ckpt, tmp_path / "cache")
    bundle = instantiate(OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "backbone" /
                                        "musicnn_mtt.yaml"), download=False)
    assert isinstance(bundle, mn.MusicnnMTT) and bundle.spec()["release"] == "MTT_musicnn"
    assert bundle.spec() != mn.MusicnnMSD().spec()  # other weights, other fingerprints of the features
    port = bundle.build(OmegaConf.create({"cache": str(cache)}))
    assert (cache / "weights" / mn.converted_file("musicnn_mtt")).is_file()
    run_original, sess = _original_model(ckpt, monkeypatch, "MTT_musicnn")
    try:
        for seed, seconds in ((0, 9.0), (1, 14.0)):
            y = synthetic_song(seconds, seed)
            ref = run_original(mel_patches(librosa_logmel(y, float16=True)))
            got = port.predict_on_batch(patch_windows(y))
            for part, tol in (("penultimate", 1e-4), ("max_pool", 2e-3), ("taggram", 2e-5)):
                np.testing.assert_allclose(np.asarray(got[part]), ref[part], rtol=0, atol=tol, err_msg=part)
    finally:
        sess.close()
    # a changed file is refused, never used
    damaged = _cache_holding(mn.MTT_RELEASE, ckpt, tmp_path / "damaged")
    with open(damaged / "weights" / mn.MTT_RELEASE.subdir / ".index", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(SiamrecError, match="sha256 differs"):
        mn.MusicnnMTT(download=False).build(OmegaConf.create({"cache": str(damaged)}))


@pytest.mark.filterwarnings("ignore:`tf.layers.*deprecated:UserWarning")  # the original's TF-1 layers
def test_port_equals_the_original_on_raga_clips(tmp_path, monkeypatch):
    """All 69 raga clips, every whole patch (560): the port (waveform windows in, its own front end) against the
    original graph fed with the original extractor's float16-rounded log-mel patches, one batch per song (so the
    stale-features bug of the original's batch loop, musicnn issue #20, cannot occur)."""
    import librosa

    root, ckpt = _shared_checkpoint()
    run_original, sess = _original_model(ckpt, monkeypatch)
    port = mn.MusicnnMSD().build(OmegaConf.create({"cache": str(tmp_path / "cache"), "shared": str(root)}))
    converted = tmp_path / "cache" / "weights" / mn.converted_file("musicnn_msd")
    assert converted.is_file() and "ISC" in converted.with_name("LICENSE").read_text()
    # built again from the cached conversion alone (no shared data, no download)
    cached = mn.MusicnnMSD(download=False).build(OmegaConf.create({"cache": str(tmp_path / "cache")}))
    for a, b in zip(port.get_weights(), cached.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the Keras model and the runtime extraction uses by default (exported to ONNX, NumPy front end)
    onnx = make_runner(mn.MusicnnMSD(), port, "onnxruntime", 1, "raga", None)
    assert onnx.name == "onnxruntime"
    runners = {"keras": port.predict_on_batch, "onnxruntime": onnx}
    tol = {"penultimate": 1e-4, "max_pool": 2e-3, "taggram": 2e-5}
    worst = {name: dict.fromkeys(tol, 0.0) for name in runners}
    rows = list(csv.DictReader(open(root / "audio" / "ragaveda" / "labels.csv")))
    n_patches, top5_differ = 0, []
    try:
        for row in rows:
            y, _ = librosa.load(str(root / "audio" / "ragaveda" / row["path"]), sr=SR)
            ref = run_original(mel_patches(librosa_logmel(y, float16=True)))
            n_patches += len(ref["taggram"])
            for name, run in runners.items():
                got = run(patch_windows(y))
                assert len(got["taggram"]) == len(ref["taggram"]), row["path"]
                for part in tol:
                    worst[name][part] = max(worst[name][part],
                                            float(np.max(np.abs(np.asarray(got[part]) - ref[part]))))
                top_ref = np.argsort(-ref["taggram"].mean(0))[:5]
                top_got = np.argsort(-np.asarray(got["taggram"]).mean(0))[:5]
                if not np.array_equal(top_ref, top_got):
                    top5_differ.append(f"{name}: {row['path']}")
    finally:
        sess.close()
    for name in runners:
        print(f"\n{name}: {len(rows)} clips, {n_patches} patches, max abs difference: "
              + ", ".join(f"{k} {v:.2e}" for k, v in worst[name].items()))
    assert len(rows) == 69 and n_patches > 0
    for name in runners:
        for part, t in tol.items():
            assert worst[name][part] <= t, f"{name}, {part}: max abs difference {worst[name][part]:.3g} > {t}"
    assert not top5_differ, f"top-5 tags (mean over the clip's patches) differ for {top5_differ}"
