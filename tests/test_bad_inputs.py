"""Issue 10: every bad input gets one clear line (no traceback), no work is lost or overwritten, and a run folder is
data, not commands. One row per case: the command line, the exit code, the words the one stderr line must hold.

The CLI runs in-process (`siamrec.cli.main`) with capsys, so each row is fast; a subprocess only where a fresh
interpreter is the point (nothing heavy imported before the config is valid).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from siamrec import cli
from siamrec.runs import mark_finished, write_embeddings

NAMES = {  # one seed song per character class people use in names
    "gurmukhi": "ਮਿੱਟੀ ਦਾ ਬਾਵਾ.mp3",
    "devanagari": "लग जा गले.mp3",
    "spaces": "my old song.mp3",
    "parentheses": "Song (Live).mp3",
    "comma": "Tum Hi Ho, Reprise.mp3",
    "apostrophe": "Don't Stop.mp3",
    "ampersand": "Salt & Pepper.mp3",
    "hash": "Track #9.mp3",
    "equals": "E=mc2.mp3",
    "brackets_braces": "[Intro] {demo} ${x}.mp3",
}


def make_run(folder: Path, keys, labels, splits, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(keys), 6)).astype(np.float32)
    write_embeddings(folder, emb, keys, [""] * len(keys), labels, splits)
    mark_finished(folder)
    return folder


@pytest.fixture
def env(tmp_path):
    """Inputs for every row, by name."""
    keys = list(NAMES.values()) + ["rock/a.wav", "jazz/b.wav"]
    labels = [("rock",) if i % 2 else ("jazz",) for i in range(len(keys))]
    run = make_run(tmp_path / "run", keys, labels, ["test"] * len(keys))
    e = {"tmp": tmp_path, "run": run, "out": tmp_path / "out", "cache": tmp_path / "cache"}

    # precomputed features: 24 rows, 3 labels; label tables of several kinds
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.normal(size=(24, 5)).astype(np.float32))
    e["feat"] = tmp_path / "x.npy"
    tables = {
        "labels": [f"g{i % 3}" for i in range(24)],
        "one_label": ["rock"] * 24,
        "empty_labels": [""] * 24,
        "unique_in_test": [f"g{i % 3}" if i >= 3 else f"solo{i}" for i in range(24)],
    }
    for name, column in tables.items():
        with open(tmp_path / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["key", "label"])
            w.writerows([f"song{i:02d}", lab] for i, lab in enumerate(column))
        e[name] = tmp_path / f"{name}.csv"
    (tmp_path / "test3.txt").write_text("song00\nsong01\nsong02\n")  # each alone with its label in the test split
    e["test3"] = tmp_path / "test3.txt"
    (tmp_path / "test_latin1.txt").write_bytes("song00\nsong01\ncafé\n".encode("latin-1"))
    e["test_latin1"] = tmp_path / "test_latin1.txt"

    (tmp_path / "latin1.csv").write_bytes("path,labels\na.wav,rock\ncafé.wav,jazz\n".encode("latin-1"))
    e["latin1_manifest"] = tmp_path / "latin1.csv"
    (tmp_path / "seeds_latin1.txt").write_bytes("rock/a.wav\nJosé.mp3\n".encode("latin-1"))
    e["seeds_latin1"] = tmp_path / "seeds_latin1.txt"
    (tmp_path / "seeds_empty.txt").write_text("# nothing yet\n\n")
    e["seeds_empty"] = tmp_path / "seeds_empty.txt"

    pipes = tmp_path / "only_separators.csv"
    pipes.write_text("key,label\n" + "".join(f"song{i:02d},|\n" for i in range(24)), encoding="utf-8")
    e["only_separators"] = pipes
    (tmp_path / "text.npy").write_text("0.1,0.2,0.3\n0.4,0.5,0.6\n")
    e["text_npy"] = tmp_path / "text.npy"
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 24, dtype=object), allow_pickle=True)
    e["objects_npy"] = tmp_path / "objects.npy"
    np.save(tmp_path / "strings.npy", np.array(["a"] * 24))
    e["strings_npy"] = tmp_path / "strings.npy"
    for damage in ("npy", "items"):
        bad = make_run(tmp_path / f"bad_{damage}", ["a", "b", "c"], [("x",), ("y",), ("x",)], ["test"] * 3)
        target = bad / ("embeddings.npy" if damage == "npy" else "items.csv")
        target.write_bytes(target.read_bytes()[:-7])
        e[f"bad_{damage}"] = bad
    return e


FEATURES = ["evaluate", "+model=identity", "data=features", "data.features=[{feat}]", "data.key_column=key"]

# id, args ({name} = a path of env), exit code, words of the one line, whether the run folder {out} may remain
CASES = [
    # 1. the whole config checked before any work
    ("epochs_text", ["train", "+model=siamese", "model.epochs=abc"], 2, ["model.epochs", "'abc'", "integer"], False),
    ("epochs_negative", ["train", "+model=siamese", "model.epochs=-5"], 2, ["model.epochs=-5", ">= 1"], False),
    ("lr_text", ["train", "+model=baseline", "model.lr=fast"], 2, ["model.lr", "'fast'", "positive number"], False),
    ("k_text", ["recommend", "run={run}", "seed=rock/a.wav", "k=abc"], 2, ["recommend.k", "'abc'", "integer"], False),
    ("k_fraction", ["recommend", "run={run}", "seed=rock/a.wav", "k=2.9"], 2, ["recommend.k=2.9", "integer"], False),
    ("workers_text", ["train", "+model=lda", "features.workers=abc"], 2, ["features.workers", "'abc'", ">= 0"], False),
    ("ks_zero", ["evaluate", "+model=identity", "eval.ks=[0]"], 2, ["eval.ks=[0]", "integers >= 1"], False),
    ("unknown_added_key", ["train", "+model=siamese", "+model.lrr=0.1"], 2,
     ["unknown setting model.lrr", "model.lr"], False),
    ("unknown_key_typo", ["train", "+model=lda", "data.roott=3"], 2, ["data.roott", "data.root"], False),
    ("key_of_another_model", ["train", "+model=lda", "+model.loss=contrastive"], 2,
     ["unknown setting model.loss"], False),
    ("model_key_without_model", ["train", "model.epochs=5"], 2, ["model.epochs", "+model="], False),
    ("group_option_typo", ["train", "data=foldr"], 2, ["data=foldr", "data=folder"], False),
    ("split_fraction", ["train", "+model=lda", "split.test=1.5"], 2, ["split.test=1.5", "[0, 1)"], False),
    ("playlist_file_kind", ["recommend", "run={run}", "seed=rock/a.wav", "out={tmp}/list.txt"], 2,
     ["recommend.out", ".csv, .json, .m3u8 or .m3u"], False),
    ("overwrite_value", ["evaluate", "+model=identity", "overwrite=maybe"], 2, ["overwrite", "true or false"], False),
    ("clip_offset", ["evaluate", "+model=identity", "clip.offset=-3"], 2, ["clip.offset=-3", ">= 0"], False),
    ("run_folder_empty", ["plot", "run={run}", "hydra.run.dir="], 2, ["hydra.run.dir is empty"], False),
    ("run_folder_cannot_be_made", ["plot", "run={run}", "hydra.run.dir=/dev/null/run"], 1,
     ["hydra.run.dir=/dev/null/run", "cannot make the run folder"], False),
    # 2. broken files and empty lists
    ("manifest_not_utf8", ["evaluate", "+model=identity", "data=csv", "data.manifest={latin1_manifest}"], 1,
     ["latin1.csv", "line 3", "UTF-8"], False),
    ("seed_list_not_utf8", ["recommend", "run={run}", "seed={seeds_latin1}"], 1,
     ["seeds_latin1.txt", "line 2", "UTF-8"], False),
    ("split_list_not_utf8", [*FEATURES, "data.labels={labels}", "split=files", "split.test={test_latin1}"], 1,
     ["test_latin1.txt", "line 3", "UTF-8"], False),
    ("seed_list_empty", ["recommend", "run={run}", "seed={seeds_empty}"], 1, ["seeds_empty.txt", "names no song"],
     False),
    ("no_seed", ["recommend", "run={run}"], 1, ["no seed song"], False),
    ("embeddings_truncated", ["recommend", "run={bad_npy}", "a"], 1, ["embeddings.npy", "truncated"], False),
    ("items_truncated", ["recommend", "run={bad_items}", "a"], 1, ["items.csv", "truncated"], False),
    # 4. no silent surprises
    ("one_label", [*FEATURES, "data.labels={one_label}"], 1, ["one label", "MAP would be 1.0"], True),
    ("no_scorable_query", [*FEATURES, "data.labels={unique_in_test}", "split=files", "split.test={test3}"], 1,
     ["no test query can be scored", "3 test songs"], True),
    ("labels_all_empty", [*FEATURES, "data.labels={empty_labels}"], 1, ["none of the 24 items has a label"], False),
    # issue 21: an empty or unknown list of parts is refused before any work, naming the backbone's parts
    ("parts_empty", ["train", "+model=lda", "backbone=choi2017", "features.parts=[]"], 2,
     ["features.parts=[]", "block1", "block5", "null"], False),
    ("parts_unknown", ["train", "+model=lda", "backbone=musicnn_msd", "features.parts=[penultimat]"], 2,
     ["features.parts=['penultimat']", "penultimate", "max_pool"], False),
    ("combine_parts_empty", ["train", "+model=lda", "features.combine=[{{backbone: musicnn_msd, parts: []}}]"], 2,
     ["features.combine[0].parts=[]", "penultimate"], False),
    ("inputs_parts_unknown", ["train", "+model=siamese", "model.inputs=[[],[{{backbone: musicnn_msd, parts: [tagram]}}]]"],
     2, ["model.inputs[1][0].parts=['tagram']", "taggram"], False),
    # issue 21: an error names the file at fault
    ("labels_only_separators", [*FEATURES, "data.labels={only_separators}"], 1,
     ["only_separators.csv", "none of the 24 items has a label", "'|'"], False),
    ("npy_is_text", ["evaluate", "+model=identity", "data=features", "data.features=[{text_npy}]",
                     "data.labels={labels}"], 1, ["text.npy", "is not a .npy file", "text", "numpy.save"], False),
    ("npy_holds_objects", ["evaluate", "+model=identity", "data=features", "data.features=[{objects_npy}]",
                           "data.labels={labels}"], 1, ["objects.npy", "Python objects"], False),
    ("npy_holds_strings", ["evaluate", "+model=identity", "data=features", "data.features=[{strings_npy}]",
                           "data.labels={labels}"], 1, ["strings.npy", "not numbers"], False),
    # 5. never overwrite a run
    ("rerun_into_a_run", ["evaluate", "run={run}", "hydra.run.dir={run}"], 2,
     ["already holds a run", "overwrite=true"], True),
]


def call(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case, args, code, words, may_remain", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(env, capsys, case, args, code, words, may_remain):
    args = [a.format(**env) for a in args]
    if not any(a.startswith("hydra.run.dir=") for a in args):  # a run folder two levels below a new one, as
        args.append(f"hydra.run.dir={env['out'] / 'DATE' / 'TIME'}")  # outputs/DATE/TIME below a new outputs/
    args.append(f"paths.cache={env['cache']}")
    before = {p: p.read_bytes() for p in env["run"].rglob("*") if p.is_file()}
    got, out, err = call(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    for word in words:
        assert word in lines[0], (word, lines[0])
    if not may_remain:
        assert not env["out"].exists(), sorted(env["out"].rglob("*"))  # a failed command leaves no run folder,
        # nor the empty folders it made for it
    assert {p: p.read_bytes() for p in env["run"].rglob("*") if p.is_file()} == before  # the run is untouched


def test_a_failed_command_leaves_no_dated_folder_but_keeps_what_was_there(tmp_path, monkeypatch, capsys):
    """The default run folder is outputs/DATE/TIME: a command that fails removes it and the DATE and outputs
    folders it made for it, and never a folder that was there before (or that holds another run)."""
    monkeypatch.chdir(tmp_path)
    assert call(["recommend", f"run={tmp_path / 'no-such-run'}", "song"], capsys)[0] == 1
    assert not (tmp_path / "outputs").exists(), sorted((tmp_path / "outputs").rglob("*"))
    earlier = tmp_path / "outputs" / "2026-01-01" / "10-00-00" / "finished.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    assert call(["recommend", f"run={tmp_path / 'no-such-run'}", "song"], capsys)[0] == 1
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "outputs").rglob("*")) == [
        "outputs/2026-01-01", "outputs/2026-01-01/10-00-00", "outputs/2026-01-01/10-00-00/finished.json"]


def test_no_tensorflow_and_no_run_folder_before_the_config_is_valid(tmp_path):
    code = ("import sys; from siamrec.cli import main; "
            f"rc = main(['train', '+model=siamese', 'model.epochs=abc', 'hydra.run.dir={tmp_path / 'run'}']); "
            "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(cli.__file__).parents[1], timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
    assert "model.epochs='abc'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
    # and through `python -m siamrec`, as a user types it
    out = subprocess.run([sys.executable, "-m", "siamrec", "train", "+model=siamese", "model.epochs=abc",
                          f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True,
                         cwd=Path(cli.__file__).parents[1], timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "model.epochs" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", list(NAMES))
@pytest.mark.parametrize("how", ["positional", "seed="])
def test_seed_songs_named_as_people_name_them(env, capsys, kind, how):
    name = NAMES[kind]
    arg = name if how == "positional" else f"seed={name}"
    got, out, err = call(["recommend", f"run={env['run']}", arg, "k=3", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 0, err
    assert f"playlist for {name} [" in out
    with open(env["out"] / "playlists.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["seed"] for r in rows} == {name} and len(rows) == 3
    assert name not in {r["key"] for r in rows}  # the seed is left out of its own playlist


def test_several_positional_seeds_and_a_seed_list_together(env, capsys):
    (env["tmp"] / "more.txt").write_bytes(f"\ufeff{NAMES['devanagari']}\n".encode("utf-8"))  # BOM: Notepad/Excel
    got, out, err = call(["recommend", f"run={env['run']}", NAMES["gurmukhi"], NAMES["hash"],
                          f"seed={env['tmp'] / 'more.txt'}", "k=2", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 0, err
    for name in (NAMES["gurmukhi"], NAMES["hash"], NAMES["devanagari"]):
        assert f"playlist for {name} [" in out


def test_k_larger_than_the_library_says_it_was_clamped(env, capsys):
    got, out, err = call(["recommend", f"run={env['run']}", "rock/a.wav", "k=500", f"hydra.run.dir={env['out']}"],
                         capsys)
    n = len(NAMES) + 2
    assert got == 0, err
    assert f"k=500 is more than the {n - 1} other songs" in out and "clamped" in out


def test_an_existing_run_is_written_into_only_with_overwrite(env, capsys):
    target = env["tmp"] / "target"
    got, _, err = call(["recommend", f"run={env['run']}", "rock/a.wav", f"hydra.run.dir={target}"], capsys)
    assert got == 0, err
    first = (target / "playlists.csv").read_bytes()
    hydra_before = (target / ".hydra" / "config.yaml").read_bytes()
    got, _, err = call(["recommend", f"run={env['run']}", "jazz/b.wav", f"hydra.run.dir={target}"], capsys)
    assert got == 2 and "already holds a run" in err and str(target) in err
    assert (target / "playlists.csv").read_bytes() == first
    assert (target / ".hydra" / "config.yaml").read_bytes() == hydra_before  # not even .hydra/ rewritten
    got, _, err = call(["recommend", f"run={env['run']}", "jazz/b.wav", f"hydra.run.dir={target}", "overwrite=true"],
                       capsys)
    assert got == 0, err
    assert (target / "playlists.csv").read_bytes() != first


def test_a_run_folder_carries_no_output_location_or_command(env, capsys, tmp_path):
    hijack = tmp_path / "elsewhere" / "stolen.csv"
    (env["run"] / ".hydra").mkdir()
    (env["run"] / ".hydra" / "overrides.yaml").write_text(
        f"- recommend.out={hijack}\n- extract.out={tmp_path / 'x'}\n- paths.output_dir={tmp_path / 'o'}\n"
        f"- hydra.run.dir={tmp_path / 'h'}\n- overwrite=true\n- recommend.k=1\n- seed=4\n- data=features\n")
    merged = cli.with_run_overrides([f"run={env['run']}"])
    assert merged == ["seed=4", "data=features", f"run={env['run']}"]
    got, out, err = call(["recommend", f"run={env['run']}", "rock/a.wav", f"hydra.run.dir={env['out']}",
                          "data.features=x.npy", "data.labels=y.csv"], capsys)
    assert got == 0, err
    assert not hijack.exists() and not (tmp_path / "h").exists()
    assert len([line for line in out.splitlines() if line.startswith("  1.")]) == 1 and "  2." in out  # k not carried


def test_a_damaged_overrides_record_is_one_line(env, capsys):
    (env["run"] / ".hydra").mkdir()
    (env["run"] / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    got, _, err = call(["recommend", f"run={env['run']}", "rock/a.wav", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 2 and err.count("\n") == 1 and "overrides.yaml" in err


def test_a_full_disk_is_one_line_and_leaves_no_folder_or_temporary(env, capsys, monkeypatch):
    import tempfile

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkstemp", full)
    got, out, err = call(["recommend", f"run={env['run']}", "rock/a.wav", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 1 and err.count("\n") == 1 and "disk is full" in err and str(env["out"]) in err
    assert not env["out"].exists()


@pytest.mark.parametrize("written", [[], ["split.csv"]], ids=["nothing_yet", "some_files"])
def test_ctrl_c_says_what_is_kept_where_and_how_to_go_on(env, capsys, monkeypatch, written):
    def interrupted(cfg, run_dir):
        for name in written:
            (Path(run_dir) / name).write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr("siamrec.commands.plot.plot", interrupted)
    got, out, err = call(["plot", f"run={env['run']}", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 130 and err.count("\n") == 1 and "Traceback" not in err
    if written:
        assert f"kept in {env['out']}" in err and "split.csv" in err and "incomplete" in err
        assert "finished work" not in err
    else:
        assert "nothing to keep" in err and not env["out"].exists()


def test_ctrl_c_passes_on_a_commands_resume_hint(env, capsys, monkeypatch):
    def interrupted(cfg, run_dir):
        (Path(run_dir) / "store").mkdir()
        exc = KeyboardInterrupt()
        exc.resume_hint = "run the same command with extract.out=SOMEWHERE to finish"
        raise exc

    monkeypatch.setattr("siamrec.commands.plot.plot", interrupted)
    got, _, err = call(["plot", f"run={env['run']}", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 130 and "extract.out=SOMEWHERE to finish" in err and err.count("\n") == 1


def test_library_chatter_goes_to_run_log_not_the_terminal(env, capsys, monkeypatch):
    import logging

    def chatty(cfg, run_dir):
        warnings.warn("librosa says: this will change", FutureWarning)
        logging.getLogger("tensorflow").warning("5 out of the last 5 calls triggered tf.function retracing")
        print("siamrec's own line")

    monkeypatch.setattr("siamrec.commands.plot.plot", chatty)
    got, out, err = call(["plot", f"run={env['run']}", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 0, err
    assert "siamrec's own line" in out and "retracing" not in err + out and "librosa says" not in err + out
    log = (env["out"] / "run.log").read_text()
    assert "retracing" in log and "librosa says" in log and "FutureWarning" in log


def test_library_chatter_of_a_real_process_goes_to_run_log(env, tmp_path):
    """Through `python -m siamrec`: even what is written straight to file descriptor 2 lands in run.log."""
    script = tmp_path / "chat.py"
    script.write_text(
        "import os, sys, warnings\n"
        "from siamrec import cli\n"
        "import siamrec.commands.plot as p\n"
        "def chatty(cfg, run_dir):\n"
        "    warnings.warn('decoder: odd header', UserWarning)\n"
        "    os.write(2, b'[mpg123] resync\\n')\n"
        "    print('progress', file=sys.stderr)\n"
        "p.plot = chatty\n"
        "sys.exit(cli.main(sys.argv[1:]))\n")
    repo = str(Path(cli.__file__).parents[1])
    out = subprocess.run([sys.executable, str(script), "plot", f"run={env['run']}", f"hydra.run.dir={env['out']}"],
                         capture_output=True, text=True, cwd=repo, timeout=120,
                         env={**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "progress"  # siamrec's own stderr still reaches the terminal
    log = (env["out"] / "run.log").read_text()
    assert "odd header" in log and "[mpg123] resync" in log


def test_files_of_a_run_get_the_users_umask(env, capsys):
    old = os.umask(0o022)
    try:
        got, _, err = call(["recommend", f"run={env['run']}", "rock/a.wav", f"hydra.run.dir={env['out']}"], capsys)
    finally:
        os.umask(old)
    assert got == 0, err
    modes = {p.name: p.stat().st_mode & 0o777 for p in env["out"].rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
    json.dumps(modes)


def test_a_file_name_that_is_not_utf8_is_shown_escaped_not_a_crash(env, capsys):
    odd = os.fsdecode(b"caf\xe9 (live).mp3")  # as Python receives such a name from the command line
    got, out, err = call(["recommend", f"run={env['run']}", odd, f"hydra.run.dir={env['out']}"], capsys)
    assert got == 1 and err.count("\n") == 1
    assert "caf\\xe9 (live).mp3" in err and "neither a song" in err


# --- issue 21: a run is finished only when its completion marker is written last; its model files are checked ---
FEATURE_RUN = ["data=features", "data.features=[{feat}]", "data.key_column=key", "plots=false"]


def test_a_train_that_fails_after_writing_its_model_leaves_no_usable_run(env, capsys):
    """No scorable test query: train stops after writing embeddings and its head; the folder is no run for run=."""
    out = env["out"]
    (env["tmp"] / "train21.txt").write_text("".join(f"song{i:02d}\n" for i in range(3, 24)))
    got, _, err = call(["train", "+model=lda", *[a.format(**env) for a in FEATURE_RUN],
                        f"data.labels={env['unique_in_test']}", "split=files", f"split.test={env['test3']}",
                        f"split.train={env['tmp'] / 'train21.txt'}",
                        f"hydra.run.dir={out}", f"paths.cache={env['cache']}"], capsys)
    assert got == 1 and "no test query can be scored" in err, err
    assert (out / "head.json").is_file() and (out / "embeddings.npy").is_file()  # what was written stays...
    assert not (out / "finished.json").exists()
    for command in (["recommend", f"run={out}", "song05"], ["extract", f"run={out}",
                                                            *[a.format(**env) for a in FEATURE_RUN]],
                    ["serve", f"run={out}", "port=0"], ["plot", f"run={out}"]):
        got, _, err = call([*command, f"hydra.run.dir={env['tmp'] / 'next'}"], capsys)
        assert got == 1 and err.count("\n") == 1, (command, err)
        assert "not a finished siamrec run" in err and "finished.json" in err and str(out) in err, err  # ...but is refused
        assert not (env["tmp"] / "next").exists()


def test_overwrite_makes_a_finished_run_unfinished_until_the_command_finishes(env, capsys, monkeypatch):
    run = env["run"]
    assert (run / "finished.json").is_file()

    def fails(cfg, run_dir):
        raise cli.SiamrecError("something went wrong")

    monkeypatch.setattr("siamrec.commands.evaluate.evaluate", fails)
    got, _, err = call(["evaluate", "+model=identity", f"hydra.run.dir={run}", "overwrite=true"], capsys)
    assert got == 1
    assert not (run / "finished.json").exists()


@pytest.fixture(scope="module")
def feature_runs(tmp_path_factory):
    """A Siamese run (model.keras + scaler.npz + head.json) and an LDA run (lda.npz), on feature rows."""
    from conftest import make_cfg

    from siamrec.cli import seed_everything
    from siamrec.commands.train import train

    base = tmp_path_factory.mktemp("feature_runs")
    rng = np.random.default_rng(0)
    np.save(base / "x.npy", rng.normal(size=(24, 5)).astype(np.float32))
    with open(base / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["key", "label"], *[[f"song{i:02d}", f"g{i % 3}"] for i in range(24)]])
    data = ["data=features", f"data.features=[{base / 'x.npy'}]", "data.key_column=key",
            f"data.labels={base / 'labels.csv'}", "plots=false"]
    runs = {}
    for model, extra in (("siamese", ["model.epochs=1"]), ("lda", [])):
        runs[model] = base / model
        runs[model].mkdir()
        seed_everything(0)
        train(make_cfg("train", [f"+model={model}", *data, *extra], base), runs[model])
    return runs, data


def lambda_model(path: Path) -> None:
    import keras

    x = keras.Input((5,))
    y = keras.layers.Lambda(lambda t: t * 2, name="embedding")(x)
    keras.Model(x, y).save(path)


DAMAGE = {"garbage": lambda p: p.write_bytes(b"\x00garbage, not a model file" * 3),
          "truncated": lambda p: p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)]),
          "lambda": lambda_model}


@pytest.mark.parametrize("model, name, damage", [
    ("siamese", "model.keras", "garbage"), ("siamese", "model.keras", "truncated"), ("siamese", "model.keras", "lambda"),
    ("siamese", "scaler.npz", "garbage"), ("siamese", "head.json", "truncated"), ("lda", "lda.npz", "garbage"),
    ("lda", "lda.npz", "truncated"), ("lda", "embeddings.npy", "garbage"), ("lda", "items.csv", "truncated")])
@pytest.mark.parametrize("marker", ["as_finished", "marker_forged"])
def test_a_damaged_model_file_is_one_line_naming_it(feature_runs, tmp_path, capsys, model, name, damage, marker):
    """Damaged after the run finished: the marker's sha256 names the file. With a marker forged to match (as
    someone handing over a folder could), the loader itself names it, and a Lambda layer's code never runs."""
    import shutil

    from siamrec.runs import mark_finished

    runs, data = feature_runs
    run = tmp_path / "run"
    shutil.copytree(runs[model], run)
    if damage == "lambda":
        (run / name).unlink()
    DAMAGE[damage](run / name)
    if marker == "marker_forged":
        mark_finished(run)
    command = ["recommend", f"run={run}", "song00"] if name in ("embeddings.npy", "items.csv") else \
        ["evaluate", f"run={run}", *data]  # evaluate embeds with the run's model; recommend reads its library
    got, out, err = call([*command, f"hydra.run.dir={tmp_path / 'out'}", f"paths.cache={tmp_path / 'cache'}"], capsys)
    assert got == 1 and err.count("\n") == 1 and "Traceback" not in err + out, err
    assert f"{name} " in err and str(run) in err, err
    if marker == "as_finished":
        assert "damaged" in err, err
    elif damage == "lambda":
        assert "holds code" in err and "never runs" in err, err
    else:
        assert "damaged" in err or "truncated" in err or "not a siamrec" in err, err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    """An LDA run on audio (random backbone): extractor.json + backbone.keras + lda.npz."""
    from conftest import identity_run, mixed_library

    base = tmp_path_factory.mktemp("audio_run")
    library = mixed_library(base / "library")
    return identity_run(base / "run", library, model="lda"), library


@pytest.mark.parametrize("name, damage", [("backbone.keras", "garbage"), ("backbone.keras", "lambda"),
                                          ("extractor.json", "truncated"), ("extractor.json", "members")])
def test_a_damaged_encoder_file_is_one_line_naming_it(audio_run, tmp_path, capsys, name, damage):
    """With a forged marker (the loader's own checks): a new song is embedded through extractor.json and the
    backbone model."""
    import shutil

    from siamrec.runs import mark_finished

    run0, library = audio_run
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    if damage == "members":
        spec = json.loads((run / name).read_text())
        spec["members"][0]["model"] = "../../elsewhere.keras"
        (run / name).write_text(json.dumps(spec))
    else:
        if damage == "lambda":
            (run / name).unlink()
        DAMAGE[damage](run / name)
    mark_finished(run)
    new_song = sorted(library.rglob("*.wav"))[0]
    got, out, err = call(["recommend", f"run={run}", str(_copy(new_song, tmp_path)), "k=2",
                          f"hydra.run.dir={tmp_path / 'out'}", f"paths.cache={tmp_path / 'cache'}"], capsys)
    assert got == 1 and err.count("\n") == 1 and "Traceback" not in err + out, err
    assert str(run) in err and ("elsewhere.keras" in err if damage == "members" else f"{name} " in err), err
    if damage == "lambda":
        assert "holds code" in err, err


def _copy(song: Path, folder: Path) -> Path:
    """A song outside the run's library (so recommend embeds it with the run's model)."""
    new = folder / f"new{song.suffix}"
    new.write_bytes(song.read_bytes())
    return new


def test_a_cached_digest_of_a_file_whose_name_is_not_utf8(tmp_path):
    """The digest cache (SQLite) keyed a non-UTF-8 name as text: UnicodeEncodeError before any song was embedded."""
    from siamrec.extractor import FileDigests
    from siamrec.runs import sha256_file

    odd = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav"))
    Path(odd).write_bytes(b"some audio")
    digests = FileDigests(tmp_path / "cache")
    assert digests.digest(odd) == sha256_file(odd) == FileDigests(tmp_path / "cache").digest(odd)


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_names_the_terminal_cannot_print_are_escaped_not_a_crash(audio_run, tmp_path, monkeypatch, encoding):
    """A new seed song whose name is not UTF-8, and a Gurmukhi name on an ASCII terminal: the playlist is printed
    with the name escaped (\\xNN as in the run's files; \\uNNNN), where a strict stdout raised UnicodeEncodeError."""
    import io

    run, library = audio_run
    song = sorted(library.rglob("*.wav"))[0]
    names = {"utf-8": b"n\xe9w (live).wav", "ascii": "ਨਵਾਂ.wav".encode()}
    new = os.fsdecode(os.path.join(os.fsencode(tmp_path), names[encoding]))
    Path(new).write_bytes(song.read_bytes())
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding=encoding, errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", stdout)
    code = cli.main(["recommend", f"run={run}", new, "k=2", f"hydra.run.dir={tmp_path / 'out'}",
                     f"paths.cache={tmp_path / 'cache'}"])
    text = raw.getvalue().decode(encoding)
    assert code == 0, text
    shown = "n\\xe9w (live).wav" if encoding == "utf-8" else "\\u0a28"
    assert f"playlist for {tmp_path}" in text and shown in text, text


@pytest.mark.parametrize("kind", ["spaces", "parentheses", "comma", "apostrophe", "gurmukhi", "brackets_braces",
                                  "comma_and_parentheses"])
@pytest.mark.parametrize("quote", ["'", '"'])
def test_a_seed_quoted_for_hydras_grammar_is_the_song_it_quotes(env, capsys, kind, quote):
    """seed='my song (live), part 2.wav' (quoted as Hydra's docs say) names the song, not a song with quotes."""
    names = {**NAMES, "comma_and_parentheses": "my song (live), part 2.wav"}
    name = names[kind]
    run = make_run(env["tmp"] / "run2", [name, "rock/a.wav", "jazz/b.wav"], [("rock",), ("rock",), ("jazz",)],
                   ["test"] * 3)
    quoted = quote + name.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote
    got, out, err = call(["recommend", f"run={run}", f"seed={quoted}", "k=2", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 0, err
    assert f"playlist for {name} [" in out


def test_a_short_new_seed_says_it_was_padded(audio_run, tmp_path, capsys):
    import soundfile as sf

    run, _ = audio_run
    short = tmp_path / "short clip.wav"
    sf.write(short, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)  # 0.5 s
    got, out, err = call(["recommend", f"run={run}", str(short), "k=2", f"hydra.run.dir={tmp_path / 'out'}",
                          f"paths.cache={tmp_path / 'cache'}"], capsys)
    assert got == 0, err
    assert f"seed {short} is 0.5 s, shorter than the backbone's 29 s window: padded" in out, out
    long_enough = tmp_path / "long.wav"
    sf.write(long_enough, (0.1 * np.sin(np.arange(16000 * 30) / 5)).astype(np.float32), 16000)
    got, out, err = call(["recommend", f"run={run}", str(long_enough), "k=2", f"hydra.run.dir={tmp_path / 'out2'}",
                          f"paths.cache={tmp_path / 'cache'}"], capsys)
    assert got == 0 and "padded" not in out, err + out


@pytest.mark.parametrize("target", ["split.csv", "embeddings.npy", "model.keras", "scaler.npz", "training_curves.png",
                                    "finished.json"])
def test_a_disk_that_fills_during_any_write_leaves_no_temporary_file(env, capsys, monkeypatch, tmp_path, target):
    """The disk fills while `target` is written (its temporary file lands on /dev/full): one line naming it, exit
    1, no temporary file anywhere in the run folder or the system's temporary folder, and no finished run."""
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        if Path(name).name.startswith(f".{target}."):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = env["out"]
    got, _, err = call(["train", "+model=siamese", "model.epochs=1", *[a.format(**env) for a in FEATURE_RUN],
                        f"data.labels={env['labels']}", f"hydra.run.dir={out}", f"paths.cache={env['cache']}"], capsys)
    said = [line for line in err.splitlines() if line.startswith("siamrec train")]  # after the progress bars
    assert got == 1 and len(said) == 1 and "Traceback" not in err, err
    assert "disk is full" in said[0] and target in said[0], err
    left = [p for p in [*out.rglob("*"), *system_tmp.rglob("*")] if "tmp" in p.name]
    assert not left, left
    assert not (out / "finished.json").exists()


def test_a_damaged_store_record_is_one_line_naming_it(tmp_path):
    from siamrec.errors import SiamrecError
    from siamrec.store import FeatureStore

    FeatureStore(tmp_path / "out" / "store", "abc")
    (tmp_path / "out" / "store" / "meta.json").write_text('{"fingerpr')
    with pytest.raises(SiamrecError) as e:
        FeatureStore(tmp_path / "out" / "store", "abc")
    assert "meta.json is damaged" in str(e.value) and "extract.out" in str(e.value) and "\n" not in str(e.value)


def test_a_seed_named_by_a_stem_several_songs_share_says_so(env, capsys):
    run = make_run(env["tmp"] / "emotify", ["classical/1.ogg", "rock/1.ogg", "rock/2.ogg"],
                   [("classical",), ("rock",), ("rock",)], ["test"] * 3)
    got, _, err = call(["recommend", f"run={run}", "1.ogg", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 1 and err.count("\n") == 1
    assert "2 songs" in err and "classical/1.ogg" in err and "rock/1.ogg" in err, err
    got, out, err = call(["recommend", f"run={run}", "seed=rock/1", "k=1", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 0 and "playlist for rock/1.ogg [rock]" in out, err


def test_a_full_disk_under_run_log_is_no_logging_traceback(env, capsys, monkeypatch):
    import logging

    def logs_on_a_full_disk(cfg, run_dir):
        handler = next(h for h in logging.getLogger().handlers if getattr(getattr(h, "stream", None), "name", "")
                       .endswith("run.log"))
        handler.setStream(open("/dev/full", "w", buffering=1))  # every write: ENOSPC
        logging.getLogger("tensorflow").warning("retracing")
        print("the command's own line")

    monkeypatch.setattr("siamrec.commands.plot.plot", logs_on_a_full_disk)
    got, out, err = call(["plot", f"run={env['run']}", f"hydra.run.dir={env['out']}"], capsys)
    assert got == 0 and "the command's own line" in out
    assert "Logging error" not in err and "Traceback" not in err, err
