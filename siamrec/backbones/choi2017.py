"""The transfer convnet of Choi et al. 2017 (pretrained on the Million Song Dataset's 50 tags) as a bundle.

12 kHz waveform → mel front end (siamrec.backbones.layers) → five blocks of Conv(32, 3×3) → BatchNorm → ELU →
MaxPool. The parts are ``block1`` … ``block5``: each block's 32-d global-average-pooled activation (before the
max-pool for the Keras 2 release, after it for the Theano release, as the authors extracted them); ``tags`` are
the 50 MSD tag probabilities.

Both published weight files load (``release``):

* ``keras2``: the Keras 2 / kapre 0.1 file (input standardised per clip, stored BatchNorm statistics);
* ``theano``: the original Keras 1 / Theano release (flipped kernels; its BatchNorm used the statistics of the batch
  it was fed). ``bn_stats=dataset`` estimates them once over a library's windows (``prepare``) and freezes them;
  ``per_clip`` normalises each clip on its own.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
from kapre import MagnitudeToDecibel

from siamrec.backbones.base import MSD_TAGS, Bundle, WeightFile, check_finite_weights, resolve_file
from siamrec.backbones.layers import ClipNormalization, InstanceNormalization, MelFilterbank, PowerSTFT
from siamrec.errors import SiamrecError

SAMPLE_RATE = 12000
POOLS = ((2, 4), (3, 4), (2, 5), (2, 4), (4, 4))
BLOCK_DIM = 32
RELEASES = ("keras2", "theano")
BN_STATS = ("per_clip", "dataset")


FILES = {
    "keras2": WeightFile(
        "choi2017_keras2_msd.hdf5", "b5042bd44de1fdd9d757b764d9246e6934f47c8bdc5c15bf13566495f3439d48",
        "https://github.com/keunwoochoi/transfer_learning_music/raw/master/keras2_model/model_best.hdf5"),
    "theano": WeightFile(
        "choi2017_theano_msd.hdf5", "caf89f811415691fbb245be7eef394b9cebd787d7e3f78e29695972141cf2a08",
        "https://github.com/keunwoochoi/transfer_learning_music/raw/master/weights_transfer/weights_layer4_theano.hdf5"),
}


class Choi2017(Bundle):
    sample_rate = SAMPLE_RATE
    parts = {f"block{k}": BLOCK_DIM for k in range(1, len(POOLS) + 1)}
    groups = tuple(parts)
    tags = MSD_TAGS

    def __init__(self, release: str = "theano", bn_stats: str = "dataset", bn_max_clips: int = 256,
                 window_seconds: float = 29.0, sample_rate: int = SAMPLE_RATE, name: str | None = None, **common):
        if release not in RELEASES:
            raise SiamrecError(f"backbone.release={release!r}: use one of {', '.join(RELEASES)}")
        if bn_stats not in BN_STATS:
            raise SiamrecError(f"backbone.bn_stats={bn_stats!r}: use one of {', '.join(BN_STATS)}")
        if int(sample_rate) != SAMPLE_RATE:
            raise SiamrecError(f"backbone.sample_rate={sample_rate}: the Choi 2017 convnet was trained at "
                               f"{SAMPLE_RATE} Hz; leave it at {SAMPLE_RATE}")
        if not isinstance(window_seconds, (int, float)) or window_seconds < 1:
            raise SiamrecError(f"backbone.window_seconds={window_seconds!r}: must be a number of seconds >= 1")
        if not isinstance(bn_max_clips, int) or bn_max_clips < 1:
            raise SiamrecError(f"backbone.bn_max_clips={bn_max_clips!r}: must be an integer >= 1")
        super().__init__(release=release, bn_stats=bn_stats, bn_max_clips=bn_max_clips,
                         window_seconds=float(window_seconds), **common)
        self.release, self.bn_stats, self.prepare_max_windows = release, bn_stats, bn_max_clips
        self.name = name or f"choi2017_{release}"
        self.window_samples = self.hop_samples = int(round(float(window_seconds) * SAMPLE_RATE))
        self.needs_preparation = release == "theano" and bn_stats == "dataset"

    def build(self, paths_cfg):
        model = build_backbone(self.release, self.bn_stats)
        if self.pretrained:
            path = self.weights or resolve_file(FILES[self.release], "choi2017", paths_cfg, self.download, self.url)
            load_pretrained(model, path, self.release)
        return model

    def layers_of(self, model, group):
        k = group.removeprefix("block")
        return [model.get_layer(f"conv{k}"), model.get_layer(f"bn{k}")]

    def classifier_input(self, model):
        return model.get_layer("top_pool").output

    def prepare(self, model, windows):
        estimate_dataset_bn(model, windows)


def build_backbone(release: str = "keras2", bn_stats: str = "per_clip", n_samples: int | None = None) -> keras.Model:
    """The convnet with randomly initialised conv weights (see load_pretrained)."""
    keras2 = release == "keras2"
    audio = keras.Input(shape=(n_samples,), name="audio")
    x = PowerSTFT(padding="same" if keras2 else "center", name="stft")(audio)
    x = MelFilterbank(name="mel")(x)
    x = MagnitudeToDecibel(ref_value=1.0, amin=1e-10, dynamic_range=80.0, name="decibel")(x)
    x = ClipNormalization(mode="standardize" if keras2 else "max", name="norm")(x)
    outputs = {}
    for k, pool in enumerate(POOLS, start=1):
        x = keras.layers.Conv2D(BLOCK_DIM, 3, padding="same", name=f"conv{k}")(x)
        if keras2 or bn_stats == "dataset":
            x = keras.layers.BatchNormalization(epsilon=1e-3, name=f"bn{k}")(x)
        else:
            x = InstanceNormalization(epsilon=1e-3, name=f"bn{k}")(x)
        x = keras.layers.ELU(alpha=1.0, name=f"elu{k}")(x)
        pooled = keras.layers.MaxPooling2D(pool, padding="valid", name=f"pool{k}")(x)
        outputs[f"block{k}"] = keras.layers.GlobalAveragePooling2D(name=f"gap{k}")(x if keras2 else pooled)
        x = pooled
    top = keras.layers.GlobalMaxPooling2D(name="top_pool")(x)
    outputs["tags"] = keras.layers.Dense(len(MSD_TAGS), activation="sigmoid", name="tags")(top)
    return keras.Model(audio, outputs, name=f"choi2017_{release}")


def estimate_dataset_bn(model: keras.Model, clips: np.ndarray, batch_size: int = 8) -> None:
    """Set each BatchNorm's moving mean/variance to the statistics of its input over `clips` (AdaBN-like), block by
    block, since block k's statistics depend on the normalisation of the blocks before it."""
    from tqdm.auto import tqdm

    for k in tqdm(range(1, len(POOLS) + 1), desc="dataset BatchNorm statistics", unit="block", leave=False):
        probe = keras.Model(model.input, model.get_layer(f"conv{k}").output)
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(clips), batch_size):
            act = np.asarray(probe.predict_on_batch(clips[start:start + batch_size]), dtype=np.float64)
            total = total + act.sum(axis=(0, 1, 2))
            total_sq = total_sq + np.square(act).sum(axis=(0, 1, 2))
            count += act.shape[0] * act.shape[1] * act.shape[2]
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        bn = model.get_layer(f"bn{k}")
        gamma, beta = bn.get_weights()[:2]
        bn.set_weights([gamma, beta, mean.astype(np.float32), var.astype(np.float32)])


# --- the published weight files --------------------------------------------------------------------------------
def _keras2_arrays(h5: h5py.File) -> dict[str, np.ndarray]:
    w = h5["model_weights"]

    def get(layer, name):
        return np.asarray(w[layer][layer][f"{name}:0"])

    arrays = {
        "stft/real": get("melgram", "real_kernels")[:, 0, 0, :],
        "stft/imag": get("melgram", "imag_kernels")[:, 0, 0, :],
        "mel": get("melgram", "Variable"),
        "tags/kernel": get("dense_1", "kernel"),
        "tags/bias": get("dense_1", "bias"),
    }
    for k in range(1, 6):
        arrays[f"conv{k}/kernel"] = get(f"conv2d_{k}", "kernel")
        arrays[f"conv{k}/bias"] = get(f"conv2d_{k}", "bias")
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            arrays[f"bn{k}/{name}"] = get(f"batch_normalization_{k}", name)
    return arrays


def _theano_arrays(h5: h5py.File) -> dict[str, np.ndarray]:
    mel, conv, dense = h5["melgram"], h5["ConvBNEluDr"], h5["dense_1"]
    arrays = {
        # Theano convolves (flips kernels): store the time-reversed kernels for a plain correlation
        "stft/real": np.asarray(mel["param_0"])[::-1, 0, 0, :],
        "stft/imag": np.asarray(mel["param_1"])[::-1, 0, 0, :],
        "mel": np.asarray(mel["param_2"]),
        "tags/kernel": np.asarray(dense["dense_1_W"]),
        "tags/bias": np.asarray(dense["dense_1_b"]),
    }
    for k in range(1, 6):
        w = np.asarray(conv[f"convolution2d_{k}_W"])  # (out, in, freq, time), flipped by Theano
        arrays[f"conv{k}/kernel"] = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 1, 0))
        arrays[f"conv{k}/bias"] = np.asarray(conv[f"convolution2d_{k}_b"])
        arrays[f"bn{k}/gamma"] = np.asarray(conv[f"batchnormalization_{k}_gamma"])
        arrays[f"bn{k}/beta"] = np.asarray(conv[f"batchnormalization_{k}_beta"])
    return arrays


def read_arrays(path, release: str) -> dict[str, np.ndarray]:
    """The weight arrays of a release file, keyed 'layer/name' in the Keras 3 model's layout."""
    try:
        with h5py.File(path, "r") as h5:
            arrays = _keras2_arrays(h5) if release == "keras2" else _theano_arrays(h5)
    except (OSError, KeyError) as exc:
        raise SiamrecError(f"backbone.weights={path}: not a Choi 2017 {release} weight file ({exc})") from None
    check_finite_weights(arrays, path)
    return arrays


def load_pretrained(model, path, release: str) -> None:
    """Set the convnet's weights from the release's HDF5 file (shapes checked)."""
    arrays = read_arrays(path, release)

    def put(layer, values):
        try:
            model.get_layer(layer).set_weights(values)
        except ValueError as exc:
            raise SiamrecError(f"backbone.weights={path}: {layer} does not fit the Choi 2017 {release} model "
                               f"({str(exc).splitlines()[0]}); use the published file") from None

    put("stft", [arrays["stft/real"], arrays["stft/imag"]])
    put("mel", [arrays["mel"]])
    put("tags", [arrays["tags/kernel"], arrays["tags/bias"]])
    for k in range(1, 6):
        put(f"conv{k}", [arrays[f"conv{k}/kernel"], arrays[f"conv{k}/bias"]])
        current = model.get_layer(f"bn{k}").get_weights()
        if release == "keras2":
            put(f"bn{k}", [arrays[f"bn{k}/{n}"] for n in ("gamma", "beta", "moving_mean", "moving_variance")])
        else:  # gamma, beta; a dataset-statistics BatchNorm gets its statistics from prepare()
            put(f"bn{k}", [arrays[f"bn{k}/gamma"], arrays[f"bn{k}/beta"], *current[2:]])
