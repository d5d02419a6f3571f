"""A listener's library at scale: the tag scan of data=library and the start-up of serve on a built index.

Generates --n (default 20,000) tiny tagged songs once into --dir (Artist/Album/NN Title.ext: MP3 with ID3, FLAC and
Ogg Opus with Vorbis comments, WAV with ID3; titles in Latin, Gurmukhi and Devanagari; 5 % untagged), then:

* cold tag scan: `load_library(data=library)` with an empty tag cache (mutagen reads every file);
* unchanged re-scan: the same again (the files are listed and stat'ed; tags come from the cache);
* serve start-up on an already-built index of those songs (spawn → first answer of GET /api/info):
  `serve run=INDEX` on the index folder (embeddings + items.csv with metadata; synthetic 200-d embeddings, no
  audio decoded), and `serve data=library data.root=DIR extract.out=INDEX`, which first re-scans the library and
  checks every song against the index's store (all up to date: nothing embedded) and then serves.

The generated files stay in --dir for the next run (delete it to regenerate). The file system cache is warm for
the "cold" scan (the files were just generated or read before): it measures mutagen, not the disk.

    python scripts/bench_library.py [--n 20000] [--dir /tmp/siamrec-bench-library]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchkit import REPO, free_port
GENRES = ["Punjabi", "Bhangra", "Folk", "Hindustani Classical", "Ghazal", "Sufi", "Pop", "Rock", "Electronic", "Jazz"]
TITLES = ["ਮਿੱਟੀ ਦਾ ਬਾਵਾ", "दिल से", "Long Road", "ਪੰਜਾਬੀ ਗੀਤ", "हिंदी गाना", "Night Drive"]
FORMATS = (".mp3", ".flac", ".opus", ".wav")


def templates(folder: Path) -> dict[str, bytes]:
    """One tiny untagged file per format (0.25 s of noise at 16 kHz)."""
    import soundfile as sf

    y = (0.05 * np.random.default_rng(0).normal(size=4000)).astype(np.float32)
    out = {}
    for ext, fmt, sub in ((".mp3", "MP3", "MPEG_LAYER_III"), (".flac", "FLAC", "PCM_16"), (".opus", "OGG", "OPUS"),
                          (".wav", "WAV", "PCM_16")):
        p = folder / f"template{ext}"
        sf.write(p, y, 16000, format=fmt, subtype=sub)
        out[ext] = p.read_bytes()
        p.unlink()
    return out


def tag(path: Path, ext: str, title: str, artist: str, album: str, genre: str, track: int) -> None:
    import mutagen
    from mutagen.easyid3 import EasyID3
    from mutagen.id3 import TALB, TCON, TIT2, TPE1, TRCK
    from mutagen.wave import WAVE

    if ext == ".mp3":
        f = EasyID3()
        f.update({"title": title, "artist": artist, "album": album, "genre": genre, "tracknumber": str(track)})
        f.save(path)
    elif ext == ".wav":
        f = WAVE(path)
        f.add_tags()
        for frame in (TIT2(encoding=3, text=title), TPE1(encoding=3, text=artist), TALB(encoding=3, text=album),
                      TCON(encoding=3, text=genre), TRCK(encoding=3, text=str(track))):
            f.tags.add(frame)
        f.save()
    else:
        f = mutagen.File(path)
        f.update({"title": title, "artist": artist, "album": album, "genre": genre, "tracknumber": str(track)})
        f.save()


def generate(root: Path, n: int) -> None:
    from tqdm import tqdm

    marker = root / f".generated-{n}"
    if marker.is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    blobs = templates(root)
    rng = np.random.default_rng(1)
    for i in tqdm(range(n), desc="generating tagged files", unit="file"):
        artist, album, track = f"Artist {i // 40:04d}", f"Album {i // 10 % 4}", i % 10 + 1
        ext = FORMATS[i % len(FORMATS)]
        title = f"{TITLES[i % len(TITLES)]} {i}"
        path = root / artist / album / f"{track:02d} {title}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs[ext])
        if i % 20:  # 5 % untagged
            tag(path, ext, title, artist, album, "; ".join(rng.choice(GENRES, size=1 + i % 2, replace=False)), track)
    marker.write_text("done\n")


def data_cfg(root: Path, cache: Path):
    from omegaconf import OmegaConf

    data = OmegaConf.load(REPO / "conf" / "data" / "library.yaml")
    data.root = str(root)
    return data, OmegaConf.create({"cache": str(cache)})


def timed_scan(root: Path, cache: Path):
    from siamrec.data.sources import load_library

    data, paths = data_cfg(root, cache)
    started = time.perf_counter()
    lib = load_library(data, paths)
    return time.perf_counter() - started, lib


def build_index(folder: Path, lib, cfg) -> None:
    """A built index of `lib`: the identity model of the default backbone, a store whose rows match every file
    (synthetic 200-d embeddings: nothing decoded) and embeddings.npy + items.csv with the metadata."""
    from siamrec.commands.extract import pretrained_model
    from siamrec.extractor import file_stat
    from siamrec.runs import mark_finished, write_embeddings
    from siamrec.store import FeatureStore, run_fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    pretrained_model(cfg, folder, lib.subset(np.arange(0)))
    emb = np.random.default_rng(2).normal(size=(len(lib), 200)).astype(np.float32)
    store = FeatureStore(folder / "store", run_fingerprint(folder))
    stats = [file_stat(p) for p in lib.paths]
    for start in range(0, len(lib), 256):
        end = min(start + 256, len(lib))
        store.write(lib.keys[start:end], [s for s, _ in stats[start:end]], [m for _, m in stats[start:end]],
                    [f"{i:064x}" for i in range(start, end)], emb[start:end])
    write_embeddings(folder, emb, lib.keys, lib.paths, lib.labels, [""] * len(lib), lib.groups, lib.meta)
    mark_finished(folder)  # an index folder extract finished


def serve_startup(args: list[str], log: Path, env: dict) -> float:
    """Seconds from spawning `serve ARGS` to its first answer of GET /api/info."""
    port = free_port()
    with open(log, "w+", encoding="utf-8") as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "siamrec", "serve", *args, f"port={port}",
                                 f"hydra.run.dir={log.parent / ('out-' + log.stem)}", "overwrite=true"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                if proc.poll() is not None:
                    out.seek(0)
                    raise RuntimeError(f"serve exited {proc.returncode}:\n{out.read()}")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/api/info")
                    conn.getresponse().read()
                    conn.close()
                    return time.perf_counter() - started
                except OSError:
                    time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/siamrec-bench-library"))
    args = ap.parse_args()
    root, work = args.dir / "Music", args.dir / "work"
    generate(root, args.n)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cache = work / "cache"

    cold, lib = timed_scan(root, cache)
    warm, again = timed_scan(root, cache)
    assert again.keys == lib.keys and again.meta == lib.meta
    labelled = sum(bool(labs) for labs in lib.labels)
    print(f"{len(lib)} songs ({labelled} with genre labels, {len(set(lib.groups))} artists)")
    print(f"cold tag scan:      {cold:6.1f} s  ({len(lib) / cold:,.0f} files/s)   target <= 60 s")
    print(f"unchanged re-scan:  {warm:6.1f} s  ({len(lib) / warm:,.0f} files/s)   target <= 5 s")

    from siamrec.cli import compose, strip_hydra

    shared = os.environ.get("SIAMREC_SHARED", str(REPO.parent / "shared"))
    cfg = strip_hydra(compose("extract", [f"paths.cache={cache}", f"paths.shared={shared}"]))
    index = work / "index"
    build_index(index, lib, cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "SIAMREC_CACHE": str(cache), "SIAMREC_SHARED": shared}
    built = serve_startup([f"run={index}"], work / "serve-run.log", env)
    print(f"serve run=INDEX start-up ({len(lib)} songs):                    {built:5.1f} s   target <= 10 s")
    listener = serve_startup(["data=library", f"data.root={root}", f"extract.out={index}"],
                             work / "serve-library.log", env)
    print(f"serve data=library start-up, index up to date (scan + check):  {listener:5.1f} s")


if __name__ == "__main__":
    main()
