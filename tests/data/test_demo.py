"""Tests for the synthesised demo corpus (siamrec.data.demo), on tiny corpora for speed."""

import csv
import os
import pathlib

import numpy as np
import pytest
import soundfile as sf

from siamrec.data import demo
from siamrec.data.demo import STYLES, ensure_demo

SMALL = dict(n_per_style=4, duration=3.0, sr=12000)
TINY = dict(n_per_style=1, duration=1.0, sr=8000)
TEMPO_TAGS = {"slow", "medium", "fast"}
VOCABULARY = TEMPO_TAGS | {"indian", "percussive", "electronic", "acoustic", "distorted", "drone", "melodic"}


def read_manifest(folder):
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def folder_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def pulse(path):
    """Depth of fast loudness modulation of the pre-emphasised signal: drum hits score high,
    sustained drones and pads low."""
    y, sr = sf.read(path)
    y = np.diff(y)
    hop = sr // 100
    env = np.sqrt(np.mean(y[: y.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    trend = np.convolve(env, np.ones(25) / 25, mode="same")
    return np.std((env - trend)[25:-25]) / np.mean(env)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return ensure_demo(tmp_path_factory.mktemp("cache"), progress=False, **SMALL)


def test_styles(corpus):
    """Every style of STYLES (bhangra and the raga drone among them) is rendered into the corpus as a label of
    its own, in its own folder, and no two styles render the same audio."""
    _, rows = read_manifest(corpus)
    assert sorted({r["labels"] for r in rows}) == sorted(STYLES)
    assert sorted(p.name for p in corpus.iterdir() if p.is_dir()) == sorted(STYLES)
    assert {"bhangra", "raga_drone"} <= {r["labels"] for r in rows}
    first = {style: sf.read(corpus / f"{style}/{style}_00.flac")[0] for style in STYLES}
    for i, a in enumerate(STYLES):
        for b in STYLES[i + 1:]:
            assert not np.allclose(first[a], first[b], atol=1e-2), (a, b)


def test_manifest_consistent_with_files(corpus):
    assert corpus.name == "demo-v1-s0-n4-d3.0-r12000"
    columns, rows = read_manifest(corpus)
    assert columns == ["path", "labels", "tags", "group"]
    assert len(rows) == len(STYLES) * SMALL["n_per_style"]
    on_disk = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*.flac")}
    assert on_disk == {r["path"] for r in rows}
    for style in STYLES:
        assert sum(r["labels"] == style for r in rows) == SMALL["n_per_style"]
    for r in rows:
        folder, name = r["path"].split("/")
        assert folder == r["labels"] and name.startswith(r["labels"] + "_") and name.endswith(".flac")


def test_groups_are_pseudo_artists_of_four(corpus):
    _, rows = read_manifest(corpus)
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r["labels"])
    assert all(len(styles) == 4 and len(set(styles)) == 1 for styles in by_group.values())
    assert len(by_group) == len(STYLES) * SMALL["n_per_style"] // 4


def test_tags_follow_generation_parameters(corpus):
    _, rows = read_manifest(corpus)
    for r in rows:
        tags = r["tags"].split("|")
        style = r["labels"]
        assert 2 <= len(tags) <= 4 and len(set(tags)) == len(tags), r
        assert set(tags) <= VOCABULARY, r
        assert tags[0] in TEMPO_TAGS and not TEMPO_TAGS & set(tags[1:]), r
        assert ("indian" in tags) == (style in ("bhangra", "raga_drone")), r
        if style == "bhangra":  # 160-190 bpm, dhol always
            assert tags[0] == "fast" and "percussive" in tags, r
        if style == "electronic":  # 120-130 bpm
            assert tags[0] == "medium" and {"electronic", "percussive"} <= set(tags), r
        if style == "ambient":  # 50-80 bpm, no drums, strings or synth pad
            assert tags[0] == "slow" and "percussive" not in tags, r
            assert ("acoustic" in tags) != ("electronic" in tags), r
        if style == "rock":
            assert "percussive" in tags and tags[0] != "slow", r


def test_audio_is_mono_right_length_and_normalised(corpus):
    _, rows = read_manifest(corpus)
    for r in rows:
        info = sf.info(corpus / r["path"])
        assert (info.format, info.subtype, info.channels) == ("FLAC", "PCM_16", 1)
        assert info.samplerate == SMALL["sr"]
        assert info.frames == int(SMALL["duration"] * SMALL["sr"])
        y, _ = sf.read(corpus / r["path"])
        assert np.isfinite(y).all()
        peak = np.abs(y).max()
        assert 0.85 < peak <= 0.9, (r["path"], peak)  # about -1 dBFS, never clipping
        assert np.sqrt(np.mean(y**2)) > 0.01, r["path"]


def test_generation_is_deterministic(corpus, tmp_path):
    again = ensure_demo(tmp_path, progress=True, **SMALL)
    assert again != corpus
    assert folder_bytes(again) == folder_bytes(corpus)


def test_seed_changes_the_audio(tmp_path):
    a = ensure_demo(tmp_path / "a", seed=0, progress=False, **TINY)
    b = ensure_demo(tmp_path / "b", seed=1, progress=False, **TINY)
    assert a.name != b.name
    assert (a / "bhangra/bhangra_00.flac").read_bytes() != (b / "bhangra/bhangra_00.flac").read_bytes()


def test_second_call_returns_without_regenerating(corpus, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete corpus")

    monkeypatch.setattr(demo, "_build", fail)
    assert ensure_demo(corpus.parent, progress=False, **SMALL) == corpus
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*")} == before


def test_stale_temp_folder_does_not_count_as_complete(tmp_path):
    stale = tmp_path / ".demo-v1-s0-n1-d1.0-r8000.abc123.tmp"
    (stale / "bhangra").mkdir(parents=True)
    (stale / "bhangra" / "bhangra_00.flac").write_bytes(b"half")
    (stale / "manifest.csv").write_text("path,labels,tags,group\n")
    folder = ensure_demo(tmp_path, progress=False, **TINY)
    assert folder != stale
    _, rows = read_manifest(folder)
    assert len(rows) == len(STYLES)
    assert all(sf.info(folder / r["path"]).frames == 8000 for r in rows)


def test_half_corpus_without_manifest_is_rebuilt(tmp_path):
    half = tmp_path / "demo-v1-s0-n1-d1.0-r8000"
    (half / "bhangra").mkdir(parents=True)
    (half / "bhangra" / "bhangra_00.flac").write_bytes(b"half")
    assert ensure_demo(tmp_path, progress=False, **TINY) == half
    _, rows = read_manifest(half)
    assert len(rows) == len(STYLES)
    assert sf.info(half / "bhangra" / "bhangra_00.flac").frames == 8000


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    render = demo._render_clip
    calls = []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return render(*args)

    monkeypatch.setattr(demo, "_render_clip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo(tmp_path, progress=False, **TINY)
    assert os.listdir(tmp_path) == []  # no final folder, temporary build cleaned up
    monkeypatch.setattr(demo, "_render_clip", render)
    folder = ensure_demo(tmp_path, progress=False, **TINY)
    assert len(read_manifest(folder)[1]) == len(STYLES)


def test_corpus_finished_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch):
    build = demo._build
    final = tmp_path / "demo-v1-s0-n1-d1.0-r8000"

    def racing(folder, *args):
        build(folder, *args)
        final.mkdir()
        (final / "manifest.csv").write_text("theirs")

    monkeypatch.setattr(demo, "_build", racing)
    assert ensure_demo(tmp_path, progress=False, **TINY) == final
    assert (final / "manifest.csv").read_text() == "theirs"
    assert os.listdir(tmp_path) == [final.name]


def test_styles_are_acoustically_distinct(corpus):
    _, rows = read_manifest(corpus)
    score = {s: np.mean([pulse(corpus / r["path"]) for r in rows if r["labels"] == s]) for s in STYLES}
    # dhol-driven bhangra pulses far harder than sustained drones and pads
    assert score["bhangra"] > 2 * score["ambient"], score
    assert score["bhangra"] > 2 * score["raga_drone"], score


@pytest.mark.parametrize("bad", [dict(n_per_style=0), dict(duration=0.0), dict(sr=100), dict(seed=-1)])
def test_rejects_bad_arguments(tmp_path, bad):
    with pytest.raises(ValueError):
        ensure_demo(tmp_path, progress=False, **bad)
    assert not any(pathlib.Path(tmp_path).iterdir())
