"""The transfer convnet of Choi et al. 2017 in Keras 3: 12 kHz waveform → mel front end → 5 conv blocks.

The model's outputs are a dict: `block1`…`block5` (each block's 32-d global-average-pooled activation: before the
max-pool for the Keras 2 release, after it for the Theano release, as the authors extracted them) and `tags`
(the 50 MSD tag probabilities). `features(...)` concatenates the chosen blocks.
"""

from __future__ import annotations

import keras
import numpy as np
from kapre import MagnitudeToDecibel

from siamrec.models.frontend import ClipNormalization, InstanceNormalization, MelFilterbank, PowerSTFT

POOLS = ((2, 4), (3, 4), (2, 5), (2, 4), (4, 4))
N_BLOCKS = len(POOLS)
BLOCK_DIM = 32
RELEASES = ("keras2", "theano")
BN_STATS = ("per_clip", "dataset")

MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy",
)


def build_backbone(release: str = "keras2", bn_stats: str = "per_clip", n_samples: int | None = None) -> keras.Model:
    """The backbone with randomly initialised conv weights (load pretrained ones with models.weights).

    release: 'keras2' (input standardised per clip, BatchNorm with stored statistics, features before the pool)
    or 'theano' (dB relative to the clip's maximum, per-clip instance normalisation — or, with
    bn_stats='dataset', BatchNorm whose statistics are estimated once over a library — features after the pool).
    """
    if release not in RELEASES:
        raise ValueError(f"backbone.release={release!r}: use one of {RELEASES}")
    if bn_stats not in BN_STATS:
        raise ValueError(f"backbone.bn_stats={bn_stats!r}: use one of {BN_STATS}")
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


def check_blocks(blocks) -> list[int]:
    """Validated, sorted list of 1-based block numbers (features.blocks)."""
    try:
        out = sorted({int(b) for b in blocks})
    except (TypeError, ValueError):
        out = []
    if not out or out[0] < 1 or out[-1] > N_BLOCKS:
        from siamrec.errors import SiamrecError

        raise SiamrecError(f"features.blocks={list(blocks) if blocks else blocks}: pick blocks from 1..{N_BLOCKS}, e.g. [1,2,3,4,5]")
    return out


def set_trainable_blocks(model: keras.Model, blocks) -> list[int]:
    """Freeze the whole backbone except the conv + BatchNorm of `blocks` (model.trainable_blocks; [] = none)."""
    from siamrec.errors import SiamrecError

    chosen = sorted({int(b) for b in blocks})
    if any(b < 1 or b > N_BLOCKS for b in chosen):
        raise SiamrecError(f"model.trainable_blocks={chosen}: pick blocks from 1..{N_BLOCKS} "
                           "(or [] to train only what sits on top of the backbone)")
    for layer in model.layers:
        layer.trainable = False
    for b in chosen:
        model.get_layer(f"conv{b}").trainable = True
        model.get_layer(f"bn{b}").trainable = True
    return chosen


def select_blocks(features160: np.ndarray, blocks) -> np.ndarray:
    """Columns of the chosen blocks from (n, 160) concatenated block features."""
    cols = np.concatenate([np.arange((b - 1) * BLOCK_DIM, b * BLOCK_DIM) for b in check_blocks(blocks)])
    return features160[:, cols]


def concat_blocks(outputs: dict) -> np.ndarray:
    """(n, 160) array from the model's block outputs, block 1 first."""
    return np.concatenate([np.asarray(outputs[f"block{k}"]) for k in range(1, N_BLOCKS + 1)], axis=1)


def make_backbone(cfg, data=None, progress: bool = True) -> keras.Model:
    """The configured backbone (cfg.backbone), with pretrained weights unless backbone.pretrained=false.

    With release=theano and bn_stats=dataset, BatchNorm statistics are estimated once over (up to
    backbone.bn_max_clips of) the training items of `data` — all items if it has no training split — then frozen.
    """
    from siamrec.errors import SiamrecError
    from siamrec.models.weights import load_pretrained, resolve_weights

    bcfg = cfg.backbone
    release, bn_stats = bcfg.get("release", "keras2"), bcfg.get("bn_stats", "per_clip")
    if release not in RELEASES:
        raise SiamrecError(f"backbone.release={release!r}: use one of {', '.join(RELEASES)}")
    if bn_stats not in BN_STATS:
        raise SiamrecError(f"backbone.bn_stats={bn_stats!r}: use one of {', '.join(BN_STATS)}")
    model = build_backbone(release, bn_stats)
    if bcfg.get("pretrained", True):
        load_pretrained(model, resolve_weights(bcfg, cfg.paths), release)
    if release == "theano" and bn_stats == "dataset":
        if data is None or not data.is_audio:
            raise SiamrecError("backbone.bn_stats=dataset estimates statistics over audio; it needs an audio library "
                               "(or use backbone.bn_stats=per_clip)")
        # label-free statistics: over the training items, or over every item when there is no training split
        pool = [p for p, s in zip(data.lib.paths, data.split) if s == "train"] or list(data.lib.paths)
        limit = int(bcfg.get("bn_max_clips", 256))
        if len(pool) > limit:
            pool = list(np.random.default_rng(int(cfg.get("seed", 0))).choice(pool, limit, replace=False))
        estimate_dataset_bn(model, pool, cfg.clip, progress=progress)
    return model


def estimate_dataset_bn(model: keras.Model, paths: list[str], clip_cfg, batch_size: int = 8,
                        progress: bool = True) -> None:
    """Set each BatchNorm's moving mean/variance to the statistics of its input over `paths` (AdaBN-like):
    block by block, since block k's statistics depend on the normalisation of the blocks before it."""
    from tqdm.auto import tqdm

    from siamrec.data.audio import AudioError, load_clip

    clips = []
    for p in paths:
        try:
            clips.append(load_clip(p, int(clip_cfg.sr), float(clip_cfg.duration), clip_cfg.offset))
        except AudioError:
            continue
    clips = np.stack(clips)
    for k in tqdm(range(1, N_BLOCKS + 1), desc="dataset BatchNorm statistics", disable=not progress):
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
