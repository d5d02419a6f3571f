"""The library's 2-D map: UMAP when umap-learn is installed, else scikit-learn's t-SNE (PCA for very large
libraries), computed once and cached in the run folder as map2d.npz (written atomically; the only file the web
app writes there), keyed by a fingerprint of the embeddings and the method."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

import numpy as np

from siamrec.runs import atomic_write_bytes

CACHE_FILE = "map2d.npz"
METHODS = ("auto", "umap", "tsne", "pca")


def choose_method(n: int, wanted: str = "auto", max_items: int = 5000) -> str:
    if wanted not in METHODS:
        from siamrec.errors import SiamrecError

        raise SiamrecError(f"serve.map={wanted!r}: choose one of {', '.join(METHODS)}")
    if wanted != "auto":
        return wanted
    if n > max_items:
        return "pca"
    try:
        import umap  # noqa: F401
    except ImportError:
        return "tsne"
    return "umap"


def fingerprint(emb: np.ndarray, method: str) -> str:
    h = hashlib.sha256(f"{method}:{emb.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(emb, dtype=np.float32)).cast("B"))
    return h.hexdigest()[:20]


def compute(emb: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 coordinates of the L2-normalised rows, scaled to [-1, 1]."""
    from siamrec.index import normalise

    x = normalise(emb)
    n = len(x)
    if n < 4:
        xy = np.zeros((n, 2), np.float32)
        xy[:, 0] = np.linspace(-1, 1, n) if n > 1 else 0.0
        return xy
    if method == "umap":
        import umap

        xy = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, n - 1),
                       verbose=n > 2000).fit_transform(x)
    elif method == "tsne":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        if x.shape[1] > 50 and n > 50:
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        xy = TSNE(n_components=2, perplexity=float(min(30.0, max(2.0, (n - 1) / 3))), init="pca",
                  random_state=seed, verbose=1 if n > 2000 else 0).fit_transform(x)  # progress for long ones
    else:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    xy = np.asarray(xy, dtype=np.float64)
    xy -= xy.mean(axis=0)
    scale = np.abs(xy).max()
    return (xy / scale if scale > 0 else xy).astype(np.float32)


class MapCache:
    """Computes the map in a background thread (the page polls until it is ready) or loads it from the cache."""

    def __init__(self, run_dir, emb: np.ndarray, wanted: str = "auto", max_items: int = 5000):
        self.path = Path(run_dir) / CACHE_FILE
        self.emb = emb
        self.method = choose_method(len(emb), wanted, int(max_items))
        self.key = fingerprint(emb, self.method)
        self.xy: np.ndarray | None = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def load(self) -> bool:
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == self.key and z["xy"].shape == (len(self.emb), 2):
                    self.xy = z["xy"].astype(np.float32)
                    return True
        except (OSError, KeyError, ValueError):
            pass
        return False

    def start(self) -> None:
        with self._lock:
            if self.xy is not None or self._thread is not None:
                return
            if self.load():
                print(f"map: {self.method} map of {len(self.emb)} songs read from {self.path}", flush=True)
                return
            self._thread = threading.Thread(target=self._run, name="siamrec-map", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        print(f"map: computing a {self.method} map of {len(self.emb)} songs (once; cached in {self.path}) ...",
              flush=True)
        try:
            xy = compute(self.emb, self.method)
        except Exception as exc:  # noqa: BLE001 - the page shows it; the rest of the app keeps working
            self.error = f"the {self.method} map failed: {exc}"
            print(f"map: {self.error}", flush=True)
            return
        buf = io.BytesIO()
        np.savez(buf, xy=xy, fingerprint=np.array(self.key), method=np.array(self.method))
        try:
            atomic_write_bytes(self.path, buf.getvalue())
            where = f"cached in {self.path}"
        except OSError as exc:  # a read-only run folder: keep it in memory
            where = f"not cached ({exc.strerror})"
        self.xy = xy
        print(f"map: done in {time.perf_counter() - started:.1f} s, {where}", flush=True)

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
