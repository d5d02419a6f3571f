"""`recommend run=RUN seed=SONG k=10`: playlists of the run's library for one seed song or many.

A seed may be a song of the library (its stored embedding is used and it is left out of its own playlist),
a new song (cold start: embedded with the run's model; many new songs are decoded in worker processes and
embedded in batches), or a text file listing seeds, one per line. The library is searched with the configured
index (`index=exact`, the default, or `index=faiss`; see siamrec.index). The playlists go to playlists.csv in
the command's run folder and, with `out=FILE.csv|.json`, to that file.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.data.split import NameMatcher
from siamrec.errors import SiamrecError
from siamrec.index import open_index
from siamrec.playlists import playlists, print_playlist, write_playlists
from siamrec.runs import existing_run, read_embeddings, read_text

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


class _Catalogue:
    """Finds a seed among the run's items: by key, by path (as given, then resolved), or, for a seed that is
    not an existing file, by its relative path or its file stem when that names exactly one item (as split=files
    matches; a name that matches several items is an error naming them). Lookups are dictionaries, built once."""

    def __init__(self, items: list[dict]):
        self.items = items
        self.by_key = {it["key"]: i for i, it in enumerate(items)}

    @cached_property
    def by_path(self) -> dict[str, int]:
        return {os.path.abspath(it["path"]): i for i, it in enumerate(self.items) if it["path"]}

    @cached_property
    def by_real_path(self) -> dict[str, int]:
        return {os.path.realpath(it["path"]): i for i, it in enumerate(self.items) if it["path"]}

    @cached_property
    def by_name(self):
        return NameMatcher([it["key"] for it in self.items])

    def find(self, seed: str) -> int:
        """Row of `seed`, or −1."""
        if seed in self.by_key:
            return self.by_key[seed]
        path = os.path.abspath(os.path.expanduser(seed))
        if os.path.isfile(path):
            row = self.by_path.get(path)
            return self.by_real_path.get(os.path.realpath(path), -1) if row is None else row
        matches = self.by_name.find(seed)
        if len(matches) > 1:
            shown = ", ".join(self.items[i]["key"] for i in matches[:4]) + (", ..." if len(matches) > 4 else "")
            raise SiamrecError(f"seed={seed}: matches {len(matches)} songs of the library ({shown}); name its folder "
                               f"too (e.g. {self.items[matches[0]]['key']})")
        return matches[0] if matches else -1


def embed_new_songs(run, songs: list[str], cfg) -> np.ndarray:
    """Embeddings of songs outside the library, through the run's extractor and head (decoded in worker processes,
    embedded in batches); a song that cannot be decoded is an error naming it."""
    from siamrec.embedder import RunEmbedder
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


def recommend(cfg, run_dir) -> list[tuple]:
    run = existing_run(cfg.run)
    emb, items = read_embeddings(run)
    k = cfg.recommend.k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SiamrecError(f"k={k!r}: must be an integer >= 1")
    seeds = _seed_list(cfg.recommend.get("seed"))
    catalogue = _Catalogue(items)
    self_index = np.array([catalogue.find(s) for s in seeds], dtype=np.int64)
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
    written = write_playlists(Path(run_dir) / "playlists.csv", rows)
    if cfg.recommend.get("out"):
        written = write_playlists(Path(str(cfg.recommend.out)).expanduser(), rows)
    print(f"{len(seeds)} playlists ({len(new_songs)} new songs embedded, {index.method} search) written to {written}")
    return rows
