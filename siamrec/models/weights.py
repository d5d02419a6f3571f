"""Pretrained weights of the Choi 2017 convnet: where to find them, their checksums, and loading them into Keras 3.

Resolution order: backbone.weights=PATH → the cache (paths.cache/weights/choi2017) → the shared data
($SIAMREC_SHARED or paths.shared, /weights/choi2017) → download from the authors' repository with a sha256
check → one clear error. backbone.pretrained=false skips all of it (random initialisation).
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import h5py
import numpy as np

from siamrec.errors import SiamrecError
from siamrec.runs import atomic_write_bytes

FILES = {
    "keras2": {
        "file": "choi2017_keras2_msd.hdf5",
        "sha256": "b5042bd44de1fdd9d757b764d9246e6934f47c8bdc5c15bf13566495f3439d48",
        "url": "https://github.com/keunwoochoi/transfer_learning_music/raw/master/keras2_model/model_best.hdf5",
    },
    "theano": {
        "file": "choi2017_theano_msd.hdf5",
        "sha256": "caf89f811415691fbb245be7eef394b9cebd787d7e3f78e29695972141cf2a08",
        "url": "https://github.com/keunwoochoi/transfer_learning_music/raw/master/weights_transfer/weights_layer4_theano.hdf5",
    },
}


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Fetch `url` into `dest` atomically, only if its sha256 matches."""
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


def resolve_weights(backbone_cfg, paths_cfg) -> Path:
    """Path of the release's weight file, found or downloaded as the module docstring says."""
    release = backbone_cfg.get("release", "keras2")
    if release not in FILES:
        raise SiamrecError(f"backbone.release={release!r}: use one of {sorted(FILES)}")
    spec = FILES[release]
    explicit = backbone_cfg.get("weights")
    if explicit:
        p = Path(str(explicit)).expanduser()
        if not p.is_file():
            raise SiamrecError(f"backbone.weights={p}: no such file; give the .hdf5 of the {release} release")
        return p
    cache = Path(str(paths_cfg.cache)).expanduser() / "weights" / "choi2017" / spec["file"]
    candidates = [cache]
    if paths_cfg.get("shared"):
        candidates.append(Path(str(paths_cfg.shared)).expanduser() / "weights" / "choi2017" / spec["file"])
    for p in candidates:
        if p.is_file():
            if sha256_of(p) != spec["sha256"]:
                raise SiamrecError(f"{p}: sha256 differs from the published file; delete it to re-download")
            return p
    if not backbone_cfg.get("download", True):
        raise SiamrecError(
            f"pretrained weights {spec['file']} not found in {', '.join(map(str, candidates))}; "
            f"download {spec['url']} and pass backbone.weights=PATH, or use backbone.pretrained=false"
        )
    return download(backbone_cfg.get("url") or spec["url"], cache, spec["sha256"])


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


def read_arrays(path: str | Path, release: str) -> dict[str, np.ndarray]:
    """The weight arrays of a release file, keyed 'layer/name' in the Keras 3 model's layout."""
    try:
        with h5py.File(path, "r") as h5:
            return _keras2_arrays(h5) if release == "keras2" else _theano_arrays(h5)
    except (OSError, KeyError) as exc:
        raise SiamrecError(f"backbone.weights={path}: not a Choi 2017 {release} weight file ({exc})") from None


def load_pretrained(model, path: str | Path, release: str) -> None:
    """Set the backbone's weights from the release's HDF5 file."""
    arrays = read_arrays(path, release)
    model.get_layer("stft").set_weights([arrays["stft/real"], arrays["stft/imag"]])
    model.get_layer("mel").set_weights([arrays["mel"]])
    model.get_layer("tags").set_weights([arrays["tags/kernel"], arrays["tags/bias"]])
    for k in range(1, 6):
        model.get_layer(f"conv{k}").set_weights([arrays[f"conv{k}/kernel"], arrays[f"conv{k}/bias"]])
        bn = model.get_layer(f"bn{k}")
        if release == "keras2":
            bn.set_weights([arrays[f"bn{k}/{n}"] for n in ("gamma", "beta", "moving_mean", "moving_variance")])
        else:  # gamma, beta; a dataset-statistics BatchNorm gets its statistics later (estimate_dataset_bn)
            current = bn.get_weights()
            bn.set_weights([arrays[f"bn{k}/gamma"], arrays[f"bn{k}/beta"], *current[2:]])
