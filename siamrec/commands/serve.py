"""`serve run=RUN`: a local web app to browse a run's library, hear songs, get and export playlists.

`serve data=library data.root=~/Music` (or data=beets) is the one command for a listener: it builds or updates the
library's index folder first (as `extract data=...` without run= does: only new and changed songs are embedded,
progress in the terminal and in the folder's progress.json), then serves it.

Binds 127.0.0.1:8000 by default (`serve.host`, `serve.port`); another address needs `serve.allow_remote=true`
(the app has no authentication) and prints a warning. The app never writes into the run folder except its map
cache (map2d.npz, atomically) and the playlists saved from the page (serve.playlists_dir, default RUN/playlists/);
a faiss index is built in memory, never saved there. Ctrl-C (or SIGTERM) stops it: "stopped", exit 0; it leaves
no outputs/DATE/TIME/ folder behind (the CLI removes a run folder a command wrote nothing into).
"""

from __future__ import annotations

import signal
import socket
import time

from siamrec.errors import SiamrecError
from siamrec.runs import existing_run

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_host(serve_cfg) -> tuple[str, int]:
    host, port = str(serve_cfg.host), serve_cfg.port  # defaults: conf/serve/default.yaml
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SiamrecError(f"serve.port={port!r}: must be an integer in 0..65535")
    if host not in LOCAL_HOSTS and not host.startswith("127."):
        if not serve_cfg.allow_remote:
            raise SiamrecError(f"serve.host={host}: the app has no authentication, so it listens on this machine "
                               "only; add serve.allow_remote=true to expose it on your network anyway")
        print(f"WARNING: serve.host={host}: anyone who can reach this address can browse and download the "
              "library (no authentication)", flush=True)
    return host, port


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def serve(cfg, run_dir) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise SiamrecError(f"serve needs the web extra ({exc.name} is missing): pip install -e \".[serve]\"") from None
    host, port = check_host(cfg.serve)
    if not cfg.get("run") and cfg.data.source in ("library", "beets"):  # your music: build or update its index
        serve_while_building(cfg, run_dir, host, port)
        return
    run = existing_run(cfg.run)
    sock = bind(host, port)  # before printing the URL: a port in use is one clear line
    app = start_app(run, cfg, sock)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    stopped_by_user(lambda: server.run(sockets=[sock]))
    print("siamrec serve: stopped", flush=True)


def start_app(run, cfg, sock):
    """The web app of the index folder `run`, its map started; prints where it is. The objects made so far (the
    library's songs: a few per song) are moved out of the garbage collector's reach (gc.freeze): they live as long
    as the server, and a full collection went through all of them, a pause of ~110 ms per 100,000 songs (about a
    second per million) that fell on whichever requests were waiting (scripts/bench_serve.py)."""
    import gc

    from siamrec.serve.app import create_app, plotly_js

    started = time.perf_counter()
    app = create_app(run, cfg)
    gc.collect()
    gc.freeze()
    cat = app.state.catalogue
    host, port = sock.getsockname()[:2]
    app.state.map.start()
    if plotly_js() is None:
        print("the map needs plotly: pip install plotly (the other panels work without it)")
    print(f"{len(cat)} songs of {run} ({cat.index.method} search), ready in {time.perf_counter() - started:.1f} s")
    api = f"{url_of(host, port)}docs" if app.state.has_docs else f"{url_of(host, port)}openapi.json"
    print(f"siamrec serve: open {url_of(host, port)} (API: {api}); Ctrl-C stops", flush=True)
    return app


def serve_while_building(cfg, run_dir, host: str, port: int) -> None:
    """A listener's library: the address answers at once with a page showing the indexing's progress (songs done /
    total, ETA: the index folder's progress.json) while this thread builds or updates the index, then serves the
    library there. Ctrl-C during the build keeps every finished song (as extract does) and stops the server."""
    import threading

    import uvicorn

    from siamrec.commands.extract import extract, output_folder
    from siamrec.serve.building import Switch

    sock = bind(host, port)
    switch = Switch(output_folder(cfg, run_dir))
    server = uvicorn.Server(uvicorn.Config(switch, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="siamrec-serve", daemon=True)
    thread.start()
    print(f"siamrec serve: indexing; open {url_of(host, sock.getsockname()[1])} to follow it", flush=True)
    try:
        switch.app = start_app(extract(cfg, run_dir), cfg, sock)
        stopped_by_user(lambda: _wait(thread))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print("siamrec serve: stopped", flush=True)


def _wait(thread) -> None:
    while thread.is_alive():
        thread.join(timeout=0.5)  # short waits: Ctrl-C and SIGTERM are seen at once


def _stop(_signum, _frame):
    raise KeyboardInterrupt


def stopped_by_user(run) -> None:
    """Call `run` (the server); Ctrl-C or SIGTERM, which uvicorn re-raises after its graceful shutdown, is the
    user stopping it: not an interruption of unfinished work."""
    import threading

    main = threading.current_thread() is threading.main_thread()  # signal handlers are the main thread's
    previous = signal.signal(signal.SIGTERM, _stop) if main else None
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a SiamrecError saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small JSON answers: no Nagle delay
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        raise SiamrecError(f"serve.port={port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                           "choose another port=") from None
    sock.set_inheritable(True)
    return sock
