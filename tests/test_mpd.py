"""`mpd` against a real MPD (Debian's package) started here with a temporary config, a null audio output and the
generated tagged library; skipped when mpd or python-mpd2 is absent."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from radio_lib import EXPECTED_DEFAULT, SONGS, radio_run

mpd_lib = pytest.importorskip("mpd", reason="python-mpd2 is not installed (pip install -e '.[mpd]')")
MPD = shutil.which("mpd")
pytestmark = pytest.mark.skipif(MPD is None, reason="the mpd server is not installed (apt-get install mpd)")
REPO = Path(__file__).resolve().parent.parent


def key_of(i: int) -> str:
    artist, title, album = SONGS[i][:3]
    return f"{artist}/{album}/{i:02d} {title}.flac"


def write_tagged(path: Path, artist: str, title: str, album: str, seconds: float = 60.0) -> None:
    import soundfile as sf
    from mutagen.flac import FLAC

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 8000)) / 8000
    sf.write(path, (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000, format="FLAC")
    tags = FLAC(path)
    tags["artist"], tags["title"], tags["album"] = artist, title, album
    tags.save()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def library(tmp_path):
    """The radio test library as tagged FLAC files under run/music (MPD's music folder), plus one file that
    only MPD has, under another name: "C - Cé Song (Live)", a version of row 6, found by its tags."""
    run = radio_run(tmp_path / "run")
    for i, (artist, title, album, *_rest) in enumerate(SONGS):
        write_tagged(run / "music" / key_of(i), artist, title, album)
    write_tagged(run / "music" / "elsewhere" / "track01.flac", "C", "Cé Song (Live)", "Live")
    return run


@pytest.fixture
def mpd_server(library, tmp_path):
    port = free_port()
    state = tmp_path / "mpd"
    state.mkdir()
    conf = state / "mpd.conf"
    conf.write_text(f'''music_directory "{library / "music"}"
db_file "{state / "db"}"
playlist_directory "{state / "playlists"}"
log_file "{state / "log"}"
bind_to_address "127.0.0.1"
port "{port}"
audio_output {{
    type "null"
    name "null"
}}
''', encoding="utf-8")
    (state / "playlists").mkdir()
    proc = subprocess.Popen([MPD, "--no-daemon", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = mpd_lib.MPDClient()
    try:
        for _ in range(100):
            try:
                client.connect("127.0.0.1", port)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip(f"mpd did not start: {proc.stderr.read().decode(errors='replace')[:300]}")
                time.sleep(0.1)
        client.update()
        for _ in range(200):
            if "updating_db" not in client.status():
                break
            time.sleep(0.1)
        assert len(client.listall()) >= len(SONGS)
        yield port, client
    finally:
        try:
            client.disconnect()
        except Exception:  # noqa: BLE001
            pass
        proc.terminate()
        proc.wait(timeout=10)


def queue_files(client) -> list[str]:
    return [s["file"] for s in client.playlistinfo()]


def test_once_appends_the_ruled_playlist_of_the_current_song(library, mpd_server, tmp_path):
    from siamrec.cli import main

    port, client = mpd_server
    client.add(key_of(0))
    client.play(0)
    assert main(["mpd", f"run={library}", "host=127.0.0.1", f"port={port}", "once=true", "k=10",
                 f"hydra.run.dir={tmp_path / 'o1'}"]) == 0
    assert queue_files(client) == [key_of(0)] + [key_of(i) for i in EXPECTED_DEFAULT]
    # a song only MPD has (another path) is matched by its tags: the playlist of row 6, none already queued
    client.clear()
    client.add("elsewhere/track01.flac")
    client.play(0)
    assert main(["mpd", f"run={library}", "host=127.0.0.1", f"port={port}", "once=true", "k=3",
                 f"hydra.run.dir={tmp_path / 'o2'}"]) == 0
    # row 6's neighbours are rows 0, 1, 2, ... (radio_lib): 1 and 2 are versions of 0, 4 and 5 a third and fourth
    # song of artist A, 7 a version of the current song
    assert queue_files(client)[1:] == [key_of(0), key_of(3), key_of(8)]


def test_nothing_playing_once_is_one_clear_line(library, mpd_server, tmp_path, capsys):
    from siamrec.cli import main

    port, _client = mpd_server
    assert main(["mpd", f"run={library}", "host=127.0.0.1", f"port={port}", "once=true",
                 f"hydra.run.dir={tmp_path / 'o'}"]) == 1
    assert "nothing is playing in MPD" in capsys.readouterr().err
    assert main(["mpd", f"run={library}", "host=127.0.0.1", f"port={free_port()}", "once=true",
                 f"hydra.run.dir={tmp_path / 'o2'}"]) == 1
    assert "cannot connect to MPD" in capsys.readouterr().err


def test_the_queue_keeps_going(library, mpd_server, tmp_path):
    port, client = mpd_server
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "siamrec", "mpd", f"run={library}", "host=127.0.0.1",
                             f"port={port}", "k=3", "mpd.refill_below=1", f"hydra.run.dir={tmp_path / 'daemon'}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client.add(key_of(0))
        client.play(0)
        for _ in range(300):  # the daemon appends 3 songs as soon as the queue is about to run out
            if len(queue_files(client)) >= 4 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert queue_files(client) == [key_of(0)] + [key_of(i) for i in EXPECTED_DEFAULT[:3]]
        # the listener skips to the last song: the queue is about to run out again, and is refilled
        client.play(3)
        for _ in range(300):
            if len(queue_files(client)) >= 7 or proc.poll() is not None:
                break
            time.sleep(0.1)
        files = queue_files(client)
        assert len(files) == 7 and len(set(files)) == 7  # nothing queued twice
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert "appended 3 songs" in out, out
