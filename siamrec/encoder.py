"""Song vectors: the chosen parts of one backbone, or of several backbones combined (features.combine).

One backbone (the usual case): a song's vector is the pooled vector of the chosen parts (`features.parts`) of the
extractor of `backbone`. Several: every backbone of `features.combine` (each `{backbone: NAME, parts: [...]}`)
has its own extractor (its own rate and windows; the same `clip.windows` and `clip.pool`), and a song's vector
concatenates each backbone's chosen parts, standardised per dimension over the library's songs (no label is used)
and scaled by 1/sqrt(width), so that every backbone weighs alike in a cosine whatever its width. The statistics
are saved with the run, so new songs are encoded the same way.

Then `features.normalise`, a label-free affine map fitted on the songs of the library (never on labels) and saved
with the run, so that train, evaluate, recommend, extract and serve apply the same map to every song, new songs
included: `none`; `centre` (subtract the library's mean song); `centre_sqrt` (centre, then the signed square root
of every coordinate, which evens out a few dominant ones); `standardise` (per dimension); `whiten` (PCA whitening of
the standardised vectors, `features.whiten_eps` in units of the mean eigenvalue). Measured for the label-free
identity model in README "Backbones, windows and song vectors". A song's window
rows (model.train_on=windows) go through the same map, so heads trained on windows see what they are scored on.
A library indexed without a training run (`extract` without run=) is fitted at the end of each extract over all its
songs (fit_library_normaliser: the store keeps the raw vectors, the fit goes to library_normalise.json).

A run folder holds `extractor.json` (per backbone: its bundle config, clip settings, parts and model file; the
standardisation when combined) and the models (`backbone.keras`, `backbone_2.keras`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.extractor import SongFeatures


@dataclass
class Member:
    extractor: object          # siamrec.extractor.Extractor
    parts: list | None         # the backbone's parts used (None = all)
    backbone_cfg: dict         # the bundle's config (with _target_), as saved in extractor.json

    @property
    def columns(self) -> np.ndarray:
        return self.extractor.columns(self.parts)


NORMALISE = ("none", "centre", "centre_sqrt", "standardise", "whiten")


class Normaliser:
    """x → (x − mean) · T (centre_sqrt: then sign · √|·|), fitted on the library's song vectors without labels (see
    the module docstring); the identity until fitted."""

    def __init__(self, kind: str = "none", whiten_eps: float = 1.0, mean=None, transform=None):
        if kind not in NORMALISE:
            raise SiamrecError(f"features.normalise={kind!r}: use one of {', '.join(NORMALISE)}")
        self.kind, self.whiten_eps = kind, float(whiten_eps)
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.transform = None if transform is None else np.asarray(transform, np.float32)

    def fit(self, x: np.ndarray) -> None:
        if self.kind == "none" or not len(x):
            return
        x = np.asarray(x, np.float64)
        self.mean, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
        if self.kind == "standardise":
            self.transform = 1.0 / sd
        elif self.kind == "whiten":
            from siamrec.models.siamese import whitening_matrix

            self.transform = (whitening_matrix((x - self.mean) / sd, self.whiten_eps) / sd[:, None])
        self.mean = self.mean.astype(np.float32)
        self.transform = None if self.transform is None else self.transform.astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            return x
        y = np.asarray(x, np.float32) - self.mean
        if self.transform is not None:
            y = y * self.transform if self.transform.ndim == 1 else y @ self.transform
        if self.kind == "centre_sqrt":
            y = np.sign(y) * np.sqrt(np.abs(y))
        return y.astype(np.float32)

    def spec(self) -> dict:
        return {"kind": self.kind, "whiten_eps": self.whiten_eps,
                "mean": None if self.mean is None else self.mean.tolist(),
                "transform": None if self.transform is None else self.transform.tolist()}


LIBRARY_NORMALISER = "library_normalise.json"


def fit_library_normaliser(model_dir, spec: dict, rows: np.ndarray) -> np.ndarray:
    """A library indexed without a training run (`extract` without run=): its model folder's normaliser (the kind its
    extractor.json names, saved unfitted there so that the store keeps the raw song vectors and its fingerprint stays
    the same as the library grows) fitted on every song of the library as it is now, written to
    LIBRARY_NORMALISER (which RunEmbedder applies to new songs); returns `rows` normalised."""
    from siamrec.runs import write_json

    saved = spec.get("normalise") or {}
    norm = Normaliser(saved.get("kind", "none"), saved.get("whiten_eps", 1.0))
    norm.fit(rows)
    write_json(Path(model_dir) / LIBRARY_NORMALISER, norm.spec())
    return norm(rows) if len(rows) else rows


def library_normaliser(model_dir) -> Normaliser | None:
    """The normaliser fit_library_normaliser saved in `model_dir`, if any."""
    import json

    from siamrec.runs import read_run_file

    if not (Path(model_dir) / LIBRARY_NORMALISER).is_file():
        return None
    return read_run_file(model_dir, LIBRARY_NORMALISER,
                         lambda p: Normaliser(**json.loads(p.read_text(encoding="utf-8"))))


class SongEncoder:
    """Encodes songs into the vectors the heads see (see the module docstring)."""

    def __init__(self, members: list[Member], scale: list[tuple[np.ndarray, np.ndarray]] | None = None,
                 normaliser: Normaliser | None = None):
        self.members, self.scale = members, scale
        self.normaliser = normaliser or Normaliser()

    @property
    def main(self):
        """The first backbone's extractor (fine-tuning, statistics and the layer study use it)."""
        return self.members[0].extractor

    @property
    def combined(self) -> bool:
        return len(self.members) > 1

    @property
    def dim(self) -> int:
        return int(sum(len(m.columns) for m in self.members))

    def _combine(self, blocks: list[np.ndarray]) -> np.ndarray:
        if not self.combined:
            return blocks[0]
        if self.scale is None:
            raise SiamrecError("combined backbones: the standardisation is not fitted yet")
        return np.concatenate([(b - mu) / sd / np.sqrt(b.shape[1]) for b, (mu, sd) in zip(blocks, self.scale)],
                              axis=1).astype(np.float32)

    def fit_scale(self, blocks: list[np.ndarray]) -> None:
        """Per-dimension mean and standard deviation of each backbone's block over the songs (label-free)."""
        self.scale = [(b.mean(axis=0), b.std(axis=0) + 1e-6) for b in blocks]

    def song_features(self, paths: list[str], keep_windows: bool = False, use_cache: bool = True,
                      desc: str = "features", fit: bool = False) -> SongFeatures:
        """Vectors of the songs (NaN rows for files any backbone failed on); with `fit`, the standardisation of
        combined backbones and the normaliser are fitted on these songs first."""
        results = [m.extractor.song_features(paths, keep_windows=keep_windows, use_cache=use_cache,
                                             desc=desc if not self.combined else f"{desc} ({m.extractor.bundle.name})")
                   for m in self.members]
        blocks = [r.vectors[:, m.columns] for r, m in zip(results, self.members)]
        failures = dict(f for r in results for f in reversed(r.failures))
        ok = np.all([np.isfinite(b).all(axis=1) for b in blocks], axis=0)
        if fit and self.combined:
            self.fit_scale([b[ok] for b in blocks])
        vectors = np.full((len(paths), self.dim), np.nan, dtype=np.float32)
        if ok.any():
            vectors[ok] = self._combine([b[ok] for b in blocks])
            if fit:
                self.normaliser.fit(vectors[ok])
            vectors[ok] = self.normaliser(vectors[ok])
        windows = None
        if keep_windows:  # each song's window features of the parts used, one array per backbone, not normalised
            cols = [m.extractor.bundle.part_columns(self._parts(m)) for m in self.members]
            windows = [None if any(r.windows[i] is None for r in results) else
                       [r.windows[i][:, c] for r, c in zip(results, cols)] for i in range(len(paths))]
        return SongFeatures(vectors, windows, sorted(failures.items()), min(r.n_cached for r in results))

    @staticmethod
    def _parts(member: Member) -> dict[str, int]:
        """The parts a member uses, with their widths, in the order of its backbone's window features."""
        parts = member.extractor.bundle.parts
        return {p: w for p, w in parts.items() if member.parts is None or p in member.parts}

    def pooled(self, subsets: list[list[np.ndarray]]) -> np.ndarray:
        """One song vector per subset of windows (each a list of one array per backbone, as song_features keeps a
        song's windows), made as song_features makes a song's from all of its windows: (len(subsets), dim)."""
        from siamrec.extractor.pooling import pool_windows

        blocks = []
        for k, m in enumerate(self.members):
            pool, parts = m.extractor.pool, self._parts(m)  # once per backbone, not once per subset
            blocks.append(np.stack([pool_windows(windows[k], pool, parts) for windows in subsets]))
        return self.normaliser(self._combine(blocks))

    def stream(self, items, want_digest: bool = False, desc: str = "extract"):
        """Yield (index, vector or None, error or None, digest) for the (index, path) `items`, in order."""
        streams = [m.extractor.stream(items, want_digest=want_digest, desc=desc) for m in self.members]
        try:
            for rows in zip(*streams):
                i, digest = rows[0][0], rows[0][3]
                errors = [r[2] for r in rows if r[2] is not None]
                if errors:
                    yield i, None, errors[0], digest
                    continue
                blocks = [m.extractor.pool_songs([r[1]])[:, m.columns] for r, m in zip(rows, self.members)]
                yield i, self.normaliser(self._combine(blocks))[0], None, digest
        finally:
            for s in streams:
                s.close()

    # --- saving and loading -----------------------------------------------------------------------------------
    @staticmethod
    def model_file(k: int) -> str:
        return "backbone.keras" if k == 0 else f"backbone_{k + 1}.keras"

    def save(self, run_dir) -> None:
        from siamrec.models.heads import save_keras
        from siamrec.runs import write_json

        members = []
        for k, m in enumerate(self.members):
            save_keras(m.extractor.model, Path(run_dir) / self.model_file(k))
            members.append({"backbone": m.backbone_cfg, "clip": m.extractor.clip, "parts": m.parts,
                            "model": self.model_file(k)})
        spec = {"members": members}
        if self.combined:
            spec["scale"] = [{"mean": mu.tolist(), "std": sd.tolist()} for mu, sd in self.scale]
        spec["normalise"] = self.normaliser.spec()
        write_json(Path(run_dir) / "extractor.json", spec)

    @classmethod
    def load(cls, run_dir, spec: dict, cfg) -> "SongEncoder":
        """The encoder a run saved (its bundles, models and clip settings); batch size, workers and the cache come
        from `cfg.features` and `cfg.paths`."""
        from siamrec.extractor import Extractor, decode_workers, make_bundle
        from siamrec.runs import load_keras

        cache = Path(str(cfg.paths.cache)).expanduser() if cfg.features.cache else None
        members = []
        from siamrec.trust import check_component

        for k, m in enumerate(spec["members"]):
            check_component(m.get("backbone"), f"run={run_dir}: extractor.json: backbone {k + 1}")  # before any import
            if m.get("model") != cls.model_file(k):  # a file of the run folder itself, never a path elsewhere
                raise SiamrecError(f"run={run_dir}: extractor.json: backbone {k + 1} names the model file "
                                   f"{str(m.get('model'))[:80]!r}, not {cls.model_file(k)}; the run folder is damaged")
            bundle = make_bundle(m["backbone"])  # imports the bundle's module: registers its layers
            model = load_keras(run_dir, m["model"])
            extractor = Extractor(bundle, model, m["clip"], batch_size=int(cfg.features.batch_size),
                                  workers=decode_workers(cfg.features), cache_root=cache, **runtime_of(cfg))
            members.append(Member(extractor, m["parts"], m["backbone"]))
        scale = [(np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32)) for s in spec.get("scale") or []]
        try:  # runs made before features.normalise existed have none: their songs were not normalised
            normaliser = Normaliser(**spec["normalise"]) if "normalise" in spec else None
        except (TypeError, ValueError):
            raise SiamrecError(f"run={run_dir}: extractor.json: its normalise entry is damaged; train the run again") \
                from None
        return cls(members, scale or None, normaliser)


def make_encoder(cfg, data=None, all_parts: bool = False, normalise: bool = True) -> SongEncoder:
    """The encoder of cfg.backbone (+ cfg.features.combine) and cfg.clip, with each bundle's label-free statistics
    estimated (and cached) over the audio of the whole library of `data`; its normaliser (cfg.features.normalise,
    fitted later on the library's songs) unless `normalise` is false: training through the backbone feeds it the
    backbone's raw parts, so new songs must get them too."""
    from omegaconf import OmegaConf

    from siamrec.extractor import Extractor, check_clip, decode_workers, make_bundle, prepared_model

    specs = [(OmegaConf.to_container(cfg.backbone, resolve=True), cfg.features.parts)]
    for item in cfg.features.get("combine") or []:
        if not isinstance(item, dict) and not hasattr(item, "keys") or "backbone" not in item:
            raise SiamrecError(f"features.combine: {item!r}: each entry is {{backbone: NAME, parts: [...]}}")
        specs.append((backbone_config(str(item["backbone"])), item.get("parts")))
    pool = list(data.lib.paths) if data is not None and data.is_audio else []
    cache = Path(str(cfg.paths.cache)).expanduser() if cfg.features.cache else None
    members = []
    for backbone_cfg, parts in specs:
        bundle = make_bundle(backbone_cfg)
        clip = {**OmegaConf.to_container(cfg.clip, resolve=True), "sr": bundle.sample_rate,
                "duration": bundle.window_seconds}
        if not members:
            check_clip(cfg.clip, bundle)  # the main backbone's clip settings are the user's: check them as given
        model = prepared_model(bundle, cfg, pool, clip)
        extractor = Extractor(bundle, model, clip, batch_size=int(cfg.features.batch_size),
                              workers=decode_workers(cfg.features), cache_root=cache, **runtime_of(cfg))
        parts = None if all_parts else (list(parts) if parts is not None else bundle.default_parts)
        member = Member(extractor, list(parts) if parts is not None else None, backbone_cfg)
        member.columns  # noqa: B018 - checks the part names now
        members.append(member)
    kind = str(cfg.features.normalise) if normalise and not all_parts else "none"
    return SongEncoder(members, normaliser=Normaliser(kind, float(cfg.features.whiten_eps)))


def runtime_of(cfg) -> dict:
    """The Extractor's inference settings from cfg.features (runtime, threads) and cfg.paths (the export cache)."""
    cache = str(cfg.paths.cache) if cfg.paths.cache else None
    return {"runtime": str(cfg.features.runtime), "threads": cfg.features.threads,
            "model_cache": Path(cache).expanduser() if cache else None}


def backbone_config(name: str, setting: str = "features.combine") -> dict:
    """The resolved config of `backbone=NAME` (conf/backbone/NAME.yaml, its defaults list applied); `setting` is
    the one that named it, for the error when there is no such backbone."""
    from omegaconf import OmegaConf

    from siamrec.configs import compose, group_options

    if name not in group_options("backbone"):
        raise SiamrecError(f"{setting}: no backbone {name!r}; choose from {group_options('backbone')}")
    cfg = compose("backbone", [f"backbone={name}"], return_hydra_config=False)
    return OmegaConf.to_container(cfg.backbone, resolve=True)
