"""`recommend run=RUN seed=SONG k=10`: playlists of the run's library for one seed song or many.

A seed may be a song of the library (its stored embedding is used and it is left out of its own playlist), named
by key, id (row), path, title or `artist - title` (siamrec.songs.SongFinder: the web app finds seeds the same way),
a new song (cold start: embedded with the run's model; many new songs are decoded in worker processes and
embedded in batches), or a text file listing seeds, one per line. The library is searched with the configured
index (`index=exact`, the default, or `index=faiss`; see siamrec.index). The playlists go to `out=FILE.csv|.json`
when given, else to playlists.csv in the command's run folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.errors import SiamrecError
from siamrec.index import open_index
from siamrec.playlists import playlists, print_playlist, write_playlists
from siamrec.runs import existing_run, read_embeddings, read_text
from siamrec.songs import SongFinder

MAX_PRINTED = 10  # playlists printed in full; with more seeds only the files are named


LIST_SUFFIXES = (".txt", ".lst", ".m3u", ".m3u8")


def _seed_list(seed) -> list[str]:
    """The seed songs: `seed` is a song, a list of songs (the CLI's positional arguments, or seed=[a,b]), or a
    text file listing songs (one per line, # for comments; UTF-8, with or without a byte-order mark)."""
    if seed in (None, "") or (isinstance(seed, (list, tuple)) and not seed):
        raise SiamrecError("no seed song: name one (recommend run=RUN \"My Song.mp3\"), or seed=LIST.txt with one "
                           "song per line")
    given = [str(s) for s in seed] if isinstance(seed, (list, tuple)) or (
        hasattr(seed, "__iter__") and not isinstance(seed, str)) else [str(seed)]
    seeds = []
    for s in given:
        p = Path(s).expanduser()
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            listed = [line.strip() for line in read_text(p, "seed list").splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
            if not listed:
                raise SiamrecError(f"seed list {p} names no song; put one song (a path or a name) per line")
            seeds += listed
        else:
            seeds.append(s)
    return seeds


def embed_new_songs(run, songs: list[str], cfg) -> np.ndarray:
    """Embeddings of songs outside the library, through the run's extractor and head (decoded in worker processes,
    embedded in batches); a song that cannot be decoded is an error naming it."""
    from siamrec.embedder import RunEmbedder

    emb, failures = RunEmbedder(run).embed_files(songs, cfg, desc="new songs")
    if failures:
        i, reason = failures[0]
        raise SiamrecError(f"seed={songs[i]}: {reason} (siamrec reads {', '.join(AUDIO_EXTENSIONS)})")
    return emb


def recommend(cfg, run_dir) -> list[tuple]:
    run = existing_run(cfg.run)
    emb, items = read_embeddings(run)
    k = cfg.recommend.k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SiamrecError(f"k={k!r}: must be an integer >= 1")
    seeds = _seed_list(cfg.recommend.get("seed"))
    finder = SongFinder(items)
    self_index = np.array([finder.find(s, paths=True) for s in seeds], dtype=np.int64)
    new_songs = list(dict.fromkeys(s for s, row in zip(seeds, self_index) if row < 0))
    for s in new_songs:
        if not Path(s).expanduser().is_file():
            raise SiamrecError(f"seed={s}: neither a song of run {run}'s library nor an existing audio file")
    queries = emb[np.maximum(self_index, 0)]
    if new_songs:
        new_emb = dict(zip(new_songs, embed_new_songs(run, [str(Path(s).expanduser()) for s in new_songs], cfg)))
        queries[self_index < 0] = [new_emb[s] for s, row in zip(seeds, self_index) if row < 0]
    names = [(items[row]["key"], tuple(filter(None, items[row]["labels"].split("|")))) if row >= 0 else (s, ())
             for s, row in zip(seeds, self_index)]
    keys = [it["key"] for it in items]
    labels = [tuple(filter(None, it["labels"].split("|"))) for it in items]
    paths = [it["path"] for it in items]
    index = open_index(run, emb, cfg.index)
    if k > len(items) - 1:
        print(f"k={k} is more than the {len(items) - 1} other songs of the library: k clamped, playlists hold "
              f"{max(len(items) - 1, 0)} songs")
    rows = playlists(queries, index, keys, labels, paths, names, k, self_index=self_index)
    if len(seeds) <= MAX_PRINTED:
        print_playlist(rows)
    if cfg.recommend.get("out"):  # there only: no run folder is left behind for nothing
        written = write_playlists(Path(str(cfg.recommend.out)).expanduser(), rows)
    else:
        written = write_playlists(Path(run_dir) / "playlists.csv", rows)
    print(f"{len(seeds)} playlists ({len(new_songs)} new songs embedded, {index.method} search) written to {written}")
    return rows
