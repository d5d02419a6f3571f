"""The web app's API through FastAPI's TestClient: songs, playlists equal to `recommend`, audio with range
requests, traversal attempts, uploads (limits, undecodable files, cold start), the map cache and the exports."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the [serve] extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

import serve_lib  # noqa: E402
from conftest import make_cfg  # noqa: E402
from siamrec.commands.recommend import recommend  # noqa: E402
from siamrec.configs import compose  # noqa: E402
from siamrec.errors import SiamrecError  # noqa: E402
from siamrec.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return serve_lib.trained_run(tmp_path_factory.getbasetemp() / "serve-trained")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve-synthetic")
    library = serve_lib.make_library(base / "library")
    return serve_lib.synthetic_run(base / "run", library), library


PLAIN = "recommend.rules=none"  # these tests are of the plain nearest-neighbour list (radio rules: test_radio_api.py)


def client_for(run, tmp, *overrides):
    cfg = make_cfg("serve", [f"run={run}", PLAIN, *overrides], tmp)
    return TestClient(create_app(run, cfg)), cfg


@pytest.fixture
def synth_client(synthetic, tmp_path):
    run, _ = synthetic
    client, _ = client_for(run, tmp_path)
    return client


def run_recommend(run, seed, k, tmp, *overrides):
    out = tmp / f"rec-{k}"
    out.mkdir(exist_ok=True)
    return recommend(make_cfg("recommend", [f"run={run}", f"recommend.seed='{seed}'", f"recommend.k={k}", PLAIN,
                                            *overrides],
                              tmp), out)


# ---------------------------------------------------------------- library and playlists
def test_songs_lists_every_item_with_unicode_names_groups_and_playability(synth_client, synthetic):
    run, _ = synthetic
    songs = synth_client.get("/api/songs").json()
    assert len(songs) == 15 and [s["id"] for s in songs] == list(range(15))
    names = {s["name"] for s in songs}
    assert {"ਪੰਜਾਬੀ ਗੀਤ", "हिंदी गाना", "dhol beat"} <= names
    playable = {s["key"].rsplit(".", 1)[1]: s["playable"] for s in songs}
    assert playable == {"flac": "native", "au": "wav", "aiff": "wav"}
    assert songs[0]["group"] == "artist0" and songs[1]["group"] == "artist0"
    assert synth_client.get("/api/info").json()["has_groups"] is True
    assert "path" not in songs[0]  # the API names songs by id and key, never exposes a path to request


@pytest.mark.parametrize("k", [1, 4, 14])
def test_get_recommend_equals_the_recommend_command(synthetic, synth_client, tmp_path, k):
    run, _ = synthetic
    songs = synth_client.get("/api/songs").json()
    for seed in (0, 7, 13):
        expected = run_recommend(run, songs[seed]["key"], k, tmp_path)
        got = synth_client.get("/api/recommend", params={"seed": seed, "k": k}).json()
        assert [e["key"] for e in got["playlist"]] == [r[3] for r in expected]
        assert [e["similarity"] for e in got["playlist"]] == [r[5] for r in expected]
        assert [e["rank"] for e in got["playlist"]] == list(range(1, len(expected) + 1))
        # the key is an id as good as the row
        by_key = synth_client.get("/api/recommend", params={"seed": songs[seed]["key"], "k": k}).json()
        assert by_key["playlist"] == got["playlist"]


def test_faiss_index_is_built_in_memory_and_never_written_into_the_run(synthetic, tmp_path):
    pytest.importorskip("faiss")
    run, _ = synthetic
    before = sorted(os.listdir(run))
    client, _ = client_for(run, tmp_path, "index=faiss", "index.method=hnsw", "index.exact_below=1")
    got = client.get("/api/recommend", params={"seed": 3, "k": 5}).json()
    assert got["search"] == "hnsw" and len(got["playlist"]) == 5
    assert sorted(os.listdir(run)) == before  # no index.faiss / index.json


def test_several_seeds_use_the_normalised_mean_and_leave_the_seeds_out(synthetic, synth_client):
    run, _ = synthetic
    emb = np.load(run / "embeddings.npy")
    seeds = [0, 5, 11]
    r = synth_client.post("/api/recommend", json={"seeds": [str(s) for s in seeds], "k": 6}).json()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    q = unit[seeds].mean(axis=0)
    q = q / np.linalg.norm(q)
    # ... expanded with its nearest songs (the server's query_expansion), as every playlist's seed is
    sims = unit @ q
    near = np.argsort(-sims, kind="stable")[:int(compose("serve", [], return_hydra_config=False).query_expansion)]
    q = q + unit[near].sum(axis=0)
    sims = unit @ (q / np.linalg.norm(q))
    sims[seeds] = -np.inf
    expected = list(np.argsort(-sims, kind="stable")[:6])
    assert [e["id"] for e in r["playlist"]] == expected
    np.testing.assert_allclose([e["similarity"] for e in r["playlist"]], sims[expected], atol=1e-5)
    assert [s["id"] for s in r["seeds"]] == seeds
    # GET with a repeated seed gives the same
    g = synth_client.get("/api/recommend", params=[("seed", "0"), ("seed", "5"), ("seed", "11"), ("k", "6")]).json()
    assert g["playlist"] == r["playlist"]


def test_exclude_group_leaves_out_the_seeds_artists(synth_client):
    songs = synth_client.get("/api/songs").json()
    plain = synth_client.get("/api/recommend", params={"seed": 0, "k": 14}).json()["playlist"]
    assert songs[1]["id"] in [e["id"] for e in plain]  # artist0's other song is found without the option
    excl = synth_client.get("/api/recommend", params={"seed": 0, "k": 5, "exclude_group": "true"}).json()["playlist"]
    assert len(excl) == 5 and all(e["group"] != "artist0" for e in excl)
    assert [e["id"] for e in excl] == [e["id"] for e in plain if e["group"] != "artist0"][:5]
    # several seeds: every seed's group is excluded
    both = synth_client.post("/api/recommend", json={"seeds": ["0", "2"], "k": 13, "exclude_group": True}).json()
    assert {e["group"] for e in both["playlist"]}.isdisjoint({"artist0", "artist1"})
    assert len(both["playlist"]) == 11  # all that is left


def test_bad_requests_get_one_clear_message(synth_client):
    r = synth_client.get("/api/recommend", params={"seed": "nope", "k": 3})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = synth_client.get("/api/recommend", params={"seed": 0, "k": 0})
    assert r.status_code == 422 and "k=0" in r.json()["detail"]
    r = synth_client.get("/api/recommend", params={"seed": 0, "k": 100000})
    assert r.status_code == 422
    r = synth_client.post("/api/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "seeds" in r.json()["detail"]
    r = synth_client.get("/api/export", params={"seed": 0, "format": "exe"})
    assert r.status_code == 422 and "m3u8" in r.json()["detail"]


# ---------------------------------------------------------------- audio
def test_audio_supports_range_requests(synth_client, synthetic):
    _, library = synthetic
    songs = synth_client.get("/api/songs").json()
    flac = next(s for s in songs if s["key"].endswith(".flac"))
    data = (library / flac["key"]).read_bytes()
    whole = synth_client.get(f"/api/audio/{flac['id']}")
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "audio/flac"
    assert whole.headers.get("accept-ranges") == "bytes"
    part = synth_client.get(f"/api/audio/{flac['id']}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = synth_client.get(f"/api/audio/{flac['id']}", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]


@pytest.mark.parametrize("ext", ["au", "aiff"])
def test_formats_browsers_cannot_play_are_sent_as_wav_with_ranges(synth_client, synthetic, ext):
    import soundfile as sf

    _, library = synthetic
    song = next(s for s in synth_client.get("/api/songs").json() if s["key"].endswith("." + ext))
    whole = synth_client.get(f"/api/audio/{song['id']}")
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    y, sr = sf.read(io.BytesIO(whole.content), dtype="int16")
    ref, ref_sr = sf.read(library / song["key"], dtype="int16")
    assert sr == ref_sr and np.array_equal(y, ref)
    n = len(whole.content)
    part = synth_client.get(f"/api/audio/{song['id']}", headers={"Range": "bytes=1000-"})
    assert part.status_code == 206 and part.content == whole.content[1000:]
    assert part.headers["content-range"] == f"bytes 1000-{n - 1}/{n}"
    bad = synth_client.get(f"/api/audio/{song['id']}", headers={"Range": f"bytes={n + 5}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{n}"


def test_transcoded_songs_kept_for_replays_are_bounded_in_bytes(synth_client, monkeypatch):
    import siamrec.serve.catalogue as catalogue

    cat = synth_client.app.state.catalogue
    a, b = [s["id"] for s in synth_client.get("/api/songs").json() if s["playable"] == "wav"][:2]
    assert synth_client.get(f"/api/audio/{a}").status_code == 200
    monkeypatch.setattr(catalogue, "WAV_CACHE_BYTES", 1)  # no room: only the newest is kept
    assert synth_client.get(f"/api/audio/{b}").status_code == 200
    assert list(cat._wav_cache) == [b]
    monkeypatch.setattr(catalogue, "WAV_CACHE_BYTES", 1 << 30)
    assert synth_client.get(f"/api/audio/{a}").status_code == 200
    assert list(cat._wav_cache) == [b, a]  # within 8 songs and 1 GiB: both kept, oldest first


@pytest.mark.parametrize("attempt", [
    "../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/etc/passwd",
    "%2Fetc%2Fpasswd", "..\\..\\etc\\passwd", "drone/../../../etc/passwd", "15", "-1", "999999", "१२", "²",
])
def test_paths_in_requests_are_never_opened(synth_client, synthetic, attempt):
    _, library = synthetic
    for url in (f"/api/audio/{attempt}", f"/api/recommend?seed={attempt}&k=3", f"/static/{attempt}"):
        r = synth_client.get(url)
        assert r.status_code == 404, (url, r.status_code)
        assert b"root:" not in r.content
    # an absolute path of a real library file is not an id either
    real = next(library.rglob("*.flac"))
    assert synth_client.get(f"/api/audio/{real}").status_code == 404
    assert synth_client.get("/api/recommend", params={"seed": str(real), "k": 3}).status_code == 404


# ---------------------------------------------------------------- uploads (a new song: cold start)
def test_upload_of_a_new_song_equals_recommend_for_that_file(trained, tmp_path):
    run, library, overrides = trained
    client, _ = client_for(run, tmp_path, *overrides)
    source = library / "drone" / "drone_2.flac"
    new = tmp_path / "my new song.flac"
    shutil.copy(source, new)
    expected = run_recommend(run, new, 4, tmp_path, *overrides)
    r = client.post("/api/recommend", files={"file": (new.name, new.read_bytes(), "audio/flac")}, data={"k": "4"})
    assert r.status_code == 200, r.text
    got = r.json()["playlist"]
    assert [e["key"] for e in got] == [row[3] for row in expected]
    np.testing.assert_allclose([e["similarity"] for e in got], [row[5] for row in expected], atol=1e-5)
    assert "drone/drone_2.flac" in [e["key"] for e in got]  # its twin in the library, ranked by its neighbourhood


def test_uploads_are_deleted_limited_and_undecodable_ones_get_one_message(trained, tmp_path, monkeypatch):
    import tempfile

    run, library, overrides = trained
    uploads = tmp_path / "tmp"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    client, _ = client_for(run, tmp_path, *overrides, "serve.max_upload_mb=0.1")
    before = sorted(os.listdir(run))
    # undecodable
    r = client.post("/api/recommend", files={"file": ("broken.mp3", b"\x00garbage" * 200, "audio/mpeg")})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("broken.mp3: not audio siamrec can decode; upload one of wav, flac")
    assert "Traceback" not in r.text and str(uploads) not in r.text
    # too large (by its Content-Length, and also when it is only known while reading)
    big = b"\x00" * 200_000
    r = client.post("/api/recommend", files={"file": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413 and "max_upload_mb=0.1" in r.json()["detail"]
    # empty
    r = client.post("/api/recommend", files={"file": ("empty.wav", b"", "audio/wav")})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    # no file field
    r = client.post("/api/recommend", files={"other": ("x.wav", b"abc", "audio/wav")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    # a good one
    small = library / "high" / "high_2.flac"
    assert small.stat().st_size < 0.1 * 2**20
    r = client.post("/api/recommend", files={"file": ("h.flac", small.read_bytes(), "audio/flac")}, data={"k": "2"})
    assert r.status_code == 200 and len(r.json()["playlist"]) == 2
    assert os.listdir(uploads) == []  # every upload folder was deleted
    assert sorted(os.listdir(run)) == before  # nothing written into the run


def test_the_size_limit_holds_without_a_content_length(trained, tmp_path):
    run, _, overrides = trained
    client, _ = client_for(run, tmp_path, *overrides, "serve.max_upload_mb=0.01")

    def chunks():
        body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                b"Content-Type: audio/wav\r\n\r\n" + b"\x01" * 40_000 + b"\r\n--XyZ--\r\n")
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    r = client.post("/api/recommend", content=chunks(), headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 413 and "max_upload_mb" in r.json()["detail"]


# ---------------------------------------------------------------- map and export
def test_map_is_computed_once_and_cached_atomically(synthetic, tmp_path):
    import time

    run, _ = synthetic
    (run / "map2d.npz").unlink(missing_ok=True)
    client, _ = client_for(run, tmp_path)
    deadline = time.time() + 60
    while (r := client.get("/api/map")).status_code == 202 and time.time() < deadline:
        time.sleep(0.1)
    body = r.json()
    assert r.status_code == 200 and len(body["x"]) == len(body["y"]) == 15
    assert body["method"] in ("umap", "tsne")
    assert (run / "map2d.npz").is_file() and not [p for p in os.listdir(run) if p.endswith(".tmp")]
    stamp = (run / "map2d.npz").stat().st_mtime_ns
    again, _ = client_for(run, tmp_path)
    r2 = again.get("/api/map")  # read from the cache: ready at once, same coordinates, file untouched
    assert r2.status_code == 200 and r2.json()["x"] == body["x"]
    assert (run / "map2d.npz").stat().st_mtime_ns == stamp


def test_exports_list_the_playlist(synth_client, synthetic, tmp_path):
    run, library = synthetic
    songs = synth_client.get("/api/songs").json()
    seed = next(s for s in songs if s["name"] == "ਪੰਜਾਬੀ ਗੀਤ")
    playlist = synth_client.get("/api/recommend", params={"seed": seed["id"], "k": 5}).json()["playlist"]
    m3u = synth_client.get("/api/export", params={"seed": seed["id"], "k": 5, "format": "m3u8"})
    assert m3u.status_code == 200 and m3u.headers["content-type"].startswith("audio/x-mpegurl")
    assert "attachment" in m3u.headers["content-disposition"]
    text = m3u.content.decode("utf-8")
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and lines[1] == "#PLAYLIST:ਪੰਜਾਬੀ ਗੀਤ"
    extinf = [ln for ln in lines if ln.startswith("#EXTINF:")]
    paths = [ln for ln in lines if not ln.startswith("#")]
    # the seed first (a player starts with it), then the playlist; #EXTINF:<seconds>,<artist> - <title>
    queue = [seed, *playlist]
    assert extinf == [f"#EXTINF:{round(e['duration']) if e['duration'] else -1},{e['name']}" for e in queue]
    assert any(e["artist"] for e in playlist) and any(" - " in ln for ln in extinf)
    assert paths == [str((library / e["key"]).resolve()) for e in queue]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    # CSV: the columns of `recommend out=FILE.csv`
    rows = list(csv.DictReader(io.StringIO(synth_client.get(
        "/api/export", params={"seed": seed["id"], "k": 5, "format": "csv"}).text)))
    assert [r["key"] for r in rows] == [e["key"] for e in playlist]
    assert rows[0]["seed"] == "ਪੰਜਾਬੀ ਗੀਤ" and float(rows[0]["similarity"]) == playlist[0]["similarity"]
    data = json.loads(synth_client.get("/api/export", params={"seed": seed["id"], "k": 5, "format": "json"}).content)
    assert [e["key"] for e in data["ਪੰਜਾਬੀ ਗੀਤ"]["playlist"]] == [e["key"] for e in playlist]
    # POST: any list of ids (a new song's playlist), same M3U8 lines
    posted = synth_client.post("/api/export", json={"format": "m3u8", "seed_name": "ਪੰਜਾਬੀ ਗੀਤ", "seeds": [seed["id"]],
                                                    "items": [{"id": str(e["id"]), "similarity": e["similarity"]}
                                                              for e in playlist]})
    assert posted.content.decode("utf-8") == text
    bad = synth_client.post("/api/export", json={"format": "m3u8", "items": [{"id": "../x"}]})
    assert bad.status_code == 404


def test_openapi_documents_the_api(synth_client):
    spec = synth_client.get("/openapi.json").json()
    assert {"/api/songs", "/api/recommend", "/api/audio/{song_id}", "/api/map", "/api/export"} <= set(spec["paths"])
    body = spec["paths"]["/api/recommend"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert synth_client.get("/docs").status_code == 200


def test_page_and_local_plotly_are_served(synth_client):
    page = synth_client.get("/")
    assert page.status_code == 200 and "<audio" in page.text
    assert 'src="/static/plotly.min.js"' in page.text and "http" not in page.text.replace("http-equiv", "")
    js = synth_client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000


# ---------------------------------------------------------------- the command
def test_serve_refuses_a_remote_host_unless_allowed(capsys):
    from omegaconf import OmegaConf

    from siamrec.commands.serve import check_host

    with pytest.raises(SiamrecError, match="allow_remote=true"):
        check_host(OmegaConf.create({"host": "0.0.0.0", "port": 8000, "allow_remote": False}))
    assert check_host(OmegaConf.create({"host": "0.0.0.0", "port": 8000, "allow_remote": True})) == ("0.0.0.0", 8000)
    assert "WARNING" in capsys.readouterr().out
    assert check_host(OmegaConf.create({"host": "127.0.0.1", "port": 8123, "allow_remote": False})) == ("127.0.0.1", 8123)
    with pytest.raises(SiamrecError, match="serve.port"):
        check_host(OmegaConf.create({"host": "127.0.0.1", "port": "x", "allow_remote": False}))


def test_serve_cli_prints_one_line_for_bad_input(tmp_path, capsys):
    from siamrec.cli import main

    assert main(["serve", f"run={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a finished siamrec run" in err
    assert main(["serve", "run=x", "host=10.1.2.3", f"hydra.run.dir={tmp_path / 'out2'}"]) == 1
    assert "allow_remote" in capsys.readouterr().err


def test_a_port_in_use_is_one_clear_line(synthetic, tmp_path, capsys):
    import socket

    from siamrec.cli import main

    run, _ = synthetic
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", f"run={run}", f"port={port}", f"hydra.run.dir={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"serve.port={port}: cannot listen" in err


def test_the_served_library_is_out_of_the_garbage_collectors_reach(synthetic, tmp_path):
    """serve's app freezes what it has made (the library's songs live as long as the server): a full collection
    then no longer walks through every song's objects, and the playlists still answer."""
    import gc
    import socket

    from siamrec.commands.serve import start_app

    run, _ = synthetic
    cfg = make_cfg("serve", [f"run={run}", PLAIN], tmp_path)
    gc.unfreeze()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        try:
            app = start_app(run, cfg, sock)
            cat = app.state.catalogue
            collected = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
            held = [cat, cat.meta, cat.keys, cat.radio_songs, cat.radio_songs.titles]
            assert all(gc.is_tracked(o) and id(o) not in collected for o in held)
            playlist = TestClient(app).get("/api/recommend", params={"seed": 0, "k": 3}).json()["playlist"]
            assert len(playlist) == 3
        finally:
            gc.unfreeze()


def test_a_faiss_index_to_build_does_not_hold_up_the_start(synthetic, tmp_path, monkeypatch):
    """While the index is built (in the background, in memory) exact search answers; then faiss does."""
    pytest.importorskip("faiss")
    import threading

    import siamrec.serve.catalogue as catalogue_module

    run, _ = synthetic
    release = threading.Event()
    real_open = catalogue_module.open_index

    def slow_open(*args, **kwargs):
        release.wait(30)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(catalogue_module, "open_index", slow_open)
    client, _ = client_for(run, tmp_path, "index=faiss", "index.method=hnsw", "index.exact_below=1")
    cat = client.app.state.catalogue
    assert client.get("/api/info").json()["index_ready"] is False
    during = client.get("/api/recommend", params={"seed": 2, "k": 5}).json()
    assert during["search"] == "exact"
    assert [e["key"] for e in during["playlist"]] == [r[3] for r in run_recommend(run, cat.keys[2], 5, tmp_path)]
    release.set()
    assert cat.index_ready.wait(30)
    after = client.get("/api/recommend", params={"seed": 2, "k": 5}).json()
    assert after["search"] == "hnsw" and client.get("/api/info").json()["index_ready"] is True
    assert not (run / "index.faiss").exists()


def test_songs_whose_file_is_gone_are_marked_and_404(synthetic, tmp_path):
    run, library = synthetic
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rows = list(csv.reader(open(copy / "items.csv", encoding="utf-8")))
    rows[1][1] = str(tmp_path / "moved away.flac")  # song 0's file is gone
    with open(copy / "items.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    client, _ = client_for(copy, tmp_path)
    songs = client.get("/api/songs").json()
    assert songs[0]["playable"] == "no" and songs[1]["playable"] == "native"
    assert client.get("/api/audio/0").status_code == 404
    assert client.get("/api/recommend", params={"seed": 0, "k": 3}).status_code == 200  # still a seed
    gz = client.get("/api/songs", headers={"accept-encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip" and gz.json() == songs


def test_map_method_umap_when_installed_else_tsne_and_pca_for_large(monkeypatch):
    import sys
    import types

    from siamrec.serve import map2d

    monkeypatch.setitem(sys.modules, "umap", None)  # not installed
    assert map2d.choose_method(500) == "tsne"
    assert map2d.choose_method(50_000, max_items=20_000) == "pca"
    calls = {}

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls.update(kwargs)

        def fit_transform(self, x):
            return x[:, :2] * 3.0

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    assert map2d.choose_method(500) == "umap"
    emb = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    xy = map2d.compute(emb, "umap")
    assert xy.shape == (40, 2) and calls["metric"] == "cosine" and np.abs(xy).max() == pytest.approx(1.0)
    with pytest.raises(SiamrecError, match="serve.map"):
        map2d.choose_method(10, "mds")


def test_a_near_silent_or_very_short_upload_is_embedded_but_flagged(trained, tmp_path):
    import soundfile as sf

    run, library, overrides = trained
    client, cfg = client_for(run, tmp_path, *overrides)
    window = float(cfg.clip.duration)
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.full(8000, 3e-4, dtype=np.float32), 16000)  # 0.5 s at -70 dBFS (16-bit: 10/32768)
    r = client.post("/api/recommend", files={"file": (quiet.name, quiet.read_bytes(), "audio/wav")}, data={"k": "3"})
    assert r.status_code == 200 and len(r.json()["playlist"]) == 3  # embedded anyway
    warnings = r.json()["warnings"]
    assert len(warnings) == 2 and warnings[0].startswith(f"very short: 0.5 s of audio, less than the model's {window:g}-s")
    assert __import__("re").match(r"near-silent: its level is -7[01] dBFS", warnings[1]), warnings
    loud = tmp_path / "loud.wav"
    t = np.arange(int(16000 * 0.95 * window)) / 16000  # a few percent padding is no reason to flag it
    sf.write(loud, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    r = client.post("/api/recommend", files={"file": (loud.name, loud.read_bytes(), "audio/wav")}, data={"k": "3"})
    assert r.status_code == 200 and r.json()["warnings"] == []


def test_docs_work_offline(synth_client):
    pytest.importorskip("swagger_ui", reason="/docs needs swagger-ui-py")
    page = synth_client.get("/docs")
    assert page.status_code == 200
    srcs = __import__("re").findall(r'(?:src|href)="([^"]+)"', page.text)
    assert srcs and all(s.startswith(("/static/", "data:")) for s in srcs), srcs  # no CDN
    for s in srcs:
        if s.startswith("/static/"):
            r = synth_client.get(s)
            assert r.status_code == 200 and len(r.content) > 10_000, s
    assert synth_client.get("/redoc").status_code == 404  # ReDoc ships in no installed package: dropped
