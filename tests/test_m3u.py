"""siamrec.m3u: the one M3U8 writer. Control characters in titles and paths never inject lines; every written
entry is read back by `data=playlists` as the very file it names."""

from __future__ import annotations

import os
import sys

import pytest
from omegaconf import OmegaConf

from siamrec.data.sources import from_playlists
from siamrec.m3u import m3u8_text, write_m3u8

# names as a Linux file system allows them: a newline, a CR, a Unicode line separator, a comment-like start
NASTY = ["new\nline.wav", "carriage\rreturn.wav", "sep\u2028arator.wav", "#1 hit.wav", " spaced .wav",
         "ਮਿੱਟੀ ਦਾ ਬਾਵਾ.wav", "back\\slash.wav", "a://b.wav"]


def make_files(root, names):
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in names:
        p = root / n
        p.parent.mkdir(exist_ok=True)  # "a://b.wav" is b.wav in folder "a:"
        p.write_bytes(b"RIFF")  # data=playlists only checks that the file exists
        paths.append(p)
    return paths


def entries(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("relative", [False, True])
def test_nasty_names_are_one_entry_each_and_read_back(tmp_path, relative):
    music = tmp_path / "music"
    paths = make_files(music / "Artist", NASTY)
    tracks = [{"path": p, "title": f"title\n#EXTINF:0,injected {i}", "artist": "A\r\nB", "duration": 61.4}
              for i, p in enumerate(paths)]
    folder = music if relative else tmp_path / "lists"
    out = write_m3u8(folder / "mine.m3u8", tracks, name="my\nlist", relative_to=music if relative else None)
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[:2] == ["#EXTM3U", "#PLAYLIST:my list"]
    assert len(lines) == 2 + 2 * len(NASTY)  # no line injected by any title or path
    assert [ln for ln in lines if ln.startswith("#EXTINF")] == [
        f"#EXTINF:61,A B - title #EXTINF:0,injected {i}" for i in range(len(NASTY))]
    assert len(entries(text)) == len(NASTY)
    plain = [e for e in entries(text) if not e.startswith("file://")]
    # the three with line breaks and the backslash become file:// URIs, the rest stay readable paths
    assert len(plain) == len(NASTY) - 4
    assert (music / "Artist" / "ਮਿੱਟੀ ਦਾ ਬਾਵਾ.wav").relative_to(folder).as_posix() in plain if relative else \
        str(music / "Artist" / "ਮਿੱਟੀ ਦਾ ਬਾਵਾ.wav") in plain
    lib = from_playlists(OmegaConf.create({"playlists": str(folder)}))
    assert sorted(lib.paths) == sorted(os.path.abspath(p) for p in paths)
    assert lib.report["missing_entries"] == 0


def test_relative_hash_name_gets_dot_slash(tmp_path):
    (p,) = make_files(tmp_path, ["#2.wav"])
    text = m3u8_text([{"path": p}], relative_to=tmp_path)
    assert entries(text) == ["./#2.wav"]
    assert "#EXTINF:-1,#2" in text


@pytest.mark.skipif(sys.platform != "linux", reason="non-UTF-8 file names are a Linux matter")
def test_non_utf8_name_is_a_file_uri_read_back(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.wav"
    with open(raw, "wb") as f:
        f.write(b"RIFF")
    path = os.fsdecode(raw)
    out = write_m3u8(tmp_path / "l" / "x.m3u8", [{"path": path, "duration": float("nan")}])
    text = out.read_text(encoding="utf-8")  # valid UTF-8
    assert entries(text) == ["file://" + os.fsencode(str(tmp_path)).decode() + "/caf%E9.wav"]
    assert "#EXTINF:-1,caf\\xe9" in text
    lib = from_playlists(OmegaConf.create({"playlists": str(tmp_path / "l")}))
    assert lib.paths == [path]


def test_extinf_durations_and_names():
    text = m3u8_text([{"path": "/m/a.flac", "title": "Song", "artist": "Singer", "duration": "183.5"},
                      {"path": "/m/b.flac", "title": None, "artist": None, "duration": None},
                      {"path": "/m/c.flac", "title": "T", "duration": float("inf")},
                      {"path": "", "title": "no file"}])
    assert text.splitlines() == ["#EXTM3U", "#EXTINF:184,Singer - Song", "/m/a.flac", "#EXTINF:-1,b", "/m/b.flac",
                                 "#EXTINF:-1,T", "/m/c.flac"]
