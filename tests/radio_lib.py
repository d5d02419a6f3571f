"""A generated tagged library for the radio tests: a run folder (embeddings.npy + items.csv with the metadata
columns title, artist, album, duration, mbid) whose neighbour order and tags trigger each radio rule."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from siamrec.runs import mark_finished

COLUMNS = ("key", "path", "labels", "split", "group", "title", "artist", "album", "duration", "mbid")

# row: (artist, title, album, duration, mbid, labels); row i is the i-th nearest to the seed (row 0)
SONGS = [
    ("A", "Tum Hi Ho", "Alb1", 200, "mbid-x", "pop"),            # 0: the seed
    ("A", "Tum Hi Ho (Live)", "Live at X", 210, "", "pop"),       # 1: the seed's own version (title)
    ("B", "Other Name", "AlbB", 180, "MBID-X", "pop"),            # 2: the seed's recording id
    ("A feat. Z", "A3", "Alb2", 190, "", "pop"),                  # 3: artist A, 1st
    ("A", "A4", "Alb3", 190, "", "pop"),                          # 4: artist A, 2nd
    ("A", "A5", "Alb4", 190, "", "pop"),                          # 5: artist A, 3rd: max_per_artist
    ("C", "Cé Song", "AlbC", 170, "", "pop"),                     # 6
    ("c", "ce song [Remastered 2011]", "AlbC2", 170, "", "pop"),  # 7: 6 again (case, accent, brackets)
    ("D", "d1", "AlbD", 160, "", "pop"),                          # 8
    ("D", "d2", "AlbD", 160, "", "pop"),                          # 9: 8's album: waits for album_gap
    ("E", "Sing feat. X", "AlbE", 150, "", "pop"),                # 10
    ("E", "Sing - Live at Wembley", "AlbE2", 150, "", "pop"),     # 11: 10 again
    ("F", "near", "AlbF", 150, "", "pop"),                        # 12
    ("F2", "something else", "AlbF2", 150, "", "pop"),            # 13: 12's sound (near-identical embedding)
    ("G", "long", "AlbG", 900, "", "pop"),                        # 14: too long for max_duration=600
    ("H", "rock song", "AlbH", 200, "", "rock"),                  # 15: another genre
] + [(f"I{i}", f"filler {i}", f"AlbI{i}", 200, "", "pop") for i in range(16, 26)]

# the ruled playlist of the seed with the default rules (k=10), worked out by hand from the table above
EXPECTED_DEFAULT = [3, 4, 6, 8, 10, 12, 14, 9, 15, 16]


def radio_run(folder: Path, metadata: bool = True) -> Path:
    """The run folder (no audio): row i at similarity 1/sqrt(1 + (0.3 i)^2) to the seed, pairwise far apart,
    except row 13, a hair away from row 12."""
    n = len(SONGS)
    emb = np.zeros((n, n + 2), dtype=np.float32)
    emb[:, 0] = 1.0
    for i in range(1, n):
        emb[i, i] = 0.3 * i
    emb[13] = emb[12]
    emb[13, n + 1] = 0.01
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", emb)
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS if metadata else COLUMNS[:5])
        for i, (artist, title, album, duration, mbid, labels) in enumerate(SONGS):
            key = f"{artist}/{album}/{i:02d} {title}.flac"
            row = [key, str(folder / "music" / key), labels, "", artist]
            w.writerow(row + [title, artist, album, duration, mbid] if metadata else row)
    mark_finished(folder)  # a finished run, as commands require
    return folder
