"""The backbone's front end as Keras layers: waveform → power STFT (stored DFT kernels) → mel → dB → normalisation.

The pretrained files store their own DFT kernels and mel filterbank; these layers hold them as non-trainable
weights so the original spectrogram is reproduced exactly. The decibel step is kapre's MagnitudeToDecibel,
which takes the maximum per clip (the original kapre 0.1 took it over the whole batch: a bug not reproduced).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

N_FFT, HOP, N_MELS, SR, FMAX = 512, 256, 96, 12000, 6000.0  # the Choi 2017 front end


def hann_dft_kernels(n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """Periodic-Hann-windowed DFT kernels (n_fft × n_fft//2+1): real = w·cos, imag = w·sin (as kapre 0.1 stored)."""
    n = np.arange(n_fft)[:, None]
    k = np.arange(n_fft // 2 + 1)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    angle = 2 * np.pi * n * k / n_fft
    return (window[:, None] * np.cos(angle)).astype(np.float32), (window[:, None] * np.sin(angle)).astype(np.float32)


def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS, fmax: float = FMAX) -> np.ndarray:
    """(n_fft//2+1 × n_mels) mel filterbank, used only when no pretrained file supplies one."""
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=fmax).T.astype(np.float32)


@keras.saving.register_keras_serializable(package="siamrec")
class PowerSTFT(keras.layers.Layer):
    """|STFT|² of a mono waveform (batch, samples) → (batch, frames, n_fft//2+1), by framing and a matmul
    with stored real/imag DFT kernels.

    padding='same': TensorFlow 'SAME' padding of a strided conv (the Keras 2 release; ceil(n/hop) frames);
    padding='center': n_fft//2 zeros each side, first ceil(n/hop) frames kept (the Theano release, whose
    kernels are stored time-reversed for a true convolution: load them flipped).
    """

    def __init__(self, n_fft: int = N_FFT, hop: int = HOP, padding: str = "same", **kwargs):
        super().__init__(**kwargs)
        if padding not in ("same", "center"):
            raise ValueError(f"padding={padding!r}: use same or center")
        self.n_fft, self.hop, self.padding = n_fft, hop, padding

    def build(self, input_shape):
        real, imag = hann_dft_kernels(self.n_fft)
        n_bins = self.n_fft // 2 + 1
        self.real_kernels = self.add_weight(shape=(self.n_fft, n_bins), name="real_kernels", trainable=False,
                                            initializer=keras.initializers.Constant(real))
        self.imag_kernels = self.add_weight(shape=(self.n_fft, n_bins), name="imag_kernels", trainable=False,
                                            initializer=keras.initializers.Constant(imag))

    def call(self, x):
        import tensorflow as tf

        n = tf.shape(x)[1]
        n_frames = (n + self.hop - 1) // self.hop
        if self.padding == "same":
            pad_total = tf.maximum((n_frames - 1) * self.hop + self.n_fft - n, 0)
            pad_left = pad_total // 2
            x = tf.pad(x, [[0, 0], [pad_left, pad_total - pad_left]])
        else:
            half = self.n_fft // 2
            x = tf.pad(x, [[0, 0], [half, half]])
        frames = tf.signal.frame(x, self.n_fft, self.hop, pad_end=False)[:, :n_frames, :]
        re = ops.matmul(frames, self.real_kernels)
        im = ops.matmul(frames, self.imag_kernels)
        return re * re + im * im

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        frames = None if n is None else -(-n // self.hop)
        return (input_shape[0], frames, self.n_fft // 2 + 1)

    def get_config(self):
        return {**super().get_config(), "n_fft": self.n_fft, "hop": self.hop, "padding": self.padding}


@keras.saving.register_keras_serializable(package="siamrec")
class MelFilterbank(keras.layers.Layer):
    """(batch, frames, bins) power spectrogram → (batch, n_mels, frames, 1) mel spectrogram, freq first."""

    def __init__(self, n_mels: int = N_MELS, sr: int = SR, fmax: float = FMAX, **kwargs):
        super().__init__(**kwargs)
        self.n_mels, self.sr, self.fmax = n_mels, sr, fmax

    def build(self, input_shape):
        n_bins = input_shape[-1]
        fb = mel_filterbank(self.sr, 2 * (n_bins - 1), self.n_mels, self.fmax)
        self.filterbank = self.add_weight(shape=(n_bins, self.n_mels), name="filterbank", trainable=False,
                                          initializer=keras.initializers.Constant(fb))

    def call(self, x):
        mel = ops.matmul(x, self.filterbank)  # (batch, frames, mels)
        return ops.expand_dims(ops.transpose(mel, (0, 2, 1)), -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_mels, input_shape[1], 1)

    def get_config(self):
        return {**super().get_config(), "n_mels": self.n_mels, "sr": self.sr, "fmax": self.fmax}


@keras.saving.register_keras_serializable(package="siamrec")
class ClipNormalization(keras.layers.Layer):
    """Per-clip normalisation of a dB spectrogram over all its bins.

    mode='standardize': (x − mean) / (std + 1e-10) (kapre 0.1's Normalization2D('data_sample'), Keras 2 release);
    mode='max': x − max, so the loudest bin is 0 dB (the Theano release's dB reference).
    """

    def __init__(self, mode: str = "standardize", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("standardize", "max"):
            raise ValueError(f"mode={mode!r}: use standardize or max")
        self.mode = mode

    def call(self, x):
        axes = tuple(range(1, len(x.shape)))
        if self.mode == "max":
            return x - ops.max(x, axis=axes, keepdims=True)
        mean = ops.mean(x, axis=axes, keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=axes, keepdims=True))
        return (x - mean) / (std + 1e-10)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="siamrec")
class InstanceNormalization(keras.layers.Layer):
    """Per-clip, per-channel normalisation over (freq, time), then γ, β: the batch-independent form of the
    Theano release's BatchNormalization(mode=2), which normalised with the statistics of the batch it was fed."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), name="gamma", initializer="ones")
        self.beta = self.add_weight(shape=(channels,), name="beta", initializer="zeros")

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True)
        return (x - mean) / ops.sqrt(var + self.epsilon) * self.gamma + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
