"""A trained run as an embedder: its song encoder (extractor.json + its backbone models, for audio runs; see
siamrec.encoder) and its head turn songs into the run's embedding space, exactly as the run embedded its library."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.errors import SiamrecError
from siamrec.runs import existing_run, read_run_file


class RunEmbedder:
    """The model of a run folder: `encoder(cfg)` encodes audio as the run did, `from_features` applies the head."""

    def __init__(self, run_dir, finished: bool = True, library_normalised: bool = True):
        """`finished=False`: a model folder extract is writing into (a library's index folder while extract makes
        or updates it, or a run extract's driver has checked), not required to hold a completion marker.
        `library_normalised=False`: a library indexed without a run gives its songs' raw vectors, not normalised
        with the statistics of the library (siamrec.encoder.fit_library_normaliser): what extract's store keeps."""
        from siamrec.models.heads import load_head

        self.run_dir = existing_run(run_dir) if finished else Path(run_dir)
        self.head = load_head(self.run_dir)
        spec = self.run_dir / "extractor.json"
        self.spec = read_run_file(self.run_dir, spec.name, _encoder_spec) if spec.is_file() else None
        if self.spec is None and (self.run_dir / "backbone.keras").is_file() or self.spec and "members" not in self.spec:
            raise SiamrecError(f"run={self.run_dir} was made by an older siamrec; train it again")
        self.library_normalised = library_normalised
        self._encoder = None

    @property
    def audio(self) -> bool:
        return self.spec is not None

    def encoder(self, cfg):
        """The run's song encoder (its bundles, saved models and clip settings); batch size, workers and the cache
        come from `cfg.features` and `cfg.paths`."""
        if not self.audio:
            raise SiamrecError(f"run={self.run_dir} was trained on precomputed features, so it cannot embed audio; "
                               "use a run trained on audio (data=demo|folder|csv)")
        if self._encoder is None:
            from siamrec.encoder import SongEncoder, library_normaliser

            self._encoder = SongEncoder.load(self.run_dir, self.spec, cfg)
            fitted = library_normaliser(self.run_dir) if self.library_normalised else None
            if fitted is not None:
                self._encoder.normaliser = fitted
        return self._encoder

    def from_features(self, vectors: np.ndarray) -> np.ndarray:
        """Embeddings of song vectors (as the run's encoder gives them), through the run's head."""
        return self.head.transform(vectors)

    def embed_files(self, paths: list[str], cfg, use_cache: bool = False, desc: str = "new songs"):
        """(embeddings (n, d) with NaN rows for files that failed, failures [(index, reason)])."""
        sf = self.encoder(cfg).song_features(paths, use_cache=use_cache, desc=desc)
        ok = sf.ok
        emb = self.from_features(sf.vectors[ok] if ok.any() else np.zeros((1, sf.vectors.shape[1]), np.float32))
        out = np.full((len(paths), emb.shape[1]), np.nan, dtype=np.float32)
        if ok.any():
            out[ok] = emb
        return out, sf.failures


def embed_new_songs(run, songs: list[str], cfg) -> np.ndarray:
    """Embeddings of songs outside the library, through the run's extractor and head (decoded in worker processes,
    embedded in batches); a song that cannot be decoded is an error naming it."""
    from siamrec.extractor import padding_note

    embedder = RunEmbedder(run)
    emb, failures = embedder.embed_files(songs, cfg, desc="new songs")
    if failures:
        i, reason = failures[0]
        raise SiamrecError(f"seed={songs[i]}: {reason} (siamrec reads {', '.join(AUDIO_EXTENSIONS)})")
    window = max(m.extractor.bundle.window_seconds for m in embedder.encoder(cfg).members)
    for song in songs:  # a mostly silent window: its playlist says more about the padding than the song
        note = padding_note(song, window)
        if note:
            print(note)
    return emb


@dataclass(frozen=True)
class ExtractJob:
    """What an engine needs to rebuild the embedder anywhere (plain values, picklable)."""

    run: str
    batch_size: int = 8
    workers: int = 0
    threads: int | None = None         # inference threads (None: every core)
    runtime: str = "tensorflow"        # features.runtime
    shard_size: int = 256
    cache: str | None = None
    library_normalised: bool = True    # False: a library indexed without a run, whose store keeps raw song vectors


class SongEmbedder:
    """A run's model, loaded once: `stream(items)` yields (index, song vector or None, error or None, digest) and
    `embed(vectors)` applies the run's head to a batch of them."""

    def __init__(self, job: ExtractJob, progress: bool = True):
        from omegaconf import OmegaConf

        from siamrec.inference import tensorflow_threads

        tensorflow_threads(job.threads)  # before the model loads (TensorFlow fixes its pools at its first op)
        # extract checked the run, or is making the model
        self.embedder = RunEmbedder(job.run, finished=False, library_normalised=job.library_normalised)
        cfg = OmegaConf.create({"features": {"batch_size": job.batch_size, "workers": job.workers, "cache": False,
                                             "threads": job.threads, "runtime": job.runtime},
                                "paths": {"cache": job.cache or ""}})
        self.encoder = self.embedder.encoder(cfg)
        for member in self.encoder.members:
            member.extractor.progress = progress

    def stream(self, items, desc: str = "extract"):
        return self.encoder.stream(items, want_digest=True, desc=desc)

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        return self.embedder.from_features(np.asarray(vectors, dtype=np.float32))


def _encoder_spec(path) -> dict:
    """extractor.json, checked for its shape (each member: backbone, clip, parts, model)."""
    spec = json.loads(path.read_text(encoding="utf-8"))
    members = spec.get("members") if isinstance(spec, dict) else None
    if members is not None and not (isinstance(members, list) and members and all(
            isinstance(m, dict) and isinstance(m.get("backbone"), dict) and isinstance(m.get("clip"), dict)
            and isinstance(m.get("model"), str) and isinstance(m.get("parts"), (list, type(None))) for m in members)):
        raise ValueError("its members are not {backbone, clip, parts, model} entries")
    return spec


def embed_with_run(embedder: RunEmbedder, cfg, data, out_dir):
    """Embed the items of `data` with the run's model; returns (kept items, embeddings)."""
    from siamrec.pipeline import audio_features

    run = embedder.run_dir
    if data.is_audio:
        feats = audio_features(embedder.encoder(cfg), data, cfg, out_dir)
        return feats.data, embedder.from_features(feats.x)
    if embedder.audio:
        raise SiamrecError(f"run={run} embeds audio; data={cfg.data.source} gives feature rows. Use audio data")
    return data, embedder.head.transform(data.lib.features)
