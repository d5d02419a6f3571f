"""data=beets and the beets plugin: a beets library made with beets' own API (items added without autotagging)
is indexed by `extract data=beets`, and `beet similar` (beets' CLI, the plugin enabled in its config) lists or
writes the songs most like a query's first item."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_cfg
from test_library import GURMUKHI, MBID, TOY, items_of, make_music

beets = pytest.importorskip("beets", reason="the [beets] extra is not installed")


@pytest.fixture(scope="module")
def beets_home(tmp_path_factory):
    """BEETSDIR with a config enabling the plugin and a library of the tagged test music, imported as-is."""
    from beets.library import Item, Library

    home = tmp_path_factory.mktemp("beets")
    music = make_music(home / "Music")
    db = home / "library.db"
    lib = Library(str(db), str(music))
    for path in sorted(music.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".jpg":
            lib.add(Item.from_path(str(path)))  # the file's own tags, no autotagger
    lib._close()
    index = home / "index"
    plugin_path = "" if importlib.util.find_spec("beetsplug.siamrec") else \
        f"pluginpath: ['{REPO / 'siamrec' / 'beetsplug'}']\n"  # not installed (PYTHONPATH checkout): beets finds it here
    (home / "config.yaml").write_text(f"directory: {music}\nlibrary: {db}\nplugins: [siamrec]\n{plugin_path}"
                                      f"siamrec:\n  index: {index}\n", encoding="utf-8")
    return home, music, db, index


def env_of(home: Path) -> dict:
    path = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]  # tests/: the toy backbone's module
    return {**os.environ, "BEETSDIR": str(home), "PYTHONPATH": os.pathsep.join(filter(None, path))}


def beet(home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beets", "-c", str(home / "config.yaml"), *args], env=env_of(home),
                          capture_output=True, text=True, timeout=300)


def test_extract_a_beets_library_then_beet_similar(beets_home, tmp_path):
    from siamrec.data.sources import load_library

    home, music, db, index = beets_home
    # as a listener runs it: the library and its music folder come from the beets configuration ($BEETSDIR)
    done = subprocess.run([sys.executable, "-m", "siamrec", "extract", "data=beets", f"extract.out={index}",
                           f"paths.cache={tmp_path / 'cache'}", "features.workers=0", *TOY,
                           f"hydra.run.dir={tmp_path / 'run'}"], env=env_of(home), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(index)
    items = items_of(index)
    assert len(items) == 7 and all(Path(k).is_absolute() and k == it["path"] for k, it in items.items())
    first = items[str(music / "Gurdas Maan" / "Live" / f"01 {GURMUKHI}.flac")]
    assert (first["title"], first["artist"], first["album"], first["mbid"], first["labels"], first["group"]) == (
        GURMUKHI, "Gurdas Maan", "Live", MBID, "punjabi|folk", "Gurdas Maan")
    assert float(first["duration"]) == pytest.approx(3.0, abs=0.05)
    assert first["codec"] == "flac"  # beets' format, which tells the page an .m4a of Apple Lossless plays as WAV
    untagged = items[str(music / "Unknown Artist" / "Some Album" / "track 7.flac")]
    assert untagged["labels"] == "" and untagged["title"]  # beets titles an untagged file itself; it stays listed

    # a beets query chooses the songs
    queried = load_library(make_cfg("extract", ["data=beets", f"data.library={db}", f"data.directory={music}",
                                                "data.query=genre:classical", *TOY], tmp_path).data)
    assert sorted(Path(k).name for k in queried.keys) == ["01 First.opus", "02 Second.wav", "03 Raga.mp3"]

    shown = beet(home, "similar", f"title:{GURMUKHI}", "-n", "3")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("seed Gurdas Maan - Live - " + GURMUKHI)
    m3u = tmp_path / "like.m3u8"
    written = beet(home, "similar", "artist:Ustad", "-n", "4", "--m3u", str(m3u))
    assert written.returncode == 0, written.stderr
    text = m3u.read_text(encoding="utf-8").splitlines()
    assert text[0] == "#EXTM3U" and text[1] == "#EXTINF:3,Ustad - Raga Yaman"
    assert text[2] == str(music / "Ustad" / "Ragas" / "03 Raga.mp3") and len(text) == 1 + 2 * 5
    assert all(Path(p).is_file() for p in text[2::2])
    missing = beet(home, "similar", "title:nothing-like-this")
    assert missing.returncode != 0 and "no item matches" in missing.stderr


def test_a_missing_beets_library_is_one_line(tmp_path):
    from siamrec.data.sources import load_library
    from siamrec.errors import SiamrecError

    with pytest.raises(SiamrecError, match="no beets library there"):
        load_library(make_cfg("extract", ["data=beets", f"data.library={tmp_path / 'none.db'}"], tmp_path).data)
