"""`recommend run=RUN seed=SONG k=10`: playlists of the run's library for one seed song or many
(`recommend data=library data.root=~/Music SONG`: of your music's index, built or updated first, as `serve` does).

A seed may be a song of the library (its stored embedding is used and it is left out of its own playlist), named
by key, id (row), path, title or `artist - title` (siamrec.songs.SongFinder: the web app finds seeds the same way),
a new song (cold start: embedded with the run's model; many new songs are decoded in worker processes and
embedded in batches), or a text file listing seeds, one per line. The library is searched with the configured
index (`index=exact`, the default, or `index=faiss`; see siamrec.index) and the radio rules applied
(`recommend.rules`, siamrec.rules; `recommend.rules=none` for the plain list). The playlists go to
`out=FILE.csv|.json|.m3u8` when given (M3U8 paths relative to `recommend.relative_to` when set), else to
playlists.csv in the command's run folder. `to=B` makes a path of k songs from the seed's sound to B's
(path.csv, or `out=`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamrec.embedder import embed_new_songs
from siamrec.errors import SiamrecError
from siamrec.index import open_index
from siamrec.m3u import write_m3u8
from siamrec.playlists import playlists, print_playlist, write_playlists
from siamrec.rules import Radio, Rules, Songs, sound_note
from siamrec.runs import label_free, read_embeddings, read_text, write_csv, write_json
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


def recommend(cfg, run_dir) -> list[tuple]:
    from siamrec.commands.extract import run_or_library

    run = run_or_library(cfg, run_dir)  # run=, or your music's index (data=library|beets), built or updated first
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
    index = open_index(run, emb, cfg.index, expand=int(cfg.query_expansion))
    rules = Rules.from_config(cfg.recommend.rules)
    songs = Songs(items)
    radio = Radio(emb, songs, index, label_free(run))
    off = sound_note(rules, radio.label_free)
    if off:
        print(off)
    if cfg.recommend.get("to") not in (None, ""):
        return _song_path(cfg, run_dir, emb, items, songs, finder, seeds, self_index, k, rules, radio)
    if k > len(items) - 1:
        print(f"k={k} is more than the {len(items) - 1} other songs of the library: k clamped, playlists hold "
              f"{max(len(items) - 1, 0)} songs")
    notes = []
    if rules is None:  # the plain nearest-neighbour list
        rows = playlists(queries, index, keys, labels, paths, names, k, self_index=self_index)
    else:
        rows = []
        for (name, seed_labels), query, row in zip(names, queries, self_index):
            found = radio.playlist(query, min(k, len(items) - int(row >= 0)), rules,
                                   seeds=[int(row)] if row >= 0 else [], seed_vectors=[] if row >= 0 else [query])
            rows += [(name, "|".join(seed_labels), rank, keys[j], "|".join(labels[j]), s, paths[j] or "")
                     for rank, (j, s) in enumerate(found.picks, start=1)]
            if found.note:
                notes.append(f"{name}: {found.note}")
    if len(seeds) <= MAX_PRINTED:
        print_playlist(rows)
    for note in notes:
        print(note)
    if cfg.recommend.get("out"):  # there only: no run folder is left behind for nothing
        written = _write_out(cfg, rows, songs, finder, seeds, self_index)
    else:
        written = write_playlists(Path(run_dir) / "playlists.csv", rows)
    how = "radio rules" if rules is not None else "no rules"
    seeds_as = f"each seed with its {index.expand} nearest songs" if index.expand else "each seed alone"
    lists = "playlist" if len(seeds) == 1 else "playlists"
    songs_word = "song" if len(new_songs) == 1 else "songs"
    print(f"{len(seeds)} {lists} ({len(new_songs)} new {songs_word} embedded, {index.method} search, {seeds_as}, "
          f"{how}) written to {written}")
    return rows


def _entry(songs: Songs, row: int, path: str) -> dict:
    duration = songs.durations[row]
    return {"path": path, "title": songs.titles[row], "artist": songs.artists[row] if songs.titles[row] else "",
            "duration": None if duration != duration else float(duration)}


def _new_song_entry(path: Path) -> dict:
    """A new seed's M3U8 entry: its title, artist and length from its tags, else its file stem."""
    from siamrec.data.tags import read_tags_or_none

    tags = read_tags_or_none(str(path)) or {}  # a damaged tag only costs the entry its metadata
    return {"path": str(path), "title": tags.get("title") or path.stem,
            "artist": tags.get("artist", "") if tags.get("title") else "", "duration": tags.get("duration")}


def _write_out(cfg, rows, songs: Songs, finder: SongFinder, seeds, self_index) -> Path:
    """recommend.out: playlists as CSV/JSON, or M3U8 (each seed first, then its playlist; paths absolute or
    relative to recommend.relative_to)."""
    out = Path(str(cfg.recommend.out)).expanduser()
    if out.suffix.lower() not in (".m3u8", ".m3u"):
        return write_playlists(out, rows)
    entries = []
    seed_rows = dict(zip(seeds, self_index))
    current = None
    for seed, _labels, _rank, key, _l, _s, _path in rows:
        if seed != current:
            current = seed
            row = seed_rows.get(seed, -1)
            if row >= 0:
                entries.append(_entry(songs, int(row), finder.items[int(row)]["path"]))
            elif Path(str(seed)).expanduser().is_file():
                entries.append(_new_song_entry(Path(str(seed)).expanduser()))
        j = finder.by_key[key]
        entries.append(_entry(songs, j, finder.items[j]["path"]))
    return write_m3u8(out, entries, relative_to=cfg.recommend.get("relative_to"))


PATH_COLUMNS = ("step", "key", "labels", "similarity", "similarity_a", "similarity_b", "path")


def _song_path(cfg, run_dir, emb, items, songs, finder, seeds, self_index, k, rules, radio) -> list[tuple]:
    """recommend seed=A to=B k=K: A, then K songs moving from A's sound to B's, then B."""
    to = str(cfg.recommend.to)
    if len(seeds) != 1 or self_index[0] < 0:
        raise SiamrecError("to=B makes a path from one song of the library: give exactly one seed=A of the library")
    a, b = int(self_index[0]), finder.find(to, paths=True)
    if b < 0:
        raise SiamrecError(f"to={to}: not a song of the library (give its key, path or file name)")
    if a == b:
        raise SiamrecError(f"to={to}: is the seed itself; choose another song to go to")
    k = min(k, len(items) - 2)
    if k < 1:
        raise SiamrecError("the library has no songs between A and B")
    steps, note = radio.path(a, b, k, rules)
    ua, ub = emb[a] / max(np.linalg.norm(emb[a]), 1e-12), emb[b] / max(np.linalg.norm(emb[b]), 1e-12)
    ab = round(float(ua @ ub), 6)
    table = [(0, items[a]["key"], items[a]["labels"], 1.0, 1.0, ab, items[a]["path"])]
    table += [(i, items[s["row"]]["key"], items[s["row"]]["labels"], s["similarity"], s["similarity_a"],
               s["similarity_b"], items[s["row"]]["path"]) for i, s in enumerate(steps, start=1)]
    table.append((len(steps) + 1, items[b]["key"], items[b]["labels"], 1.0, ab, 1.0, items[b]["path"]))
    print(f"\npath from {items[a]['key']} to {items[b]['key']} ({len(steps)} songs between; similarity to A, to B)")
    for step, key, _labels, _sim, sa, sb, _p in table:
        print(f"{step:3d}. A {sa:+.3f}  B {sb:+.3f}  {key}")
    if note:
        print(note)
    out = cfg.recommend.get("out")
    if not out:
        written = write_csv(Path(run_dir) / "path.csv", PATH_COLUMNS, table)
    else:
        out = Path(str(out)).expanduser()
        if out.suffix.lower() in (".m3u8", ".m3u"):
            rows = [a] + [s["row"] for s in steps] + [b]
            written = write_m3u8(out, [_entry(songs, r, items[r]["path"]) for r in rows],
                                 relative_to=cfg.recommend.get("relative_to"))
        elif out.suffix.lower() == ".json":
            written = write_json(out, [dict(zip(PATH_COLUMNS, r)) for r in table])
        else:
            written = write_csv(out, PATH_COLUMNS, table)
    print(f"path of {len(table)} songs ({radio.index.method} search, {'radio rules' if rules else 'no rules'}) "
          f"written to {written}")
    return table
