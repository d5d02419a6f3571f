"""The radio rules and song paths in the web API, and the OpenSubsonic endpoints used by a real Subsonic client
library (py-opensonic) against the app served by uvicorn on a loopback port."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import make_cfg  # noqa: E402
from radio_lib import EXPECTED_DEFAULT, radio_run  # noqa: E402
from siamrec.serve.app import create_app  # noqa: E402

USER, PASSWORD = "listener", "sécret pass"


@pytest.fixture
def run(tmp_path):
    import soundfile as sf

    run = radio_run(tmp_path / "run")
    rng = np.random.default_rng(0)
    for line in (run / "items.csv").read_text(encoding="utf-8").splitlines()[1:]:
        path = run / "music" / line.split(",")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * rng.normal(size=800), 8000, format="FLAC")
    return run


def app_for(run, tmp_path, *overrides):
    return create_app(run, make_cfg("serve", [f"run={run}", *overrides], tmp_path))


def test_a_trained_heads_run_is_served_without_the_sound_rules_unless_asked(run, tmp_path, capsys):
    """Row 13 lies a hair from row 12: a duplicate by sound on a label-free embedding, a song of its own on a
    trained head's (siamrec.rules.sound_note); the server says so once, a request may ask for the rules."""
    from siamrec.rules import Rules, sound_note
    from siamrec.runs import mark_finished

    (run / "head.json").write_text('{"kind": "siamese", "target": "x", "cfg": {}}', encoding="utf-8")
    mark_finished(run)
    capsys.readouterr()
    client = TestClient(app_for(run, tmp_path))
    assert sound_note(Rules(dup_distance=0.01), label_free=False) in capsys.readouterr().out.splitlines()
    got = client.get("/api/recommend", params={"seed": 0, "k": 10}).json()
    assert [e["id"] for e in got["playlist"]] == [3, 4, 6, 8, 10, 12, 13, 9, 14, 15]
    forced = client.get("/api/recommend", params={"seed": 0, "k": 10, "dup_on_trained": "true"}).json()
    assert [e["id"] for e in forced["playlist"]] == EXPECTED_DEFAULT


def test_api_playlists_follow_the_rules_and_their_query_parameters(run, tmp_path):
    client = TestClient(app_for(run, tmp_path))
    got = client.get("/api/recommend", params={"seed": 0, "k": 10}).json()
    assert [e["id"] for e in got["playlist"]] == EXPECTED_DEFAULT and got["note"] is None
    assert got["rules"]["max_per_artist"] == 2
    plain = client.get("/api/recommend", params={"seed": 0, "k": 10, "rules": "false"}).json()
    assert [e["id"] for e in plain["playlist"]] == list(range(1, 11)) and plain["rules"] is None
    one = client.get("/api/recommend", params={"seed": 0, "k": 3, "max_per_artist": 1}).json()
    assert [e["id"] for e in one["playlist"]] == [3, 6, 8]
    rock = client.get("/api/recommend", params={"seed": 0, "k": 5, "labels": "rock"}).json()
    assert [e["id"] for e in rock["playlist"]] == [15] and "only 1 of k=5" in rock["note"]
    bad = client.get("/api/recommend", params={"seed": 0, "max_per_artist": 0})
    assert bad.status_code == 422 and "max_per_artist" in bad.json()["detail"]
    for name, value in (("max_per_artist", "two"), ("dedupe", "maybe"), ("dup_distance", "near"), ("rules", "perhaps")):
        bad = client.get("/api/recommend", params={"seed": 0, name: value})
        assert bad.status_code == 422 and name in bad.json()["detail"], (name, bad.text)
    # every rule is documented as a query parameter of the playlist endpoints
    spec = client.get("/openapi.json").json()["paths"]
    for path in ("/api/recommend", "/api/export", "/api/path"):
        names = {p["name"] for p in spec[path]["get"]["parameters"]}
        assert {"rules", "max_per_artist", "album_gap", "dedupe", "labels", "exclude", "min_duration"} <= names, path
    # the server's own setting: none gives the plain list
    plain_server = TestClient(app_for(run, tmp_path, "recommend.rules=none"))
    assert [e["id"] for e in plain_server.get("/api/recommend", params={"seed": 0, "k": 10}).json()["playlist"]] \
        == list(range(1, 11))
    path = client.get("/api/path", params={"from": 0, "to": 25, "k": 4}).json()
    ids = [e["id"] for e in path["path"]]
    assert ids[0] == 0 and ids[-1] == 25 and len(ids) == 6 and len(set(ids)) == 6
    assert all("similarity_a" in e and "similarity_b" in e for e in path["path"])
    assert client.get("/api/path", params={"from": 0, "to": 0}).status_code == 422


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(run, tmp_path, monkeypatch):
    """The app on a free 127.0.0.1 port (uvicorn in a thread); yields (port, set_overrides)."""
    import uvicorn

    servers = []

    def start(*overrides):
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app_for(run, tmp_path, *overrides), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        servers.append((server, thread))
        return port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def subsonic(served, monkeypatch):
    """(libopensonic, port, a client connected with the server's credentials)."""
    libopensonic = pytest.importorskip("libopensonic")
    monkeypatch.setenv("SIAMREC_SUBSONIC_USER", USER)
    monkeypatch.setenv("SIAMREC_SUBSONIC_PASSWORD", PASSWORD)
    port = served("query_expansion=0")  # similarities as the seed's own cosines, worked out from radio_lib's table
    conn = libopensonic.Connection("http://127.0.0.1", USER, PASSWORD, port=port)
    yield libopensonic, port, conn
    conn.cleanup()


def test_a_subsonic_client_gets_sonic_similarity_and_plays_it(run, subsonic):
    libopensonic, port, conn = subsonic
    assert conn.ping()
    assert any(e.name == "sonicSimilarity" and 1 in e.versions for e in conn.get_open_subsonic_extensions())
    matches = conn.get_sonic_similar_tracks("0", count=10)
    assert [m.entry.id for m in matches] == [str(i) for i in EXPECTED_DEFAULT]
    assert all(0 <= m.similarity <= 1 for m in matches)
    assert matches[0].similarity == pytest.approx(1 / np.sqrt(1 + 0.9 ** 2), abs=1e-5)
    assert matches[0].entry.artist == "A feat. Z" and matches[0].entry.title == "A3"
    assert matches[0].entry.duration == 190 and matches[0].entry.album == "Alb2"
    path = conn.find_sonic_path("0", "25", count=6)
    assert [m.entry.id for m in path][0] == "0" and path[-1].entry.id == "25" and len(path) == 6
    similar = conn.get_similar_songs("0", count=10)
    assert [s.id for s in similar] == [str(i) for i in EXPECTED_DEFAULT]
    song = conn.get_song("3")
    assert song.title == "A3" and song.suffix == "flac"
    body = _read(conn, conn.stream("3"))  # the sync wrapper hands back aiohttp's response
    assert body == (run / "music" / "A feat. Z/Alb2/03 A3.flac").read_bytes()
    bad = libopensonic.Connection("http://127.0.0.1", USER, "wrong", port=port)
    try:
        with pytest.raises(Exception, match="(?i)wrong username or password"):
            bad.get_sonic_similar_tracks("0")
    finally:
        bad.cleanup()
    # XML (the Subsonic default), GET without .view, token authentication by hand
    salt = "c19b2d"
    token = hashlib.md5((PASSWORD + salt).encode()).hexdigest()
    r = httpx.get(f"http://127.0.0.1:{port}/rest/getSonicSimilarTracks",
                  params={"id": 0, "count": 3, "u": USER, "t": token, "s": salt, "v": "1.16.1", "c": "test"})
    root = ET.fromstring(r.content)
    ns = {"s": "http://subsonic.org/restapi"}
    assert root.get("status") == "ok"
    assert [m.find("s:entry", ns).get("id") for m in root.findall("s:sonicMatch", ns)] == ["3", "4", "6"]
    assert 0 <= float(root.find("s:sonicMatch", ns).get("similarity")) <= 1


def test_a_subsonic_client_finds_a_seed_by_browsing_and_searching(subsonic):
    """search3, getArtists, getArtist and getAlbum in the shapes py-opensonic parses: a client finds the seed
    and asks for its sonic matches."""
    conn = subsonic[2]
    found = conn.search3("TUM hi ho")  # folded: any case
    assert sorted(s.id for s in found.song) == ["0", "1"] and not found.artist and not found.album
    seed = next(s for s in found.song if s.title == "Tum Hi Ho")
    assert [m.entry.id for m in conn.get_sonic_similar_tracks(seed.id, count=10)] == \
        [str(i) for i in EXPECTED_DEFAULT]
    assert [s.id for s in conn.search3("wembley").song] == ["11"]
    paged = conn.search3("filler", song_count=3, song_offset=2)
    assert [s.id for s in paged.song] == ["18", "19", "20"]
    assert [a.name for a in conn.search3("albd").album] == ["AlbD"]

    index = conn.get_artists().index
    artists = {a.name: a for i in index for a in i.artist}
    # "A feat. Z" is artist A, "c" is "C" (the radio rules' artist); the name is the most common spelling
    assert "A feat. Z" not in artists and "c" not in artists and artists["A"].album_count == 5
    assert [i.name for i in index] == sorted(i.name for i in index)
    d = conn.get_artist(artists["D"].id)
    assert [al.name for al in d.album] == ["AlbD"] and d.album[0].song_count == 2
    album = conn.get_album(d.album[0].id)
    assert [s.id for s in album.song] == ["8", "9"] and album.artist == "D" and album.duration == 320
    assert album.song[0].album_id == album.id and album.song[0].artist_id == d.id
    with pytest.raises(Exception, match="(?i)not found"):
        conn.get_album("al-0000")


def _read(conn, response) -> bytes:
    import asyncio

    return asyncio.run_coroutine_threadsafe(response.read(), conn._loop).result(timeout=10)


def test_subsonic_credentials_when_unset(run, served, tmp_path, monkeypatch):
    monkeypatch.delenv("SIAMREC_SUBSONIC_USER", raising=False)
    monkeypatch.delenv("SIAMREC_SUBSONIC_PASSWORD", raising=False)
    port = served()
    # on this machine: no credentials needed
    r = httpx.get(f"http://127.0.0.1:{port}/rest/getSonicSimilarTracks.view", params={"id": 0, "f": "json"})
    assert r.json()["subsonic-response"]["status"] == "ok"
    # from another address (the test client's host is not a loopback address): error 40
    remote = TestClient(app_for(run, tmp_path)).get("/rest/ping", params={"f": "json"}).json()["subsonic-response"]
    assert remote["status"] == "failed" and remote["error"]["code"] == 40
    # allow_remote=true: credentials are required, even here
    port = served("serve.allow_remote=true")
    r = httpx.get(f"http://127.0.0.1:{port}/rest/ping", params={"f": "json"}).json()["subsonic-response"]
    assert r["status"] == "failed" and r["error"]["code"] == 40


def test_a_song_streamed_as_wav_tells_subsonic_clients_so(run, tmp_path, monkeypatch):
    """A format browsers and players do not all play (AIFF here; WMA, WavPack, ... alike) is streamed as WAV: its
    entry keeps the file's own suffix and type and adds Subsonic's transcodedSuffix and transcodedContentType."""
    import soundfile as sf

    from siamrec.runs import mark_finished

    items = run / "items.csv"
    items.write_text(items.read_text(encoding="utf-8").replace("03 A3.flac", "03 A3.aiff"), encoding="utf-8")
    (run / "music" / "A feat. Z" / "Alb2" / "03 A3.flac").unlink()
    sf.write(run / "music" / "A feat. Z" / "Alb2" / "03 A3.aiff", np.zeros(800), 8000, format="AIFF")
    mark_finished(run)
    monkeypatch.setenv("SIAMREC_SUBSONIC_USER", USER)
    monkeypatch.setenv("SIAMREC_SUBSONIC_PASSWORD", PASSWORD)
    client = TestClient(app_for(run, tmp_path))
    auth = {"u": USER, "p": PASSWORD, "v": "1.16.1", "c": "test", "f": "json"}
    aiff = client.get("/rest/getSong", params={"id": 3, **auth}).json()["subsonic-response"]["song"]
    assert (aiff["suffix"], aiff["transcodedSuffix"], aiff["transcodedContentType"]) == ("aiff", "wav", "audio/wav")
    assert aiff["contentType"] in ("audio/x-aiff", "audio/aiff")  # the file's own type (the system's MIME table)
    flac = client.get("/rest/getSong", params={"id": 4, **auth}).json()["subsonic-response"]["song"]
    assert flac["suffix"] == "flac" and flac["contentType"] == "audio/flac" and "transcodedSuffix" not in flac
    streamed = client.get("/rest/stream", params={"id": 3, **auth})
    assert streamed.headers["content-type"] == "audio/wav" and streamed.content[:4] == b"RIFF"


def test_apple_lossless_m4a_is_played_as_wav(run, tmp_path):
    """iTunes' lossless rips are .m4a files holding ALAC, which browsers do not play: the page gets them as WAV,
    sample for sample; an .m4a holding AAC is sent as it is."""
    import shutil
    import subprocess

    import soundfile as sf

    from siamrec.runs import mark_finished

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed (it writes and reads Apple Lossless)")
    folder = run / "music" / "A feat. Z" / "Alb2"
    source = (0.3 * np.sin(np.arange(8000) * 0.05)[:, None] * [1.0, 0.5]).astype(np.float32)
    sf.write(tmp_path / "src.wav", source, 8000, subtype="PCM_16")
    for name, codec in (("03 A3.m4a", "alac"), ("A4.m4a", "aac")):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "src.wav"), "-c:a", codec,
                        str(folder / name)], check=True)
    items = run / "items.csv"
    items.write_text(items.read_text(encoding="utf-8").replace("03 A3.flac", "03 A3.m4a"), encoding="utf-8")
    mark_finished(run)
    client = TestClient(app_for(run, tmp_path))
    got = client.get("/api/audio/3")
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    y, sr = sf.read(io.BytesIO(got.content), dtype="int16")
    assert sr == 8000 and np.array_equal(y, sf.read(tmp_path / "src.wav", dtype="int16")[0])
    from siamrec.serve.catalogue import _lossless_mp4

    assert _lossless_mp4(str(folder / "03 A3.m4a")) and not _lossless_mp4(str(folder / "A4.m4a"))
    cat = client.app.state.catalogue
    assert cat.transcoded(3) and not cat.transcoded(4)  # what Subsonic's transcodedSuffix is given by


def test_the_tag_scan_records_apple_lossless_and_the_page_marks_it_wav_without_reading_files(run, tmp_path,
                                                                                             monkeypatch):
    """The tag scan keeps an MP4's codec in items.csv, so the song list says an ALAC .m4a is played as WAV (the
    page marks it) without reading any file's header; an AAC .m4a stays native."""
    import shutil
    import subprocess

    import soundfile as sf

    import siamrec.serve.catalogue as catalogue
    from siamrec.data.tags import read_tags
    from siamrec.runs import mark_finished, read_embeddings, write_embeddings

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed (it writes Apple Lossless)")
    sf.write(tmp_path / "src.wav", 0.3 * np.sin(np.arange(8000) * 0.05), 8000, subtype="PCM_16")
    emb, items = read_embeddings(run)
    for row, codec in ((3, "alac"), (4, "aac")):
        path = Path(items[row]["path"]).with_suffix(".m4a")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "src.wav"), "-c:a", codec, str(path)],
                       check=True)
        items[row]["path"] = str(path)
    tags = [read_tags(items[row]["path"]) for row in (3, 4)]
    assert tags[0]["codec"] == "alac" and tags[1]["codec"].startswith("mp4a")
    for row, t in zip((3, 4), tags):
        items[row].update(t)
    write_embeddings(run, emb, [i["key"] for i in items], [i["path"] for i in items],
                     [tuple(filter(None, i["labels"].split("|"))) for i in items], [i["split"] for i in items],
                     [i["group"] for i in items], items)
    mark_finished(run)

    def no_reading(path):
        raise AssertionError(f"{path}: a file's header was read to list the songs")

    monkeypatch.setattr(catalogue, "_lossless_mp4", no_reading)
    client = TestClient(app_for(run, tmp_path))
    songs = {s["id"]: s for s in client.get("/api/songs").json()}
    assert songs[3]["playable"] == "wav" and songs[4]["playable"] == "native"
    cat = client.app.state.catalogue
    assert cat.transcoded(3) and not cat.transcoded(4)
    got = client.get("/api/audio/3")
    assert got.headers["content-type"] == "audio/wav" and got.content[:4] == b"RIFF"


def test_the_server_ranks_by_the_seed_expanded_with_its_nearest_songs(run, tmp_path):
    """Plain and ruled playlists rank by the seed expanded as `recommend` and scoring expand it (query_expansion)."""
    from siamrec.index import ExactIndex

    emb = np.load(run / "embeddings.npy")
    expand = int(make_cfg("serve", [f"run={run}"], tmp_path).query_expansion)
    assert expand > 0
    index = ExactIndex(emb).with_expansion(expand)
    query = index.expanded(emb[[0]], np.array([0]))[0]
    cosine = index.vectors @ query
    client = TestClient(app_for(run, tmp_path))
    for rules in ("false", "true"):
        got = client.get("/api/recommend", params={"seed": 0, "k": 10, "rules": rules}).json()["playlist"]
        assert [e["similarity"] for e in got] == pytest.approx([float(cosine[e["id"]]) for e in got], abs=1e-5)
    plain = client.get("/api/recommend", params={"seed": 0, "k": 10, "rules": "false"}).json()["playlist"]
    assert [e["id"] for e in plain] == [int(j) for j in np.argsort(-cosine, kind="stable") if j != 0][:10]
    seed_cosine = index.vectors @ index.vectors[0]
    assert abs(plain[0]["similarity"] - seed_cosine[plain[0]["id"]]) > 1e-3  # not the seed's own cosine
