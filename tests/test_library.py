"""data=library: a listener's tagged music folder (real Emotify and RagaVeda audio, cut short, tagged with mutagen)
becomes an index without a run or labels; a second extract reads no unchanged audio; recommend and evaluate use it."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import make_cfg, shared_root

TOY = [f"hydra.searchpath=[file://{Path(__file__).parent / 'toy_conf'}]", "backbone=toy8k"]
GURMUKHI = "ਮਿੱਟੀ ਦਾ ਬਾਵਾ"
MBID = "0c3a8d4e-1111-4222-8333-944455556666"
SECONDS = 3


def real_audio() -> dict[str, list[Path]]:
    root = shared_root() / "audio"
    found = {"classical": sorted((root / "emotify" / "classical").glob("*.ogg"))[:3],
             "electronic": sorted((root / "emotify" / "electronic").glob("*.ogg"))[:2],
             "raga": sorted((root / "ragaveda").glob("*/*.flac"))[:3]}
    if not all(found.values()):
        pytest.skip(f"real audio (emotify, ragaveda) not found under {root} (set SIAMREC_SHARED)")
    return found


def cut(src: Path, dst: Path, fmt: str | None = None, subtype: str | None = None) -> Path:
    """The first SECONDS of a real recording, written as `dst`'s format."""
    info = sf.info(src)
    y, sr = sf.read(src, frames=int(SECONDS * info.samplerate), dtype="float32")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, y, sr, format=fmt, subtype=subtype)
    return dst


def tag_vorbis(path: Path, **tags) -> None:
    import mutagen

    f = mutagen.File(path)
    f.add_tags() if f.tags is None else None
    for k, v in tags.items():
        f[k] = v
    f.save()


def tag_mp3(path: Path, **tags) -> None:
    from mutagen.easyid3 import EasyID3
    from mutagen.id3 import ID3NoHeaderError

    try:
        f = EasyID3(path)
    except ID3NoHeaderError:
        f = EasyID3()
    for k, v in tags.items():
        f[k] = v
    f.save(path)


def tag_wav(path: Path, title: str, artist: str, genre: str) -> None:
    from mutagen.id3 import TCON, TIT2, TPE1
    from mutagen.wave import WAVE

    f = WAVE(path)
    f.add_tags()
    f.tags.add(TIT2(encoding=3, text=title))
    f.tags.add(TPE1(encoding=3, text=artist))
    f.tags.add(TCON(encoding=3, text=genre))
    f.save()


def make_music(root: Path) -> Path:
    """Artist/Album/NN Title.ext, as a listener's folder looks: FLAC, MP3, Opus, WAV (ID3), untagged songs, junk."""
    audio = real_audio()
    classical, electronic, raga = audio["classical"], audio["electronic"], audio["raga"]
    p = cut(raga[0], root / "Gurdas Maan" / "Live" / f"01 {GURMUKHI}.flac")
    tag_vorbis(p, title=GURMUKHI, artist="Gurdas Maan", album="Live", genre=["Punjabi", " folk "],
               date="1999", tracknumber="1", musicbrainz_trackid=MBID)
    p = cut(raga[1], root / "Gurdas Maan" / "Live" / "02 Second.flac")
    tag_vorbis(p, title="Second", artist="Gurdas Maan", album="Live", genre="punjabi; Folk")
    p = cut(raga[2], root / "Ustad" / "Ragas" / "03 Raga.mp3", fmt="MP3", subtype="MPEG_LAYER_III")
    tag_mp3(p, title="Raga Yaman", artist="Ustad", album="Ragas", genre="Classical", tracknumber="3")
    p = cut(classical[0], root / "Orchestra" / "Symphonies" / "01 First.opus", fmt="OGG", subtype="OPUS")
    tag_vorbis(p, title="First", albumartist="Orchestra", album="Symphonies", genre="CLASSICAL")
    p = cut(classical[1], root / "Orchestra" / "Symphonies" / "02 Second.wav")
    tag_wav(p, "Symphony 2", "Orchestra", "Classical")
    cut(electronic[0], root / "Unknown Artist" / "Some Album" / "track 7.flac")           # no tags at all
    cut(electronic[1], root / "loose.ogg", fmt="OGG", subtype="VORBIS")                    # no tags, no folders
    cut(classical[2], root / "Orchestra" / ".hidden.flac")                                 # hidden: skipped
    (root / "Orchestra" / "._01 First.opus").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS junk: skipped
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff not audio")
    return root


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    return make_music(tmp_path_factory.mktemp("home") / "Music")


def library_cfg(tmp, root, *extra, command="extract"):
    return make_cfg(command, ["data=library", f"data.root={root}", *TOY, *extra], tmp)


def items_of(folder) -> dict[str, dict]:
    from siamrec.runs import read_embeddings

    _, items = read_embeddings(folder)
    return {it["key"]: it for it in items}


def test_tags_become_metadata_labels_and_groups(music, tmp_path):
    from siamrec.data.sources import load_library

    lib = load_library(library_cfg(tmp_path, music).data, library_cfg(tmp_path, music).paths)
    meta = dict(zip(lib.keys, lib.meta))
    assert sorted(lib.keys) == sorted([f"Gurdas Maan/Live/01 {GURMUKHI}.flac", "Gurdas Maan/Live/02 Second.flac",
                                       "Ustad/Ragas/03 Raga.mp3", "Orchestra/Symphonies/01 First.opus",
                                       "Orchestra/Symphonies/02 Second.wav", "Unknown Artist/Some Album/track 7.flac",
                                       "loose.ogg"])
    first = meta[f"Gurdas Maan/Live/01 {GURMUKHI}.flac"]
    assert (first["title"], first["artist"], first["album"], first["date"], first["tracknumber"], first["mbid"]) == (
        GURMUKHI, "Gurdas Maan", "Live", "1999", "1", MBID)
    assert first["duration"] == pytest.approx(SECONDS, abs=0.05)
    assert meta["Ustad/Ragas/03 Raga.mp3"]["title"] == "Raga Yaman"               # ID3 in an MP3
    assert meta["Orchestra/Symphonies/02 Second.wav"]["title"] == "Symphony 2"    # ID3 in a WAV
    assert meta["Orchestra/Symphonies/01 First.opus"]["albumartist"] == "Orchestra"
    untagged = meta["Unknown Artist/Some Album/track 7.flac"]
    assert untagged["title"] == "track 7" and "artist" not in untagged and "album" not in untagged
    labels, groups = dict(zip(lib.keys, lib.labels)), dict(zip(lib.keys, lib.groups))
    # genres normalised (case, spaces, ';' lists), several per song; the untagged songs keep no label but stay
    assert labels[f"Gurdas Maan/Live/01 {GURMUKHI}.flac"] == ("punjabi", "folk")
    assert labels["Gurdas Maan/Live/02 Second.flac"] == ("punjabi", "folk")
    assert {labels[k] for k in ("Ustad/Ragas/03 Raga.mp3", "Orchestra/Symphonies/01 First.opus",
                                "Orchestra/Symphonies/02 Second.wav")} == {("classical",)}
    assert labels["loose.ogg"] == () and labels["Unknown Artist/Some Album/track 7.flac"] == ()
    # group: artist, else albumartist, else the song itself
    assert groups["Orchestra/Symphonies/01 First.opus"] == groups["Orchestra/Symphonies/02 Second.wav"] == "Orchestra"
    assert groups["loose.ogg"] == "loose.ogg"
    # the split keeps one artist on one side, and leaves the unlabelled songs out of it (and so out of scoring)
    from siamrec.data.split import make_split

    split = dict(zip(lib.keys, make_split(lib, make_cfg("train", ["split.valid=0.2", "split.test=0.4"], tmp_path).split)))
    assert split["loose.ogg"] == "" and split["Unknown Artist/Some Album/track 7.flac"] == ""
    assert split[f"Gurdas Maan/Live/01 {GURMUKHI}.flac"] == split["Gurdas Maan/Live/02 Second.flac"] != ""

    guessed = load_library(library_cfg(tmp_path, music, "data.guess_from_path=true", "data.labels=folder",
                                       "data.group=album").data, library_cfg(tmp_path, music).paths)
    meta, labels = dict(zip(guessed.keys, guessed.meta)), dict(zip(guessed.keys, guessed.labels))
    untagged = meta["Unknown Artist/Some Album/track 7.flac"]
    assert (untagged["title"], untagged["artist"], untagged["album"]) == ("track 7", "Unknown Artist", "Some Album")
    assert meta[f"Gurdas Maan/Live/01 {GURMUKHI}.flac"]["artist"] == "Gurdas Maan"  # tags win over folders
    assert labels["Ustad/Ragas/03 Raga.mp3"] == ("ustad",) and labels["loose.ogg"] == ()
    assert dict(zip(guessed.keys, guessed.groups))["Gurdas Maan/Live/02 Second.flac"] == "Gurdas Maan / Live"


def test_extract_without_a_run_then_only_what_changed(music, tmp_path, monkeypatch):
    """No run, no labels: the pretrained backbone embeds the library into its folder; a second extract reads no
    audio (no decode, no tag read); a new, an edited and a deleted song are embedded, re-embedded, dropped."""
    import mutagen

    import siamrec.data.tags as tags
    import siamrec.extractor.decoding as decoding
    from siamrec.commands.extract import extract
    from siamrec.commands.recommend import recommend
    from siamrec.progress import read_progress

    root = tmp_path / "Music"
    shutil.copytree(music, root)
    out = tmp_path / "index"
    cfg = library_cfg(tmp_path, root, f"extract.out={out}", "extract.shard_size=3")
    assert extract(cfg, tmp_path / "run") == out
    items = items_of(out)
    assert len(items) == 7 and {"extractor.json", "head.json", "backbone.keras"} <= {p.name for p in out.iterdir()}
    first = items[f"Gurdas Maan/Live/01 {GURMUKHI}.flac"]
    assert (first["title"], first["artist"], first["album"], first["mbid"], first["labels"], first["group"]) == (
        GURMUKHI, "Gurdas Maan", "Live", MBID, "punjabi|folk", "Gurdas Maan")
    assert float(first["duration"]) == pytest.approx(SECONDS, abs=0.05)
    assert items["loose.ogg"]["title"] == "loose" and items["loose.ogg"]["labels"] == ""
    progress = read_progress(out)
    assert (progress["state"], progress["done"], progress["total"], progress["embedded"]) == ("ready", 7, 7, 7)

    decoded, tag_reads = [], []
    real_decode, real_file = decoding.decode_windows, mutagen.File
    monkeypatch.setattr(decoding, "decode_windows", lambda path, plan: decoded.append(path) or real_decode(path, plan))
    monkeypatch.setattr(mutagen, "File", lambda path, *a, **k: tag_reads.append(path) or real_file(path, *a, **k))
    extract(cfg, tmp_path / "run2")
    assert decoded == [] and tag_reads == []            # unchanged: stat only
    assert json.loads((out / "extract.json").read_text())["reused"] == 7

    new = cut(real_audio()["electronic"][0], root / "New" / "new.flac")
    tag_vorbis(new, title="Brand new", artist="Someone", genre="Electronic")
    tag_vorbis(root / "Gurdas Maan" / "Live" / "02 Second.flac", title="Second (edited)")
    (root / "loose.ogg").unlink()
    tag_reads.clear()  # the tagging above read tags too
    extract(cfg, tmp_path / "run3")
    assert sorted(Path(p).name for p in decoded) == ["02 Second.flac", "new.flac"]
    assert sorted(Path(p).name for p in tag_reads) == ["02 Second.flac", "new.flac"]
    items = items_of(out)
    assert "loose.ogg" not in items and items["New/new.flac"]["title"] == "Brand new"
    assert items["Gurdas Maan/Live/02 Second.flac"]["title"] == "Second (edited)" and len(items) == 7
    progress = read_progress(out)
    assert (progress["total"], progress["reused"], progress["embedded"]) == (7, 5, 2)

    # the folder is a run for recommend: a seed by key, its playlist from the library
    rows = recommend(make_cfg("recommend", [f"run={out}", f"recommend.seed=New/new.flac", "recommend.k=3",
                                            "recommend.rules=none"], tmp_path),
                     tmp_path / "rec")
    assert len(rows) == 3 and all(r[3] in items and r[3] != "New/new.flac" for r in rows)


def test_an_index_folder_keeps_its_backbone_and_says_which_settings_differ(music, tmp_path, capsys):
    """An index folder made with other settings (e.g. defaults changed by an upgrade) is refused in one line naming
    each setting it was made with and the one asked for now, and the overrides that use it as it is; with them, it
    is updated without embedding a song again."""
    from siamrec.commands.extract import extract
    from siamrec.errors import SiamrecError

    out = tmp_path / "index"
    extract(library_cfg(tmp_path, music, f"extract.out={out}"), tmp_path / "run")
    with pytest.raises(SiamrecError) as e:
        extract(library_cfg(tmp_path, music, f"extract.out={out}", "clip.windows=all", "clip.pool=unit_mean",
                            "features.normalise=centre_sqrt"), tmp_path / "run2")
    msg = str(e.value)
    assert "\n" not in msg
    for was, now in (("clip.pool=mean", "unit_mean"), ("clip.windows=first", "all"),
                     ("features.normalise=centre", "centre_sqrt")):
        assert f"{was} (now {now})" in msg
    keep = msg.split("add '")[1].split("'")[0]
    assert keep == "clip.pool=mean clip.windows=first features.normalise=centre"
    capsys.readouterr()
    extract(library_cfg(tmp_path, music, f"extract.out={out}", "clip.windows=all", "clip.pool=unit_mean",
                        "features.normalise=centre_sqrt", *keep.split()), tmp_path / "run3")
    assert f"0 embedded, {len(items_of(out))} reused from the store" in capsys.readouterr().out
    with pytest.raises(SiamrecError, match="another backbone"):
        extract(library_cfg(tmp_path, music, f"extract.out={out}", "backbone.seed=8"), tmp_path / "run4")
    (out / "extractor.json").write_text('{"members": [', encoding="utf-8")
    with pytest.raises(SiamrecError, match=f"the index folder {out}: its extractor.json is damaged"):
        extract(library_cfg(tmp_path, music, f"extract.out={out}"), tmp_path / "run5")


def test_the_default_index_folder_is_one_per_library_under_the_user_data_dir(tmp_path, monkeypatch):
    from siamrec.data.music import library_folder

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "Music").mkdir()
    (tmp_path / "Other" / "Music").mkdir(parents=True)
    a = library_folder(library_cfg(tmp_path, tmp_path / "Music").data)
    b = library_folder(library_cfg(tmp_path, tmp_path / "Other" / "Music").data)
    assert a.parent == b.parent == tmp_path / "data" / "siamrec" / "libraries"
    assert a != b and a.name.startswith("Music-") and b.name.startswith("Music-")
    assert library_folder(library_cfg(tmp_path, str(tmp_path / "Music") + "/").data) == a


def test_odd_files_never_stop_a_scan(tmp_path):
    """A non-UTF-8 file name, a damaged header and an empty folder: listed, kept untagged or refused in one line."""
    from siamrec.data.sources import load_library
    from siamrec.errors import SiamrecError

    root = tmp_path / "Music"
    root.mkdir()
    rng = np.random.default_rng(0)
    sf.write(root / "ok.flac", 0.1 * rng.normal(size=8000).astype(np.float32), 8000)
    sf.write(root / "plain.wav", 0.1 * rng.normal(size=8000).astype(np.float32), 8000)
    os.rename(root / "plain.wav", os.fsencode(str(root)) + b"/caf\xe9.wav")  # a latin-1 name
    (root / "broken.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x7f" + b"\x00" * 50)
    cfg = library_cfg(tmp_path, root)
    lib = load_library(cfg.data, cfg.paths)
    assert sorted(lib.keys) == ["broken.mp3", "caf\\xe9.wav", "ok.flac"]
    assert dict(zip(lib.keys, lib.meta))["caf\\xe9.wav"]["title"] == "caf\\xe9"
    assert lib.report["non_utf8_names"] == ["caf\\xe9.wav"]
    empty = tmp_path / "Empty"
    empty.mkdir()
    with pytest.raises(SiamrecError, match="no audio files"):
        load_library(library_cfg(tmp_path, empty).data, cfg.paths)
    with pytest.raises(SiamrecError, match="no such folder"):
        load_library(library_cfg(tmp_path, tmp_path / "nope").data, cfg.paths)


def test_linked_folders_are_listed_once_and_unreadable_ones_are_said(tmp_path, monkeypatch, capsys):
    """A link back up (Music/All -> Music), a second link to a folder and a link to a folder outside: every song
    once (a loop listed every song again at each level until the path grew too long); a folder that cannot be read
    is named, not silently left out."""
    import siamrec.data.tags as tags
    from siamrec.data.sources import load_library

    root = tmp_path / "Music"
    (root / "Artist").mkdir(parents=True)
    outside = tmp_path / "Elsewhere"
    outside.mkdir()
    rng = np.random.default_rng(0)
    for path in (root / "Artist" / "one.flac", root / "two.flac", outside / "three.flac"):
        sf.write(path, 0.1 * rng.normal(size=8000).astype(np.float32), 8000)
    (root / "All").symlink_to(root)                  # a loop
    (root / "Same artist").symlink_to(root / "Artist")  # a second way into a folder
    (root / "More").symlink_to(outside)               # a folder kept elsewhere
    (root / "Locked").mkdir()
    scandir = os.scandir

    def locked(path):
        if str(path).endswith("Locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(tags.os, "scandir", locked)
    cfg = library_cfg(tmp_path, root)
    lib = load_library(cfg.data, cfg.paths)
    songs = sorted(lib.keys)
    assert len(songs) == 3 and songs[-1] == "two.flac", songs  # each once, through whichever way came first
    assert {k.rsplit("/", 1)[-1] for k in songs} == {"one.flac", "two.flac", "three.flac"}
    assert lib.report["unreadable_folders"] == ["Locked"]
    out = capsys.readouterr().out
    assert "1 folder could not be read, so its songs are not in the library" in out and "Locked" in out


def test_albums_ripped_to_one_file_with_a_cue_sheet_are_said(tmp_path, capsys):
    """An album ripped to one file with a CUE sheet beside it is one song: the scan names it with its tracks, whether
    the sheet names the file or the WAV it was converted from, in UTF-8 with a BOM or in a legacy code page. A
    one-track sheet, a sheet of one file per track and a sheet whose file is not there name nothing."""
    from siamrec.commands.extract import extract

    root = tmp_path / "Music"
    rng = np.random.default_rng(0)
    files = ["ਕਲਾਕਾਰ/Album One/Album One.flac", "Two/CDImage.flac", "Single/song.flac", "Multi/01.flac",
             "Multi/02.flac", "Other/kept.flac"]
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, 0.1 * rng.normal(size=8000).astype(np.float32), 8000)

    def sheet(*entries, title="Album"):
        lines = [f'TITLE "{title}"']
        for name, tracks in entries:
            lines.append(f'FILE "{name}" WAVE')
            for t in tracks:
                lines += [f"  TRACK {t:02d} AUDIO", f'    TITLE "Track {t}"', f"    INDEX 01 0{t}:00:00"]
        return "\r\n".join(lines) + "\r\n"

    sheets = {"ਕਲਾਕਾਰ/Album One/Album One.cue": ("\ufeff" + sheet(("Album One.wav", [1, 2, 3]), title="ਗੀਤ"), "utf-8"),
              "Two/CDImage.flac.cue": (sheet(("CDImage.flac", [1, 2]), title="Café"), "cp1252"),
              "Single/song.cue": (sheet(("song.flac", [1])), "utf-8"),
              "Multi/album.cue": (sheet(("01.flac", [1]), ("02.flac", [2])), "utf-8"),
              "Other/gone.cue": (sheet(("missing.flac", [1, 2, 3, 4, 5])), "utf-8")}
    for rel, (text, encoding) in sheets.items():
        (root / rel).write_bytes(text.encode(encoding))
    index = tmp_path / "index"
    cfg = library_cfg(tmp_path, root, f"extract.out={index}")
    extract(cfg, tmp_path / "run")
    assert sorted(items_of(index)) == sorted(files)  # the sheets are not songs
    report = json.loads((index / "data_report.json").read_text(encoding="utf-8"))  # beside the index it describes
    assert report["cue_albums"] == [{"file": "Two/CDImage.flac", "tracks": 2},
                                    {"file": "ਕਲਾਕਾਰ/Album One/Album One.flac", "tracks": 3}]
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "CUE sheet" in x)
    assert line.startswith("2 files are whole albums with a CUE sheet beside them, embedded as one song each")
    assert "Two/CDImage.flac (2 tracks)" in line and "Album One.flac (3 tracks)" in line and "shnsplit" in line
    for rel in ("ਕਲਾਕਾਰ/Album One/Album One.cue", "Two/CDImage.flac.cue"):
        (root / rel).unlink()
    extract(cfg, tmp_path / "run2")
    report = json.loads((index / "data_report.json").read_text(encoding="utf-8"))
    assert "cue_albums" not in report and report["source"] == "library" and "CUE" not in capsys.readouterr().out


def test_evaluate_scores_only_the_labelled_songs(music, tmp_path):
    from siamrec.commands.evaluate import evaluate

    cfg = make_cfg("evaluate", ["data=library", f"data.root={music}", *TOY, "+model=identity",
                                "eval.protocol=cross"], tmp_path)
    metrics = evaluate(cfg, tmp_path / "run")
    assert metrics["test"]["n_queries"] == 5        # the 5 songs with a genre; the 2 untagged are listed only
    assert len(items_of(tmp_path / "run")) == 7


def test_serve_data_library_builds_the_index_then_serves_it(music, tmp_path, monkeypatch):
    """The listener's one command: serve data=library indexes the folder (its default folder under the user data
    directory), then serves that folder."""
    uvicorn = pytest.importorskip("uvicorn")
    from siamrec.commands.serve import serve

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config.app))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    cfg = library_cfg(tmp_path, music, "serve.port=0", command="serve")
    serve(cfg, tmp_path / "run")
    (folder,) = (tmp_path / "data" / "siamrec" / "libraries").iterdir()
    assert folder.name.startswith("Music-") and len(items_of(folder)) == 7
    (switch,) = served  # the server answers from the start (the indexing's progress), then serves the library
    app = switch.app
    assert len(app.state.catalogue) == 7 and app.state.catalogue.run == folder


def test_recommend_and_mpd_take_the_library_as_serve_does(music, tmp_path, monkeypatch):
    """recommend data=library data.root=~/Music SONG: the library's index is built (or updated) first, as serve
    and mpd do, and the seed is found in it by its title; no run= is needed."""
    from siamrec.commands.extract import run_or_library
    from siamrec.commands.recommend import recommend

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    cfg = library_cfg(tmp_path, music, "recommend.seed=Raga Yaman", "recommend.k=3", "recommend.rules=none",
                      command="recommend")
    rows = recommend(cfg, tmp_path / "run")
    (folder,) = (tmp_path / "data" / "siamrec" / "libraries").iterdir()
    assert len(items_of(folder)) == 7
    assert [r[0] for r in rows] == ["Ustad/Ragas/03 Raga.mp3"] * 3
    assert len({r[3] for r in rows}) == 3 and "Ustad/Ragas/03 Raga.mp3" not in {r[3] for r in rows}
    assert (tmp_path / "run" / "playlists.csv").is_file()
    assert run_or_library(library_cfg(tmp_path, music, command="mpd"), tmp_path / "run2") == folder
    assert not (tmp_path / "run2").exists()  # the index folder is the library's, not the command's


FFMPEG_WRITTEN = {".m4a": "aac", ".wma": "wmav2", ".wv": "wavpack"}  # formats only ffmpeg writes (and reads)


@pytest.mark.parametrize("ext", [".flac", ".mp3", ".opus", ".ogg", ".wav", ".aiff", ".m4a", ".wma", ".wv"])
def test_read_tags_of_every_format(tmp_path, ext):
    """title, artists, genres (a ';' list), MusicBrainz id and duration from each tag format mutagen writes."""
    from mutagen.id3 import TCON, TIT2, TPE1, UFID

    from siamrec.data.tags import read_tags

    path = tmp_path / f"song{ext}"
    y = (0.1 * np.random.default_rng(0).normal(size=16000)).astype(np.float32)
    if ext in FFMPEG_WRITTEN:
        if not shutil.which("ffmpeg"):
            pytest.skip(f"ffmpeg is not installed (it writes the {ext} test file)")
        sf.write(tmp_path / "src.wav", y, 16000)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "src.wav"), "-c:a", FFMPEG_WRITTEN[ext],
                        str(path)], check=True)
    if ext == ".m4a":
        from mutagen.easymp4 import EasyMP4

        f = EasyMP4(path)
        f.update({"title": GURMUKHI, "artist": ["A", "B"], "genre": "Punjabi; Folk", "musicbrainz_trackid": MBID})
        f.save()
    elif ext == ".wma":  # ASF, as Windows Media Player writes it
        from mutagen.asf import ASF

        f = ASF(path)
        f.tags.update({"Title": GURMUKHI, "Author": ["A", "B"], "WM/Genre": "Punjabi; Folk",
                       "MusicBrainz/Track Id": MBID})
        f.save()
    elif ext == ".wv":  # APEv2, as foobar2000 writes it
        from mutagen.wavpack import WavPack

        f = WavPack(path)
        if f.tags is None:
            f.add_tags()
        f.tags.update({"Title": GURMUKHI, "Artist": ["A", "B"], "Genre": "Punjabi; Folk", "MUSICBRAINZ_TRACKID": MBID})
        f.save()
    else:
        fmt = {".flac": ("FLAC", None), ".mp3": ("MP3", "MPEG_LAYER_III"), ".opus": ("OGG", "OPUS"),
               ".ogg": ("OGG", "VORBIS"), ".wav": ("WAV", None), ".aiff": ("AIFF", None)}[ext]
        sf.write(path, y, 16000, format=fmt[0], subtype=fmt[1])
        if ext in (".wav", ".aiff"):
            import mutagen

            f = mutagen.File(path)
            f.add_tags()
            for frame in (TIT2(encoding=3, text=GURMUKHI), TPE1(encoding=3, text=["A", "B"]),
                          TCON(encoding=3, text="Punjabi; Folk"), UFID(owner="http://musicbrainz.org", data=MBID.encode())):
                f.tags.add(frame)
            f.save()
        elif ext == ".mp3":
            tag_mp3(path, title=GURMUKHI, artist=["A", "B"], genre="Punjabi; Folk", musicbrainz_trackid=MBID)
        else:
            tag_vorbis(path, title=GURMUKHI, artist=["A", "B"], genre="Punjabi; Folk", musicbrainz_trackid=MBID)
    tags = read_tags(str(path))
    assert (tags["title"], tags["artist"], tags["genre"], tags["mbid"]) == (GURMUKHI, "A & B", ["punjabi", "folk"], MBID)
    assert tags["duration"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("keep_seconds", [600, 1], ids=["kept", "streamed"])
def test_formats_only_ffmpeg_reads_are_listed_decoded_and_played(tmp_path, monkeypatch, keep_seconds):
    """WMA, WavPack, WebM and ADTS AAC files of a listener's folder are songs: the scan lists them, every window is
    decoded as a whole-file librosa.load gives it — also when the file is longer than the reader keeps in memory
    and is decoded again, forward, as the windows ask — and the web page gets WavPack and WMA as WAV (WavPack
    sample for sample: it is lossless)."""
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed (it writes and reads these formats)")
    import librosa

    import siamrec.data.audio as audio
    from siamrec.data.audio import AUDIO_EXTENSIONS, WindowPlan, decode_windows

    monkeypatch.setattr(audio._AudioreadReader, "KEEP_SECONDS", keep_seconds)
    from siamrec.data.tags import scan
    from siamrec.serve.catalogue import TRANSCODED, _wav

    rng = np.random.default_rng(0)
    source = (np.stack([np.sin(np.arange(3 * 22050) * f) for f in (0.05, 0.07)], axis=1) * 0.3
              + 0.01 * rng.normal(size=(3 * 22050, 2)))
    sf.write(tmp_path / "src.wav", source, 22050, subtype="PCM_16")
    music = tmp_path / "Music" / "Artist"
    music.mkdir(parents=True)
    for ext, codec in ((".wma", "wmav2"), (".wv", "wavpack"), (".webm", "libopus"), (".aac", "aac")):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "src.wav"), "-c:a", codec,
                        str(music / f"song{ext}")], check=True)
    songs, _ = scan(tmp_path / "Music", AUDIO_EXTENSIONS, tmp_path / "tags.sqlite", progress=False)
    assert sorted(s.rel for s in songs) == ["Artist/song.aac", "Artist/song.webm", "Artist/song.wma", "Artist/song.wv"]
    plan = WindowPlan(sr=16000, window=8000, context=1000, hop=6000, mode="all")  # overlapping windows
    for s in songs:
        windows = decode_windows(s.path, plan)
        whole, _ = librosa.load(s.path, sr=16000)
        whole = np.concatenate([np.zeros(1000, np.float32), whole, np.zeros(8000, np.float32)])
        assert len(windows) == (len(whole) - 9000 - 6000) // 6000 + 1, s.rel
        for i, w in enumerate(windows):
            assert np.allclose(w, whole[i * 6000:i * 6000 + 8000], atol=1e-4), (s.rel, i)
    reader = audio._AudioreadReader(str(music / "song.wv"))  # streamed: a read behind the last decodes afresh
    native, _ = librosa.load(str(music / "song.wv"), sr=None)
    for lo, hi in ((30000, 31000), (100, 200), (len(native) - 50, len(native) + 50)):
        assert np.allclose(reader.read(lo, hi), native[lo:hi], atol=1e-6), (lo, hi)
    reader.close()
    assert {".wma", ".wv"} <= TRANSCODED
    y, sr = sf.read(io.BytesIO(_wav(str(music / "song.wv"))), dtype="int16")
    assert sr == 22050 and np.array_equal(y, sf.read(tmp_path / "src.wav", dtype="int16")[0])
    y, sr = sf.read(io.BytesIO(_wav(str(music / "song.wma"))), dtype="int16")
    whole, _ = librosa.load(str(music / "song.wma"), sr=None, mono=False)
    assert sr in (22050, 44100) and y.shape == whole.T.shape and np.allclose(y / 32768, whole.T, atol=1e-6)


def test_a_large_scan_reads_tags_in_worker_processes_with_the_same_result(music, tmp_path, monkeypatch):
    import siamrec.data.tags as tags

    one = tags.scan(music, [".flac", ".mp3", ".opus", ".wav", ".ogg"], tmp_path / "a.sqlite", progress=False)[0]
    monkeypatch.setattr(tags, "PARALLEL_FROM", 2)
    monkeypatch.setattr(tags.os, "sched_getaffinity", lambda _pid: {0, 1})
    spawned = []
    import multiprocessing.context as ctx

    real = ctx.SpawnContext.Pool
    monkeypatch.setattr(ctx.SpawnContext, "Pool", lambda self, *a, **k: spawned.append(a) or real(self, *a, **k))
    many = tags.scan(music, [".flac", ".mp3", ".opus", ".wav", ".ogg"], tmp_path / "b.sqlite", progress=False)[0]
    assert [a[0] for a in spawned] == [2]
    assert [(s.rel, s.tags) for s in many] == [(s.rel, s.tags) for s in one] and any(s.tags for s in one)
