"""Run-folder I/O: atomic writes and strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamrec.runs import read_embeddings, write_embeddings, write_json


def test_metrics_json_is_strict_json_even_without_scorable_queries(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"test": {"map": float("nan"), "p@10": np.float32(0.5), "n": np.int64(3)}})
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert loaded == {"test": {"map": None, "p@10": 0.5, "n": 3}}


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_embeddings_and_items_round_trip_in_order(tmp_path):
    emb = np.arange(6, dtype=np.float64).reshape(3, 2)
    write_embeddings(tmp_path, emb, ["a", "b", "c"], ["/x/a.wav", None, "/x/c.wav"], [("rock",), ("pop", "indie"), ()],
                     ["train", "test", ""])
    back, items = read_embeddings(tmp_path)
    assert back.dtype == np.float32 and np.array_equal(back, emb)
    assert [(i["key"], i["path"], i["labels"], i["split"]) for i in items] == [
        ("a", "/x/a.wav", "rock", "train"), ("b", "", "pop|indie", "test"), ("c", "/x/c.wav", "", "")]


def test_items_carry_the_song_metadata_and_older_folders_read_with_it_empty(tmp_path):
    meta = [{"title": "ਮਿੱਟੀ ਦਾ ਬਾਵਾ", "artist": "Gurdas Maan", "album": "Live", "duration": 241.5, "mbid": "abc"},
            {}, {"title": "only a title", "genre": ("not", "written")}]
    write_embeddings(tmp_path, np.ones((3, 2)), ["a", "b", "c"], ["", "", ""], [(), (), ()], ["", "", ""],
                     meta=meta)
    header = (tmp_path / "items.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "key,path,labels,split,group,title,artist,album,duration,mbid,codec"
    _, items = read_embeddings(tmp_path)
    assert [(i["title"], i["artist"], i["album"], i["duration"], i["mbid"]) for i in items] == [
        ("ਮਿੱਟੀ ਦਾ ਬਾਵਾ", "Gurdas Maan", "Live", "241.500", "abc"), ("", "", "", "", ""), ("only a title", "", "", "", "")]
    # a folder written before the codec column existed
    (tmp_path / "items.csv").write_text("key,path,labels,split,group,title,artist,album,duration,mbid\n"
                                        "a,,,,a,T,,,,m\nb,,,,b,,,,,\nc,,,,c,,,,,\n", encoding="utf-8")
    _, items = read_embeddings(tmp_path)
    assert [(i["title"], i["mbid"], i["codec"]) for i in items] == [("T", "m", ""), ("", "", ""), ("", "", "")]
    # a folder written before the metadata columns existed
    (tmp_path / "items.csv").write_text("key,path,labels,split,group\na,,,,a\nb,,,,b\nc,,,,c\n", encoding="utf-8")
    _, items = read_embeddings(tmp_path)
    assert [i["title"] for i in items] == ["", "", ""] and all(i["duration"] == "" for i in items)


def test_written_files_get_the_users_umask_not_0600(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        path = write_json(tmp_path / "metrics.json", {"ok": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "other.json", {"ok": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("errno_name, words", [("ENOSPC", "disk is full"), ("EROFS", "read-only"),
                                                ("EACCES", "read-only")])
def test_a_full_or_read_only_disk_is_one_line_naming_the_path_and_leaves_no_temporary(tmp_path, monkeypatch,
                                                                                        errno_name, words):
    import errno
    import os

    from siamrec.errors import SiamrecError
    from siamrec.runs import atomic_write_bytes

    path = write_json(tmp_path / "metrics.json", {"ok": 1})

    def fail(*args, **kwargs):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SiamrecError) as e:
        atomic_write_bytes(path, b"new")
    msg = str(e.value)
    assert str(path) in msg and words in msg and "\n" not in msg
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no .metrics.json.*.tmp left


@pytest.mark.parametrize("damage", ["npy_truncated", "npy_garbage", "items_truncated_mid_row",
                                    "items_truncated_mid_field", "items_not_utf8", "items_wrong_header"])
def test_a_damaged_run_folder_is_one_line_naming_the_file(tmp_path, damage):
    from siamrec.errors import SiamrecError

    write_embeddings(tmp_path, np.ones((3, 4)), ["a", "b", "c"], ["", "", ""], [("x",), ("y",), ("x",)],
                     ["test"] * 3)
    npy, items = tmp_path / "embeddings.npy", tmp_path / "items.csv"
    if damage == "npy_truncated":
        npy.write_bytes(npy.read_bytes()[:-20])
    elif damage == "npy_garbage":
        npy.write_bytes(b"not a numpy file")
    elif damage == "items_truncated_mid_row":
        items.write_bytes(items.read_bytes()[: items.read_bytes().rindex(b",")])
    elif damage == "items_truncated_mid_field":
        items.write_bytes(items.read_bytes()[:-3])
    elif damage == "items_not_utf8":
        items.write_bytes(items.read_bytes().replace(b"c,", b"\xe9,"))
    else:
        items.write_text("name,path\na,\nb,\nc,\n")
    name = "embeddings.npy" if damage.startswith("npy") else "items.csv"
    with pytest.raises(SiamrecError) as e:
        read_embeddings(tmp_path)
    assert name in str(e.value) and "\n" not in str(e.value)


def test_a_checked_npz_never_gives_other_numbers_whatever_byte_is_flipped(tmp_path):
    """The caches' file format (song features, prepared and converted weights): a flipped bit anywhere in the file
    is an error (the caller recomputes), never silently other weights; plain .npy/.npz let most flips through."""
    from siamrec.runs import read_checked_npz, write_checked_npz

    rng = np.random.default_rng(0)
    arrays = {"kernel": rng.normal(size=(6, 4)).astype(np.float32), "bias": rng.normal(size=4).astype(np.float32)}
    path = write_checked_npz(tmp_path / "w.npz", arrays)
    data = path.read_bytes()
    assert {k: v.tolist() for k, v in read_checked_npz(path).items()} == {k: v.tolist() for k, v in arrays.items()}
    for pos in range(len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x04
        path.write_bytes(bytes(flipped))
        try:
            got = read_checked_npz(path)
        except Exception:  # noqa: BLE001 - detected
            continue
        assert set(got) == set(arrays) and all(np.array_equal(got[k], arrays[k]) for k in arrays), pos


def test_a_bit_flipped_feature_cache_entry_is_recomputed_not_used(tmp_path):
    from siamrec.extractor import FeatureCache

    cache = FeatureCache(tmp_path, "fp")
    windows = np.arange(24, dtype=np.float32).reshape(3, 8)
    cache.put("ab" * 32, windows)
    entry = next(tmp_path.rglob("*.np*"))
    data = bytearray(entry.read_bytes())
    data[-20] ^= 0x01  # inside the last window's numbers
    entry.write_bytes(bytes(data))
    assert cache.get("ab" * 32) is None


def test_json_holds_a_name_that_is_not_utf8_as_escaped_text_not_a_lone_surrogate(tmp_path):
    import os

    odd = os.fsdecode(b"caf\xe9 (live).wav")
    path = write_json(tmp_path / "x.json", {"seed": odd, odd: [odd]})
    text = path.read_text(encoding="utf-8")
    assert "\\udc" not in text and json.loads(text) == {"seed": "caf\\xe9 (live).wav",
                                                         "caf\\xe9 (live).wav": ["caf\\xe9 (live).wav"]}
