"""Data sources (folder / csv / features / demo) → Library, and label hygiene."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from siamrec.data.library import Library, apply_label_hygiene
from siamrec.data.sources import load_library, read_manifest
from siamrec.errors import SiamrecError

from conftest import data_yaml  # noqa: E402


# ---------------------------------------------------------------------------------------------- helpers


def write_audio(path: Path, seconds: float = 0.05, sr: int = 8000) -> Path:
    """A tiny real audio file (a sine burst); the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".au": "AU", ".aiff": "AIFF"}.get(path.suffix.lower())
    if fmt is None:  # e.g. .mp3: the folder source only looks at names, so bytes are enough
        path.write_bytes(b"\xff\xfb" + bytes(64))
    else:
        sf.write(path, x, sr, format=fmt, subtype="VORBIS" if fmt == "OGG" else None)
    return path


def assert_user_error(excinfo, *names):
    """A one-line message that names each of `names`."""
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, f"message is not one line: {msg!r}"
    for name in names:
        assert str(name) in msg, f"{name!r} not named in {msg!r}"


def folder_cfg(root, **kw):
    return data_yaml({"source": "folder", "root": str(root), "min_label_count": 1, **kw})


def csv_cfg(manifest, **kw):
    return data_yaml({"source": "csv", "manifest": str(manifest), "label_sep": "|", "min_label_count": 1,
                             **kw})


def features_cfg(features, labels, **kw):
    return data_yaml({"source": "features", "features": features, "labels": str(labels),
                             "label_column": "label", "key_column": None, "label_sep": "|",
                             "min_label_count": 1, **kw})


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_label_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------- folder


def test_folder_labels_from_first_subfolder_recursive_audio_only(tmp_path):
    root = tmp_path / "music"
    audio = ["rock/a.wav", "rock/live/1999/b.flac", "jazz/c.ogg", "jazz/d.MP3", "jazz/sub/e.au"]
    for rel in audio:
        write_audio(root / rel)
    write_text(root / "jazz" / "notes.txt", "not audio")
    write_text(root / "rock" / "cover.jpg", "not audio")
    write_audio(root / "stray.wav")  # directly under root: belongs to no label
    write_audio(root / ".hidden" / "x.wav")  # hidden folder: not a label

    lib = load_library(folder_cfg(root, extensions=["wav", "flac", "ogg", "mp3", "au"]))

    assert sorted(lib.keys) == sorted(audio)
    for key, path, labels, group in zip(lib.keys, lib.paths, lib.labels, lib.groups):
        assert labels == (key.split("/")[0],)
        assert Path(path) == root / key
        assert Path(path).is_file()
        assert group == key
    assert lib.features is None
    assert lib.label_names == ["jazz", "rock"]
    assert not lib.multilabel


def test_folder_extensions_setting_restricts_and_default_covers_audio(tmp_path):
    root = tmp_path / "r"
    for rel in ["a/x.wav", "a/y.flac", "b/z.flac", "b/w.wav"]:
        write_audio(root / rel)
    only_flac = load_library(folder_cfg(root, extensions=[".FLAC"]))  # dot and case tolerated
    assert sorted(only_flac.keys) == ["a/y.flac", "b/z.flac"]
    default = load_library(data_yaml({"source": "folder", "root": str(root)}))  # no extensions key
    assert sorted(default.keys) == ["a/x.wav", "a/y.flac", "b/w.wav", "b/z.flac"]


def test_folder_order_is_sorted_and_independent_of_creation_order(tmp_path):
    rels = [f"{label}/{sub}song{i:02d}.wav" for label in ("blues", "classical", "metal")
            for sub in ("", "disc2/") for i in range(4)]
    libs = []
    for seed, name in ((1, "one"), (2, "two")):
        shuffled = rels[:]
        random.Random(seed).shuffle(shuffled)
        for rel in shuffled:
            write_audio(tmp_path / name / rel, seconds=0.01)
        libs.append(load_library(folder_cfg(tmp_path / name)))
    assert libs[0].keys == libs[1].keys
    assert libs[0].keys == sorted(rels)
    assert libs[0].labels == [(k.split("/")[0],) for k in sorted(rels)]


def test_folder_missing_root(tmp_path):
    root = tmp_path / "does_not_exist"
    with pytest.raises(SiamrecError) as e:
        load_library(folder_cfg(root))
    assert_user_error(e, root, "data.root")


def test_folder_root_is_a_file(tmp_path):
    root = write_text(tmp_path / "afile", "x")
    with pytest.raises(SiamrecError) as e:
        load_library(folder_cfg(root))
    assert_user_error(e, root)


def test_folder_root_not_set():
    with pytest.raises(SiamrecError) as e:
        load_library(data_yaml({"source": "folder", "root": "???"}))
    assert_user_error(e, "data.root")


def test_folder_without_label_subfolders(tmp_path):
    root = tmp_path / "flat"
    write_audio(root / "a.wav")
    write_audio(root / "b.wav")
    with pytest.raises(SiamrecError) as e:
        load_library(folder_cfg(root))
    assert_user_error(e, root)


@pytest.mark.parametrize("content", ["nothing", "only_text"])
def test_folder_empty_class_folder_is_named(tmp_path, content):
    root = tmp_path / "lib"
    write_audio(root / "rock" / "a.wav")
    empty = root / "zydeco"
    empty.mkdir(parents=True)
    if content == "only_text":
        write_text(empty / "readme.txt", "no audio here")
    with pytest.raises(SiamrecError) as e:
        load_library(folder_cfg(root))
    assert_user_error(e, empty)


def test_folder_min_label_count_applied(tmp_path):
    root = tmp_path / "lib"
    for rel in ["big/1.wav", "big/2.wav", "big/3.wav", "small/1.wav"]:
        write_audio(root / rel, seconds=0.01)
    lib = load_library(folder_cfg(root, min_label_count=2))
    assert lib.keys == ["big/1.wav", "big/2.wav", "big/3.wav"]
    assert lib.report["dropped_labels"] == {"small": 1}
    assert lib.report["excluded_items"] == ["small/1.wav"]


def test_unknown_source():
    with pytest.raises(SiamrecError) as e:
        load_library(data_yaml({"source": "sql"}))
    assert_user_error(e, "data.source", "sql")


# ---------------------------------------------------------------------------------------------- csv


def test_csv_columns_multilabel_relative_absolute_and_group(tmp_path):
    elsewhere = write_audio(tmp_path / "elsewhere" / "c.wav").resolve()
    manifest = write_label_csv(
        tmp_path / "meta" / "manifest.csv", ["path", "labels", "group"],
        [["a.wav", "rock", "artist1"],
         ["songs/b.flac", "rock|live | acoustic", "artist1"],
         [str(elsewhere), "jazz", "artist2"]],
    )
    lib = load_library(csv_cfg(manifest))
    base = manifest.parent
    assert lib.keys == ["a.wav", "songs/b.flac", str(elsewhere)]
    assert [Path(p) for p in lib.paths] == [base / "a.wav", base / "songs" / "b.flac", elsewhere]
    assert lib.labels == [("rock",), ("rock", "live", "acoustic"), ("jazz",)]
    assert lib.groups == ["artist1", "artist1", "artist2"]
    assert lib.multilabel
    assert lib.label_names == sorted({"rock", "live", "acoustic", "jazz"})


def test_csv_without_group_column_groups_by_path(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["labels", "path"],  # column order does not matter
                               [["x", "1.wav"], ["y", "2.wav"]])
    lib = load_library(csv_cfg(manifest))
    assert lib.keys == ["1.wav", "2.wav"]
    assert lib.labels == [("x",), ("y",)]
    assert lib.groups == lib.keys


def test_csv_empty_group_cell_falls_back_to_path(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "labels", "group"],
                               [["1.wav", "x", "g"], ["2.wav", "x", ""]])
    assert read_manifest(manifest).groups == ["g", "2.wav"]


def test_csv_custom_label_sep(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "labels"], [["1.wav", "a;b"], ["2.wav", "a|c"]])
    lib = load_library(csv_cfg(manifest, label_sep=";"))
    assert lib.labels == [("a", "b"), ("a|c",)]


def test_csv_row_without_labels_is_excluded_and_reported(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "labels"],
                               [["1.wav", "a"], ["2.wav", ""], ["3.wav", "a"]])
    lib = load_library(csv_cfg(manifest))
    assert lib.keys == ["1.wav", "3.wav"]
    assert lib.report["excluded_items"] == ["2.wav"]


def test_csv_missing_manifest(tmp_path):
    manifest = tmp_path / "nope.csv"
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest)


def test_csv_manifest_not_set():
    with pytest.raises(SiamrecError) as e:
        load_library(data_yaml({"source": "csv", "manifest": "???"}))
    assert_user_error(e, "data.manifest")


def test_csv_unknown_column_is_named(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "labels", "artist"], [["1.wav", "a", "x"]])
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest, "artist")


def test_csv_missing_labels_column(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "group"], [["1.wav", "g"]])
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest, "labels")


def test_csv_missing_path_column(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["labels"], [["a"]])
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest, "path")


def test_csv_duplicate_path(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "labels"],
                               [["one.wav", "a"], ["dup/two.wav", "a"], ["dup/two.wav", "b"]])
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest, "dup/two.wav")


@pytest.mark.parametrize("text", ["", "path,labels\n"], ids=["zero_bytes", "header_only"])
def test_csv_empty_manifest(tmp_path, text):
    manifest = write_text(tmp_path / "m.csv", text)
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest)


def test_csv_empty_path_cell_names_the_line(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "labels"], [["1.wav", "a"], ["", "b"]])
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest, "line 3")


def test_csv_header_with_spaces_after_commas(tmp_path):
    manifest = write_text(tmp_path / "m.csv", "path, labels, group\na.wav, rock, g1\nb.wav, jazz, g2\n")
    lib = read_manifest(manifest)
    assert lib.labels == [("rock",), ("jazz",)]
    assert lib.groups == ["g1", "g2"]


# ---------------------------------------------------------------------------------------------- features


def test_features_concatenated_in_order_with_label_and_key_columns(tmp_path):
    rng = np.random.default_rng(0)
    n = 5
    a = rng.normal(size=(n, 3))
    b = rng.normal(size=(n, 2)).astype(np.float32)
    c = rng.normal(size=n)  # 1-D: one column
    for name, arr in (("a", a), ("b", b), ("c", c)):
        np.save(tmp_path / f"{name}.npy", arr)
    keys = [f"song{i}.wav" for i in range(n)]
    genres = ["rock", "jazz|live", "rock", "pop", "jazz"]
    labels = write_label_csv(tmp_path / "labels.csv", ["id", "genre", "other"],
                             [[k, g, "z"] for k, g in zip(keys, genres)])
    files = [str(tmp_path / f) for f in ("a.npy", "b.npy", "c.npy")]
    lib = load_library(features_cfg(files, labels, label_column="genre", key_column="id"))

    expected = np.concatenate([a, b, c[:, None]], axis=1).astype(np.float32)
    assert lib.features.dtype == np.float32
    assert lib.features.shape == (n, 3 + 2 + 1)
    np.testing.assert_array_equal(lib.features, expected)
    assert lib.keys == keys
    assert lib.labels == [tuple(g.split("|")) for g in genres]
    assert lib.paths == [None] * n
    assert lib.groups == keys

    swapped = load_library(features_cfg(files[::-1], labels, label_column="genre", key_column="id"))
    np.testing.assert_array_equal(swapped.features, np.concatenate([c[:, None], b, a], axis=1).astype(np.float32))


def test_features_defaults_label_column_and_row_number_keys(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    labels = write_label_csv(tmp_path / "l.csv", ["label"], [["a"], ["b"], ["a"], ["b"]])
    lib = load_library(features_cfg(str(tmp_path / "x.npy"), labels))  # a single path, not a list
    assert lib.keys == ["0", "1", "2", "3"]
    assert lib.labels == [("a",), ("b",), ("a",), ("b",)]
    np.testing.assert_array_equal(lib.features, x.astype(np.float32))


def test_features_hygiene_keeps_rows_aligned(tmp_path):
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.save(tmp_path / "x.npy", x)
    labels = write_label_csv(tmp_path / "l.csv", ["label"], [["a"], ["rare"], ["a"], ["b"], ["b"]])
    lib = load_library(features_cfg([str(tmp_path / "x.npy")], labels, min_label_count=2))
    kept = [0, 2, 3, 4]
    assert lib.keys == [str(i) for i in kept]
    np.testing.assert_array_equal(lib.features, x[kept])


def _two_row_setup(tmp_path, n_labels=3):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    return write_label_csv(tmp_path / "l.csv", ["label", "key"], [["a", f"k{i}"] for i in range(n_labels)])


def test_features_row_count_mismatch_between_matrices(tmp_path):
    labels = _two_row_setup(tmp_path)
    np.save(tmp_path / "y.npy", np.zeros((4, 2)))
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], labels))
    assert_user_error(e, "data.features", "3", "4")


def test_features_row_count_mismatch_with_labels(tmp_path):
    labels = _two_row_setup(tmp_path, n_labels=4)
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy")], labels))
    assert_user_error(e, labels, "4", "3")


@pytest.mark.parametrize("setting", ["label_column", "key_column"])
def test_features_unknown_column_is_named(tmp_path, setting):
    labels = _two_row_setup(tmp_path)
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy")], labels, **{setting: "genre_xyz"}))
    assert_user_error(e, f"data.{setting}", "genre_xyz")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_features_non_finite_values(tmp_path, bad):
    labels = _two_row_setup(tmp_path)
    x = np.ones((3, 2))
    x[1, 1] = bad
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy")], labels))
    assert_user_error(e, "data.features")


def test_features_missing_npy_is_named(tmp_path):
    labels = _two_row_setup(tmp_path)
    missing = tmp_path / "missing.npy"
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy"), str(missing)], labels))
    assert_user_error(e, missing)


def test_features_unreadable_npy_is_named(tmp_path):
    labels = _two_row_setup(tmp_path)
    bad = write_text(tmp_path / "bad.npy", "this is not numpy\nsecond line")
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(bad)], labels))
    assert_user_error(e, bad)


def test_features_3d_matrix_rejected(tmp_path):
    labels = _two_row_setup(tmp_path)
    np.save(tmp_path / "cube.npy", np.zeros((3, 2, 2)))
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "cube.npy")], labels))
    assert_user_error(e, tmp_path / "cube.npy")


def test_features_duplicate_keys(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    labels = write_label_csv(tmp_path / "l.csv", ["label", "key"], [["a", "k1"], ["a", "k2"], ["a", "k1"]])
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy")], labels, key_column="key"))
    assert_user_error(e, "data.key_column", "key")


def test_features_labels_file_missing_or_unset(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    missing = tmp_path / "labels.csv"
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy")], missing))
    assert_user_error(e, missing)
    with pytest.raises(SiamrecError) as e:
        load_library(features_cfg([str(tmp_path / "x.npy")], "???"))
    assert_user_error(e, "data.labels")


def test_features_not_set():
    with pytest.raises(SiamrecError) as e:
        load_library(data_yaml({"source": "features", "features": "???", "labels": "l.csv"}))
    assert_user_error(e, "data.features")


# ---------------------------------------------------------------------------------------------- demo (stubbed)


def test_demo_source_reads_genre_or_tags_from_the_demo_manifest(tmp_path, monkeypatch):
    calls = []

    def fake_ensure_demo(cache, n_per_style, duration, **_kw):
        calls.append((Path(cache), n_per_style, duration))
        folder = Path(cache) / "fake"
        write_label_csv(folder / "manifest.csv", ["path", "labels", "tags", "group"],
                        [["rock/r0.flac", "rock", "fast|distorted", "a0"],
                         ["jazz/j0.flac", "jazz", "slow|acoustic", "a1"]])
        return folder

    monkeypatch.setattr("siamrec.data.demo.ensure_demo", fake_ensure_demo)
    paths = OmegaConf.create({"cache": str(tmp_path / "cache")})
    cfg = {"source": "demo", "n_per_style": 3, "duration": 2.5, "min_label_count": 1, "sample_rate": 16000}

    genre = load_library(data_yaml({**cfg, "labels": "genre"}), paths)
    assert calls[-1] == (tmp_path / "cache" / "demo", 3, 2.5)
    assert genre.labels == [("rock",), ("jazz",)]
    assert genre.groups == ["a0", "a1"]
    assert Path(genre.paths[0]) == tmp_path / "cache" / "demo" / "fake" / "rock" / "r0.flac"

    tags = load_library(data_yaml({**cfg, "labels": "tags"}), paths)
    assert tags.labels == [("fast", "distorted"), ("slow", "acoustic")]
    assert tags.multilabel

    with pytest.raises(SiamrecError) as e:
        load_library(data_yaml({**cfg, "labels": "mood"}), paths)
    assert_user_error(e, "data.labels", "mood")


# ---------------------------------------------------------------------------------------------- label hygiene


def _lib(labels, with_features=False):
    keys = [f"item{i}" for i in range(len(labels))]
    feats = np.arange(len(labels) * 2, dtype=np.float32).reshape(-1, 2) if with_features else None
    return Library(keys=keys, paths=[f"/x/{k}.wav" for k in keys], labels=[tuple(x) for x in labels],
                   groups=[f"g{i}" for i in range(len(labels))], features=feats)


def test_hygiene_drops_rare_labels_and_unlabelled_items():
    labels = [("a",), ("a", "b"), ("a",), ("c",), ("d", "a"), ("d",)]
    lib = _lib(labels, with_features=True)
    out = apply_label_hygiene(lib, 2)
    counts = {lab: sum(lab in labs for labs in labels) for lab in {l for labs in labels for l in labs}}
    rare = {lab: c for lab, c in counts.items() if c < 2}
    expected_labels = [tuple(l for l in labs if l not in rare) for labs in labels]
    keep = [i for i, labs in enumerate(expected_labels) if labs]

    assert out.keys == [lib.keys[i] for i in keep]
    assert out.labels == [expected_labels[i] for i in keep]
    assert out.paths == [lib.paths[i] for i in keep]
    assert out.groups == [lib.groups[i] for i in keep]
    np.testing.assert_array_equal(out.features, lib.features[keep])
    assert out.report["dropped_labels"] == rare == {"b": 1, "c": 1}
    assert out.report["excluded_items"] == [lib.keys[i] for i, labs in enumerate(expected_labels) if not labs]
    assert out.report["min_label_count"] == 2
    assert out.report["n_items"] == len(keep)
    assert out.report["n_labels"] == len(out.label_names) == 2
    # the input library is not modified
    assert lib.labels == [tuple(x) for x in labels]
    assert lib.report == {}


def test_hygiene_min_count_one_keeps_everything():
    labels = [("a",), ("b", "c"), ("d",)]
    out = apply_label_hygiene(_lib(labels), 1)
    assert out.labels == labels
    assert out.report["dropped_labels"] == {}
    assert out.report["excluded_items"] == []


@pytest.mark.parametrize("bad", [0, -3, 1.5, "2", None])
def test_hygiene_invalid_min_label_count(bad):
    with pytest.raises(SiamrecError) as e:
        apply_label_hygiene(_lib([("a",), ("a",)]), bad)
    assert_user_error(e, "data.min_label_count")


def test_hygiene_invalid_min_label_count_from_config(tmp_path):
    manifest = write_label_csv(tmp_path / "m.csv", ["path", "labels"], [["1.wav", "a"]])
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest, min_label_count=0))
    assert_user_error(e, "data.min_label_count")


def test_hygiene_everything_dropped():
    with pytest.raises(SiamrecError) as e:
        apply_label_hygiene(_lib([("a",), ("b",), ("c", "d")]), 2)
    assert_user_error(e, "data.min_label_count", "2")


# ---------------------------------------------------------------------------------------------- issue 10: inputs as people have them


def test_folder_default_reads_every_decoder_format_and_skips_hidden_and_appledouble(tmp_path):
    from siamrec.cli import compose, strip_hydra
    from siamrec.data.audio import AUDIO_EXTENSIONS

    root = tmp_path / "music"
    wanted = [f"pop/song.{ext}" for ext in AUDIO_EXTENSIONS]
    for rel in wanted:
        write_audio(root / rel)
    for rel in ["pop/._song.m4a", "pop/.song.opus", "pop/.cache/x.wav", "rock/._a.wav"]:
        write_audio(root / rel)  # macOS AppleDouble and hidden files: never songs
    write_audio(root / "rock" / "b.wav")
    data_cfg = strip_hydra(compose("train", ["data=folder", f"data.root={root}"])).data  # the shipped default
    lib = load_library(data_cfg)
    assert sorted(lib.keys) == sorted(wanted + ["rock/b.wav"])
    assert {"pop/song.m4a", "pop/song.opus"} <= set(lib.keys)


def test_folder_non_utf8_file_name_is_kept_with_a_stable_escaped_key(tmp_path, capsys):
    import os

    from siamrec.runs import read_embeddings, write_embeddings

    root = tmp_path / "music"
    write_audio(root / "rock" / "ok.wav")
    write_audio(root / "jazz" / "b.wav")
    odd = os.path.join(os.fsencode(root / "rock"), b"caf\xe9 (live).wav")  # Latin-1 bytes, not UTF-8
    with open(odd, "wb") as f:
        f.write((root / "rock" / "ok.wav").read_bytes())
    lib = load_library(folder_cfg(root))
    assert "rock/caf\\xe9 (live).wav" in lib.keys
    row = lib.keys.index("rock/caf\\xe9 (live).wav")
    assert os.fsencode(lib.paths[row]) == odd  # the real file is still reachable for decoding
    assert lib.report["non_utf8_names"] == ["rock/caf\\xe9 (live).wav"]
    assert "not UTF-8" in capsys.readouterr().out
    # the library's names can be written to a run folder and read back (no UnicodeEncodeError)
    write_embeddings(tmp_path / "run", np.zeros((len(lib), 2)), lib.keys, lib.paths, lib.labels, ["test"] * len(lib))
    _, items = read_embeddings(tmp_path / "run")
    assert items[row]["key"] == "rock/caf\\xe9 (live).wav"


def test_csv_manifest_with_utf8_bom_reads_as_intended(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,labels\nਮਿੱਟੀ ਦਾ ਬਾਵਾ.mp3,bhangra\nb.wav,rock\n".encode("utf-8-sig"))  # Excel "CSV UTF-8"
    lib = load_library(csv_cfg(manifest))
    assert lib.keys == ["ਮਿੱਟੀ ਦਾ ਬਾਵਾ.mp3", "b.wav"]
    assert lib.labels == [("bhangra",), ("rock",)]


def test_csv_manifest_not_utf8_names_file_and_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,labels\na.wav,rock\ncafé.wav,jazz\n".encode("latin-1"))
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, manifest, "line 3", "UTF-8")


def test_features_label_table_with_bom(tmp_path):
    np.save(tmp_path / "x.npy", np.eye(3, dtype=np.float32))
    (tmp_path / "labels.csv").write_bytes("label\nrock\njazz\nrock\n".encode("utf-8-sig"))
    lib = load_library(features_cfg([str(tmp_path / "x.npy")], tmp_path / "labels.csv"))
    assert lib.labels == [("rock",), ("jazz",), ("rock",)]


def test_every_label_empty_does_not_advise_lowering_min_label_count(tmp_path):
    manifest = write_text(tmp_path / "m.csv", "path,labels\na.wav,\nb.wav,\n")
    with pytest.raises(SiamrecError) as e:
        load_library(csv_cfg(manifest))
    assert_user_error(e, "none of the 2 items has a label")
    assert "min_label_count" not in str(e.value)
