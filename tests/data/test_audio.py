"""Audio decoding: mono, resampling, crop/pad, offsets, formats and errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from siamrec.data.audio import AudioError, WindowPlan, decode_windows, load_clip, window_start


# ---------------------------------------------------------------------------------------------- helpers


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, fmt: str | None = None, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, format=fmt, subtype=subtype)
    return path


def write_float_wav(path: Path, x: np.ndarray, sr: int) -> Path:
    """Lossless float32 WAV, so that decoded samples can be compared exactly."""
    return write(path, x, sr, "WAV", "FLOAT")


def peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1.0 / sr)[np.argmax(spec)])


def assert_audio_error(excinfo, path):
    err = excinfo.value
    msg = str(err)
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    assert str(path) in msg
    assert err.path == str(path)
    assert err.reason


# ---------------------------------------------------------------------------------------------- decoding


def test_stereo_is_mixed_to_mono_by_mean(tmp_path):
    sr = 12000
    left = tone(440, 0.5, sr, amp=0.6)
    right = np.random.default_rng(0).uniform(-0.3, 0.3, size=len(left)).astype(np.float32)
    path = write_float_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), sr)
    y = load_clip(path, sr=sr, duration=0.5)
    assert y.ndim == 1 and y.dtype == np.float32
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_resampling_keeps_the_pitch(tmp_path):
    native, target, seconds = 22050, 12000, 1.0
    path = write(tmp_path / "a440.wav", tone(440, seconds, native), native, "WAV", "PCM_16")
    y = load_clip(path, sr=target, duration=seconds)
    assert len(y) == target
    assert abs(peak_hz(y, target) - 440) <= 5
    # the amplitude survives resampling: RMS of a 0.5 sine is 0.5/sqrt(2)
    rms = float(np.sqrt(np.mean(y[200:-200] ** 2)))
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.02


@pytest.mark.parametrize("native,target,file_s,duration", [
    (12000, 12000, 1.0, 0.33337),   # 4000.44 samples → 4000
    (22050, 12000, 1.0, 0.51234),   # 6148.08 → 6148
    (44100, 16000, 0.2, 0.70003),   # short file: padded
    (8000, 12000, 2.0, 1.23456),    # upsampling and cropping
])
def test_output_length_is_exactly_round_sr_times_duration(tmp_path, native, target, file_s, duration):
    path = write(tmp_path / "x.flac", tone(300, file_s, native), native, "FLAC", "PCM_16")
    y = load_clip(path, sr=target, duration=duration)
    assert len(y) == int(round(target * duration))
    assert y.dtype == np.float32


def test_short_file_is_zero_padded_at_the_end(tmp_path):
    sr = 12000
    x = tone(440, 0.5, sr) + 0.1  # offset so no sample is exactly zero
    path = write_float_wav(tmp_path / "short.wav", x, sr)
    y = load_clip(path, sr=sr, duration=1.0)
    assert len(y) == sr
    np.testing.assert_array_equal(y[: len(x)], x)
    assert np.all(y[len(x):] == 0)


def test_short_file_with_resampling_is_zero_padded(tmp_path):
    native, sr = 22050, 12000
    path = write(tmp_path / "short.wav", tone(440, 0.5, native), native, "WAV", "PCM_16")
    y = load_clip(path, sr=sr, duration=1.5)
    content = int(0.5 * sr)
    assert len(y) == int(1.5 * sr)
    assert np.sqrt(np.mean(y[100:content - 100] ** 2)) > 0.3
    assert np.all(y[content + 50:] == 0)


def test_long_file_is_cropped_from_the_start(tmp_path):
    sr = 12000
    x = np.random.default_rng(1).uniform(-0.5, 0.5, size=3 * sr).astype(np.float32)
    path = write_float_wav(tmp_path / "long.wav", x, sr)
    y = load_clip(path, sr=sr, duration=0.7)
    np.testing.assert_array_equal(y, x[: int(round(0.7 * sr))])
    np.testing.assert_array_equal(load_clip(path, sr=sr, duration=0.7, offset="start"), y)


def test_path_object_accepted(tmp_path):
    sr = 12000
    path = write_float_wav(tmp_path / "p.wav", tone(440, 0.2, sr), sr)
    np.testing.assert_array_equal(load_clip(Path(path), sr=sr, duration=0.2), load_clip(str(path), sr=sr, duration=0.2))


# ---------------------------------------------------------------------------------------------- offsets


@pytest.fixture
def ramp(tmp_path):
    """3 s at 12 kHz whose value identifies its position: sample i is i / n."""
    sr, n = 12000, 3 * 12000
    x = (np.arange(n) / n).astype(np.float32)
    return write_float_wav(tmp_path / "ramp.wav", x, sr), x, sr


@pytest.mark.parametrize("offset,start_s", [("start", 0.0), (None, 0.0), ("middle", 1.0), (0.5, 0.5), ("1.25", 1.25),
                                            (2, 2.0)])
def test_offset_picks_the_window(ramp, offset, start_s):
    path, x, sr = ramp
    y = load_clip(path, sr=sr, duration=1.0, offset=offset)
    start = int(round(start_s * sr))
    np.testing.assert_array_equal(y, x[start:start + sr])


def test_offset_middle_of_a_file_shorter_than_the_clip_starts_at_zero(ramp):
    path, x, sr = ramp
    y = load_clip(path, sr=sr, duration=4.0, offset="middle")
    np.testing.assert_array_equal(y[: len(x)], x)
    assert np.all(y[len(x):] == 0)


def test_offset_past_the_window_is_padded(ramp):
    path, x, sr = ramp
    y = load_clip(path, sr=sr, duration=1.0, offset=2.5)  # only 0.5 s left
    half = sr // 2
    np.testing.assert_array_equal(y[:half], x[-half:])
    assert np.all(y[half:] == 0)


@pytest.mark.parametrize("offset,freq", [("start", 300), ("middle", 600), (2.0, 900)])
def test_offset_with_resampling_by_frequency(tmp_path, offset, freq):
    native, sr = 22050, 12000
    x = np.concatenate([tone(f, 1.0, native) for f in (300, 600, 900)])
    path = write(tmp_path / "steps.flac", x, native, "FLAC", "PCM_16")
    y = load_clip(path, sr=sr, duration=1.0, offset=offset)
    assert len(y) == sr
    assert abs(peak_hz(y, sr) - freq) <= 5


@pytest.mark.parametrize("offset", ["end", "abc", -1.0, "-0.5", [1]])
def test_bad_offset_is_a_setting_error(tmp_path, offset):
    sr = 12000
    path = write_float_wav(tmp_path / "ok.wav", tone(440, 0.2, sr), sr)
    with pytest.raises(ValueError, match="clip.offset") as e:
        load_clip(path, sr=sr, duration=0.1, offset=offset)
    assert not isinstance(e.value, AudioError)
    assert "\n" not in str(e.value)
    # rejected as a setting even before the file is looked at
    with pytest.raises(ValueError, match="clip.offset"):
        load_clip(tmp_path / "missing.wav", sr=sr, duration=0.1, offset=offset)


def test_window_start():
    assert window_start(10.0, 4.0, "start") == 0.0
    assert window_start(10.0, 4.0, "middle") == pytest.approx(3.0)
    assert window_start(3.0, 4.0, "middle") == 0.0
    assert window_start(10.0, 4.0, 2.5) == 2.5


# ---------------------------------------------------------------------------------------------- formats


FORMATS = [
    ("wav", "WAV", "PCM_16"),
    ("flac", "FLAC", "PCM_16"),
    ("ogg", "OGG", "VORBIS"),
    ("mp3", "MP3", "MPEG_LAYER_III"),
    ("au", "AU", "PCM_16"),
    ("aiff", "AIFF", "PCM_16"),
]


@pytest.mark.parametrize("ext,fmt,subtype", FORMATS, ids=[f[0] for f in FORMATS])
def test_reads_common_formats(tmp_path, ext, fmt, subtype):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    native, sr = 22050, 12000
    path = write(tmp_path / f"a440.{ext}", tone(440, 1.5, native), native, fmt, subtype)
    y = load_clip(path, sr=sr, duration=1.0)
    assert len(y) == sr and y.dtype == np.float32
    assert abs(peak_hz(y, sr) - 440) <= 5
    assert np.sqrt(np.mean(y[sr // 4:] ** 2)) > 0.2  # real signal, not padding


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.filterwarnings("ignore::FutureWarning")  # librosa's audioread fallback warns
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError) as e:
        load_clip(path, sr=12000, duration=0.5)
    assert_audio_error(e, path)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name, data, words", [
    ("noise.mp3", np.random.default_rng(0).bytes(5000), ["libsndfile: data not recognised as audio", "audioread: "]),
    ("text.wav", b"hello, not audio\n", ["libsndfile: Format not recognised", "audioread: "]),
    ("empty.mp3", b"", ["the file is empty"]),
])
def test_a_file_that_exists_but_is_not_audio_says_why_it_cannot_be_decoded(tmp_path, name, data, words):
    """libsndfile says "File does not exist" of a file whose data it does not recognise: never passed on."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(AudioError) as e:
        load_clip(path, sr=12000, duration=0.5)
    assert_audio_error(e, path)
    assert e.value.reason.startswith("cannot be decoded: ")
    assert "not exist" not in e.value.reason and str(path) not in e.value.reason
    for word in words:
        assert word in e.value.reason


def test_missing_file(tmp_path):
    path = tmp_path / "gone" / "song.flac"
    with pytest.raises(AudioError) as e:
        load_clip(path)
    assert_audio_error(e, path)
    assert "not found" in e.value.reason


def test_empty_wav(tmp_path):
    path = write(tmp_path / "empty.wav", np.zeros((0,), dtype=np.float32), 22050, "WAV", "PCM_16")
    assert sf.info(path).frames == 0
    with pytest.raises(AudioError) as e:
        load_clip(path, sr=12000, duration=1.0)
    assert_audio_error(e, path)


def test_non_finite_samples(tmp_path):
    sr = 12000
    x = tone(440, 0.3, sr)
    x[100] = np.nan
    path = write_float_wav(tmp_path / "nan.wav", x, sr)
    with pytest.raises(AudioError) as e:
        load_clip(path, sr=sr, duration=0.3)
    assert_audio_error(e, path)


def test_directory_is_not_a_file(tmp_path):
    path = tmp_path / "folder.wav"
    os.mkdir(path)
    with pytest.raises(AudioError) as e:
        load_clip(path)
    assert_audio_error(e, path)


# ---------------------------------------------------------------------------------------------- MP3s as they come

# musicnn's numbers (siamrec.backbones.musicnn): 16 kHz, patches of 187 frames of hop 256, each read with 256 samples
# of context; the original cuts (1 + n // 256) // 187 patches from a song of n samples (librosa.load at 16 kHz)
MUSICNN = dict(sr=16000, window=48128, context=256, hop=47872)
MPEG1_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MPEG2_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def music(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Notes of a quarter second with harmonics and a decay, over a little noise."""
    rng = np.random.default_rng(seed)
    n, note = int(seconds * sr), sr // 4
    y = np.zeros(n)
    for k in range(0, n, note):
        f0, t = 110 * 2 ** (rng.integers(0, 36) / 12), np.arange(min(note, n - k)) / sr
        y[k:k + len(t)] = sum(np.exp(-3 * t) * np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8) if f0 * h < sr / 2)
    y += 0.05 * rng.standard_normal(n)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def without_xing(mp3: bytes) -> bytes:
    """The MP3 without its first frame, the Xing/Info frame that holds the LAME header (the exact length)."""
    h = int.from_bytes(mp3[:4], "big")
    assert h >> 21 == 0x7FF, "not an MPEG frame"
    mpeg1 = (h >> 19) & 3 == 3
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}[(h >> 19) & 3]
    kbps = (MPEG1_KBPS if mpeg1 else MPEG2_KBPS)[(h >> 12) & 15]
    length = (144 if mpeg1 else 72) * kbps * 1000 // rates[(h >> 10) & 3] + ((h >> 9) & 1)
    assert b"Xing" in mp3[:length] or b"Info" in mp3[:length]
    return mp3[length:]


def id3v2_tag(picture_bytes: int = 8192) -> bytes:
    """An ID3v2.4 tag with a title and a cover picture, as shops' files carry."""
    def syncsafe(n):
        return bytes((n >> s) & 0x7F for s in (21, 14, 7, 0))

    def frame(name, body):
        return name + syncsafe(len(body)) + b"\0\0" + body

    body = (frame(b"TIT2", b"\x03" + "ਗੀਤ".encode()) +
            frame(b"APIC", b"\x00image/jpeg\x00\x03\x00" + np.random.default_rng(0).bytes(picture_bytes)))
    return b"ID3\x04\x00\x00" + syncsafe(len(body)) + body


MP3_SHAPES = [f"{sr}-{shape}" for sr in (22050, 32000, 44100)
              for shape in ("cbr-lame", "vbr-lame", "cbr-id3-noxing", "vbr-noxing")] + \
             ["16000-vbr-low", "32000-vbr-low", "22050-cbr-cut"]


@pytest.fixture(scope="module")
def mp3s(tmp_path_factory):
    """8.8-s songs encoded by LAME through libsndfile (a Xing/Info frame with the LAME header first), then as many
    real files are: without that frame (the length then is an estimate), with an ID3 tag and a cover before the
    audio, cut short (a partial download); `low`: a low bitrate, whose bit reservoir reaches furthest back (the
    decoder needs 130-140 ms after a seek)."""
    if "MP3" not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write MP3")
    root, out = tmp_path_factory.mktemp("mp3"), {}
    for i, shape in enumerate(MP3_SHAPES):
        sr, mode, rest = shape.split("-", 2)
        lame = root / f"{sr}-{mode}-{'low' if rest == 'low' else 'lame'}.mp3"
        if not lame.exists():
            sf.write(lame, music(int(sr), 8.8, seed=i), int(sr), format="MP3",
                     compression_level=0.9 if rest == "low" else 0.5,
                     bitrate_mode="CONSTANT" if mode == "cbr" else "VARIABLE")
        data, out[shape] = lame.read_bytes(), root / f"{shape}.mp3"
        if rest == "id3-noxing":
            out[shape].write_bytes(id3v2_tag() + without_xing(data))
        elif rest == "noxing":
            out[shape].write_bytes(without_xing(data))
        elif rest == "cut":
            out[shape].write_bytes(data[:len(data) * 2 // 5])
        else:
            out[shape] = lame
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("shape", MP3_SHAPES)
def test_mp3_windows_equal_a_whole_file_decode(mp3s, shape):
    """Every window equals the same samples of the whole file decoded by librosa.load at the target rate (what the
    original extractors read), and a song gets as many windows as the original cuts: MP3s whose header overstates
    their length (no Xing header, an ID3 tag counted as audio, a cut file) used to get windows in frames that do not
    exist and fail to decode, and the decoder's warm-up after a seek must not show."""
    import librosa

    path = mp3s[shape]
    if "id3" in shape or "cut" in shape:  # the shape under test: libsndfile's count overstates the real length
        assert sf.info(path).frames > len(librosa.load(path, sr=None)[0])
    plans = [WindowPlan(**MUSICNN, mode="all", max_windows=100), WindowPlan(**MUSICNN, mode="spread", count=5),
             WindowPlan(sr=12000, window=12000 * 3, mode="spread", count=4),
             WindowPlan(sr=12000, window=12000 * 29, offset="middle")]
    for plan in plans:
        ref, _ = librosa.load(path, sr=plan.sr)
        starts = plan.starts(len(ref))
        if plan.mode == "all":
            assert len(starts) == max((1 + len(ref) // 256) // 187, 1)  # the original's count (one padded window
            #                                                                 for a song shorter than a patch)
        windows = decode_windows(path, plan)
        assert len(windows) == len(starts), plan
        padded = np.concatenate([np.zeros(plan.context, np.float32), ref, np.zeros(plan.window, np.float32)])
        for w, s in zip(windows, starts):
            expected = padded[s:s + plan.window]
            error = np.abs(w - expected).max() / np.abs(expected).max()
            assert error <= 1e-4, f"{plan}: window at {s} differs by {error:.2g} of its peak"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_windows_of_real_clips_equal_the_original_extractors_patches(shared):
    """Real audio (the raga clips' one MP3, 48 kHz stereo, and six FLACs at 22.05 kHz): musicnn's windows as the
    original cuts them from a whole-file librosa.load at 16 kHz, every one of them, in number and samples. (All 69
    clips, 560 windows, were checked once the same way: worst 1.3e-6 of a window's peak.)"""
    import csv

    import librosa

    root = shared / "audio" / "ragaveda"
    paths = [root / row["path"] for row in csv.DictReader(open(root / "labels.csv", encoding="utf-8"))]
    chosen = [p for p in paths if p.suffix == ".mp3"] + [p for p in paths if p.suffix == ".flac"][:6]
    assert chosen[0].suffix == ".mp3"
    plan = WindowPlan(**MUSICNN, mode="all", max_windows=1000)
    for path in chosen:
        ref, _ = librosa.load(path, sr=16000)
        windows = decode_windows(path, plan)
        assert len(windows) == (1 + len(ref) // 256) // 187, path
        padded = np.concatenate([np.zeros(256, np.float32), ref, np.zeros(plan.window, np.float32)])
        for i, w in enumerate(windows):
            expected = padded[i * plan.hop:i * plan.hop + plan.window]
            assert np.abs(w - expected).max() <= 1e-4 * np.abs(expected).max(), (path, i)
