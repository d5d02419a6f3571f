"""A bundle and its model: built from the backbone's YAML, with its label-free statistics estimated once over a
library and cached by the content of its files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamrec.errors import SiamrecError
from siamrec.extractor.cache import FileDigests
from siamrec.extractor.clip import window_plan
from siamrec.extractor.decoding import decode_stream, decode_workers
from siamrec.extractor.fingerprints import fingerprint
from siamrec.runs import read_checked_npz, write_checked_npz


def make_bundle(backbone_cfg):
    """The bundle of `backbone` (built from its YAML's `_target_`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(backbone_cfg, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, SiamrecError):
            raise cause from None
        text = str(cause or exc).splitlines()[0]
        raise SiamrecError(f"backbone: {text}") from None


def prepared_model(bundle, cfg, pool_paths: list[str], clip=None, progress: bool = True):
    """The bundle's model; for bundles that estimate label-free statistics (e.g. dataset BatchNorm statistics),
    estimated once over (a seeded sample of) `pool_paths`' windows and cached by the content of those files, so a
    second run over the same library decodes nothing."""
    clip = cfg.clip if clip is None else clip
    model = bundle.build(cfg.paths)
    if not bundle.needs_preparation:
        return model
    if not pool_paths:
        raise SiamrecError(f"backbone {bundle.name} estimates statistics over audio; it needs an audio library")
    limit = bundle.prepare_max_windows
    rng = np.random.default_rng(0)  # label-free statistics of a library: the same for every run and seed
    if len(pool_paths) > limit:
        pool_paths = [pool_paths[j] for j in sorted(rng.choice(len(pool_paths), limit, replace=False))]
    cache_root = Path(str(cfg.paths.cache)).expanduser()
    digests = FileDigests(cache_root)
    h = hashlib.sha256(fingerprint(bundle, model, clip).encode())
    for p in sorted(pool_paths):
        try:
            h.update(digests.digest(p).encode())
        except OSError:
            h.update(p.encode())
    cached = cache_root / "prepared" / f"{h.hexdigest()[:20]}.npz"
    if cached.is_file():
        try:
            z = read_checked_npz(cached)  # sha256-checked: a damaged entry is recomputed
            model.set_weights([z[f"arr_{i}"] for i in range(len(z))])
            return model
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed
            pass
    plan = window_plan(bundle, clip)
    windows = [w for _, w, err, _ in tqdm(decode_stream(list(enumerate(pool_paths)), plan,
                                                        decode_workers(cfg.features)),
                                           total=len(pool_paths), desc="decoding for statistics", unit="file",
                                           disable=not progress) if err is None]
    if not windows:
        raise SiamrecError(f"backbone {bundle.name}: none of the {len(pool_paths)} files could be decoded "
                           "to estimate its statistics")
    windows = np.concatenate(windows)
    if len(windows) > limit:
        windows = windows[np.sort(rng.choice(len(windows), limit, replace=False))]
    bundle.prepare(model, windows)
    write_checked_npz(cached, {f"arr_{i}": w for i, w in enumerate(model.get_weights())})
    return model
