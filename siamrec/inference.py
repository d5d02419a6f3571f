"""Inference runtimes: a bundle's Keras model run on batches of windows, by ONNX Runtime or by TensorFlow.

Both run `features.threads` parts of every batch at once, each part on one thread (`Runner`).
`features.runtime=tensorflow` (the default) runs the Keras model (oneDNN kernels: siamrec.cli turns them on).
`features.runtime=onnxruntime` (`pip install -e ".[onnx]"`) exports the model once to ONNX (tf2onnx) and runs it in
ONNX Runtime. Measured in one run of scripts/bench_extract.py on 20 real 4-minute songs (2-core AVX512-VNNI machine,
where TensorFlow uses oneDNN): TensorFlow 39.7 ms, ONNX Runtime 48.5 ms CPU per musicnn patch (OpenVINO, tried
outside the package, 42.4 ms), hence the default; issue 18 measured ONNX Runtime at 38-42 ms against TensorFlow's
106 ms on a CPU where TensorFlow's oneDNN was off. A bundle may compute its front end outside the graph (`Bundle.onnx_split`:
musicnn's librosa-exact log-mel in NumPy, whose float64 FFT ONNX cannot express), the rest of the network is
exported. The exported graph is cached under `paths.cache/onnx/`, keyed by the extractor's fingerprint (bundle
spec, every weight, clip settings) and the exporter's versions, so a fine-tuned model never reuses a stale graph
and a second run exports nothing; an ONNX file is a graph of tensors, never code, and nothing is written into a
run folder. When onnxruntime or tf2onnx is missing, or the graph cannot be exported or disagrees with the Keras
model on a probe batch, the run falls back to TensorFlow and says so in one line.

Training, fine-tuning and the saved models stay Keras 3; only inference goes through a runner.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

RUNTIMES = ("onnxruntime", "tensorflow")
PROBE_WINDOWS = 2
_warned: set[str] = set()


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def inference_threads(threads) -> int:
    """features.threads, or every core of this process when it is null."""
    return cpu_count() if threads is None else max(1, int(threads))


def tensorflow_threads(threads) -> None:
    """TensorFlow's thread pools for `threads` parts of a batch run at once (see Runner): one intra-op thread per
    operator, `threads` (null: every core) inter-op threads, so the parts run side by side. Possible only before
    TensorFlow ran its first op in this process, so callers that know their threads call it before loading a model;
    later, TensorFlow keeps the pools it has (the parts still run at once)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(inference_threads(threads))
    except RuntimeError:  # TensorFlow already initialised in this process: keep its pools
        pass


class Runner:
    """Runs a batch of windows as `threads` parts at once, each part on one thread (both runtimes release the GIL
    while they compute). Measured on 2 cores (musicnn): parts on single-threaded operators keep both cores busy,
    where one run with 2 intra-op threads per operator waits at every operator for the slower thread (TensorFlow:
    0.47 of two cores busy; ONNX Runtime: 49 ms CPU per patch against 40)."""

    name = ""

    def __init__(self, threads: int):
        self.threads, self._pool = int(threads), None

    def _run(self, windows: np.ndarray) -> dict:
        raise NotImplementedError

    def __call__(self, windows: np.ndarray) -> dict:
        parts = min(self.threads, len(windows))
        if parts <= 1:
            return self._run(windows)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
        results = list(self._pool.map(self._run, np.array_split(windows, parts)))
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}


class TensorflowRunner(Runner):
    """The Keras model itself, in TensorFlow (oneDNN kernels)."""

    name = "tensorflow"

    def __init__(self, model, threads: int):
        super().__init__(threads)
        tensorflow_threads(threads)
        self.model = model

    def _run(self, windows: np.ndarray) -> dict:
        return {k: np.asarray(v) for k, v in self.model.predict_on_batch(windows).items()}


class OnnxRunner(Runner):
    """An exported graph in ONNX Runtime (single-threaded sessions, all graph optimisations); `frontend` (NumPy)
    turns windows into the graph's input first."""

    name = "onnxruntime"

    def __init__(self, graph: bytes | str, threads: int, frontend=None):
        import onnxruntime as ort

        super().__init__(threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.frontend = frontend

    def _run(self, windows: np.ndarray) -> dict:
        x = self.frontend(windows) if self.frontend is not None else windows
        got = self.session.run(self.outputs, {self.input: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.outputs, got))


def _say_once(line: str) -> None:
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr, flush=True)


def export_onnx(model) -> bytes:
    """The Keras model (dict outputs) as an ONNX graph, by tf2onnx; raises when a layer cannot be exported."""
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="x")]
    fn = tf.function(lambda x: model(x, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    unsupported = sorted({n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx", "ai.onnx.ml")})
    if unsupported:
        raise ValueError(f"layers without an ONNX form: {', '.join(unsupported)}")
    return proto.SerializeToString()


def _agrees(runner, model, frontend, window_samples: int) -> str | None:
    """None when the runner reproduces the Keras model on a seeded probe batch, else what differs."""
    x = (0.1 * np.random.default_rng(0).standard_normal((PROBE_WINDOWS, window_samples))).astype(np.float32)
    ref = {k: np.asarray(v) for k, v in model.predict_on_batch(frontend(x) if frontend else x).items()}
    got = runner(x)
    for k, v in ref.items():
        if k not in got or got[k].shape != v.shape:
            return f"output {k} missing"
        if not np.allclose(got[k], v, rtol=1e-3, atol=1e-3 * (1.0 + float(np.abs(v).max()))):
            return f"output {k} differs by {float(np.abs(got[k] - v).max()):.3g}"
    return None


def make_runner(bundle, model, runtime: str, threads: int, key: str, cache_root=None):
    """The runner of `model` (see the module docstring). `key` identifies the model's weights and settings (the
    extractor's fingerprint); the exported graph is cached under `cache_root/onnx/` when a cache root is given."""
    from siamrec.errors import SiamrecError

    if runtime not in RUNTIMES:
        raise SiamrecError(f"features.runtime={runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "tensorflow":
        return TensorflowRunner(model, threads)
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as exc:
        _say_once(f"features.runtime=onnxruntime: {exc.name} is not installed (pip install -e \".[onnx]\"); "
                  "inference runs in TensorFlow")
        return TensorflowRunner(model, threads)
    frontend, graph_model = bundle.onnx_split(model)
    versions = f"tf2onnx {tf2onnx.__version__}, onnxruntime {onnxruntime.__version__}"
    digest = hashlib.sha256(f"{key} {versions}".encode()).hexdigest()[:20]
    path = Path(cache_root) / "onnx" / f"{bundle.name}-{digest}.onnx" if cache_root else None
    if path is not None and path.is_file():
        try:
            return OnnxRunner(str(path), threads, frontend)
        except Exception:  # noqa: BLE001 - a damaged cache entry is exported again
            pass
    try:
        graph = export_onnx(graph_model)
        runner = OnnxRunner(graph, threads, frontend)
        problem = _agrees(runner, graph_model, frontend, bundle.window_samples)
    except Exception as exc:  # noqa: BLE001 - any failure to export ends in the same fallback
        problem = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if problem:
        _say_once(f"features.runtime=onnxruntime: {bundle.name} cannot run in ONNX Runtime ({problem}); "
                  "inference runs in TensorFlow")
        return TensorflowRunner(model, threads)
    if path is not None:
        from siamrec.runs import atomic_write_bytes

        atomic_write_bytes(path, graph)
    return runner
