"""The backbone bundle: one small interface that everything outside siamrec/backbones/ uses.

A bundle knows everything model-specific about a pretrained audio model, so nothing else hard-codes a sample
rate, a window, a feature width or a layer name:

* ``sample_rate`` (Hz) and ``window_samples``: one model input is a mono float32 waveform of that many samples at
  that rate; ``hop_samples``: the default spacing of window starts (``clip.windows=all``); ``context_samples``:
  a window's input starts this many samples *before* the window's nominal start (zeros before the song's start),
  for models whose frames are centred on the window's edges;
* ``parts``: the named feature parts the model outputs and their widths, in order (e.g. Choi's ``block1`` …
  ``block5`` × 32);
* ``build(paths_cfg)``: the Keras model with its pretrained weights, input ``(batch, window_samples)``, output a
  dict ``{part: (batch, width)}`` (plus ``"tags"`` when the bundle has a tagger, see ``tags``);
* ``groups`` / ``layers_of(model, group)``: which layer groups fine-tuning may unfreeze; ``classifier_input``: the
  tensor a fine-tuning classification layer is put on;
* ``prepare(model, windows)``: optional, label-free statistics estimated once over a library's windows (e.g.
  BatchNorm statistics); the extractor caches the prepared weights;
* ``spec()``: a JSON-able description of everything that changes a feature vector (hashed into fingerprints).

A bundle is built from ``conf/backbone/NAME.yaml`` by ``hydra.utils.instantiate`` (its ``_target_`` is the class;
the other keys are constructor arguments).
"""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.runs import sha256_file


# The 50 tags of the Million Song Dataset taggers (Choi 2017, musicnn), in the order of their outputs.
MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy",
)


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: its local name, sha256 and download address."""

    file: str
    sha256: str
    url: str


class Bundle:
    """Base class of the backbone bundles (see the module docstring)."""

    name: str = "bundle"
    sample_rate: int = 0
    window_samples: int = 0
    hop_samples: int = 0
    context_samples: int = 0
    parts: dict[str, int] = {}
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    default_parts: tuple[str, ...] | None = None  # the parts used when features.parts is null (None: all of them)
    needs_preparation: bool = False
    prepare_max_windows: int = 256  # prepare() sees at most this many (seeded, random) windows

    def __init__(self, pretrained: bool = True, weights: str | None = None, download: bool = True,
                 url: str | None = None, windows: str | None = None, pool: str | None = None,
                 normalise: str | None = None, **params):
        # windows, pool, normalise: the clip.windows, clip.pool and features.normalise this backbone recommends (they
        # follow it unless set); not model settings
        self.pretrained = bool(pretrained)
        self.weights = weights
        self.download = bool(download)
        self.url = url
        self.params = params

    # --- what every bundle provides -------------------------------------------------------------------------
    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def dim(self) -> int:
        return int(sum(self.parts.values()))

    def spec(self) -> dict:
        """Everything that changes a feature vector (weights are hashed separately, from the built model)."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "name": self.name,
                "sample_rate": self.sample_rate, "window_samples": self.window_samples,
                "context_samples": self.context_samples, "parts": dict(self.parts),
                "pretrained": self.pretrained, **{k: _plain(v) for k, v in sorted(self.params.items())}}

    def build(self, paths_cfg):
        """The Keras model (pretrained weights loaded unless pretrained=false)."""
        raise NotImplementedError

    def layers_of(self, model, group: str) -> list:
        """The layers of `group` (one of `groups`)."""
        raise NotImplementedError

    def classifier_input(self, model):
        """The tensor fine-tuning puts its new classification layer on."""
        raise NotImplementedError

    def prepare(self, model, windows: np.ndarray) -> None:
        """Estimate label-free statistics over `windows` (n, window_samples) and set them in `model`."""

    # --- shared helpers -----------------------------------------------------------------------------------
    def set_trainable(self, model, groups) -> list[str]:
        """Freeze the whole model except the layers of `groups` (a list of names from `self.groups`)."""
        chosen = [str(g) for g in groups]
        unknown = [g for g in chosen if g not in self.groups]
        if unknown:
            raise SiamrecError(f"model.trainable_blocks={chosen}: {self.name} has the trainable groups "
                               f"{list(self.groups)} (or [] to train only what sits on top of the backbone)")
        for layer in model.layers:
            layer.trainable = False
        for g in chosen:
            for layer in self.layers_of(model, g):
                layer.trainable = True
        return chosen

    def onnx_split(self, model):
        """(front end in NumPy or None, the Keras model to export to ONNX) for siamrec.inference: by default the
        whole model is exported."""
        return None, model

    def feature_vector(self, outputs: dict) -> np.ndarray:
        """(n, dim) float32: the model's part outputs concatenated in `parts` order."""
        return np.concatenate([np.asarray(outputs[p], dtype=np.float32).reshape(len(outputs[p]), -1)
                               for p in self.parts], axis=1)

    def part_columns(self, names) -> np.ndarray:
        """Column indices of the named parts in the concatenated feature vector."""
        return part_columns(self.parts, names, self.name)


def part_columns(parts: dict[str, int], names, owner: str = "the backbone") -> np.ndarray:
    """Column indices of `names` (in the order of `parts`) within the concatenation of `parts`."""
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in parts]
    if not names or unknown:
        raise SiamrecError(f"features.parts={names}: {owner} has the parts {list(parts)}; pick some of them")
    cols, start = [], 0
    for name, width in parts.items():
        if name in names:
            cols.append(np.arange(start, start + width))
        start += width
    return np.concatenate(cols)


def _plain(v):
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(v, (DictConfig, ListConfig)):
            return OmegaConf.to_container(v, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return v


# --- weight files ---------------------------------------------------------------------------------------------
def download(url: str, dest: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Fetch `url` into `dest` atomically, only if its sha256 matches."""
    from siamrec.runs import atomic_write_bytes

    print(f"downloading pretrained weights from {url} ...", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except Exception as exc:  # noqa: BLE001 - any network failure ends in the same advice
        raise SiamrecError(
            f"could not download {url} ({exc}); download it by hand and pass backbone.weights=PATH, "
            "or train from scratch with backbone.pretrained=false"
        ) from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise SiamrecError(f"{url}: sha256 {got} differs from the expected {sha256}; the file was not saved")
    return atomic_write_bytes(dest, data)


def resolve_file(spec: WeightFile, subdir: str, paths_cfg, download_ok: bool = True, url: str | None = None) -> Path:
    """A published file: the cache (paths.cache/weights/SUBDIR/FILE), then the shared data
    (paths.shared/weights/SUBDIR/FILE), both sha256-checked, then a sha256-checked download into the cache."""
    cache = Path(str(paths_cfg.cache)).expanduser() / "weights" / subdir / spec.file
    candidates = [cache]
    if paths_cfg.get("shared"):
        candidates.append(Path(str(paths_cfg.shared)).expanduser() / "weights" / subdir / spec.file)
    for p in candidates:
        if p.is_file():
            if sha256_file(p) != spec.sha256:
                raise SiamrecError(f"{p}: sha256 differs from the published file; delete it to re-download")
            return p
    if not download_ok:
        raise SiamrecError(
            f"pretrained weights {spec.file} not found in {', '.join(map(str, candidates))}; "
            f"download {spec.url} and pass backbone.weights=PATH, or use backbone.pretrained=false"
        )
    return download(url or spec.url, cache, spec.sha256)


def check_finite_weights(arrays: dict[str, np.ndarray], source) -> None:
    """A weight file whose arrays hold NaN or infinity would give constant features silently: refuse it."""
    bad = [name for name, a in arrays.items() if not np.all(np.isfinite(a))]
    if bad:
        raise SiamrecError(f"backbone.weights={source}: {bad[0]} holds NaN or infinite values; use the published file")
