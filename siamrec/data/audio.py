"""Audio decoding: any common format → the windows of a song, mono float32 at the backbone's rate.

The one decoder of the project. A `WindowPlan` (built from the `clip` settings and the backbone bundle) says which
windows of a song to read: `first` (one window at `clip.offset`), `spread:K` (K windows spaced evenly over the whole
song; neighbours overlap by at most 3/4 of a window, so a song too short for K such windows gets fewer) or `all`
(every window, `hop` apart, at most `max_windows` of them, spread evenly when there are more).
Windows are read by seeking (soundfile), so decoding cost grows with the number of windows, not with the song's
length. Every window holds the samples a whole-file `librosa.load(path, sr=plan.sr)` gives at the same positions
(the decode the original extractors use), up to the resampling filter's precision:
- The song's length is the number of samples the decoder really delivers, found by reading its last second, not the
  header's count: libsndfile estimates the length of an MP3 without a Xing/LAME header from its size and reports up
  to thousands of frames that do not exist. At the target rate the song has ceil(frames · sr / native) samples, as
  librosa's resampling gives. A read that comes back short is padded with zeros.
- Each window is decoded from `WARMUP_SECONDS` (at least `WARMUP_FRAMES` samples) before it and that lead-in is
  dropped: after a seek a lossy decoder needs it to match a continuous decode (MP3's bit reservoir reaches back into
  earlier frames).
- When resampling, the window is read with a margin on both sides, aligned to the resampling grid, so that resampling
  it gives the same samples as resampling the whole song.
Formats soundfile cannot read (AAC, WMA, WavPack, ...) are decoded by audioread (ffmpeg) as librosa.load decodes
them, from the start: a file of up to 10 minutes is kept whole, a longer one is decoded again and streamed past
its windows, so memory stays bounded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bump when a change here changes the samples of a window: it is part of the extraction cache's fingerprint.
DECODER_VERSION = 2
# After a seek, the first samples an MP3 decoder gives differ from a continuous decode, as its bit reservoir reaches
# back into earlier frames (measured on LAME files: up to 4,418 samples, 138 ms, at 32 kHz and 37 kbit/s; 2,064
# samples, 129 ms, at 16 kHz); 200 ms brought every window of 315 real MP3s within 5e-5 of a continuous decode. The
# floor in samples (4 MPEG-1 frames, 8 MPEG-2 frames) covers low sample rates, whose frames last longer.
WARMUP_SECONDS = 0.2
WARMUP_FRAMES = 4608
# what soundfile reads, then what librosa/audioread reads through ffmpeg (AAC, WMA, WavPack, Monkey's Audio, Musepack,
# TTA, Matroska and WebM audio): without ffmpeg those fail to decode, each listed with the reason
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "oga", "opus", "mp3", "au", "aiff", "aif", "aifc", "caf", "w64", "m4a",
                    "aac", "wma", "wv", "ape", "mpc", "tta", "mka", "webm")
WINDOW_MODES = ("first", "spread", "all")


def audioread_blocks(path: str):
    """A file through audioread (ffmpeg, GStreamer or MAD), for the formats soundfile does not read, as librosa.load
    decodes it: yields (rate, channels, block) for each block in order, `block` the interleaved 16-bit PCM bytes of
    complete frames (a frame split between two of audioread's buffers goes with the second). Raises what the
    backend raises; the file is closed when the generator ends or is closed."""
    import audioread

    with audioread.audio_open(path) as f:
        sr, channels = int(f.samplerate), int(f.channels)
        frame, carry = 2 * channels, b""
        for buf in f:
            buf = carry + bytes(buf)
            whole = len(buf) // frame * frame
            carry = buf[whole:]
            if whole:
                yield sr, channels, buf[:whole]


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
    if start < 0 or not math.isfinite(start):
        raise ValueError(f"clip.offset={offset!r}: must be a number of seconds >= 0")
    return start


def parse_windows(spec) -> tuple[str, int]:
    """clip.windows → (mode, K): 'first' → ('first', 1), 'spread:4' → ('spread', 4), 'all' → ('all', 0)."""
    text = str(spec).strip()
    mode, _, count = text.partition(":")
    if mode == "spread":
        try:
            k = int(count)
        except ValueError:
            k = 0
        if k >= 1:
            return "spread", k
    elif mode in ("first", "all") and not count:
        return mode, 1 if mode == "first" else 0
    raise ValueError(f"clip.windows={spec!r}: use first, spread:K (K >= 1 windows spread over the song) or all")


@dataclass(frozen=True)
class WindowPlan:
    """Which windows of a song to read. Sizes are in samples at `sr`. The input of a window that starts at `s` is
    [s − context, s − context + window); zeros stand for what lies before the song's start or after its end."""

    sr: int
    window: int
    context: int = 0
    hop: int = 0
    mode: str = "first"
    count: int = 1
    max_windows: int = 64
    offset: object = "start"

    def starts(self, total: int) -> list[int]:
        """Window starts for a song of `total` samples (at least one window, zero-padded when the song is short)."""
        body = max(self.window - 2 * self.context, 1)  # what a complete window covers inside the song
        if self.mode == "first":
            start = int(round(window_start(total / self.sr, self.window / self.sr, self.offset) * self.sr))
            return [start]
        if total <= body:
            return [0]
        if self.mode == "spread":  # windows overlap by at most 3/4 of a window: a short song gets fewer of them
            count = min(self.count, int((total - body) // max(body // 4, 1)) + 1)
            return sorted({int(round(s)) for s in np.linspace(0, total - body, count)})
        n = (total - body) // self.hop + 1
        chosen = range(n) if n <= self.max_windows else np.unique(np.round(np.linspace(0, n - 1, self.max_windows)))
        return [int(i) * self.hop for i in chosen]


class _SoundFileReader:
    """Seeks and reads native-rate frames of one file (soundfile); `frames` is where the decoded audio really ends."""

    def __init__(self, path: str):
        import soundfile as sf

        self.file = sf.SoundFile(os.fsencode(path))  # bytes: file names that are not UTF-8 open too
        self.native_sr = self.file.samplerate
        self.warmup = max(int(WARMUP_SECONDS * self.native_sr), WARMUP_FRAMES)
        self.frames = self._real_end(max(self.file.frames, 0))

    def _real_end(self, reported: int) -> int:
        """The frame count the decoder delivers. libsndfile never reads past `reported`, but may deliver fewer
        (an MP3 without a Xing header, a truncated file): read from a second before the reported end; when that
        position is already past the real end (nothing comes back), start 4× earlier."""
        back = self.native_sr
        while True:
            lo = max(reported - back, 0)
            n = self._count(lo, reported)
            if n or lo == 0:
                return lo + n
            back *= 4

    def _count(self, lo: int, hi: int) -> int:
        """How many of the frames [lo, hi) the decoder delivers (read in blocks: bounded memory)."""
        import soundfile as sf

        try:
            self.file.seek(lo)
        except sf.LibsndfileError:  # a seek past the real end of a truncated file
            return 0
        n = 0
        while n < hi - lo:
            got = len(self.file.read(min(hi - lo - n, 1 << 16), dtype="float32", always_2d=True))
            if not got:
                break
            n += got
        return n

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Frames [lo, hi) mixed to mono; fewer when the decoder stops early."""
        self.file.seek(lo)
        return self.file.read(hi - lo, dtype="float32", always_2d=True).mean(axis=1)

    def close(self):
        self.file.close()


class _AudioreadReader:
    """A file soundfile cannot read, decoded by audioread (ffmpeg, GStreamer or MAD) as librosa.load decodes it:
    interleaved 16-bit blocks, scaled by 1/32768, mixed to mono. The first pass counts its frames and keeps them
    when the file is at most `KEEP_SECONDS` long; a longer one (a raga of an hour, a DJ mix: an hour of 44.1 kHz
    stereo would take ~2.8 GB through librosa.load) is decoded again on reading, forward, keeping only what the
    windows ask for (they ask in ascending order), so memory stays bounded."""

    warmup = 0
    KEEP_SECONDS = 600
    native_sr = 0  # set by the first block (a file that decodes to nothing has none: no audio samples)

    def __init__(self, path: str):
        self.path = path
        kept, self.frames, keep = [], 0, True
        for block in self._blocks():
            self.frames += len(block)
            if keep:
                kept.append(block)
                keep = self.frames <= self.KEEP_SECONDS * self.native_sr
                if not keep:
                    kept = []
        self.y = (np.concatenate(kept) if kept else np.zeros(0, np.float32)) if keep else None  # None: stream
        self._stream, self._buf, self._buf_lo = None, np.zeros(0, np.float32), 0

    def _blocks(self):
        """The file's mono float32 blocks, in order (sets native_sr)."""
        for self.native_sr, channels, block in audioread_blocks(self.path):
            x = np.frombuffer(block, "<i2").astype(np.float32) * np.float32(1 / 32768)
            yield x.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else x

    def read(self, lo: int, hi: int) -> np.ndarray:
        if self.y is not None:
            return self.y[lo:hi]
        if self._stream is None or lo < self._buf_lo:  # first read, or one behind the buffer: decode from the start
            self.close()
            self._stream, self._buf, self._buf_lo = self._blocks(), np.zeros(0, np.float32), 0
        while self._buf_lo + len(self._buf) < hi:
            block = next(self._stream, None)
            if block is None:
                break
            end = self._buf_lo + len(self._buf) + len(block)
            self._buf = np.concatenate([self._buf[max(lo - self._buf_lo, 0):], block])  # drop what lies before lo
            self._buf_lo = end - len(self._buf)
        start = max(lo - self._buf_lo, 0)
        return self._buf[start:max(hi - self._buf_lo, start)]

    def close(self):
        if self._stream is not None:
            self._stream.close()


def _why(exc: Exception) -> str:
    """A decoder's exception as a reason: libsndfile's message without its 'Error opening <path>: ' prefix and with
    its misleading 'File does not exist' (it says so of any file whose data it does not recognise) replaced."""
    text = " ".join(str(getattr(exc, "error_string", None) or exc).split())
    if "does not exist or is not a regular file" in text:
        return "data not recognised as audio"
    if not text:  # audioread's NoBackendError and EOFError carry no message
        return {"NoBackendError": "no decoder (ffmpeg, GStreamer, MAD) recognises the data",
                "EOFError": "ended before any audio"}.get(type(exc).__name__, type(exc).__name__)
    return text.rstrip(".")


def _open(path: str):
    try:
        return _SoundFileReader(path)
    except Exception as first:  # noqa: BLE001 - soundfile cannot read it: try librosa/audioread
        try:
            return _AudioreadReader(path)
        except Exception as second:  # noqa: BLE001
            if os.path.getsize(path) == 0:
                raise AudioError(path, "cannot be decoded: the file is empty (0 bytes)") from None
            raise AudioError(path, f"cannot be decoded: libsndfile: {_why(first)}; "
                                   f"audioread: {_why(second)}") from None


def _native_block(reader, lo: int, hi: int) -> np.ndarray:
    """Native frames [lo, hi) as a continuous decode gives them, zeros outside [0, reader.frames) and where the
    decoder delivers less: decoded from reader.warmup frames before lo, the lead-in dropped."""
    block = np.zeros(hi - lo, dtype=np.float32)
    r_lo, r_hi = max(lo, 0), min(hi, reader.frames)
    if r_hi > r_lo:
        w_lo = max(r_lo - reader.warmup, 0)
        got = reader.read(w_lo, r_hi)[r_lo - w_lo:]
        block[r_lo - lo:r_lo - lo + len(got)] = got
    return block


def _window(reader, plan: WindowPlan, start: int, total: int) -> np.ndarray:
    """Samples [start − context, start − context + window) at plan.sr, zeros outside [0, total)."""
    native, sr = reader.native_sr, plan.sr
    a, b = start - plan.context, start - plan.context + plan.window
    if native == sr:
        return _native_block(reader, a, b)
    import soxr

    g = math.gcd(native, sr)
    step_n, step_t = native // g, sr // g                        # aligned steps: native step_n ↔ target step_t
    margin = max(sr // 20, step_t)                                # 50 ms of context for the resampling filter
    # the block starts on the resampling grid and, like the whole song, at its first sample at the earliest and
    # at its last at the latest: the filter then sees the song's edges as a whole-file resampling does
    lo_t = max((a - margin) // step_t * step_t, 0)
    lo_n = lo_t // step_t * step_n
    hi_n = min(-((-(b + margin)) // step_t) * step_n, reader.frames)
    y = np.zeros(plan.window, dtype=np.float32)
    if hi_n > lo_n:
        r = soxr.resample(_native_block(reader, lo_n, hi_n), native, sr, quality="HQ")
        lo, hi = max(a, lo_t), min(b, lo_t + len(r), total)
        if hi > lo:
            y[lo - a:hi - a] = r[lo - lo_t:hi - lo_t]
    return y


def decode_windows(path: str | os.PathLike, plan: WindowPlan) -> np.ndarray:
    """The song's windows as a float32 array (n_windows, plan.window).

    Raises AudioError (with the path and the reason) for missing, empty, corrupt or unreadable files."""
    path = str(path)
    if not Path(path).is_file():
        raise AudioError(path, "file not found")
    reader = _open(path)
    try:
        if reader.frames <= 0:
            raise AudioError(path, "no audio samples")
        # the length librosa's resampling gives, computed as librosa does (in floating point: 194,040 frames at
        # 22.05 kHz give 105,601 samples at 12 kHz, not 105,600), so that windows are planned as on librosa.load
        total = math.ceil(reader.frames * (plan.sr / reader.native_sr))
        try:
            starts = plan.starts(total)
        except ValueError as exc:
            raise AudioError(path, str(exc)) from None
        if plan.mode == "first" and total > 0 and starts[0] >= total:
            raise AudioError(path, f"clip.offset={plan.offset} s is past the end of the file "
                                   f"({total / plan.sr:.1f} s)")
        try:
            windows = np.stack([_window(reader, plan, s, total) for s in starts])
        except AudioError:
            raise
        except Exception as exc:  # noqa: BLE001 - a file damaged half-way through
            raise AudioError(path, f"cannot be decoded ({type(exc).__name__}: {_why(exc)})") from None
    finally:
        reader.close()
    if not np.all(np.isfinite(windows)):
        raise AudioError(path, "decoded audio holds NaN or infinite samples")
    return windows


def load_clip(path: str | os.PathLike, sr: int = 12000, duration: float = 29.0, offset="start") -> np.ndarray:
    """One window of `duration` seconds at `offset` (mono float32 at `sr`, zero-padded when the song is short)."""
    window_start(duration, duration, offset)  # reject a bad offset as a setting error, not a file error
    plan = WindowPlan(sr=int(sr), window=int(round(sr * duration)), offset=offset)
    return decode_windows(path, plan)[0]


def loudness(path: str | os.PathLike) -> tuple[float, float]:
    """(seconds, RMS level in dBFS) of a whole file, mono, at its own rate; AudioError when it cannot be decoded.
    Used to flag a near-silent or very short song that is embedded anyway."""
    reader = _open(os.fspath(path))
    try:
        seconds = reader.frames / reader.native_sr if reader.native_sr else 0.0
        total, count, step = 0.0, 0, reader.native_sr * 60 or 1
        for lo in range(0, reader.frames, step):  # a minute at a time: long songs need no whole-file buffer
            y = np.asarray(reader.read(lo, min(lo + step, reader.frames)), dtype=np.float64)
            total, count = total + float(np.sum(y * y)), count + len(y)
    finally:
        reader.close()
    rms = math.sqrt(total / count) if count else 0.0
    return seconds, 20 * math.log10(rms) if rms > 0 else -math.inf


def duration_seconds(path: str | os.PathLike) -> float:
    """The song's length in seconds, from its header where the format has one (AudioError if it cannot be read)."""
    reader = _open(str(path))
    try:
        return reader.frames / reader.native_sr
    finally:
        reader.close()
