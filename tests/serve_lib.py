"""Helpers of the serve tests: a small library with awkward names and formats, a synthetic run (embeddings only,
with groups) and a tiny trained run (with a model, so new songs can be embedded)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from conftest import make_cfg, tone
from siamrec.runs import mark_finished

STYLES = {"drone": (110.0, "sine"), "high": (1760.0, "sine"), "beats": (4.0, "pulse")}
# names as people have them: Gurmukhi and Devanagari, spaces; formats a browser cannot play (.au, .aiff)
SPECIAL = {("drone", 0): "ਪੰਜਾਬੀ ਗੀਤ", ("high", 0): "हिंदी गाना", ("beats", 1): "dhol beat"}
FORMATS = {("drone", 1): "au", ("high", 1): "aiff"}


def make_library(root: Path, per_label: int = 5, seconds: float = 3.0) -> Path:
    """ROOT/<label>/<name>.<ext>: 3 labels × per_label clips, acoustically distinct per label."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    for label, (freq, kind) in STYLES.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            name = SPECIAL.get((label, i), f"{label}_{i}")
            ext = FORMATS.get((label, i), "flac")
            y = tone(freq * (1 + 0.03 * i), seconds, 16000, rng, kind)
            fmt = {"au": "AU", "aiff": "AIFF", "flac": "FLAC"}[ext]
            sf.write(root / label / f"{name}.{ext}", y, 16000, format=fmt, subtype="PCM_16")
    return root


# tags of the synthetic run's songs (items.csv's metadata columns): artists with accents and in Gurmukhi, a title
# shared by two songs (an ambiguous seed), and untagged songs (the SPECIAL names) shown by their file stem
ARTISTS = ["Béla Fleck", "Béla Fleck", "ਗੁਰਦਾਸ ਮਾਨ", "ਗੁਰਦਾਸ ਮਾਨ", "Lata Mangeshkar", "Lata Mangeshkar", "Zoë Keating"]


def song_tags(i: int, path: Path) -> tuple[str, str, str, str]:
    """(title, artist, album, duration) of the i-th file of the synthetic run: empty for the SPECIAL names."""
    if path.stem in SPECIAL.values():
        return "", "", "", ""
    artist = ARTISTS[i % len(ARTISTS)]
    title = "Same Song" if i in (3, 12) else f"{path.parent.name.title()} Song {i}"
    return title, artist, f"Album {i % 3}", f"{3.0 + i:.3f}"


def synthetic_run(folder: Path, library: Path, dim: int = 8, seed: int = 0, tags: bool = True) -> Path:
    """A run folder with random embeddings (clustered by label), a group column and (`tags`) the metadata
    columns (title, artist, album, duration, mbid; tags=False: an older five-column items.csv): no model."""
    rng = np.random.default_rng(seed)
    files = sorted(p for p in library.rglob("*") if p.is_file())
    centres = {label: rng.normal(size=dim) * 3 for label in STYLES}
    emb = np.stack([centres[p.parent.name] + rng.normal(size=dim) for p in files]).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", emb)
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["key", "path", "labels", "split", "group"] + (["title", "artist", "album", "duration", "mbid"]
                                                                  if tags else []))
        for i, p in enumerate(files):
            # artists: two songs per group, so "exclude same group" has something to exclude
            row = [p.relative_to(library).as_posix(), str(p), p.parent.name, "test", f"artist{i // 2}"]
            w.writerow(row + ([*song_tags(i, p), ""] if tags else []))
    mark_finished(folder)
    return folder


def trained_run(base: Path) -> tuple[Path, Path, list[str]]:
    """(run, library, overrides): a tiny LDA run trained on audio (random backbone), made once per session."""
    from siamrec.cli import seed_everything
    from siamrec.commands.train import train

    library = base / "library"
    run = base / "run"
    overrides = ["data=folder", f"data.root={library}", "backbone.pretrained=false", "split.valid=0.2",
                 "split.test=0.4", "features.batch_size=8", "plots=false"]
    if (run / "items.csv").is_file():
        return run, library, overrides
    make_library(library)
    run.mkdir(parents=True, exist_ok=True)
    seed_everything(0)
    train(make_cfg("train", ["+model=lda", *overrides], base), run)
    return run, library, overrides
