"""`mpd run=DIR`: keep an MPD queue going with songs similar to what is playing (blissify's "don't stop the music").

Connects to MPD (`mpd.host`, `mpd.port`; the password, if MPD wants one, from the environment variable
MPD_PASSWORD) with python-mpd2 and maps MPD's songs onto the library of `run=DIR` (a trained run or an
`extract` folder: its items.csv and embeddings.npy; or `data=library data.root=~/Music` / `data=beets`, whose
index is built or updated first, as `serve` does): by path (MPD's music folder, `mpd.music_dir`, or asked of
MPD over a local socket, joined with the song's URI), then by the end of the path, then by tags (MusicBrainz
recording id, artist + title). Whenever at most `mpd.refill_below` songs are left after the current one, it
appends `recommend.k` songs similar to the current song, the radio rules (`recommend.rules`) applied, none of
them already in the queue. `mpd.once=true` appends one playlist for the current song and exits. Only songs MPD
knows are ever queued.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.index import open_index
from siamrec.rules import Radio, Rules, Songs, normal_artist, normal_title, sound_note
from siamrec.runs import label_free, read_embeddings

PASSWORD_ENV = "MPD_PASSWORD"
TAIL_PARTS = 3  # path components compared when MPD's music folder is not known


def _first(value) -> str:
    """An MPD tag value (python-mpd2 gives a list for a tag set several times)."""
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").strip()


def _tail(path: str, parts: int = TAIL_PARTS) -> str:
    return "/".join(Path(path).as_posix().split("/")[-parts:])


class LibraryMap:
    """MPD song (URI and tags) → library row, and library row → MPD URI (for the songs MPD knows)."""

    def __init__(self, items: list[dict], songs: Songs, music_dir: str | None):
        self.songs = songs
        self.music_dir = os.path.realpath(os.path.expanduser(music_dir)) if music_dir else None
        self.by_path = {os.path.realpath(it["path"]): i for i, it in enumerate(items) if it["path"]}
        tails: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            if it["path"]:
                tails.setdefault(_tail(it["path"]), []).append(i)
        self.by_tail = {t: rows[0] for t, rows in tails.items() if len(rows) == 1}
        self.by_version = {}
        for i, v in enumerate(songs.version):
            if v is not None:
                self.by_version.setdefault(v, i)
        self.by_mbid = {m: i for i, m in enumerate(songs.mbids) if m}
        self.uri_of: dict[int, str] = {}

    def row(self, song: dict) -> int | None:
        uri = _first(song.get("file"))
        if uri and self.music_dir:
            row = self.by_path.get(os.path.realpath(os.path.join(self.music_dir, uri)))
            if row is not None:
                return row
        if uri:
            row = self.by_tail.get(_tail(uri))
            if row is not None:
                return row
        mbid = _first(song.get("musicbrainz_trackid")).lower()
        if mbid and mbid in self.by_mbid:
            return self.by_mbid[mbid]
        title, artist = _first(song.get("title")), _first(song.get("artist"))
        if title:
            return self.by_version.get((normal_artist(artist) if artist else "", normal_title(title)))
        return None

    def learn(self, mpd_songs: list[dict]) -> int:
        """Map MPD's whole database; returns how many of its songs are in the library."""
        for song in mpd_songs:
            if "file" not in song:
                continue
            row = self.row(song)
            if row is not None:
                self.uri_of.setdefault(row, _first(song["file"]))
        return len(self.uri_of)


def connect(cfg):
    try:
        from mpd import MPDClient
        from mpd.base import CommandError, ConnectionError as MPDConnectionError
    except ImportError:
        raise SiamrecError("mpd needs python-mpd2: pip install -e \".[mpd]\"") from None
    client = MPDClient()
    client.timeout = 30
    host, port = str(cfg.mpd.host), int(cfg.mpd.port)
    try:
        client.connect(host, port)
    except (OSError, MPDConnectionError) as exc:
        raise SiamrecError(f"mpd.host={host} mpd.port={port}: cannot connect to MPD ({exc}); is MPD running? "
                           "set mpd.host / mpd.port") from None
    password = os.environ.get(PASSWORD_ENV)
    if password:
        try:
            client.password(password)
        except CommandError:
            raise SiamrecError(f"MPD refused the password in {PASSWORD_ENV}") from None
    return client


def music_dir_of(client, cfg) -> str | None:
    """mpd.music_dir, else MPD's music_directory (MPD tells it to local-socket clients only), else None."""
    if cfg.mpd.get("music_dir"):
        return str(cfg.mpd.music_dir)
    try:
        return client.config() or None
    except Exception:  # noqa: BLE001 - refused over TCP: map by path ends and tags instead
        return None


def mpd(cfg, run_dir) -> Path:
    from siamrec.commands.extract import run_or_library

    run = run_or_library(cfg, run_dir)  # run=, or your music's index, built or updated first
    emb, items = read_embeddings(run)
    songs = Songs(items)
    rules = Rules.from_config(cfg.recommend.rules) or Rules()
    k = int(cfg.recommend.k)
    radio = Radio(emb, songs, open_index(run, emb, cfg.index, expand=int(cfg.query_expansion)), label_free(run))
    off = sound_note(rules, radio.label_free)
    if off:
        print(off, flush=True)
    client = connect(cfg)
    mapping = LibraryMap(items, songs, music_dir_of(client, cfg))
    known = mapping.learn(client.listallinfo())
    print(f"MPD {cfg.mpd.host}:{cfg.mpd.port}: {known} of the {len(items)} library songs are in MPD's database "
          f"(music folder: {mapping.music_dir or 'unknown, matched by path ends and tags'})", flush=True)
    if not known:
        raise SiamrecError(f"none of run {run}'s songs is in MPD's database; point MPD at the same music folder "
                           "(or set mpd.music_dir) and update its database")
    in_mpd = np.zeros(len(items), dtype=bool)
    in_mpd[list(mapping.uri_of)] = True
    refill_below = int(cfg.mpd.refill_below)
    unknown_said = set()
    try:
        while True:
            status, current = client.status(), client.currentsong()
            queue = client.playlistinfo()
            left = len(queue) - (int(status["song"]) + 1) if "song" in status else len(queue)
            if not current:
                if cfg.mpd.once:
                    raise SiamrecError("nothing is playing in MPD: start a song, then run mpd.once=true again")
            elif cfg.mpd.once or left <= refill_below:
                row = mapping.row(current)
                if row is None:
                    if cfg.mpd.once:
                        raise SiamrecError(f"the current song {_first(current.get('file'))} is not in run {run}'s "
                                           "library")
                    if current.get("file") not in unknown_said:
                        unknown_said.add(current.get("file"))
                        print(f"{_first(current.get('file'))}: not in the library; waiting for the next song",
                              flush=True)
                else:
                    queued = {r for r in (mapping.row(s) for s in queue) if r is not None}
                    found = radio.playlist(emb[row], k, rules, seeds=sorted(queued | {row}), allowed=in_mpd)
                    for j, _sim in found.picks:
                        client.add(mapping.uri_of[j])
                    print(f"{time.strftime('%H:%M:%S')} after {songs.keys[row]}: appended {len(found.picks)} songs"
                          + (f" ({found.note})" if found.note else ""), flush=True)
            if cfg.mpd.once:
                break
            client.idle("player", "playlist")
    except KeyboardInterrupt:
        print("stopped; the queue stays as it is", flush=True)
    finally:
        try:
            client.close()
            client.disconnect()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
    return run
