"""Standalone validation of tests/reference_choi2017.py on real data (prints figures).

Needs the shared data folder (default ../shared from the project root, or
$SIAMREC_SHARED).  Not collected by pytest (no test_ prefix).  Run:

    python tests/check_reference_choi2017.py
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_choi2017 import load_weights, reference_forward  # noqa: E402

SR = 12000
N_SAMPLES = 29 * SR
TAGS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
    "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
]


def shared_dir() -> Path:
    env = os.environ.get("SIAMREC_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared"


def load_clip(path: Path) -> np.ndarray:
    import librosa

    y, _ = librosa.load(str(path), sr=SR, mono=True, duration=29.0)
    out = np.zeros(N_SAMPLES, dtype=np.float64)
    y = y[:N_SAMPLES]
    out[: len(y)] = y
    return out


def loo_cosine_map(x: np.ndarray, labels: list) -> tuple:
    """Leave-one-out full-ranking MAP with cosine similarity; relevance = same label.
    Queries whose label has no other clip are skipped."""
    labels = np.asarray(labels)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    aps = []
    for q in range(len(x)):
        others = np.delete(np.arange(len(x)), q)
        rel = labels[others] == labels[q]
        if not rel.any():
            continue
        order = np.argsort(-sim[q, others], kind="stable")
        r = rel[order]
        hits = np.cumsum(r)
        ranks = np.arange(1, len(r) + 1)
        aps.append(float((hits[r] / ranks[r]).mean()))
    return float(np.mean(aps)), len(aps)


def kernel_checks(weights_dir: Path) -> None:
    import librosa
    import scipy.signal

    n = np.arange(512)[:, None]
    k = np.arange(257)[None, :]
    win = scipy.signal.get_window("hann", 512)[:, None]  # periodic
    cos_k = win * np.cos(2 * np.pi * n * k / 512)
    sin_k = win * np.sin(2 * np.pi * n * k / 512)
    print("\n(d) stored DFT kernels / filterbank vs periodic-Hann DFT and librosa mel")
    for release, fname in (("keras2", "choi2017_keras2_msd.hdf5"),
                           ("theano", "choi2017_theano_msd.hdf5")):
        w = load_weights(str(weights_dir / fname), release)
        re, im, fb = w["stft_real"], w["stft_imag"], w["filterbank"]
        print(f"  [{release}] real - w*cos: {np.abs(re - cos_k).max():.3g}   "
              f"imag - w*sin: {np.abs(im - sin_k).max():.3g}   "
              f"imag + w*sin: {np.abs(im + sin_k).max():.3g}")
        for htk in (False, True):
            for norm in (None, "slaney"):
                m = librosa.filters.mel(sr=SR, n_fft=512, n_mels=96, fmin=0.0, fmax=6000.0,
                                        htk=htk, norm=norm, dtype=np.float64).T
                d = np.abs(fb - m).max()
                print(f"  [{release}] filterbank vs librosa(htk={htk!s:5}, norm={norm!s:6}): "
                      f"max|diff| {d:.3g} (max|fb| {np.abs(fb).max():.3g})")


def main() -> int:
    sh = shared_dir()
    wdir = sh / "weights" / "choi2017"
    adir = sh / "audio" / "ragaveda"
    if not wdir.is_dir() or not adir.is_dir():
        print(f"shared data not found under {sh}; set SIAMREC_SHARED")
        return 1
    files = {"keras2": wdir / "choi2017_keras2_msd.hdf5",
             "theano": wdir / "choi2017_theano_msd.hdf5"}

    with open(adir / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    print(f"{len(rows)} clips, {len(set(r['label'] for r in rows))} ragas")

    t0 = time.perf_counter()
    clips = [load_clip(adir / r["path"]) for r in rows]
    labels = [r["label"] for r in rows]
    print(f"audio loaded in {time.perf_counter() - t0:.1f} s")

    for release, path in files.items():
        load_weights(str(path), release)  # warm the cache before timing
        feats, tags, times = [], [], []
        n_bad = 0
        for clip in clips:
            t = time.perf_counter()
            out = reference_forward(str(path), release, clip)
            times.append(time.perf_counter() - t)
            assert out["melgram"].shape == (96, 1360), out["melgram"].shape
            assert out["features"].shape == (160,)
            assert out["tags"].shape == (50,)
            ok = (np.isfinite(out["features"]).all() and np.isfinite(out["tags"]).all()
                  and ((out["tags"] > 0) & (out["tags"] < 1)).all())
            n_bad += not ok
            feats.append(out["features"])
            tags.append(out["tags"])
        feats = np.array(feats)
        tags = np.array(tags)
        print(f"\n=== {release} ===")
        print(f"(a) shapes ok: melgram (96, 1360), features (160,), tags (50,) for all clips")
        print(f"(b) clips with NaN/inf or tag outside (0,1): {n_bad}; "
              f"tag prob range [{tags.min():.4f}, {tags.max():.4f}]")
        mean_tags = tags.mean(axis=0)
        top = np.argsort(-mean_tags)[:5]
        print("    top-5 tags averaged over the 69 clips: "
              + ", ".join(f"{TAGS[i]} {mean_tags[i]:.3f}" for i in top))
        for i in (0, 1, 30, 60):
            top = np.argsort(-tags[i])[:5]
            print(f"    {rows[i]['path']:45s} " + ", ".join(f"{TAGS[j]} {tags[i, j]:.2f}" for j in top))
        m, nq = loo_cosine_map(feats, labels)
        print(f"(c) leave-one-out cosine MAP (raw 160-d, {nq} queries): {m:.4f}")
        z = (feats - feats.mean(0)) / (feats.std(0) + 1e-12)
        mz, _ = loo_cosine_map(z, labels)
        print(f"    (for information: after per-dimension z-scoring over the 69 clips: {mz:.4f})")
        per_block = [loo_cosine_map(feats[:, 32 * b:32 * (b + 1)], labels)[0] for b in range(5)]
        print("    per-block MAP: " + ", ".join(f"{v:.3f}" for v in per_block))
        print(f"runtime per clip: median {np.median(times) * 1e3:.0f} ms, max {np.max(times) * 1e3:.0f} ms")

    kernel_checks(wdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
