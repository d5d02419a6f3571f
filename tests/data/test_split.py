"""Train/valid/test splits: stratified (iterative stratification over groups) and file lists."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from siamrec.data.library import Library
from siamrec.data.split import make_split, write_split
from siamrec.errors import SiamrecError

from conftest import split_yaml  # noqa: E402

SIDES = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------------- helpers


def assert_user_error(excinfo, *names):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, f"message is not one line: {msg!r}"
    for name in names:
        assert str(name) in msg, f"{name!r} not named in {msg!r}"


def make_lib(labels, groups=None, keys=None) -> Library:
    n = len(labels)
    keys = keys or [f"item{i:04d}.wav" for i in range(n)]
    return Library(keys=list(keys), paths=[None] * n, labels=[tuple(x) for x in labels],
                   groups=list(groups) if groups is not None else list(keys))


def single_label_lib(n_labels=10, per_label=20, groups=None) -> Library:
    labels = [(f"genre{j}",) for j in range(n_labels) for _ in range(per_label)]
    return make_lib(labels, groups=groups)


def stratified(lib, valid=0.1, test=0.2, seed=0):
    cfg = split_yaml({"kind": "stratified", "valid": valid, "test": test, "seed": seed})
    return make_split(lib, cfg)


def per_label_counts(lib, split):
    out = defaultdict(Counter)
    for labs, side in zip(lib.labels, split):
        for lab in labs:
            out[lab][side] += 1
    return out


def write_list(path: Path, entries) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(entries) + "\n", encoding="utf-8")
    return str(path)


def files_cfg(train=None, valid=None, test=None):
    return split_yaml({"kind": "files", "train": train, "valid": valid, "test": test})


# ---------------------------------------------------------------------------------------------- stratified


def test_stratified_deterministic_per_seed_and_varies_across_seeds():
    lib = single_label_lib()
    a, b = stratified(lib, seed=7), stratified(lib, seed=7)
    assert isinstance(a, np.ndarray) and len(a) == len(lib)
    assert a.tolist() == b.tolist()
    assert set(a.tolist()) == set(SIDES)  # every item assigned, nothing left unused
    others = [stratified(lib, seed=s).tolist() for s in (8, 9, 10)]
    assert any(o != a.tolist() for o in others)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_fractions_per_label(seed):
    n_labels, per_label, valid, test = 10, 20, 0.1, 0.2
    lib = single_label_lib(n_labels, per_label)
    split = stratified(lib, valid=valid, test=test, seed=seed)
    want = {"train": per_label * (1 - valid - test), "valid": per_label * valid, "test": per_label * test}
    counts = per_label_counts(lib, split)
    assert len(counts) == n_labels
    for lab, c in counts.items():
        for side in SIDES:
            assert abs(c[side] - want[side]) <= 1, (lab, dict(c))
    total = Counter(split.tolist())
    for side in SIDES:
        assert abs(total[side] - want[side] * n_labels) <= n_labels * 0.5


@pytest.mark.parametrize("valid,test", [(0.0, 0.25), (0.2, 0.0)])
def test_stratified_zero_fraction_side_stays_empty(valid, test):
    lib = single_label_lib(4, 20)
    split = stratified(lib, valid=valid, test=test)
    total = Counter(split.tolist())
    if valid == 0:
        assert total["valid"] == 0 and total["test"] > 0
    if test == 0:
        assert total["test"] == 0 and total["valid"] > 0


def test_stratified_groups_never_straddle_splits():
    rng = np.random.default_rng(3)
    labels, groups = [], []
    for g in range(60):  # 60 artists with 1-6 songs each, one genre per artist
        size = int(rng.integers(1, 7))
        genre = f"genre{g % 5}"
        labels += [(genre,)] * size
        groups += [f"artist{g}"] * size
    lib = make_lib(labels, groups=groups)
    for seed in (0, 1):
        split = stratified(lib, valid=0.15, test=0.2, seed=seed)
        side_of = defaultdict(set)
        for g, side in zip(groups, split):
            side_of[g].add(side)
        assert all(len(s) == 1 for s in side_of.values()), {g: s for g, s in side_of.items() if len(s) > 1}
        total = Counter(split.tolist())
        # whole groups move, so the fractions are only approximately met
        assert abs(total["test"] / len(lib) - 0.2) < 0.08
        assert abs(total["valid"] / len(lib) - 0.15) < 0.08


def test_stratified_multilabel_every_frequent_label_in_train_and_test():
    rng = np.random.default_rng(11)
    tags = [f"tag{j}" for j in range(8)]
    n = 240
    labels = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        labels.append(tuple(sorted(rng.choice(tags, size=k, replace=False).tolist())))
    groups = [f"g{i // 2}" for i in range(n)]  # pairs of songs per artist
    lib = make_lib(labels, groups=groups)
    assert lib.multilabel
    for seed in (0, 1):
        split = stratified(lib, valid=0.1, test=0.2, seed=seed)
        counts = per_label_counts(lib, split)
        for lab, c in counts.items():
            n_lab = sum(c.values())
            if n_lab >= 10:
                assert c["train"] > 0 and c["test"] > 0, (lab, dict(c))
                assert abs(c["test"] / n_lab - 0.2) < 0.1, (lab, dict(c))
            if n_lab >= 30:
                assert c["valid"] > 0, (lab, dict(c))


def test_stratified_rare_label_reaches_test():
    # a label with 5 items among 200 common ones: iterative stratification places rare labels first
    labels = [("common",)] * 195 + [("common", "rare")] * 5
    lib = make_lib(labels)
    for seed in range(3):
        c = per_label_counts(lib, stratified(lib, valid=0.1, test=0.2, seed=seed))["rare"]
        assert c["train"] >= 2 and c["test"] >= 1, dict(c)


@pytest.mark.parametrize(
    "valid,test,named",
    [(-0.1, 0.2, "split.valid"), (0.1, -0.2, "split.test"), (1.0, 0.0, "split.valid"), (0.0, 1.0, "split.test"),
     (0.1, 1.5, "split.test"), (0.5, 0.5, "split.valid + split.test"), (0.6, 0.7, "split.valid + split.test"),
     ("a", 0.2, "split.valid")],
)
def test_stratified_bad_fractions(valid, test, named):
    with pytest.raises(SiamrecError) as e:
        stratified(single_label_lib(2, 5), valid=valid, test=test)
    assert_user_error(e, named)


def test_unknown_split_kind():
    with pytest.raises(SiamrecError) as e:
        make_split(single_label_lib(2, 5), split_yaml({"kind": "random"}))
    assert_user_error(e, "split.kind", "random")


# ---------------------------------------------------------------------------------------------- files


GTZAN_KEYS = [
    "gtzan/genres/blues/blues.00012.au",
    "gtzan/genres/blues/blues.00013.au",
    "gtzan/genres/rock/rock.00001.au",
    "gtzan/genres/rock/rock.00002.au",
    "gtzan/genres/jazz/jazz.00005.au",
    "gtzan/genres/jazz/jazz.00006.au",
]


def gtzan_lib():
    return make_lib([(k.split("/")[2],) for k in GTZAN_KEYS], keys=GTZAN_KEYS)


def test_files_match_by_stem_across_extensions_and_folders(tmp_path):
    lib = gtzan_lib()
    train = write_list(tmp_path / "train.txt", ["blues/blues.00012.wav", "rock/rock.00001.mp3"])
    valid = write_list(tmp_path / "valid.txt", ["rock.00002.flac"])
    test = write_list(tmp_path / "test.txt", ["/data/elsewhere/jazz/jazz.00005.wav", r"jazz\jazz.00006.wav"])
    split = make_split(lib, files_cfg(train, valid, test))
    assert dict(zip(lib.keys, split.tolist())) == {
        "gtzan/genres/blues/blues.00012.au": "train",
        "gtzan/genres/blues/blues.00013.au": "",  # in no list: unused
        "gtzan/genres/rock/rock.00001.au": "train",
        "gtzan/genres/rock/rock.00002.au": "valid",
        "gtzan/genres/jazz/jazz.00005.au": "test",
        "gtzan/genres/jazz/jazz.00006.au": "test",
    }


def test_files_comments_and_blank_lines_ignored(tmp_path):
    lib = gtzan_lib()
    test = tmp_path / "test.txt"
    test.write_text("# held-out songs\n\nblues/blues.00013.wav\n   \n# end\n", encoding="utf-8")
    split = make_split(lib, files_cfg(test=str(test)))
    assert [k for k, s in zip(lib.keys, split) if s == "test"] == ["gtzan/genres/blues/blues.00013.au"]


def test_files_valid_is_optional(tmp_path):
    lib = gtzan_lib()
    train = write_list(tmp_path / "train.txt", ["blues.00012.wav", "rock.00001.wav"])
    test = write_list(tmp_path / "test.txt", ["jazz.00005.wav"])
    split = make_split(lib, files_cfg(train=train, test=test))
    assert Counter(split.tolist()) == {"train": 2, "test": 1, "": 3}
    assert "valid" not in split.tolist()


def test_files_test_only(tmp_path):
    lib = gtzan_lib()
    test = write_list(tmp_path / "test.txt", ["jazz/jazz.00005.wav", "jazz/jazz.00006.wav"])
    split = make_split(lib, files_cfg(test=test))
    expected = ["test" if "/jazz/" in k else "" for k in lib.keys]
    assert split.tolist() == expected


def test_files_unmatched_entries_are_named(tmp_path):
    lib = gtzan_lib()
    missing = [f"metal/metal.{i:05d}.wav" for i in range(5)]
    test = write_list(tmp_path / "test.txt", ["jazz/jazz.00005.wav"] + missing)
    with pytest.raises(SiamrecError) as e:
        make_split(lib, files_cfg(test=test))
    assert_user_error(e, "split.test", test, "5", *missing[:3])


def test_files_entry_in_two_lists(tmp_path):
    lib = gtzan_lib()
    train = write_list(tmp_path / "train.txt", ["blues/blues.00012.wav", "rock/rock.00001.wav"])
    test = write_list(tmp_path / "test.txt", ["jazz/jazz.00005.wav", "other/rock.00001.au"])
    with pytest.raises(SiamrecError) as e:
        make_split(lib, files_cfg(train=train, test=test))
    assert_user_error(e, "rock.00001", "split.train", "split.test")


def test_files_ambiguous_stem(tmp_path):
    keys = ["disc1/track01.flac", "disc2/track01.flac", "disc2/track02.flac"]
    lib = make_lib([("a",), ("a",), ("b",)], keys=keys)
    ok = write_list(tmp_path / "ok.txt", ["track02.wav"])  # an unlisted duplicate stem is harmless
    assert make_split(lib, files_cfg(test=ok)).tolist() == ["", "", "test"]
    by_folder = write_list(tmp_path / "by_folder.txt", ["disc1/track01.wav"])  # its folder tells them apart
    assert make_split(lib, files_cfg(test=by_folder)).tolist() == ["test", "", ""]
    bad = write_list(tmp_path / "bad.txt", ["track01.wav"])
    with pytest.raises(SiamrecError) as e:
        make_split(lib, files_cfg(test=bad))
    assert_user_error(e, "track01.wav", "2", "disc1/track01.flac", "disc2/track01.flac", "folder")


def test_files_repeated_stems_across_folders_match_by_relative_path(tmp_path):
    """Emotify's layout: classical/1.ogg and rock/1.ogg. Entries name their folder (relative, absolute, Windows,
    with or without an extension) and each reaches its own item; a bare '1' is refused, naming both."""
    keys = ["emotify/classical/1.ogg", "emotify/rock/1.ogg", "emotify/classical/2.ogg", "emotify/rock/2.ogg"]
    lib = make_lib([("classical",), ("rock",), ("classical",), ("rock",)], keys=keys)
    train = write_list(tmp_path / "train.txt", ["classical/1.ogg", "/data/emotify/rock/2.mp3"])
    test = write_list(tmp_path / "test.txt", ["rock/1", r"C:\music\emotify\classical\2.ogg"])
    split = make_split(lib, files_cfg(train=train, test=test))
    assert dict(zip(keys, split.tolist())) == {"emotify/classical/1.ogg": "train", "emotify/rock/1.ogg": "test",
                                               "emotify/classical/2.ogg": "test", "emotify/rock/2.ogg": "train"}
    bare = write_list(tmp_path / "bare.txt", ["1.ogg"])
    with pytest.raises(SiamrecError) as e:
        make_split(lib, files_cfg(test=bare))
    assert_user_error(e, "'1.ogg'", "emotify/classical/1.ogg", "emotify/rock/1.ogg")


def test_files_missing_list_file(tmp_path):
    lib = gtzan_lib()
    test = write_list(tmp_path / "test.txt", ["jazz.00005.wav"])
    missing = tmp_path / "no_such_train.txt"
    with pytest.raises(SiamrecError) as e:
        make_split(lib, files_cfg(train=str(missing), test=test))
    assert_user_error(e, missing)


@pytest.mark.parametrize("test", [None, "", "???"])
def test_files_needs_train_or_test(tmp_path, test):
    valid = write_list(tmp_path / "valid.txt", ["jazz.00005.wav"])
    with pytest.raises(SiamrecError) as e:
        make_split(gtzan_lib(), files_cfg(train=None, valid=valid, test=test))
    assert_user_error(e, "split.test")


def test_files_bare_names_without_extension(tmp_path):
    lib = gtzan_lib()
    test = write_list(tmp_path / "test.txt", ["blues.00012", "jazz.00005"])
    split = make_split(lib, files_cfg(test=test))
    assert [k for k, s in zip(lib.keys, split) if s == "test"] == [
        "gtzan/genres/blues/blues.00012.au", "gtzan/genres/jazz/jazz.00005.au"]


def test_write_split_round_trip(tmp_path):
    lib = gtzan_lib()
    split = np.array(["train", "", "valid", "test", "train", ""])
    write_split(tmp_path / "run", lib, split)
    with open(tmp_path / "run" / "split.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["key"], r["split"]) for r in rows] == list(zip(lib.keys, split.tolist()))
