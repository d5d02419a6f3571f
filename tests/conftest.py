"""Shared fixtures: configs composed from conf/ for tests, the optional shared data, tiny synthetic audio."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers such as reference_choi2017


def shared_root() -> Path:
    return Path(os.environ.get("SIAMREC_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only shared data (weights, GTZAN features, raga clips); tests needing it skip without it."""
    root = shared_root()
    if not (root / "weights" / "choi2017").is_dir():
        pytest.skip(f"shared data not found at {root} (set SIAMREC_SHARED to run this test)")
    return root


def make_cfg(command: str, overrides: list[str], tmp: Path):
    """The job config a CLI call would get, with the cache and shared data pointed at test locations."""
    from siamrec.cli import compose, strip_hydra

    base = [f"paths.cache={tmp / 'cache'}", f"paths.shared={shared_root()}", "features.workers=0"]
    if not any(o.split("=", 1)[0].lstrip("+") == "backbone" for o in overrides):
        base.append("backbone=choi2017")  # the tests' models are Choi-shaped (and random when pretrained=false)
    return strip_hydra(compose(command, base + list(overrides)))


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda command, *overrides: make_cfg(command, list(overrides), tmp_path)


def tone(freq: float, seconds: float, sr: int, rng, kind: str = "sine") -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    if kind == "sine":
        y = np.sin(2 * np.pi * freq * t)
    else:  # pulses of noise at `freq` Hz: a percussive texture
        y = rng.normal(size=t.size) * (np.sin(2 * np.pi * freq * t) > 0.95)
    return (0.5 * y + 0.01 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture
def audio_folder(tmp_path) -> Path:
    """A tiny GTZAN-style library: 3 labels × 6 clips of 4 s, acoustically distinct per label."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    root = tmp_path / "library"
    styles = {"drone": (110.0, "sine"), "high": (1760.0, "sine"), "beats": (4.0, "pulse")}
    for label, (freq, kind) in styles.items():
        (root / label).mkdir(parents=True)
        for i in range(6):
            y = tone(freq * (1 + 0.03 * i), 4.0, 16000, rng, kind)
            sf.write(root / label / f"{label}_{i}.flac", y, 16000)
    return root


def head_from_yaml(name: str, loss: str | None = None, **overrides):
    """A head built the way the commands build it: +model=NAME composed (its YAML, defaults list included; `loss`
    chooses model.loss=LOSS) with `overrides` over it."""
    from omegaconf import OmegaConf

    from siamrec.configs import compose
    from siamrec.models.heads import head_from_config

    chosen = [f"model.loss={loss}"] if isinstance(loss, str) else []
    overrides = {**overrides, "loss": loss} if isinstance(loss, dict) else overrides
    cfg = compose("test", [f"+model={name}", "seed=0", *chosen], return_hydra_config=False).model
    OmegaConf.set_struct(cfg, False)
    return head_from_config(OmegaConf.merge(cfg, overrides))


def _from_yaml(group: str, selector: str, values: dict):
    """conf/GROUP/<values[selector]>.yaml (the shipped defaults and `_target_`) with `values` over it."""
    from omegaconf import OmegaConf

    path = REPO / "conf" / group / f"{values.get(selector)}.yaml"
    base = OmegaConf.load(path) if path.is_file() else OmegaConf.create({})
    return OmegaConf.merge(base, values)


def data_yaml(values: dict):
    return _from_yaml("data", "source", values)


def split_yaml(values: dict):
    return _from_yaml("split", "kind", values)


MIXED_FORMATS = ("wav", "flac", "ogg", "mp3")


def mixed_library(root: Path, broken: bool = False) -> Path:
    """3 labels × 4 songs of 3 s in mixed formats and sample rates (and, with `broken`, one corrupt file)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    for label, freq, kind in (("drone", 110.0, "sine"), ("high", 1760.0, "sine"), ("beats", 4.0, "pulse")):
        (root / label).mkdir(parents=True)
        for i, fmt in enumerate(MIXED_FORMATS):
            sr = (44100, 22050, 48000, 16000)[i]
            sf.write(root / label / f"{label}_{i}.{fmt}", tone(freq * (1 + 0.03 * i), 3.0, sr, rng, kind), sr)
    if broken:
        (root / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage, not audio")
    return root


def identity_run(folder: Path, library: Path, model: str = "identity") -> Path:
    """A run on random backbone weights that keeps Choi's blocks 2 and 3 (64-d), so extract must select them, and
    whose head (`model`) extract must apply."""
    from siamrec.cli import seed_everything
    from siamrec.commands.train import train

    cfg = make_cfg("train", [f"+model={model}", "features.parts=[block2,block3]", "data=folder", f"data.root={library}",
                             "backbone.pretrained=false", "split.valid=0.25", "split.test=0.5"], folder)
    seed_everything(0)
    train(cfg, folder)
    return folder
