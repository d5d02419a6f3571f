"""Audio decoding: any common format → mono float32 at the backbone's rate, cropped or padded to one clip.

Only the window a clip needs is read (soundfile seeks), so decoding cost does not grow with song length.
Formats soundfile cannot read fall back to librosa/audioread.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3", "au", "aiff", "aif", "m4a", "opus")


class AudioError(Exception):
    """A file that cannot be decoded; carries the path and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def window_start(total_seconds: float, duration: float, offset) -> float:
    """Start (s) of the clip window: offset is 'start', 'middle' or a number of seconds."""
    if offset in (None, "start"):
        return 0.0
    if offset == "middle":
        return max(0.0, (total_seconds - duration) / 2.0)
    try:
        start = float(offset)
    except (TypeError, ValueError):
        raise ValueError(f"clip.offset={offset!r}: use start, middle or a number of seconds") from None
    if start < 0:
        raise ValueError(f"clip.offset={offset!r}: must be >= 0")
    return start


def _read_soundfile(path: str, duration: float, offset) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(path) as f:
        native_sr = f.samplerate
        total = f.frames / native_sr if f.frames > 0 else 0.0
        start = window_start(total, duration, offset)
        start_frame = int(round(start * native_sr))
        if f.frames > 0 and start_frame >= f.frames:
            raise AudioError(path, f"clip.offset={offset} s is past the end of the file ({total:.1f} s)")
        if start_frame:
            f.seek(start_frame)
        data = f.read(int(np.ceil(duration * native_sr)), dtype="float32", always_2d=True)
    return data.mean(axis=1), native_sr


def _read_librosa(path: str, duration: float, offset) -> tuple[np.ndarray, int]:
    import librosa

    total = librosa.get_duration(path=path)
    start = window_start(total, duration, offset)
    y, sr = librosa.load(path, sr=None, mono=True, offset=start, duration=duration, dtype=np.float32)
    return y, sr


def load_clip(path: str | os.PathLike, sr: int = 12000, duration: float = 29.0, offset="start") -> np.ndarray:
    """Decode one clip: mono float32 at `sr`, exactly round(sr*duration) samples (zero-padded if short).

    Raises AudioError (with the path and the reason) for missing, empty, corrupt or silent-length files.
    """
    path = str(path)
    window_start(duration, duration, offset)  # reject a bad offset as a setting error, not a file error
    if not Path(path).is_file():
        raise AudioError(path, "file not found")
    try:
        y, native_sr = _read_soundfile(path, duration, offset)
    except AudioError:
        raise
    except Exception as first:  # noqa: BLE001 - soundfile cannot read it: try librosa/audioread
        try:
            y, native_sr = _read_librosa(path, duration, offset)
        except Exception as second:  # noqa: BLE001
            raise AudioError(path, f"cannot decode ({type(first).__name__}: {first}; "
                                   f"fallback {type(second).__name__}: {second})".replace("\n", " ")) from None
    if y.size == 0:
        raise AudioError(path, "no audio samples in the requested window")
    if not np.all(np.isfinite(y)):
        raise AudioError(path, "decoded audio holds NaN or infinite samples")
    if native_sr != sr:
        import soxr

        y = soxr.resample(y, native_sr, sr, quality="HQ").astype(np.float32)
    n = int(round(sr * duration))
    if len(y) >= n:
        return np.ascontiguousarray(y[:n], dtype=np.float32)
    return np.pad(y, (0, n - len(y))).astype(np.float32)
