"""Independent float64 NumPy reference forward pass of the Choi et al. (2017)
transfer convnet, for the two weight files released by the authors.

This is a test helper (not a test module): tests import ``reference_forward``
and compare the project's Keras implementation against it.  It uses only NumPy
and h5py, never TensorFlow or Keras, and is written from the semantics of the
original code (kapre 0.1 at commit 0c37638 with Keras 2 / TensorFlow for the
``keras2`` file; kapre a3bde3e with Keras 1.2.2 / Theano for the ``theano``
file), with the two batch-dependent steps of the originals (the decibel step's
maximum over the whole batch, and the Theano release's mode-2 BatchNorm using
batch statistics) replaced by their per-clip equivalents.

Layouts used here: the mel-spectrogram is (freq=96, time) and feature maps are
(freq, time, channels), which is kapre's channels_last image layout
(batch, n_mels, n_frames, 1); all 3x3 kernels are brought to the
cross-correlation form (kh, kw, c_in, c_out) with kh along frequency.
"""

from __future__ import annotations

import functools

import h5py
import numpy as np

N_DFT = 512
N_HOP = 256
N_MELS = 96
POOLS = ((2, 4), (3, 4), (2, 5), (2, 4), (4, 4))  # (freq, time), 'valid'
BN_EPS = 1e-3
DB_AMIN = 1e-10
DB_RANGE = 80.0
NORM_EPS = 1e-10
RELEASES = ("keras2", "theano")


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------
def _f64(a) -> np.ndarray:
    out = np.array(a, dtype=np.float64)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def load_weights(h5_path: str, release: str) -> dict:
    """Read one weight file into float64 arrays in a release-independent form.

    Returns a dict with
      stft_real, stft_imag: (512, 257) DFT kernels as stored (tap index first)
      filterbank:           (257, 96) linear-frequency -> mel matrix
      conv:  list of 5 (kernel (3, 3, c_in, 32) in cross-correlation form, bias (32,))
      bn:    list of 5 dicts (gamma, beta and, for keras2, moving_mean / moving_var)
      dense: (W (32, 50), b (50,))
    """
    if release not in RELEASES:
        raise ValueError(f"release must be one of {RELEASES}, got {release!r}")
    w: dict = {"release": release}
    with h5py.File(h5_path, "r") as f:
        if release == "keras2":
            g = f["model_weights"]
            mel = g["melgram/melgram"]
            w["stft_real"] = _f64(mel["real_kernels:0"][:, 0, 0, :])
            w["stft_imag"] = _f64(mel["imag_kernels:0"][:, 0, 0, :])
            w["filterbank"] = _f64(mel["Variable:0"])
            w["conv"], w["bn"] = [], []
            for i in range(1, 6):
                c = g[f"conv2d_{i}/conv2d_{i}"]
                w["conv"].append((_f64(c["kernel:0"]), _f64(c["bias:0"])))
                b = g[f"batch_normalization_{i}/batch_normalization_{i}"]
                w["bn"].append({
                    "gamma": _f64(b["gamma:0"]), "beta": _f64(b["beta:0"]),
                    "moving_mean": _f64(b["moving_mean:0"]),
                    "moving_var": _f64(b["moving_variance:0"]),
                })
            d = g["dense_1/dense_1"]
            w["dense"] = (_f64(d["kernel:0"]), _f64(d["bias:0"]))
        else:
            # Keras 1.2.2 weight file: groups named by layer, datasets named by
            # the group's `weight_names` attribute.  melgram weights in kapre's
            # build order: real DFT kernels, imaginary DFT kernels, filterbank.
            names = [n.decode() for n in f["melgram"].attrs["weight_names"]]
            if names != ["param_0", "param_1", "param_2"]:
                raise ValueError(f"unexpected melgram weight names {names}")
            mel = f["melgram"]
            w["stft_real"] = _f64(mel["param_0"][:, 0, 0, :])
            w["stft_imag"] = _f64(mel["param_1"][:, 0, 0, :])
            w["filterbank"] = _f64(mel["param_2"])
            g = f["ConvBNEluDr"]
            w["conv"], w["bn"] = [], []
            for i in range(1, 6):
                k = np.asarray(g[f"convolution2d_{i}_W"], dtype=np.float64)  # (out, in, kh, kw)
                # Theano's conv2d flips the kernel (true convolution); turn it
                # into the equivalent cross-correlation kernel (kh, kw, in, out).
                k = k[:, :, ::-1, ::-1].transpose(2, 3, 1, 0)
                w["conv"].append((_f64(k), _f64(g[f"convolution2d_{i}_b"])))
                # running_mean / running_std are stored (0 / 1) but unused by
                # mode-2 BatchNorm, which always normalises with batch statistics.
                w["bn"].append({
                    "gamma": _f64(g[f"batchnormalization_{i}_gamma"]),
                    "beta": _f64(g[f"batchnormalization_{i}_beta"]),
                })
            d = f["dense_1"]
            w["dense"] = (_f64(d["dense_1_W"]), _f64(d["dense_1_b"]))
    return w


# --------------------------------------------------------------------------
# front end
# --------------------------------------------------------------------------
def _frames(padded: np.ndarray, n_frames: int) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(padded, N_DFT)[::N_HOP]
    if view.shape[0] < n_frames:
        raise ValueError("signal too short for the requested number of frames")
    return view[:n_frames]


def power_spectrogram(audio: np.ndarray, w: dict) -> np.ndarray:
    """(n_frames, 257) power spectrogram re^2 + im^2, n_frames = ceil(n / 256)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    if n < N_DFT:
        raise ValueError(f"audio shorter than {N_DFT} samples")
    n_frames = -(-n // N_HOP)
    re_k, im_k = w["stft_real"], w["stft_imag"]
    if w["release"] == "keras2":
        # TF conv2d, padding 'SAME', stride 256: cross-correlation, no flip.
        pad_total = max((n_frames - 1) * N_HOP + N_DFT - n, 0)
        pad_left = pad_total // 2
        xp = np.pad(x, (pad_left, pad_total - pad_left))
    else:
        # Theano conv2d border_mode 'half' (256 zeros each side), stride 256,
        # kernel flipped (true convolution), Keras 1.2.2 keeps the first
        # ceil(n / 256) frames for an even kernel with 'same'.
        xp = np.pad(x, (N_DFT // 2, N_DFT // 2))
        re_k, im_k = re_k[::-1], im_k[::-1]
    fr = _frames(xp, n_frames)
    re = fr @ re_k
    im = fr @ im_k
    return re * re + im * im


def decibel_melgram(audio: np.ndarray, w: dict) -> np.ndarray:
    """(96, n_frames) dB mel-spectrogram, per-clip max subtracted, floor -80 dB."""
    mel = (power_spectrogram(audio, w) @ w["filterbank"]).T
    db = 10.0 * np.log10(np.maximum(mel, DB_AMIN))
    db = db - db.max()
    return np.maximum(db, -DB_RANGE)


# --------------------------------------------------------------------------
# conv blocks
# --------------------------------------------------------------------------
def conv3x3_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (H, W, Cin), kernel (3, 3, Cin, Cout) cross-correlation, zero 'same' padding."""
    h, wd, cin = x.shape
    kh, kw, kcin, cout = kernel.shape
    assert (kh, kw, kcin) == (3, 3, cin), (kernel.shape, x.shape)
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    cols = np.empty((h, wd, 9, cin), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            cols[:, :, 3 * i + j, :] = xp[i:i + h, j:j + wd, :]
    out = cols.reshape(h * wd, 9 * cin) @ kernel.reshape(9 * cin, cout)
    return out.reshape(h, wd, cout) + bias


def elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def max_pool_valid(x: np.ndarray, pool: tuple) -> np.ndarray:
    ph, pw = pool
    h, wd, c = x.shape
    ho, wo = h // ph, wd // pw
    x = x[:ho * ph, :wo * pw, :]
    return x.reshape(ho, ph, wo, pw, c).max(axis=(1, 3))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _gap(x: np.ndarray) -> np.ndarray:
    if x.shape[0] * x.shape[1] == 0:
        return np.full(x.shape[2], np.nan)
    return x.mean(axis=(0, 1))


def reference_forward(h5_path: str, release: str, audio: np.ndarray) -> dict:
    """One clip, float64 NumPy. audio: mono float waveform at 12 kHz (the test passes the first 29 s).
    release: 'keras2' or 'theano'. Returns {'features': (160,) = the 5 blocks' 32-d global-average features
    concatenated (keras2: GAP of each block's ELU output *before* its max-pool; theano: GAP of each block's output
    *after* its max-pool, block 5 just flattened), 'tags': (50,) sigmoid tag probabilities,
    'melgram': (96, n_frames) the decibel mel-spectrogram (after the dB step, before any normalisation)}"""
    w = load_weights(str(h5_path), release)
    melgram = decibel_melgram(audio, w)

    x = melgram
    if release == "keras2":
        # kapre Normalization2D('data_sample'): whole-clip mean / population std.
        x = (x - x.mean()) / (x.std() + NORM_EPS)
    x = x[:, :, None]  # (freq, time, 1)

    feats = []
    for (kernel, bias), bn, pool in zip(w["conv"], w["bn"], POOLS):
        y = conv3x3_same(x, kernel, bias)
        if release == "keras2":
            y = (y - bn["moving_mean"]) / np.sqrt(bn["moving_var"] + BN_EPS) * bn["gamma"] + bn["beta"]
        else:
            # Keras 1 BatchNormalization(mode=2, axis=1), per clip: biased
            # statistics over (freq, time) for each channel.
            mu = y.mean(axis=(0, 1))
            var = y.var(axis=(0, 1))
            y = (y - mu) / np.sqrt(var + BN_EPS) * bn["gamma"] + bn["beta"]
        y = elu(y)
        pooled = max_pool_valid(y, pool)
        feats.append(_gap(y) if release == "keras2" else _gap(pooled))
        x = pooled

    dense_w, dense_b = w["dense"]
    if release == "keras2":
        # GlobalMaxPooling2D over block 5's pooled output; the original yields
        # NaN when that output is empty (inputs shorter than 1280 frames).
        head = x.max(axis=(0, 1)) if x.shape[0] * x.shape[1] > 0 else np.full(x.shape[2], np.nan)
    else:
        # Flatten of block 5's (1, 1, 32) output (the original's input length
        # is fixed at 29 s, which gives exactly 1 x 1).
        if x.shape[:2] != (1, 1):
            raise ValueError(
                f"theano release needs a 29 s input (block 5 output 1x1), got {x.shape[:2]}")
        head = x.reshape(-1)
    tags = _sigmoid(head @ dense_w + dense_b)

    return {"features": np.concatenate(feats), "tags": tags, "melgram": melgram}
