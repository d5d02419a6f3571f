"""Issue 17, item 3: `serve data=library` answers at once with the indexing's progress (songs done / total, ETA),
then serves the library at the same address when its index is built."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import serve_lib
from conftest import make_cfg


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def wait_for(predicate, seconds: float = 60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_the_page_shows_indexing_progress_then_the_library(tmp_path, monkeypatch):
    from siamrec.commands import extract as extract_module
    from siamrec.commands import serve as serve_module
    from siamrec.progress import Progress

    library = serve_lib.make_library(tmp_path / "music", per_label=2, seconds=1.0)
    run = serve_lib.synthetic_run(tmp_path / "built", library)
    index = tmp_path / "index"
    built, stop, sockets = threading.Event(), threading.Event(), []

    def slow_extract(cfg, run_dir):  # an index being built: 3 of 10 songs embedded, then done when the test says
        index.mkdir(exist_ok=True)
        progress = Progress(index)
        progress.start_embedding(total=10, reused=0)
        for _ in range(3):
            progress.song()
        progress.write()
        assert built.wait(60)
        progress.finish()
        return run

    real_bind = serve_module.bind
    monkeypatch.setattr(extract_module, "extract", slow_extract)
    monkeypatch.setattr(serve_module, "bind", lambda host, port: sockets.append(real_bind(host, port)) or sockets[-1])
    monkeypatch.setattr(serve_module, "_wait", lambda thread: stop.wait(60))
    cfg = make_cfg("serve", ["data=library", f"data.root={library}", f"extract.out={index}", "serve.port=0"], tmp_path)
    serving = threading.Thread(target=serve_module.serve, args=(cfg, tmp_path / "run"), daemon=True)
    serving.start()
    try:
        base = wait_for(lambda: sockets and f"http://127.0.0.1:{sockets[0].getsockname()[1]}")
        status, page = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(base + "/")))
        assert "Indexing your library" in page and str(index) in page
        # the page can answer before the indexing thread has written its first progress ("scanning" until then)
        def embedding():
            status, body = get(base + "/api/progress")
            progress = json.loads(body) if status == 200 else {}
            return progress if progress.get("state") == "embedding" else None

        progress = wait_for(embedding)
        assert (progress["done"], progress["total"]) == (3, 10)
        assert get(base + "/api/songs")[0] == 503  # the library is not there yet: a readable 503, not a hang
        built.set()
        status, songs = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(base + "/api/songs")))
        listed = json.loads(songs)
        assert len(listed["songs"] if isinstance(listed, dict) else listed) == 6
        assert "Indexing your library" not in get(base + "/")[1]  # the page is the library's now
    finally:
        built.set()
        stop.set()
        serving.join(30)
    assert not serving.is_alive()
