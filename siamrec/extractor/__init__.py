"""The one extractor: songs → windows → backbone → pooled song vectors, for every command.

    clip.py          the `clip` settings checked against the backbone; the plan of a song's windows
    decoding.py      decode (worker processes: seek, read, mono, resample to the bundle's rate; siamrec.data.audio)
    batching.py      the Extractor: batches of windows → the bundle's model (siamrec.inference) → window features
    pooling.py       pool the windows of a song (clip.pool: mean | mean_std | unit_mean) → one vector per song
    cache.py         file digests and the feature cache (train/evaluate: keyed by content and fingerprint)
    fingerprints.py  the hash of everything that changes a song vector
    failures.py      files that could not be decoded: skipped, grouped by cause, reported
    preparation.py   a bundle and its model, with label-free statistics estimated once and cached

Decoding runs ahead while the model embeds the current batch, so the two overlap; memory holds one batch and a
bounded prefetch, whatever the number of songs. Files that cannot be decoded are skipped and reported, never fatal.
The fingerprint of a feature hashes the decoder's version, the bundle's spec, the model's weights and the whole
`clip` config, so a changed setting, a fine-tuned model or a corrected decoder never reuses stale features.

The names below are what the commands use; each lives in the module of its job.
"""

from siamrec.extractor.batching import Extractor, SongFeatures
from siamrec.extractor.cache import FeatureCache, FileDigests, file_stat
from siamrec.extractor.clip import POOLS, check_clip, window_plan
from siamrec.extractor.decoding import decode_stream, decode_workers
from siamrec.extractor.failures import failure_causes, padding_note, report_failures
from siamrec.extractor.fingerprints import fingerprint
from siamrec.extractor.pooling import part_columns, pool_windows, pooled_parts
from siamrec.extractor.preparation import make_bundle, prepared_model

__all__ = ["POOLS", "Extractor", "FeatureCache", "FileDigests", "SongFeatures", "check_clip", "decode_stream",
           "decode_workers", "failure_causes", "file_stat", "fingerprint", "make_bundle", "padding_note",
           "part_columns", "pool_windows", "pooled_parts", "prepared_model", "report_failures", "window_plan"]
