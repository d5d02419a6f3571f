"""The web app shows music, not file names: metadata in songs and playlists, search by title/artist/album/label
(case, accents, Unicode forms), seeds by title or `artist - title` (409 when several), cover art, saved playlists
that `data=playlists` trains on; and every route answers bad parameters with a 4xx sentence, never a 5xx."""

from __future__ import annotations

import io
import json
import unicodedata

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the [serve] extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import serve_lib  # noqa: E402
from conftest import make_cfg  # noqa: E402

PLAIN = "recommend.rules=none"  # these tests are of the plain nearest-neighbour list (radio rules: test_radio_api.py)
from siamrec.data.sources import from_playlists  # noqa: E402
from siamrec.serve.app import create_app  # noqa: E402
from siamrec.songs import fold  # noqa: E402


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve-music")
    library = serve_lib.make_library(base / "library")
    return serve_lib.synthetic_run(base / "run", library), library


@pytest.fixture
def client(synthetic, tmp_path):
    run, _ = synthetic
    cfg = make_cfg("serve", [f"run={run}", PLAIN, f"serve.playlists_dir={tmp_path / 'saved'}"], tmp_path)
    return TestClient(create_app(run, cfg), raise_server_exceptions=False)


def test_songs_and_playlists_carry_metadata(client):
    songs = client.get("/api/songs").json()
    for s in songs:
        assert {"title", "artist", "album", "duration"} <= set(s)
    tagged = next(s for s in songs if s["artist"] == "Zoë Keating")
    assert tagged["name"] == f"Zoë Keating - {tagged['title']}" and tagged["duration"] > 0
    untagged = next(s for s in songs if s["key"].endswith("ਪੰਜਾਬੀ ਗੀਤ.flac"))
    assert untagged["title"] is untagged["artist"] is untagged["album"] is untagged["duration"] is None
    assert untagged["name"] == "ਪੰਜਾਬੀ ਗੀਤ"
    playlist = client.get("/api/recommend", params={"seed": tagged["id"], "k": 14}).json()["playlist"]
    assert all({"title", "artist", "album", "duration"} <= set(e) for e in playlist)
    assert any(e["artist"] for e in playlist) and any(e["title"] is None for e in playlist)


def test_an_older_items_csv_without_metadata_still_serves(tmp_path):
    library = serve_lib.make_library(tmp_path / "library")
    run = serve_lib.synthetic_run(tmp_path / "run", library, tags=False)
    c = TestClient(create_app(run, make_cfg("serve", [f"run={run}", PLAIN], tmp_path)))
    songs = c.get("/api/songs").json()
    assert len(songs) == 15 and all(s["title"] is None and s["duration"] is None for s in songs)
    assert c.get("/api/search", params={"q": "ਪੰਜਾਬੀ"}).json()["total"] == 1


@pytest.mark.parametrize("query,artists", [
    ("bela fleck", {"Béla Fleck"}), ("BÉLA", {"Béla Fleck"}), ("zoe", {"Zoë Keating"}),
    ("ｚｏë", {"Zoë Keating"}),  # full-width letters (NFKC)
    ("ਗੁਰਦਾਸ", {"ਗੁਰਦਾਸ ਮਾਨ"}), ("lata album 0", {"Lata Mangeshkar"}),
])
def test_search_matches_artist_title_album_folded(client, query, artists):
    songs = client.get("/api/songs").json()
    got = client.get("/api/search", params={"q": query}).json()
    assert got["total"] == len(got["ids"]) > 0
    assert {songs[i]["artist"] for i in got["ids"]} == artists


def test_search_matches_labels_file_names_and_decomposed_gurmukhi(client):
    songs = client.get("/api/songs").json()
    assert {songs[i]["labels"][0] for i in client.get("/api/search", params={"q": "Drone"}).json()["ids"]} == {"drone"}
    decomposed = unicodedata.normalize("NFD", "हिंदी")
    ids = client.get("/api/search", params={"q": decomposed}).json()["ids"]
    assert [songs[i]["key"] for i in ids] == ["high/हिंदी गाना.flac"]
    assert client.get("/api/search", params={"q": "nothing like this"}).json() == {"total": 0, "ids": []}
    assert client.get("/api/search", params={"q": "", "limit": 3}).json() == {"total": 15, "ids": [0, 1, 2]}


def test_fold_keeps_indic_signs_and_drops_latin_accents():
    assert fold("Zoë  KEATING") == "zoe keating"
    assert fold("ਮਿੱਟੀ") == unicodedata.normalize("NFC", "ਮਿੱਟੀ") and fold("ਮਿੱਟੀ") != fold("ਮਿਟੀ")  # addak kept
    assert fold("हिंदी") != fold("हिदी")  # anusvara kept
    assert fold("ﬁ") == "fi"


def test_seed_by_title_or_artist_title_and_409_when_several(client):
    songs = client.get("/api/songs").json()
    target = next(s for s in songs if s["artist"] == "Zoë Keating")
    for text in (target["title"], target["title"].upper(), f"zoe keating - {target['title']}", target["key"]):
        r = client.get("/api/recommend", params={"seed": text, "k": 3})
        assert r.status_code == 200, (text, r.text)
        assert r.json()["seeds"][0]["id"] == target["id"]
    r = client.get("/api/recommend", params={"seed": "same song", "k": 3})
    assert r.status_code == 409
    body = r.json()
    assert "2 songs" in body["detail"] and sorted(c["artist"] for c in body["candidates"]) == [
        "Lata Mangeshkar", "ਗੁਰਦਾਸ ਮਾਨ"]
    assert client.get("/api/recommend", params={"seed": "Lata Mangeshkar - Same Song", "k": 3}).status_code == 200


def test_recommend_command_takes_the_same_seeds(synthetic, tmp_path, capsys):
    from siamrec.commands.recommend import recommend
    from siamrec.errors import SiamrecError

    run, _ = synthetic
    rows = recommend(make_cfg("recommend", [f"run={run}", PLAIN, "recommend.seed='zoe keating - drone song 6'",
                                            "recommend.k=2"], tmp_path), tmp_path)
    assert {r[0] for r in rows} == {"drone/drone_2.flac"}
    rows = recommend(make_cfg("recommend", [f"run={run}", PLAIN, "recommend.seed=6", "recommend.k=2"], tmp_path), tmp_path)
    assert {r[0] for r in rows} == {"drone/drone_2.flac"}  # an id
    with pytest.raises(SiamrecError, match="names 2 songs"):
        recommend(make_cfg("recommend", [f"run={run}", PLAIN, "recommend.seed='Same Song'", "recommend.k=2"], tmp_path),
                  tmp_path)


def test_k_in_the_answer_is_the_k_used(client):
    r = client.get("/api/recommend", params={"seed": 0, "k": 200}).json()
    assert r["k"] == len(r["playlist"]) == 14 and r["k_asked"] == 200


def test_cover_art_embedded_else_beside_the_file(tmp_path):
    import soundfile as sf
    from mutagen.flac import FLAC, Picture

    library = tmp_path / "library" / "Artist" / "Album"
    library.mkdir(parents=True)
    y = np.zeros(8000, dtype=np.float32)
    for name in ("embedded", "beside"):
        sf.write(library / f"{name}.flac", y, 8000)
    pic = Picture()
    pic.type, pic.mime, pic.data = 3, "image/png", b"\x89PNG\r\n\x1a\nembedded"
    audio = FLAC(library / "embedded.flac")
    audio.add_picture(pic)
    audio.save()
    (library / "Folder.JPG").write_bytes(b"\xff\xd8\xffbeside")
    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "embeddings.npy", np.eye(3, dtype=np.float32)[:2])
    (run / "items.csv").write_text("key,path,labels,split,group\n"
                                   f"a,{library / 'embedded.flac'},,,\nb,{library / 'beside.flac'},,,\n")
    c = TestClient(create_app(run, make_cfg("serve", [f"run={run}", PLAIN], tmp_path)))
    r = c.get("/api/cover/0")
    assert r.status_code == 200 and r.content.endswith(b"embedded") and r.headers["content-type"] == "image/png"
    r = c.get("/api/cover/1")
    assert r.status_code == 200 and r.content.endswith(b"beside")
    (library / "Folder.JPG").unlink()
    c2 = TestClient(create_app(run, make_cfg("serve", [f"run={run}", PLAIN], tmp_path)))
    assert c2.get("/api/cover/1").status_code == 404 and "no cover" in c2.get("/api/cover/1").json()["detail"]


def test_saved_playlists_are_m3u8_listed_and_what_data_playlists_learns_from(client, tmp_path, synthetic):
    _, library = synthetic
    songs = client.get("/api/songs").json()
    seed = next(s for s in songs if s["artist"] == "Zoë Keating")
    playlist = client.get("/api/recommend", params={"seed": seed["id"], "k": 4}).json()["playlist"]
    ids = [seed["id"], *(e["id"] for e in playlist)]
    r = client.post("/api/playlists", json={"name": "ਸ਼ਾਮ / evening\nmix", "ids": ids})
    assert r.status_code == 200, r.text
    saved = r.json()
    folder = tmp_path / "saved"
    path = folder / saved["file"]
    assert path.is_file() and path.parent == folder and saved["file"] == "ਸ਼ਾਮ _ evening mix.m3u8"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U" and lines[2] == f"#EXTINF:{round(seed['duration'])},{seed['name']}"
    assert lines[3] == str(library / seed["key"])  # the seed is the first track
    listed = client.get("/api/playlists").json()
    assert listed["playlists"] == [{"name": path.stem, "file": path.name, "ids": ids, "missing": 0}]
    again = client.post("/api/playlists", json={"name": "ਸ਼ਾਮ / evening\nmix", "ids": ids[:2]})
    assert again.status_code == 409 and "replace" in again.json()["detail"]
    assert client.post("/api/playlists", json={"name": "ਸ਼ਾਮ / evening\nmix", "ids": ids[:2],
                                               "overwrite": True}).status_code == 200
    client.post("/api/playlists", json={"name": "second", "ids": ids[1:4]})
    # the folder is exactly what train data=playlists data.playlists=DIR reads: each playlist a tag
    lib = from_playlists(OmegaConf.create({"playlists": str(folder)}))
    by_path = dict(zip(lib.paths, lib.labels))
    assert by_path[str(library / songs[ids[1]]["key"])] == ("second", "ਸ਼ਾਮ _ evening mix")
    assert len(lib.paths) == 4


def test_export_json_is_strict_with_a_nan_similarity_and_csv_quotes(client):
    body = {"format": "json", "seed_name": "x", "items": [{"id": 0, "similarity": float("nan")}, {"id": "1"}]}
    r = client.post("/api/export", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 200
    data = json.loads(r.content, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data["x"]["playlist"][0]["similarity"] is None and data["x"]["playlist"][0]["artist"] == "Béla Fleck"
    body["format"] = "csv"
    body["seed_name"] = 'a "quoted",\nname'
    text = client.post("/api/export", content=json.dumps(body), headers={"content-type": "application/json"}).text
    import csv

    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 and rows[0]["seed"] == 'a "quoted",\nname' and rows[0]["title"] == "Beats Song 0"


def test_json_seeds_may_be_integers_and_errors_are_sentences(client):
    r = client.post("/api/recommend", json={"seeds": [0, "1"], "k": 3})
    assert r.status_code == 200 and [s["id"] for s in r.json()["seeds"]] == [0, 1]
    r = client.get("/api/recommend", params={"seed": 0, "k": 0})
    assert r.status_code == 422 and r.json()["detail"].startswith("k=0: the playlist length must be between 1 and")
    r = client.get("/api/recommend", params={"seed": 0, "k": "ten"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str) and "k='ten'" in r.json()["detail"]
    huge = "9" * 5000
    for url in (f"/api/audio/{huge}", f"/api/cover/{huge}", f"/api/recommend?seed={huge}&k=3"):
        r = client.get(url)
        assert r.status_code == 404 and len(r.json()["detail"]) < 200, url


FUZZ = ["0", "-1", "1e3", "9" * 5000, "", " ", "nan", "inf", "null", "true", "../x", "%00", "%0A", "ਪੰਜਾਬੀ",
        "'; DROP", "[]", "{}", "1.5", "１", "2" * 30, "a" * 10000]


def test_fuzz_every_route_answers_4xx_never_5xx(client):
    """A hand-rolled fuzz table: every route, every parameter, odd values; no 5xx and always a JSON sentence."""
    calls = []
    for v in FUZZ:
        calls += [("get", f"/api/audio/{v}", {}), ("get", f"/api/cover/{v}", {}),
                  ("get", "/api/recommend", {"params": {"seed": v, "k": 3}}),
                  ("get", "/api/recommend", {"params": {"seed": 0, "k": v}}),
                  ("get", "/api/recommend", {"params": {"seed": 0, "k": 3, "exclude_group": v}}),
                  ("get", "/api/export", {"params": {"seed": 0, "format": v}}),
                  ("get", "/api/export", {"params": {"seed": v, "k": v}}),
                  ("get", "/api/search", {"params": {"q": v, "limit": v}}),
                  ("post", "/api/recommend", {"json": {"seeds": [v], "k": 3}}),
                  ("post", "/api/recommend", {"json": {"seeds": [0], "k": v}}),
                  ("post", "/api/recommend", {"content": v.encode("utf-8", "replace"),
                                              "headers": {"content-type": "application/json"}}),
                  ("post", "/api/recommend", {"files": {"file": ("x.wav", v.encode("utf-8", "replace"))},
                                              "data": {"k": v}}),
                  ("post", "/api/export", {"json": {"format": v, "items": [{"id": v, "similarity": v}]}}),
                  ("post", "/api/playlists", {"json": {"name": v, "ids": [v]}}),
                  ("post", "/api/playlists", {"json": {"name": "ok", "ids": v}})]
    calls += [("post", "/api/recommend", {"json": {"seeds": [1e308], "k": 1e308}}),
              ("post", "/api/recommend", {"json": {"seeds": [], "k": 3}}),
              ("post", "/api/recommend", {"json": [1, 2]}),
              ("post", "/api/export", {"content": b'{"items": [{"id": 0, "similarity": 1e400}], "format": "json"}',
                                       "headers": {"content-type": "application/json"}}),
              ("post", "/api/export", {"content": b'{"items": [{"id": 0, "similarity": NaN}], "format": "json"}',
                                       "headers": {"content-type": "application/json"}}),
              ("post", "/api/recommend", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}),
              ("post", "/api/recommend", {"files": {"file": ("x.wav", b"")}}),
              ("delete", "/api/songs", {}), ("get", "/api/nothing", {})]
    for method, url, kwargs in calls:
        r = getattr(client, method)(url, **kwargs)
        assert r.status_code < 500, (method, url[:80], str(kwargs)[:120], r.status_code, r.text[:300])
        if r.status_code >= 400:
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, (url[:80], detail)


def test_serve_stopped_by_ctrl_c_exits_0_and_leaves_no_run_folder(synthetic, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from conftest import REPO

    run, _ = synthetic
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "siamrec", "serve", f"run={run}", f"port={port}",
                             f"hydra.run.dir={out}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # ready when it says so (a bare connect could reach another test's server that took the freed port meanwhile)
    import select

    deadline, seen = time.time() + 120, []
    while time.time() < deadline and not any("Ctrl-C stops" in line for line in seen):
        assert proc.poll() is None, proc.communicate()
        if select.select([proc.stdout], [], [], 1)[0]:
            seen.append(proc.stdout.readline())
    assert any("Ctrl-C stops" in line for line in seen), seen
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    stdout = "".join(seen) + stdout
    assert proc.returncode == 0, (stdout, stderr)
    assert "stopped" in stdout and "interrupted" not in stdout + stderr
    assert not out.exists()  # serve wrote nothing there: no run folder is left


def test_recommend_out_file_leaves_no_run_folder(synthetic, tmp_path, capsys):
    from siamrec.cli import main

    run, _ = synthetic
    out = tmp_path / "out"
    code = main(["recommend", f"run={run}", "seed=0", "k=2", f"out={tmp_path / 'mine.csv'}", f"hydra.run.dir={out}"])
    assert code == 0 and (tmp_path / "mine.csv").is_file() and not out.exists()
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f"written to {tmp_path / 'mine.csv'}")


def test_a_file_name_with_a_newline_exports_and_reads_back(tmp_path):
    """Issue 21.4: a newline (legal on Linux) in a file name or a title injects no line into M3U8 or CSV."""
    import csv

    import soundfile as sf

    from siamrec.m3u import read_entries

    music = tmp_path / "music"
    music.mkdir()
    names = ["evil\n#EXTINF:1,injected\nother.wav", "plain.wav"]
    for n in names:
        sf.write(music / n, np.zeros(800, dtype=np.float32), 8000)
    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "embeddings.npy", np.eye(2, dtype=np.float32))
    with open(run / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["key", "path", "labels", "split", "group", "title", "artist", "album", "duration", "mbid"])
        for i, n in enumerate(names):
            w.writerow([n, str(music / n), "", "", "", f"t\r\n{i}", "a\nb", "", "1", ""])
    c = TestClient(create_app(run, make_cfg("serve", [f"run={run}", PLAIN], tmp_path)))
    m3u = c.get("/api/export", params={"seed": 1, "k": 1, "format": "m3u8"}).content.decode("utf-8")
    assert "#EXTINF:1,injected" not in m3u.splitlines() and "other.wav" not in m3u.splitlines()
    assert len(m3u.splitlines()) == 6  # #EXTM3U, #PLAYLIST, 2 × (#EXTINF, path)
    (tmp_path / "x.m3u8").write_text(m3u, encoding="utf-8")
    assert [p for _, p, _ in read_entries(tmp_path / "x.m3u8")] == [str(music / names[1]), str(music / names[0])]
    text = c.get("/api/export", params={"seed": 1, "k": 1, "format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["path"] == str(music / names[0]) and rows[0]["title"] == "t\r\n0"
