"""The fingerprint of a song vector: what must change the cache key when it changes."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from siamrec.data.audio import DECODER_VERSION
from siamrec.extractor.clip import plain

def fingerprint(bundle, model, clip_cfg) -> str:
    """Hash of everything that changes a song vector: the decoder's version, the bundle's spec, every weight of the
    model, the clip config."""
    h = hashlib.sha256(f"decoder {DECODER_VERSION}".encode())
    h.update(json.dumps(bundle.spec(), sort_keys=True, default=str).encode())
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    h.update(json.dumps(plain(clip_cfg), sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]
