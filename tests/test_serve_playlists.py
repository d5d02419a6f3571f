"""data=playlists: a folder of M3U/M3U8 files as multi-label data (each playlist a tag)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import serve_lib
from conftest import make_cfg, tone
from siamrec.data.sources import load_library
from siamrec.errors import SiamrecError

from conftest import data_yaml  # noqa: E402


def cfg(folder, **extra):
    return data_yaml({"source": "playlists", "playlists": str(folder), "min_label_count": 1, **extra})


@pytest.fixture
def playlists(tmp_path):
    """library/ (15 songs) and lists/ with playlists in every way people write them."""
    import soundfile as sf

    library = serve_lib.make_library(tmp_path / "library", per_label=5, seconds=1.0)
    cafe = library / "drone" / "café.flac"
    sf.write(cafe, tone(220.0, 1.0, 16000, np.random.default_rng(1)), 16000)
    lists = tmp_path / "lists"
    (lists / "moods").mkdir(parents=True)
    # UTF-8 with a BOM, #EXTINF lines, Gurmukhi/Devanagari names, spaces, a missing entry, a web URL
    (lists / "road trip.m3u8").write_text(
        "\ufeff#EXTM3U\n#EXTINF:123,Artist - ਪੰਜਾਬੀ ਗੀਤ\n../library/drone/ਪੰਜਾਬੀ ਗੀਤ.flac\n"
        "#EXTINF:-1,x\n../library/high/हिंदी गाना.flac\n\n../library/beats/dhol beat.flac\n"
        "../library/beats/gone.flac\nhttp://radio.example/stream\n", encoding="utf-8")
    # latin-1 .m3u with CRLF line ends, an absolute path and a file:// URL
    (lists / "old.m3u").write_bytes(
        ("#EXTM3U\r\n../library/drone/café.flac\r\n" + str(library / "drone" / "drone_2.flac") + "\r\n"
         "file://" + str(library / "high" / "high_2.flac").replace(" ", "%20") + "\r\n"
         "../library/beats/dhol beat.flac\r\n").encode("latin-1"))
    # nested: the tag is moods/chill, paths relative to the nested file
    (lists / "moods" / "chill.m3u8").write_text("../../library/drone/drone_3.flac\n"
                                                "../../library/drone/drone_4.flac\n", encoding="utf-8")
    return library, lists


def test_playlists_become_tags_and_missing_entries_are_reported(playlists):
    library, lists = playlists
    lib = load_library(cfg(lists))
    labels = dict(zip(lib.keys, lib.labels))
    assert labels == {
        "drone/ਪੰਜਾਬੀ ਗੀਤ.flac": ("road trip",),
        "high/हिंदी गाना.flac": ("road trip",),
        "beats/dhol beat.flac": ("old", "road trip"),  # in two playlists: two tags
        "drone/café.flac": ("old",),
        "drone/drone_2.flac": ("old",),
        "high/high_2.flac": ("old",),
        "drone/drone_3.flac": ("moods/chill",),
        "drone/drone_4.flac": ("moods/chill",),
    }
    assert all(p == str((library / k).resolve()) for k, p in zip(lib.keys, lib.paths))
    assert lib.multilabel and lib.groups == lib.keys
    rep = lib.report
    assert rep["playlists"] == 3 and rep["entries"] == 11 and rep["songs"] == 8 and rep["missing_entries"] == 2
    assert {(m["playlist"], m["entry"]) for m in rep["missing"]} == {
        ("road trip", "../library/beats/gone.flac"), ("road trip", "http://radio.example/stream")}
    # positives are songs that share a playlist
    y = lib.label_matrix()
    share = (y.astype(int) @ y.T.astype(int)) > 0
    i, j, k = (lib.keys.index(n) for n in ("drone/café.flac", "beats/dhol beat.flac", "drone/drone_3.flac"))
    assert share[i, j] and not share[i, k]
    # #EXTINF:<seconds>,<artist> - <title> is the song's metadata; -1 seconds is unknown; no tag line: none
    meta = dict(zip(lib.keys, lib.meta))
    assert meta["drone/ਪੰਜਾਬੀ ਗੀਤ.flac"] == {"duration": 123.0, "artist": "Artist", "title": "ਪੰਜਾਬੀ ਗੀਤ"}
    assert meta["high/हिंदी गाना.flac"] == {"title": "x"}
    assert meta["drone/drone_3.flac"] == {}


def test_playlists_errors_are_one_clear_line(tmp_path):
    with pytest.raises(SiamrecError, match="no such folder"):
        load_library(cfg(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SiamrecError, match="no .m3u or .m3u8"):
        load_library(cfg(tmp_path / "empty"))
    (tmp_path / "empty" / "a.m3u8").write_text("#EXTM3U\nmissing.flac\n", encoding="utf-8")
    with pytest.raises(SiamrecError, match="none of the 1 entries"):
        load_library(cfg(tmp_path / "empty"))
    (tmp_path / "empty" / "b.m3u8").write_bytes("caf\u00e9.flac\n".encode("latin-1"))
    with pytest.raises(SiamrecError, match="not UTF-8"):
        load_library(cfg(tmp_path / "empty"))
    with pytest.raises(SiamrecError, match="data.playlists is not set"):
        load_library(data_yaml({"source": "playlists", "playlists": "???"}))


def test_train_on_playlists_then_recommend_a_song_in_no_playlist(tmp_path):
    """data=playlists end to end: the missing entries land in data_report.json, and a song in no playlist is
    embedded by the trained model and gets a playlist (cold start)."""
    from siamrec.commands.recommend import recommend
    from siamrec.commands.train import train
    from siamrec.cli import seed_everything

    library = serve_lib.make_library(tmp_path / "library", per_label=5, seconds=2.0)
    lists = tmp_path / "lists"
    lists.mkdir()
    for label in serve_lib.STYLES:  # one playlist per style, 4 of its 5 songs; the 5th is in no playlist
        songs = sorted((library / label).iterdir())[:4]
        (lists / f"{label} mix.m3u8").write_text(
            "#EXTM3U\n" + "".join(f"#EXTINF:-1,{s.stem}\n../library/{label}/{s.name}\n" for s in songs)
            + "../library/nowhere.flac\n", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    seed_everything(0)
    overrides = ["data=playlists", f"data.playlists={lists}", "backbone.pretrained=false", "split.valid=0.25",
                 "split.test=0.5", "plots=false"]
    train(make_cfg("train", ["+model=lda", *overrides], tmp_path), run)
    report = json.loads((run / "data_report.json").read_text())
    assert report["missing_entries"] == 3 and report["songs"] == 12
    assert [m["entry"] for m in report["missing"]] == ["../library/nowhere.flac"] * 3
    outside = sorted((library / "high").iterdir())[4]
    items = (run / "items.csv").read_text(encoding="utf-8")
    assert outside.name not in items and "high mix" in items
    new = tmp_path / "outside.flac"
    shutil.copy(outside, new)
    out = tmp_path / "rec"
    out.mkdir()
    rows = recommend(make_cfg("recommend", [f"run={run}", f"recommend.seed={new}", "recommend.k=3", *overrides],
                              tmp_path), out)
    assert len(rows) == 3
    assert [r[4] for r in rows].count("high mix") >= 2  # it sounds like the songs of its style's playlist
