"""extract.engine=ray: the same rows as the local engine (one machine, a killed driver restarted, two nodes).

Every Ray cluster here is started and stopped by these tests, on loopback addresses, with its files under a
temporary folder that is removed afterwards; token authentication stays on with a token given in the environment
(so nothing is written to ~/.ray).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from siamrec.commands.extract import extract
from siamrec.errors import SiamrecError
from siamrec.runs import read_csv

# Ray reads its settings once, when it is imported: token authentication with a token of these tests (given in the
# environment, so nothing is written to ~/.ray) is set before
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
_saved_env = {key: os.environ.get(key) for key in RAY_ENV}
os.environ.update(RAY_ENV)
try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason='Ray is not installed (pip install -e ".[ray]")')


def ray_engine(**settings):
    """The engine extract.engine=ray builds: conf/engine/ray.yaml with `settings` over it."""
    from siamrec.engines import make_engine

    return make_engine({"_target_": "siamrec.engines_ray.RayEngine", "address": None, "actors": None, "num_gpus": 0,
                        **settings})


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is not installed
    monkeypatch.delitem(sys.modules, "siamrec.engines_ray", raising=False)
    with pytest.raises(SiamrecError, match=r'pip install -e "\.\[ray\]"') as info:
        ray_engine()
    assert "\n" not in str(info.value)




@needs_ray
def test_bad_ray_settings_are_refused_in_one_line():
    for cfg, match in (({"actors": 0}, "extract.engine.actors=0"), ({"num_gpus": -1}, "extract.engine.num_gpus=-1")):
        with pytest.raises(SiamrecError, match=match):
            ray_engine(**cfg)
    assert ray_engine(address="auto", actors=3, num_gpus=0.5).actors == 3
    with pytest.raises(SiamrecError, match=r"extract.engine.address=127.0.0.1:\d+: no Ray cluster answers there"):
        ray_engine(address=f"127.0.0.1:{free_port()}")._connect()


# --- clusters of these tests only ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line names `text` (our temporary folder or port): what our clusters left."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def end(pids: list[int], grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{p}/cmdline").exists()
                                                  and Path(f"/proc/{p}/cmdline").read_bytes() for p in pids):
            time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def _restore_env():
    yield
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def ray_env():
    """Environment of every Ray process here: the tests' token, temporary files under a short private folder."""
    if ray is None:
        pytest.skip('Ray is not installed (pip install -e ".[ray]")')
    tmp = Path(tempfile.mkdtemp(prefix="sr-ray-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    env = {**RAY_ENV, "RAY_TMPDIR": str(tmp)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(tmp))
        yield tmp, env
        if ray.is_initialized():
            ray.shutdown()
    end(processes_mentioning(str(tmp)))
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from conftest import mixed_library

    return mixed_library(tmp_path_factory.mktemp("library"), broken=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory, library):
    from conftest import identity_run

    return identity_run(tmp_path_factory.mktemp("run"), library)


def test_an_actor_applies_the_runs_head(tmp_path_factory, library):
    """The rows an actor returns are the run's embeddings (its head applied to the song vectors), not the vectors:
    checked on a run whose head (LDA) changes them, without a cluster."""
    from conftest import identity_run

    from siamrec.embedder import ExtractJob, SongEmbedder
    from siamrec.engines_ray import EmbedSongs
    from siamrec.runs import read_embeddings

    run = identity_run(tmp_path_factory.mktemp("lda_run"), library, model="lda")
    actor = EmbedSongs.__new__(EmbedSongs)  # the actor without Ray's runtime: only its model
    actor.embedder = SongEmbedder(ExtractJob(run=str(run)), progress=False)
    emb, items = read_embeddings(run)
    songs = [(i, str(library / it["key"])) for i, it in enumerate(items)] + [(99, str(library / "high" / "broken.wav"))]
    rows = actor._embed(songs)
    assert [r[0] for r in rows] == [i for i, _ in songs]
    assert rows[-1][1] is None and rows[-1][2]  # the corrupt file: an error, in its place
    got = np.stack([r[1] for r in rows[:-1]])
    assert got.shape == emb.shape == (len(items), 2)
    np.testing.assert_allclose(got, emb, rtol=1e-4, atol=1e-4 * np.abs(emb).max())


def extract_cfg(cfg_factory, run, library, out, *extra):
    return cfg_factory("extract", f"run={run}", "data=folder", f"data.root={library}", f"extract.out={out}",
                       "extract.shard_size=3", *extra)


@pytest.fixture(scope="module")
def local(run, library, tmp_path_factory):
    """The local engine's output over the library: the reference."""
    from conftest import make_cfg

    tmp = tmp_path_factory.mktemp("local")
    out = tmp / "out"
    extract(make_cfg("extract", [f"run={run}", "data=folder", f"data.root={library}", f"extract.out={out}",
                                 "extract.shard_size=3"], tmp), tmp)
    return out


def assert_same_rows(out: Path, reference: Path) -> None:
    """Same items in the same order, embeddings within 1e-5, the same failed.csv."""
    assert [it["key"] for it in read_csv(out / "items.csv")] == [it["key"] for it in read_csv(reference / "items.csv")]
    a, b = np.load(out / "embeddings.npy"), np.load(reference / "embeddings.npy")
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
    assert read_csv(out / "failed.csv") == read_csv(reference / "failed.csv")


# --- the tests ----------------------------------------------------------------------------------------------------
def test_ray_rows_equal_the_local_engines(ray_env, run, library, local, tmp_path, cfg_factory):
    out = tmp_path / "ray"
    extract(extract_cfg(cfg_factory, run, library, out, "extract.engine=ray", "extract.engine.actors=1"), tmp_path)
    summary = json.loads((out / "extract.json").read_text())
    assert (summary["engine"], summary["embedded"], summary["failed"]) == ("ray", 12, 1)
    assert summary["ray_actors"] == 1 and sum(summary["ray_nodes"].values()) == 13
    assert_same_rows(out, local)
    assert [f["key"] for f in read_csv(out / "failed.csv")] == ["high/broken.wav"]
    assert not ray.is_initialized()  # the engine's own cluster is gone


def test_a_killed_ray_driver_restarted_finishes_with_the_same_rows(ray_env, run, library, local, tmp_path):
    tmp, env = ray_env
    out = tmp_path / "out"
    args = [sys.executable, "-m", "siamrec", "extract", f"run={run}", "data=folder", f"data.root={library}",
            f"extract.out={out}", "extract.engine=ray", "extract.engine.actors=1", "extract.shard_size=1",
            "features.batch_size=1", f"paths.cache={tmp_path / 'cache'}"]
    env = {**os.environ, **env}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([*args, f"hydra.run.dir={tmp_path / 'first'}"], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 240
        while not list((out / "store").glob("shard-*.npz")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first.kill()
        first.wait()
    assert not (out / "embeddings.npy").exists()  # it really died halfway
    deadline = time.monotonic() + 30
    while processes_mentioning(str(tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(str(tmp))  # the cluster it had started went with it
    kept = len(list((out / "store").glob("shard-*.npz")))
    second = subprocess.run([*args, f"hydra.run.dir={tmp_path / 'second'}"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().splitlines()[-1] == str(out)
    summary = json.loads((out / "extract.json").read_text())
    assert summary["reused"] >= kept and summary["reused"] + summary["embedded"] == 12
    assert_same_rows(out, local)


@pytest.fixture(scope="module")
def two_nodes(ray_env):
    """A head and a second node of one CPU each on this machine (loopback), started and stopped here."""
    tmp, env = ray_env
    port = free_port()

    def own_ports():  # Ray's fixed default ports would collide between two nodes on one machine
        return ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats", "--block",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    # `ray start`, except that 127.0.0.1 stays 127.0.0.1 (Ray resolves loopback to the machine's network address)
    ray_start = [sys.executable, "-c", "import ray._private.services as s; s.resolve_ip_for_localhost = lambda h: h; "
                 "from ray.scripts.scripts import main; main()", "start", "--node-ip-address=127.0.0.1"]
    nodes = []
    try:
        head = [*ray_start, "--head", f"--port={port}", f"--temp-dir={tmp}", "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}", *own_ports()]
        env = {**os.environ, **env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # SIGTERM: stop at once
        nodes.append(_start(head, env, tmp / "head.log"))
        worker = [*ray_start, f"--address=127.0.0.1:{port}", *own_ports()]
        nodes.append(_start(worker, env, tmp / "node.log"))
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):  # `ray start --block` stops its node's processes on SIGTERM
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        end(processes_mentioning(str(tmp)) + processes_mentioning(f"127.0.0.1:{port}"))


def _start(args: list[str], env: dict, log: Path, timeout: float = 120) -> subprocess.Popen:
    """`ray start ... --block`, returned once its node runs (it says so in its log)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"ray {' '.join(args[3:6])} failed: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    assert "Local node IP: 127.0.0.1" in log.read_text()  # loopback only
    return proc


def test_a_two_node_cluster_gives_the_same_rows_with_actors_on_both_nodes(two_nodes, run, library, local, tmp_path,
                                                                          cfg_factory):
    out = tmp_path / "ray2"
    extract(extract_cfg(cfg_factory, run, library, out, "extract.engine=ray", f"extract.engine.address={two_nodes}",
                        "features.batch_size=1"), tmp_path)
    summary = json.loads((out / "extract.json").read_text())
    assert summary["ray_actors"] == 2           # one per CPU of the cluster
    assert len(summary["ray_nodes"]) == 2 and sum(summary["ray_nodes"].values()) == 13  # songs done on both nodes
    assert_same_rows(out, local)
    assert not ray.is_initialized()  # the driver left the cluster (which the fixture stops)
