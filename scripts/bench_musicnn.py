"""The musicnn (MSD) port: CPU time per 3-s patch and per 3-minute song, and leave-one-out MAP on real audio.

* speed: the Keras port (waveform windows in, log-mel front end included) on random audio, batches of patches,
  after a warm-up; CPU time (process time, all threads) and wall time;
* quality: every clip of an audio folder (default: the 69 raga clips of the shared data, label = folder) loaded as
  the original does (librosa.load, 16 kHz mono), every whole 187-frame patch read as its own window, a clip's vector
  = the mean of its patches' part; leave-one-out cosine MAP, relevance = same label (clips alone in their label
  have no relevant item and are not queries).

    python scripts/bench_musicnn.py [--root DIR] [--skip-map] [--threads N]

Reads the MSD_musicnn checkpoint from $SIAMREC_SHARED (default ../shared) or the cache; no download.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

from benchkit import SHARED, table


def song_windows(y, bundle):
    """Patch i = samples [hop·i − context, hop·i − context + window) of the song, zeros outside it; whole patches
    only (a song of n samples has (1 + n // 256) // 187 of them)."""
    import numpy as np

    n_patches = (1 + len(y) // 256) // 187
    padded = np.concatenate([np.zeros(bundle.context_samples, np.float32), y.astype(np.float32),
                             np.zeros(bundle.window_samples, np.float32)])
    return np.stack([padded[i * bundle.hop_samples: i * bundle.hop_samples + bundle.window_samples]
                     for i in range(n_patches)])


def main() -> int:
    shared = SHARED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(shared / "audio" / "ragaveda"), help="audio folder with labels.csv")
    parser.add_argument("--skip-map", action="store_true", help="only the speed measurement")
    parser.add_argument("--batch", type=int, default=16, help="patches per batch in the speed measurement")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: its default)")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from siamrec.backbones.musicnn import MusicnnMSD

    bundle = MusicnnMSD(download=False)
    with tempfile.TemporaryDirectory() as tmp:
        model = bundle.build(OmegaConf.create({"cache": tmp, "shared": str(shared)}))

    print(f"musicnn_msd port, {platform.machine()}, {os.cpu_count()} cores visible, TensorFlow {tf.__version__}")
    rng = np.random.default_rng(0)
    song_patches = (1 + 180 * bundle.sample_rate // 256) // 187  # whole patches of a 3-minute song
    for n in (args.batch, song_patches):
        x = (0.1 * rng.normal(size=(n, bundle.window_samples))).astype(np.float32)
        model.predict_on_batch(x)  # warm-up (tracing) for this batch shape
        reps = 3
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(reps):
            model.predict_on_batch(x)
        cpu, wall = (time.process_time() - cpu) / reps, (time.perf_counter() - wall) / reps
        what = f"batch of {n} patches" + (" (one 3-minute song)" if n == song_patches else "")
        print(f"{what}: {cpu:.3f} CPU-s, {wall:.3f} s wall → {cpu / n * 1000:.1f} CPU-ms "
              f"({wall / n * 1000:.1f} ms wall) per 3-s patch")
    if args.skip_map:
        return 0

    import librosa

    from siamrec.metrics import retrieval_metrics

    root = Path(args.root)
    if not (root / "labels.csv").is_file():
        print(f"no labels.csv in {root}: set SIAMREC_SHARED or pass --root")
        return 2
    rows = list(csv.DictReader(open(root / "labels.csv")))
    vectors = {part: [] for part in bundle.parts}
    labels, n_patches, start = [], 0, time.perf_counter()
    for row in rows:
        y, _ = librosa.load(str(root / row["path"]), sr=bundle.sample_rate)
        out = model.predict_on_batch(song_windows(y, bundle))
        n_patches += len(out["taggram"])
        for part in bundle.parts:
            vectors[part].append(np.asarray(out[part]).mean(0))
        labels.append(row["label"])
    names = sorted(set(labels))
    y_true = np.array([[lab == n for n in names] for lab in labels])
    print(f"\n{root}: {len(rows)} clips, {n_patches} patches, {time.perf_counter() - start:.0f} s "
          "(decoding included); leave-one-out cosine retrieval, relevance = same label")
    found = {part: retrieval_metrics(np.stack(vectors[part]), y_true) for part in bundle.parts}
    print(table(["part", "dim", "MAP", "MAP@10", "P@10", "queries"],
                [[part, width, f"{m['map']:.3f}", f"{m['map@10']:.3f}", f"{m['p@10']:.3f}", m["n_queries"]]
                 for (part, width), m in zip(bundle.parts.items(), found.values())]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
