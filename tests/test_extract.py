"""extract: a whole library into a sharded store, resumed after a kill, failures listed; its output folder
serves recommend (library seeds and new songs, faiss index)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from siamrec.commands.extract import extract
from siamrec.commands.recommend import recommend
from siamrec.errors import SiamrecError
from siamrec.runs import mark_finished
from siamrec.runs import read_csv, read_embeddings



@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from conftest import mixed_library

    return mixed_library(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, library):
    from conftest import identity_run

    return identity_run(tmp_path_factory.mktemp("run"), library)


def extract_cfg(cfg_factory, run, library, out, *extra):
    return cfg_factory("extract", f"run={run}", "data=folder", f"data.root={library}", f"extract.out={out}",
                       "extract.shard_size=3", *extra)


def by_key(folder):
    emb, items = read_embeddings(folder)
    return {it["key"]: row for it, row in zip(items, emb)}


def test_interrupted_extraction_resumes_and_equals_an_uninterrupted_one(run, library, tmp_path, cfg_factory,
                                                                        monkeypatch):
    import siamrec.extractor.decoding as decoding
    from siamrec.store import FeatureStore

    whole = tmp_path / "whole"
    assert extract(extract_cfg(cfg_factory, run, library, whole, "features.workers=2"), tmp_path) == whole
    summary = json.loads((whole / "extract.json").read_text())
    assert (summary["embedded"], summary["reused"], summary["failed"]) == (12, 0, 0)
    assert len(list((whole / "store").glob("shard-*.npz"))) == 4
    # the extraction reproduces the run's own embeddings of the same songs
    reference = by_key(run)
    assert set(by_key(whole)) == set(reference)
    for key, row in by_key(whole).items():
        np.testing.assert_allclose(row, reference[key], rtol=1e-4, atol=1e-5)

    # killed while writing the second shard: the first shard is kept, nothing is assembled
    resumed = tmp_path / "resumed"
    write = FeatureStore.write

    def killed_on_second_shard(self, *args):
        if self.shards:
            raise RuntimeError("killed")
        return write(self, *args)

    monkeypatch.setattr(FeatureStore, "write", killed_on_second_shard)
    with pytest.raises(RuntimeError, match="killed"):
        extract(extract_cfg(cfg_factory, run, library, resumed), tmp_path)
    shards = sorted((resumed / "store").glob("shard-*.npz"))
    assert len(shards) == 1 and not (resumed / "embeddings.npy").exists()
    assert not list((resumed / "store").glob(".*tmp"))
    with np.load(shards[0]) as z:  # a complete shard: 3 keys and their rows
        done = {str(k) for k in z["keys"]}
        assert len(done) == 3 and z["embeddings"].shape == (3, 64)

    # started again: the stored songs are not decoded again, the rest is, and the result is the same
    monkeypatch.setattr(FeatureStore, "write", write)
    decoded = []
    real = decoding.decode_windows
    monkeypatch.setattr(decoding, "decode_windows", lambda path, plan: decoded.append(path) or real(path, plan))
    extract(extract_cfg(cfg_factory, run, library, resumed), tmp_path)
    summary = json.loads((resumed / "extract.json").read_text())
    assert (summary["embedded"], summary["reused"]) == (9, 3)
    assert len(decoded) == 9 and not {p for p in decoded if p.split(f"{library}/")[1] in done}
    assert [it["key"] for it in read_csv(resumed / "items.csv")] == [it["key"] for it in read_csv(whole / "items.csv")]
    np.testing.assert_allclose(np.load(resumed / "embeddings.npy"), np.load(whole / "embeddings.npy"),
                               rtol=1e-4, atol=1e-5)

    # once finished, a third start has nothing left to do
    decoded.clear()
    extract(extract_cfg(cfg_factory, run, library, resumed), tmp_path)
    summary = json.loads((resumed / "extract.json").read_text())
    assert (summary["embedded"], summary["reused"], decoded) == (0, 12, [])


def test_the_store_never_serves_a_stale_or_missing_row(run, library, tmp_path, cfg_factory, capsys):
    import shutil

    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    out = tmp_path / "out"
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)
    before = by_key(out)

    # a song edited in place (same name, new audio) is embedded again; one merely touched is not
    from conftest import tone

    edited, touched = lib / "drone" / "drone_1.flac", lib / "high" / "high_3.mp3"
    sf.write(edited, tone(1760.0, 3.0, 22050, np.random.default_rng(5)), 22050)
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)
    summary = json.loads((out / "extract.json").read_text())
    assert (summary["embedded"], summary["reused"], summary["failed"]) == (1, 11, 0)
    after = by_key(out)
    assert not np.allclose(after["drone/drone_1.flac"], before["drone/drone_1.flac"], atol=1e-3)
    np.testing.assert_allclose(after["high/high_3.mp3"], before["high/high_3.mp3"])
    # the touched song's new size/mtime were stored: the next look-up is a fast one, nothing is hashed or decoded
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)
    assert json.loads((out / "extract.json").read_text())["reused"] == 12

    # songs deleted or moved since the last extract: left out of the index, counted and named in one line
    shutil.move(lib / "high" / "high_3.mp3", lib / "drone" / "high_3_moved.mp3")
    (lib / "drone" / "drone_1.flac").unlink()
    capsys.readouterr()
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)
    summary = json.loads((out / "extract.json").read_text())
    assert (summary["gone"], summary["rows"]) == (2, 11)
    assert "2 song(s) of the index are no longer in the library (deleted, moved or renamed) and were left out of " \
           "it: drone/drone_1.flac, high/high_3.mp3" in capsys.readouterr().out
    assert set(by_key(out)) == set(before) - {"drone/drone_1.flac", "high/high_3.mp3"} | {"drone/high_3_moved.mp3"}
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)  # said once: the index now has the library's songs
    assert json.loads((out / "extract.json").read_text())["gone"] == 0
    assert "no longer in the library" not in capsys.readouterr().out
    shutil.move(lib / "drone" / "high_3_moved.mp3", lib / "high" / "high_3.mp3")
    sf.write(lib / "drone" / "drone_1.flac", tone(1760.0, 3.0, 22050, np.random.default_rng(5)), 22050)
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)
    after = by_key(out)

    # a deleted shard: only its songs are embedded again, every song is present, no other shard is touched
    shards = sorted((out / "store").glob("shard-*.npz"))
    with np.load(shards[0]) as z:
        lost = {str(k) for k in z["keys"]}
    shards[0].unlink()
    others = {p: p.stat().st_mtime_ns for p in shards[1:]}
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)
    summary = json.loads((out / "extract.json").read_text())
    assert (summary["embedded"], summary["reused"]) == (len(lost), 12 - len(lost))
    assert {p: p.stat().st_mtime_ns for p in shards[1:]} == others
    assert set(by_key(out)) == set(before)
    for key, row in by_key(out).items():
        np.testing.assert_allclose(row, after[key], rtol=1e-4, atol=1e-5)

    # a damaged shard is set aside and its songs embedded again
    victim = sorted((out / "store").glob("shard-*.npz"))[-1]
    with np.load(victim) as z:
        n_victim = len(z["keys"])
    victim.write_bytes(b"PK\x03\x04 not a shard any more")
    extract(extract_cfg(cfg_factory, run, lib, out), tmp_path)
    summary = json.loads((out / "extract.json").read_text())
    assert summary["embedded"] == n_victim and summary["damaged_shards"] == [victim.name + ".damaged"]
    assert len(by_key(out)) == 12


def test_two_extracts_into_one_folder_cannot_corrupt_it(run, library, tmp_path, cfg_factory):
    from siamrec.store import FeatureStore, run_fingerprint

    out = tmp_path / "out"
    holder = FeatureStore(out / "store", run_fingerprint(run))
    holder.lock()  # another extract is writing into out
    try:
        with pytest.raises(SiamrecError, match="another extract is writing"):
            extract(extract_cfg(cfg_factory, run, library, out), tmp_path)
    finally:
        holder.unlock()
    assert not (out / "embeddings.npy").exists()
    extract(extract_cfg(cfg_factory, run, library, out), tmp_path)
    assert len(by_key(out)) == 12
    # shards are created exclusively under unique names: a second writer never replaces one
    store = FeatureStore(out / "store", run_fingerprint(run))
    names = {store.write(["a"], [1], [1], ["d"], np.ones((1, 64))) for _ in range(20)}
    assert len(names) == 20


def test_the_command_killed_after_its_first_shard_finishes_when_started_again(run, library, tmp_path):
    """The real thing: `python -m siamrec extract` killed (SIGKILL) as soon as a shard is on disk, then rerun."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "siamrec", "extract", f"run={run}", "data=folder", f"data.root={library}",
            f"extract.out={out}", "extract.shard_size=1", "features.batch_size=1", "features.workers=0",
            f"paths.cache={tmp_path / 'cache'}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([*args, f"hydra.run.dir={tmp_path / 'first'}"], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 300
        while not list((out / "store").glob("shard-*.npz")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first.kill()
        first.wait()
    assert not (out / "embeddings.npy").exists()  # it really died halfway
    kept = len(list((out / "store").glob("shard-*.npz")))
    second = subprocess.run([*args, f"hydra.run.dir={tmp_path / 'second'}"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == str(out)  # the output folder, last
    summary = json.loads((out / "extract.json").read_text())
    assert summary["reused"] >= kept and summary["reused"] + summary["embedded"] == 12
    reference = by_key(run)
    for key, row in by_key(out).items():
        np.testing.assert_allclose(row, reference[key], rtol=1e-4, atol=1e-5)
    assert len(by_key(out)) == 12


def test_failed_files_are_listed_and_the_rest_embedded(run, library, tmp_path, cfg_factory):
    broken = tmp_path / "broken_library"
    import shutil

    shutil.copytree(library, broken)
    (broken / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage, not audio")
    (broken / "beats" / "empty.mp3").write_bytes(b"")
    out = tmp_path / "out"
    extract(extract_cfg(cfg_factory, run, broken, out), tmp_path)
    summary = json.loads((out / "extract.json").read_text())
    assert (summary["embedded"], summary["failed"]) == (12, 2)
    failed = read_csv(out / "failed.csv")
    assert sorted(f["key"] for f in failed) == ["beats/empty.mp3", "high/broken.wav"]
    assert all(f["reason"] for f in failed)
    assert len(by_key(out)) == 12 and json.loads((out / "extract.json").read_text())["failed"] == 2


def test_a_store_of_another_model_is_refused(run, library, tmp_path, cfg_factory, monkeypatch):
    out = tmp_path / "out"
    extract(extract_cfg(cfg_factory, run, library, out), tmp_path)
    other = tmp_path / "other_run"
    import shutil

    shutil.copytree(run, other)
    (other / "extractor.json").write_text((other / "extractor.json").read_text().replace('"start"', '"middle"'))
    mark_finished(other)  # a finished run of another model
    with pytest.raises(SiamrecError, match="another model"):
        extract(extract_cfg(cfg_factory, other, library, out), tmp_path)
    with pytest.raises(SiamrecError, match="run folder itself"):
        extract(extract_cfg(cfg_factory, run, library, run), tmp_path)
    # a store filled by an earlier decoder (one that read MP3s wrongly) is not reused either
    import siamrec.store

    monkeypatch.setattr(siamrec.store, "DECODER_VERSION", siamrec.store.DECODER_VERSION - 1)
    with pytest.raises(SiamrecError, match="decoder version"):
        extract(extract_cfg(cfg_factory, run, library, out), tmp_path)


def test_the_extracted_library_serves_recommend_with_new_songs_and_faiss(run, library, tmp_path, cfg_factory):
    pytest.importorskip("faiss")
    import shutil

    out = tmp_path / "extracted"
    extract(extract_cfg(cfg_factory, run, library, out), tmp_path)
    new = tmp_path / "new_song.flac"
    shutil.copy(library / "drone" / "drone_1.flac", new)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"high/high_0.wav\n{new}\n{library / 'beats' / 'beats_3.mp3'}\n")
    rows = recommend(cfg_factory("recommend", f"run={out}", f"recommend.seed={seeds}", "recommend.k=4",
                                 f"recommend.out={tmp_path / 'p.json'}", "index=faiss", "index.method=hnsw",
                                 "recommend.rules=none",  # the plain list: a copy's twin is a duplicate to the rules
                                 "query_expansion=0"),  # ranked by the seed alone: its twin first, at cosine 1
                     tmp_path)
    assert (out / "index.faiss").is_file()
    assert [r[0] for r in rows[::4]] == ["high/high_0.wav", str(new), "beats/beats_3.mp3"]
    twin = rows[4]  # the new song's nearest neighbour is the library song it copies
    assert twin[3] == "drone/drone_1.flac" and twin[5] == pytest.approx(1.0, abs=1e-4)
    assert len(json.loads((tmp_path / "p.json").read_text())) == 3


def test_a_new_seed_enters_an_m3u8_playlist_with_its_own_tags(run, library, tmp_path, cfg_factory, capsys):
    """recommend out=FILE.m3u8 with new songs as seeds: each comes first in its playlist under its tags' artist,
    title and length, as library songs do; an untagged one under its file stem, with its length."""
    import shutil

    from mutagen.flac import FLAC

    from siamrec.m3u import read_entries

    tagged, bare = tmp_path / "ਨਵਾਂ.flac", tmp_path / "नया गीत.flac"
    for new in (tagged, bare):
        shutil.copy(library / "drone" / "drone_1.flac", new)
        FLAC(new).delete()
    tags = FLAC(tagged)
    tags["title"], tags["artist"] = "ਮਿੱਟੀ ਦਾ ਬਾਵਾ", "Maan"
    tags.save()
    seconds = round(sf.info(str(tagged)).duration)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"{tagged}\n{bare}\n", encoding="utf-8")
    out = tmp_path / "p.m3u8"
    recommend(cfg_factory("recommend", f"run={run}", f"recommend.seed={seeds}", "recommend.k=2",
                          f"recommend.out={out}"), tmp_path)
    assert "2 playlists (2 new songs embedded," in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert f"#EXTINF:{seconds},Maan - ਮਿੱਟੀ ਦਾ ਬਾਵਾ\n{tagged}\n" in text
    assert f"#EXTINF:{seconds},नया गीत\n{bare}\n" in text
    assert [entry[1] for entry in read_entries(out)][::3] == [str(tagged), str(bare)]


def test_ctrl_c_keeps_every_finished_song_and_says_how_to_finish(run, library, tmp_path, cfg_factory, monkeypatch):
    from siamrec.embedder import SongEmbedder

    stream = SongEmbedder.stream

    def interrupted_after_four(self, items, desc="extract"):
        for n, row in enumerate(stream(self, items, desc)):
            if n == 4:
                raise KeyboardInterrupt
            yield row

    monkeypatch.setattr(SongEmbedder, "stream", interrupted_after_four)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as info:
        extract(extract_cfg(cfg_factory, run, library, out, "extract.shard_size=100"), tmp_path)
    assert f"extract.out={out}" in info.value.resume_hint
    with np.load(next((out / "store").glob("shard-*.npz"))) as z:
        assert len(z["keys"]) == 4  # stored although the shard was not full
