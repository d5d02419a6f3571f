"""A toy third backbone, added the way a user adds one: this module and tests/toy_conf/backbone/toy8k.yaml, nothing
else. A tiny seeded random Keras model at 8 kHz: 1 s windows → 80 frames of 100 samples → Dense → mean over frames
→ two 12-d parts."""

from __future__ import annotations

import keras
import numpy as np

from siamrec.backbones.base import Bundle


class Toy8k(Bundle):
    name = "toy8k"
    sample_rate = 8000
    window_samples = hop_samples = 8000
    parts = {"low": 12, "high": 12}
    groups = ("frames", "parts")

    def __init__(self, sample_rate: int = 8000, window_seconds: float = 1.0, seed: int = 7, **common):
        super().__init__(seed=seed, **common)
        self.seed = seed

    def build(self, paths_cfg):
        init = keras.initializers.GlorotUniform(seed=self.seed)
        audio = keras.Input((self.window_samples,), name="audio")
        frames = keras.layers.Reshape((80, 100), name="frames_reshape")(audio)
        h = keras.layers.Dense(24, activation="tanh", kernel_initializer=init, name="frames")(frames)
        pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(h)
        outputs = {p: keras.layers.Dense(w, kernel_initializer=init, name=p)(pooled) for p, w in self.parts.items()}
        return keras.Model(audio, outputs, name="toy8k")

    def layers_of(self, model, group):
        return [model.get_layer("frames")] if group == "frames" else [model.get_layer(p) for p in self.parts]

    def classifier_input(self, model):
        return model.get_layer("pooled").output


def song(path, halves, sr=8000, seconds_per_half=1.0):
    """A song made of tones (Hz) one after the other, written to `path`."""
    import soundfile as sf

    t = np.arange(int(sr * seconds_per_half)) / sr
    sf.write(path, np.concatenate([0.5 * np.sin(2 * np.pi * f * t) for f in halves]).astype(np.float32), sr)
    return path
