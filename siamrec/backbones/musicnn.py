"""musicnn (Pons & Serra 2019), the MSD_musicnn and MTT_musicnn taggers, in Keras 3: 16 kHz waveform → log-mel →
musicnn. The two releases share the network and differ in their weights and their 50 tags: ``musicnn_msd`` was
trained on the Million Song Dataset (genres, eras, moods), ``musicnn_mtt`` on MagnaTagATune (instruments, voices,
moods, styles).

The original (github.com/jordipons/musicnn, ISC licence, see MUSICNN_LICENSE next to this file) is a TensorFlow-1
graph fed with log-mel patches computed outside the model. Here the whole chain is one Keras model whose input is a
mono waveform window, so the project's extractor can read songs by seeking.

Front end (inside the model; float32 out):
  librosa's centred mel spectrogram (n_fft 512, hop 256, periodic Hann window, power 2, 96 Slaney mel bands up to
  8 kHz; the constant-zero padding of librosa ≥ 0.10), computed as librosa computes it (float64 FFT rounded to
  complex64, float32 power and filterbank: bit-identical on CPU), rounded to float16 as the original does (cast
  back to float32 before the log, which avoids the original's float16 overflow under NumPy 2), then
  ``log10(10000·x + 1)``. See ``MusicnnLogMel`` for why the mel must match librosa's to the bit.

Windows, patches and offsets:
  musicnn classifies patches of 187 mel frames, without overlap; the trailing partial patch is dropped. A song's
  centred frame k covers the samples [256·k − 256, 256·k + 256) (zeros outside the song). Patch i is the frames
  187·i … 187·i + 186, i.e. the samples [47872·i − 256, 47872·i − 256 + 48128). Hence
  ``hop_samples = 187·256 = 47872`` (one patch), ``context_samples = 256`` and
  ``window_samples = 186·256 + 512 = 48128``: the extractor feeds, for patch i, the samples
  [47872·i − 256, 47872·i − 256 + 48128) of the song (zeros before its start and after its end), and the model frames
  that window *without* padding ('valid' framing, exactly 187 frames): frame j of the window is then exactly librosa's
  centred frame 187·i + j of the whole song. (A song of n samples has 1 + n // 256 centred frames, hence
  (1 + n // 256) // 187 whole patches.)

Network (as ``musicnn.models.build_musicnn`` with num_filt_midend=64, num_units_backend=200):
  front end: BatchNorm of the input; timbral filters 7×38 and 7×67 (204 each, time padded by 3, 'valid' in
  frequency) and temporal filters 128×1, 64×1, 32×1 (51 each, 'same'), each ReLU → BatchNorm → max over frequency:
  561 channels per frame. Mid end: three 1-D convolutions of width 7 (64 filters, ReLU → BatchNorm), the second and
  third with residual connections; the front-end and the three mid-end outputs are concatenated (753 per frame).
  Back end: max and mean over time (753 + 753, interleaved) → BatchNorm → dense 200 ReLU → BatchNorm
  (= ``penultimate``) → dense 50 → sigmoid (= ``taggram``). Every BatchNorm uses its stored statistics, ε = 1e-3;
  dropout is inactive.

Outputs: ``penultimate`` (200), ``max_pool`` (753), ``taggram`` (50) and ``tags`` (the taggram again, for the
``tag`` command). musicnn_msd's 50 tags are the MSD top-50 in the same order as Choi 2017's; musicnn_mtt's are
MagnaTagATune's top-50 in the original's order.

Weights: the release's TF-1 checkpoint as published (``.index`` + ``.data-00000-of-00001``, sha256-checked),
found in the cache, in the shared data or downloaded (``siamrec.backbones.base.resolve_file``), or given explicitly
with ``backbone.weights=DIR`` (a folder holding the checkpoint, a checkpoint prefix, or a converted ``.npz``). It is
read with ``tf.train`` (no musicnn code), mapped onto the Keras layers, and the converted arrays are cached once in
``paths.cache/weights/musicnn/NAME.weights.npz`` (NAME: musicnn_msd, musicnn_mtt) with the ISC licence next to
them.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from siamrec.backbones.base import MSD_TAGS, Bundle, WeightFile, check_finite_weights, resolve_file
from siamrec.errors import SiamrecError

SR, N_FFT, HOP, N_MELS, N_FRAMES = 16000, 512, 256, 96, 187
WINDOW_SAMPLES = (N_FRAMES - 1) * HOP + N_FFT  # 48128
PATCH_SAMPLES = N_FRAMES * HOP  # 47872
CONTEXT_SAMPLES = N_FFT // 2  # 256
BN_EPSILON = 1e-3


# MagnaTagATune's 50 tags in the order of musicnn_mtt's outputs (musicnn/configuration.py, MTT_LABELS)
MTT_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)


@dataclass(frozen=True)
class Release:
    """A published musicnn checkpoint: its folder (in github.com/jordipons/musicnn's musicnn/, in the cache and in
    the shared data under weights/musicnn/) and its two files for inference (.index and .data-00000-of-00001)."""

    folder: str
    index_sha256: str
    data_sha256: str

    @property
    def subdir(self) -> str:
        return f"musicnn/{self.folder}"

    @property
    def files(self) -> tuple[WeightFile, ...]:
        # pinned to commit 516acb2 of github.com/jordipons/musicnn; the files are unchanged since 2019-08-01 and
        # byte-identical to the PyPI wheel musicnn 0.1.0's (same git blob ids)
        base = ("https://raw.githubusercontent.com/jordipons/musicnn/516acb2a0ff5ef73f64547898e018e793152c506/"
                f"musicnn/{self.folder}/")
        return (WeightFile(".index", self.index_sha256, base + ".index"),
                WeightFile(".data-00000-of-00001", self.data_sha256, base + ".data-00000-of-00001"))


MSD_RELEASE = Release("MSD_musicnn", "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8",
                      "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6")
MTT_RELEASE = Release("MTT_musicnn", "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57",
                      "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab")
CONVERSION_VERSION = 1
LICENSE_FILE = Path(__file__).with_name("MUSICNN_LICENSE")

# Keras layer → checkpoint scope, in the order the original graph creates them
_FRONTEND = (("frontend_bn_input", "batch_normalization"),
             ("frontend_timbral74_conv", "conv2d"), ("frontend_timbral74_bn", "batch_normalization_1"),
             ("frontend_timbral77_conv", "conv2d_1"), ("frontend_timbral77_bn", "batch_normalization_2"),
             ("frontend_temporal128_conv", "conv2d_2"), ("frontend_temporal128_bn", "batch_normalization_3"),
             ("frontend_temporal64_conv", "conv2d_3"), ("frontend_temporal64_bn", "batch_normalization_4"),
             ("frontend_temporal32_conv", "conv2d_4"), ("frontend_temporal32_bn", "batch_normalization_5"))
_MIDEND = (("midend_conv1", "conv2d_5"), ("midend_bn1", "batch_normalization_6"),
           ("midend_conv2", "conv2d_6"), ("midend_bn2", "batch_normalization_7"),
           ("midend_conv3", "conv2d_7"), ("midend_bn3", "batch_normalization_8"))
_BACKEND = (("backend_bn_pool", "batch_normalization_9"), ("backend_dense", "dense"),
            ("backend_bn_dense", "batch_normalization_10"), ("backend_logits", "dense_1"))
LAYER_SCOPES = dict(_FRONTEND + _MIDEND + _BACKEND)
GROUPS = {"frontend": [k for k, _ in _FRONTEND], "midend": [k for k, _ in _MIDEND],
          "backend": [k for k, _ in _BACKEND]}
BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")

# checkpoint variable → shape (both published releases)
CHECKPOINT_SHAPES: dict[str, tuple[int, ...]] = {}
for _scope, _c in (("batch_normalization", 1), ("batch_normalization_1", 204), ("batch_normalization_2", 204),
                   ("batch_normalization_3", 51), ("batch_normalization_4", 51), ("batch_normalization_5", 51),
                   ("batch_normalization_6", 64), ("batch_normalization_7", 64), ("batch_normalization_8", 64),
                   ("batch_normalization_9", 1506), ("batch_normalization_10", 200)):
    for _p in BN_PARAMS:
        CHECKPOINT_SHAPES[f"{_scope}/{_p}"] = (_c,)
for _scope, _k in (("conv2d", (7, 38, 1, 204)), ("conv2d_1", (7, 67, 1, 204)), ("conv2d_2", (128, 1, 1, 51)),
                   ("conv2d_3", (64, 1, 1, 51)), ("conv2d_4", (32, 1, 1, 51)), ("conv2d_5", (7, 561, 1, 64)),
                   ("conv2d_6", (7, 64, 1, 64)), ("conv2d_7", (7, 64, 1, 64)), ("dense", (1506, 200)),
                   ("dense_1", (200, 50))):
    CHECKPOINT_SHAPES[f"{_scope}/kernel"] = _k
    CHECKPOINT_SHAPES[f"{_scope}/bias"] = (_k[-1],)


# --- front end --------------------------------------------------------------------------------------------------
def hann_window(n_fft: int = N_FFT) -> np.ndarray:
    """librosa's periodic Hann window (get_window('hann', n_fft, fftbins=True)), float64 as librosa uses it."""
    import librosa

    return librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float64)


def mel_filterbank() -> np.ndarray:
    """(257, 96) float32: librosa's Slaney mel filterbank at 16 kHz, n_fft 512 (fmax 8 kHz)."""
    import librosa

    return librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS).T.astype(np.float32)


@keras.saving.register_keras_serializable(package="siamrec")
class MusicnnLogMel(keras.layers.Layer):
    """(batch, 48128) waveform window → (batch, 187, 96) ``log10(10000·mel + 1)``: 'valid' framing (hop 256, no
    padding), periodic Hann window, |real FFT|², Slaney mel filterbank; window and filterbank are constants.

    float16=True (default) rounds the mel to float16 before the log, as the original does (musicnn's extractor and,
    by its stored spectrograms, its training): the network is sensitive to it (penultimate differs by up to 5e-4
    without it on the raga clips). Values are clipped at float16's maximum 65504 first (the original would give inf).

    Because a float16 step is ~1e-3 relative (5e-4 on the log scale), a 1-ulp float32 difference in the mel becomes
    a 5e-4 jump whenever it straddles a rounding boundary. So the mel is computed the way librosa computes it, to
    the bit on CPU: frames × float64 window → float64 FFT rounded to complex64, magnitude as NumPy's complex64
    abs(), squared in float32, float32 matmul with librosa's float32 filterbank.
    """

    def __init__(self, n_frames: int = N_FRAMES, float16: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.n_frames = int(n_frames)
        self.float16 = bool(float16)
        self._window = hann_window()
        self._mel = mel_filterbank()

    def call(self, x):
        x = ops.cast(x, "float64")
        blocks = ops.reshape(x, (-1, self.n_frames + 1, HOP))  # (batch, 188, 256)
        frames = ops.concatenate([blocks[:, :-1, :], blocks[:, 1:, :]], axis=-1)  # (batch, 187, 512)
        re, im = ops.rfft(frames * ops.convert_to_tensor(self._window))  # float64, as librosa's
        re, im = ops.abs(ops.cast(re, "float32")), ops.abs(ops.cast(im, "float32"))  # librosa's complex64
        # |X| as NumPy computes abs() of complex64: larger · sqrt(fma(r, r, 1)), r = smaller / larger
        larger, smaller = ops.maximum(re, im), ops.minimum(re, im)
        ratio = smaller / ops.where(larger == 0.0, ops.ones_like(larger), larger)
        magnitude = ops.sqrt(ops.cast(ops.square(ops.cast(ratio, "float64")) + 1.0, "float32")) * larger
        mel = ops.matmul(ops.square(magnitude), ops.convert_to_tensor(self._mel))
        if self.float16:
            mel = ops.cast(ops.cast(ops.minimum(mel, 65504.0), "float16"), "float32")
        return ops.log10(10000.0 * mel + 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_frames, N_MELS)

    def get_config(self):
        return {**super().get_config(), "n_frames": self.n_frames, "float16": self.float16}


def logmel_numpy(windows: np.ndarray) -> np.ndarray:
    """``MusicnnLogMel`` (float16=True) in NumPy, for runtimes that get the network without its front end: the
    same operations in the same precisions (librosa's own: float64 FFT rounded to complex64, NumPy's complex64
    abs(), float32 power and filterbank), float16 rounding, log10(10000·x + 1)."""
    window, mel_fb = _numpy_frontend_constants()
    x = np.asarray(windows, dtype=np.float32)
    blocks = x.reshape(len(x), N_FRAMES + 1, HOP)
    frames = np.concatenate([blocks[:, :-1], blocks[:, 1:]], axis=-1)  # (batch, 187, 512)
    spectrum = np.fft.rfft(frames * window, axis=-1).astype(np.complex64)
    power = np.abs(spectrum) ** 2
    mel = np.matmul(power, mel_fb)
    mel = np.minimum(mel, np.float32(65504.0)).astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000.0) * mel + np.float32(1.0))


_FRONTEND_CONSTANTS: list = []


def _numpy_frontend_constants():
    if not _FRONTEND_CONSTANTS:
        _FRONTEND_CONSTANTS.extend([hann_window(), mel_filterbank()])
    return _FRONTEND_CONSTANTS


# --- network ----------------------------------------------------------------------------------------------------
def _bn(name):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def musicnn_network(mel) -> dict:
    """The musicnn layers on a (batch, 187, 96) log-mel tensor; returns the output dict."""
    x = keras.layers.Reshape((N_FRAMES, N_MELS, 1), name="frontend_expand")(mel)
    x = _bn("frontend_bn_input")(x)
    padded = keras.layers.ZeroPadding2D(((3, 3), (0, 0)), name="frontend_pad7")(x)
    branches = []
    for tag, width in (("timbral74", int(0.4 * N_MELS)), ("timbral77", int(0.7 * N_MELS))):
        branches.append(keras.layers.Conv2D(204, (7, width), padding="valid", activation="relu",
                                            name=f"frontend_{tag}_conv")(padded))
    for tag, length in (("temporal128", 128), ("temporal64", 64), ("temporal32", 32)):
        branches.append(keras.layers.Conv2D(51, (length, 1), padding="same", activation="relu",
                                            name=f"frontend_{tag}_conv")(x))
    pooled = []
    for y, tag in zip(branches, ("timbral74", "timbral77", "temporal128", "temporal64", "temporal32")):
        y = _bn(f"frontend_{tag}_bn")(y)
        y = keras.layers.MaxPooling2D((1, y.shape[2]), name=f"frontend_{tag}_pool")(y)
        pooled.append(keras.layers.Reshape((N_FRAMES, y.shape[-1]), name=f"frontend_{tag}_squeeze")(y))
    front = keras.layers.Concatenate(axis=-1, name="frontend_concat")(pooled)  # (batch, 187, 561)

    mids, y = [], front
    for k in (1, 2, 3):
        z = keras.layers.ZeroPadding1D(3, name=f"midend_pad{k}")(y)
        z = keras.layers.Conv1D(64, 7, padding="valid", activation="relu", name=f"midend_conv{k}")(z)
        z = _bn(f"midend_bn{k}")(z)
        if k > 1:
            z = keras.layers.Add(name=f"midend_res{k}")([z, y])
        mids.append(z)
        y = z
    dense_in = keras.layers.Concatenate(axis=-1, name="midend_concat")([front, *mids])  # (batch, 187, 753)

    max_pool = keras.layers.GlobalMaxPooling1D(name="max_pool")(dense_in)
    mean_pool = keras.layers.GlobalAveragePooling1D(name="mean_pool")(dense_in)
    # the original concatenates (753, 1) max and mean maps on their last axis, then flattens: the 1506 features
    # are interleaved (max₀, mean₀, max₁, mean₁, …), which is the order the stored BatchNorm and dense weights expect
    h = keras.layers.Concatenate(axis=-1, name="backend_pool")(
        [keras.layers.Reshape((-1, 1), name=f"backend_{n}_expand")(t)
         for n, t in (("max", max_pool), ("mean", mean_pool))])
    h = keras.layers.Flatten(name="backend_flatten")(h)
    h = _bn("backend_bn_pool")(h)
    h = keras.layers.Dropout(0.5, name="backend_dropout_pool")(h)
    h = keras.layers.Dense(200, activation="relu", name="backend_dense")(h)
    penultimate = _bn("backend_bn_dense")(h)
    h = keras.layers.Dropout(0.5, name="backend_dropout_dense")(penultimate)
    logits = keras.layers.Dense(len(MSD_TAGS), name="backend_logits")(h)  # 50 tags in either release
    taggram = keras.layers.Activation("sigmoid", name="taggram")(logits)
    tags = keras.layers.Identity(name="tags")(taggram)
    return {"penultimate": penultimate, "max_pool": max_pool, "taggram": taggram, "tags": tags}


def build_musicnn(with_frontend: bool = True) -> keras.Model:
    """The port with random weights: input a (batch, 48128) waveform window (or, with_frontend=False, a
    (batch, 187, 96) log-mel patch as the original is fed)."""
    if with_frontend:
        audio = keras.Input(shape=(WINDOW_SAMPLES,), name="audio")
        mel = MusicnnLogMel(name="logmel")(audio)
        return keras.Model(audio, musicnn_network(mel), name="musicnn_msd")
    mel = keras.Input(shape=(N_FRAMES, N_MELS), name="logmel")
    return keras.Model(mel, musicnn_network(mel), name="musicnn_msd_mel")


def output_tensors(model: keras.Model) -> dict:
    """The model's output dict, from its layers (penultimate, max_pool, taggram, tags)."""
    return {"penultimate": model.get_layer("backend_bn_dense").output, "max_pool": model.get_layer("max_pool").output,
            "taggram": model.get_layer("taggram").output, "tags": model.get_layer("tags").output}


def mel_input_model(model: keras.Model) -> keras.Model:
    """The same network (same layers, same weights) fed with (batch, 187, 96) log-mel patches, as the original is."""
    return keras.Model(model.get_layer("logmel").output, output_tensors(model), name="musicnn_msd_mel")


# --- weights ----------------------------------------------------------------------------------------------------
def read_checkpoint(prefix: str | Path, source=None) -> dict[str, np.ndarray]:
    """The musicnn variables of a TF-1 checkpoint (prefix: 'DIR/' for the published files), shape-checked
    and finite-checked; Adam slots are ignored."""
    import tensorflow as tf

    source = source or prefix
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(str(prefix))
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint ends in the same advice
        raise SiamrecError(f"backbone.weights={source}: not a readable TensorFlow checkpoint "
                           f"({str(exc).splitlines()[0]})") from None
    shapes = reader.get_variable_to_shape_map()
    arrays = {}
    for name, shape in CHECKPOINT_SHAPES.items():
        if name not in shapes:
            raise SiamrecError(f"backbone.weights={source}: variable {name} missing; not a musicnn checkpoint")
        if tuple(shapes[name]) != shape:
            raise SiamrecError(f"backbone.weights={source}: {name} has shape {tuple(shapes[name])}, "
                               f"expected {shape}; not a musicnn checkpoint")
        arrays[name] = np.asarray(reader.get_tensor(name), dtype=np.float32)
    check_finite_weights(arrays, source)
    return arrays


def keras_arrays(ckpt: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checkpoint variables → {'keras_layer/param': array} in the Keras layers' layout."""
    out = {}
    for layer, scope in LAYER_SCOPES.items():
        if "_bn" in layer:
            for p in BN_PARAMS:
                out[f"{layer}/{p}"] = ckpt[f"{scope}/{p}"]
        else:
            kernel = ckpt[f"{scope}/kernel"]
            if layer.startswith("midend_conv"):  # Conv2D (7, C, 1, 64) over a 1-channel image = Conv1D (7, C, 64)
                kernel = kernel[:, :, 0, :]
            out[f"{layer}/kernel"] = np.ascontiguousarray(kernel)
            out[f"{layer}/bias"] = ckpt[f"{scope}/bias"]
    return out


def set_weights(model: keras.Model, arrays: dict[str, np.ndarray], source) -> None:
    """Load {'layer/param': array} into the model, refusing missing, non-finite or wrongly shaped arrays."""
    check_finite_weights(arrays, source)
    for layer_name in LAYER_SCOPES:
        layer = model.get_layer(layer_name)
        names = BN_PARAMS if "_bn" in layer_name else ("kernel", "bias")
        values = []
        for p, current in zip(names, layer.get_weights()):
            key = f"{layer_name}/{p}"
            if key not in arrays:
                raise SiamrecError(f"backbone.weights={source}: {key} missing; not converted musicnn weights")
            if tuple(arrays[key].shape) != tuple(current.shape):
                raise SiamrecError(f"backbone.weights={source}: {key} has shape {tuple(arrays[key].shape)}, "
                                   f"expected {tuple(current.shape)}")
            values.append(arrays[key])
        layer.set_weights(values)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except Exception as exc:  # noqa: BLE001
        raise SiamrecError(f"backbone.weights={path}: not a converted musicnn weight file ({exc})") from None


def converted_file(name: str) -> str:
    """Where the converted weights of bundle `name` are cached, under paths.cache/weights/."""
    return f"musicnn/{name}.weights.npz"


def published_arrays(release: Release, name: str, paths_cfg, download_ok: bool = True,
                     url: str | None = None) -> tuple[dict, Path]:
    """Converted weights of a published checkpoint: from the cache, or converted once (and cached)."""
    from siamrec.runs import atomic_write_bytes, read_checked_npz, write_checked_npz

    cache_root = Path(str(paths_cfg.cache)).expanduser() / "weights"
    converted = cache_root / converted_file(name)
    # the converted file is reused only for the same checkpoint and the same conversion (bump on mapping changes)
    source_id = np.array(f"conversion {CONVERSION_VERSION}: " + ",".join(f.sha256 for f in release.files))
    if converted.is_file():
        try:
            arrays = read_checked_npz(converted)  # sha256-checked on every load
            if str(arrays.pop("__source__", "")) == str(source_id):
                check_finite_weights(arrays, converted)
                return arrays, converted
        except Exception:  # noqa: BLE001 - a damaged (bit-flipped, truncated) cache entry is converted again below
            pass
    found = []
    for spec in release.files:
        spec_url = url.rstrip("/") + "/" + spec.file if url else None
        found.append(resolve_file(spec, release.subdir, paths_cfg, download_ok=download_ok, url=spec_url))
    with tempfile.TemporaryDirectory(prefix="musicnn_ckpt_") as tmp:
        # the two files may come from different places (cache / shared): gather them under one prefix
        for spec, path in zip(release.files, found):
            shutil.copyfile(path, Path(tmp) / spec.file)
        arrays = keras_arrays(read_checkpoint(tmp + "/", source=found[0].parent))
    write_checked_npz(converted, {**arrays, "__source__": source_id})
    if LICENSE_FILE.is_file():
        atomic_write_bytes(converted.with_name("LICENSE"), LICENSE_FILE.read_bytes())
    return arrays, converted


def explicit_arrays(weights: str | Path) -> dict[str, np.ndarray]:
    """backbone.weights=PATH: a folder holding the checkpoint, a checkpoint prefix, or a converted .npz."""
    p = Path(str(weights)).expanduser()
    if p.is_file() and p.suffix == ".npz":
        arrays = _read_npz(p)
        arrays.pop("__source__", None)
        return arrays
    if p.is_dir():
        if (p / ".index").is_file():
            return keras_arrays(read_checkpoint(str(p) + "/", source=p))
        indexes = sorted(p.glob("*.index"))
        if len(indexes) == 1:
            return keras_arrays(read_checkpoint(str(indexes[0])[: -len(".index")], source=p))
    elif Path(str(p) + ".index").is_file():
        return keras_arrays(read_checkpoint(p, source=p))
    raise SiamrecError(f"backbone.weights={p}: give the folder of a musicnn checkpoint (.index and "
                       ".data-00000-of-00001), a checkpoint prefix, or a converted NAME.weights.npz")


# --- the bundle -------------------------------------------------------------------------------------------------
class MusicnnMSD(Bundle):
    """musicnn trained on the Million Song Dataset (50 tags), Pons & Serra 2019 (see the module docstring)."""

    name = "musicnn_msd"
    release = MSD_RELEASE
    sample_rate = SR
    window_samples = WINDOW_SAMPLES
    hop_samples = PATCH_SAMPLES
    context_samples = CONTEXT_SAMPLES
    parts = {"penultimate": 200, "max_pool": 753, "taggram": 50}
    groups = ("frontend", "midend", "backend")
    default_parts = ("penultimate",)  # measured best on real audio (README, "Backbones, windows and song vectors")
    tags = MSD_TAGS

    def __init__(self, name: str | None = None, sample_rate: int = SR, window_seconds: float | None = None,
                 pretrained: bool = True, weights: str | None = None, download: bool = True, url: str | None = None,
                 windows: str | None = None, pool: str | None = None, normalise: str | None = None, **params):
        # windows, pool, normalise: what clip and features follow unless set (the base class says); not model settings
        if window_seconds is not None and abs(float(window_seconds) - self.window_samples / SR) > 1e-6:
            raise SiamrecError(f"backbone.window_seconds={window_seconds}: {self.name} reads windows of "
                               f"{self.window_samples / SR} s (one 3-s patch with its frames' context); keep it")
        if name is not None and str(name) != self.name:
            raise SiamrecError(f"backbone.name={name}: this bundle is {self.name}")
        if int(sample_rate) != SR:
            raise SiamrecError(f"backbone.sample_rate={sample_rate}: {self.name} was trained at {SR} Hz; "
                               f"keep {SR} (clip.sr follows it)")
        if params:
            raise SiamrecError(f"backbone: unknown setting(s) {sorted(params)} for {self.name}")
        super().__init__(pretrained=pretrained, weights=weights, download=download, url=url)

    def spec(self) -> dict:
        return {**super().spec(), "frontend": "librosa-mel-slaney96-float16-log10(1e4x+1)",
                "release": self.release.folder}

    def build(self, paths_cfg) -> keras.Model:
        model = build_musicnn()
        if self.pretrained:
            if self.weights:
                arrays, source = explicit_arrays(self.weights), self.weights
            else:
                arrays, source = published_arrays(self.release, self.name, paths_cfg, download_ok=self.download,
                                                  url=self.url)
            set_weights(model, arrays, source)
        return model

    def layers_of(self, model, group: str) -> list:
        if group not in GROUPS:
            raise SiamrecError(f"{group!r}: {self.name} has the layer groups {list(self.groups)}")
        return [model.get_layer(n) for n in GROUPS[group]]

    def classifier_input(self, model):
        return model.get_layer("backend_bn_dense").output

    def onnx_split(self, model):
        # ONNX has no float64 FFT with librosa's rounding: the front end runs in NumPy, the network is exported
        return logmel_numpy, mel_input_model(model)


class MusicnnMTT(MusicnnMSD):
    """musicnn trained on MagnaTagATune (50 tags: instruments, voices, moods, styles), Pons & Serra 2019: the same
    network as musicnn_msd, other weights and tags."""

    name = "musicnn_mtt"
    release = MTT_RELEASE
    tags = MTT_TAGS
