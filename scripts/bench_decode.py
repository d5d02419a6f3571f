"""What reading a song correctly costs (siamrec.data.audio): finding its real end, and the decoder's warm-up before
each window.

Writes --n stereo songs of --seconds per shape into a temporary folder (MP3 at 22.05, 32 and 44.1 kHz as shops
deliver them: CBR without a Xing header behind an ID3 tag with a cover, whose length libsndfile over-counts; MP3 VBR
with the LAME header; FLAC and WAV for comparison) and measures, in this process (CPU time, best of --repeat):

* open: ms per file to open it and read its header (soundfile) against opening it with the reader, which also finds
  the real end by reading the last second (`extra` is the cost of finding the real end);
* windows: ms per file to decode musicnn's windows (16 kHz, every 3-s patch, clip.windows=all) with the warm-up
  (siamrec.data.audio.WARMUP_SECONDS / WARMUP_FRAMES before each window) and without it (`extra` is its cost), and,
  for scale, a whole-file librosa.load at 16 kHz (what the original extractor does).

With --long-minutes M it also writes one stereo 44.1 kHz AAC (M4A) file of M minutes with ffmpeg (a raga, a DJ
mix: a format soundfile does not read, so audioread decodes it) and prints, each measured in a fresh process, the
peak resident memory and wall time of decoding its musicnn windows with the reader (which keeps at most
`_AudioreadReader.KEEP_SECONDS` of a file in memory and streams a longer one) and of a whole-file librosa.load at
its own rate (what the reader did before).

Each figure is printed on its own line, `name: value unit`; the last line is the command that produced them.

    python scripts/bench_decode.py [--n 5] [--seconds 30] [--repeat 3] [--long-minutes 60]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchkit import synth_song


def id3_tag(picture_bytes: int = 30000) -> bytes:
    """An ID3v2.4 tag holding a cover picture of `picture_bytes`."""
    def syncsafe(n):
        return bytes((n >> s) & 0x7F for s in (21, 14, 7, 0))

    body = b"APIC" + syncsafe(picture_bytes + 14) + b"\0\0\x00image/jpeg\x00\x03\x00" + bytes(picture_bytes)
    return b"ID3\x04\x00\x00" + syncsafe(len(body)) + body


def without_xing(mp3: bytes) -> bytes:
    """The MP3 without its first frame when that is the Xing/Info frame (which holds the exact length)."""
    h = int.from_bytes(mp3[:4], "big")
    mpeg1 = (h >> 19) & 3 == 3
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}[(h >> 19) & 3]
    kbps = ((0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320) if mpeg1 else
            (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160))[(h >> 12) & 15]
    length = (144 if mpeg1 else 72) * kbps * 1000 // rates[(h >> 10) & 3] + ((h >> 9) & 1)
    return mp3[length:] if b"Xing" in mp3[:length] or b"Info" in mp3[:length] else mp3


def make_songs(root: Path, n: int, seconds: float) -> dict[str, list[Path]]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    shapes = {f"mp3-{sr}-cbr-id3": sr for sr in (22050, 32000, 44100)}
    shapes |= {"mp3-44100-vbr-lame": 44100, "flac-44100": 44100, "wav-44100": 44100}
    out = {}
    for shape, sr in shapes.items():
        out[shape] = []
        for i in range(n):
            y, path = synth_song(seconds, sr, rng), root / f"{shape}-{i}.{shape.split('-')[0]}"
            if shape.startswith("mp3"):
                sf.write(path, y, sr, format="MP3", compression_level=0.5,
                         bitrate_mode="CONSTANT" if "cbr" in shape else "VARIABLE")
                if "id3" in shape:
                    path.write_bytes(id3_tag() + without_xing(path.read_bytes()))
            else:
                sf.write(path, y, sr)
            out[shape].append(path)
    return out


def cpu_ms(fn, paths, repeat: int) -> float:
    """Best-of-`repeat` CPU ms per file of fn(path)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        for p in paths:
            fn(p)
        best = min(best, (time.process_time() - t) / len(paths) * 1000)
    return best


PEAK = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
t = time.perf_counter()
{call}
print(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), round(time.perf_counter() - t, 1))
"""


def long_file_figures(folder: Path, minutes: float) -> None:
    """Peak memory and time of decoding one long M4A, the reader against librosa.load (each in a fresh process)."""
    import shutil
    import subprocess

    if not shutil.which("ffmpeg"):
        print("long file: ffmpeg is not installed (it writes the M4A file): no figures")
        return
    path = folder / "long.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=220:duration={minutes * 60}:sample_rate=44100", "-f", "lavfi", "-i",
                    f"anoisesrc=duration={minutes * 60}:sample_rate=44100:amplitude=0.05", "-filter_complex",
                    "[0][1]amerge=inputs=2", "-c:a", "aac", "-b:a", "128k", str(path)], check=True)
    calls = {
        "the reader's musicnn windows": "import siamrec.data.audio as a; a.decode_windows("
                                        f"{str(path)!r}, a.WindowPlan(sr=16000, window=48128, context=256, "
                                        "hop=47872, mode='all', max_windows=64))",
        "whole-file librosa.load at its own rate": f"import librosa; librosa.load({str(path)!r}, sr=None)",
    }
    for name, call in calls.items():
        out = subprocess.run([sys.executable, "-c", PEAK.format(call=call)], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parent.parent)
        mib, seconds = out.stdout.split()[-2:]
        print(f"{minutes:g}-min M4A, {name}: peak {mib} MiB, {seconds} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="songs per shape")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--long-minutes", type=float, default=0, help="also decode one M4A this long (0: not)")
    args = parser.parse_args()

    import librosa
    import soundfile as sf

    import siamrec.data.audio as audio

    plan = audio.WindowPlan(sr=16000, window=48128, context=256, hop=47872, mode="all", max_windows=64)

    def header_only(p):
        sf.SoundFile(p).close()

    def reader(p):
        audio._open(str(p)).close()

    def windows(p):
        audio.decode_windows(p, plan)

    def whole(p):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            librosa.load(p, sr=16000)

    warmup = (audio.WARMUP_SECONDS, audio.WARMUP_FRAMES)
    with tempfile.TemporaryDirectory() as tmp:
        songs = make_songs(Path(tmp), args.n, args.seconds)
        whole(songs["wav-44100"][0])  # librosa's first call compiles and loads: not part of any figure
        for shape, paths in songs.items():
            head, real = cpu_ms(header_only, paths, args.repeat), cpu_ms(reader, paths, args.repeat)
            info = sf.info(str(paths[0]))
            reader0 = audio._open(str(paths[0]))
            over = info.frames - reader0.frames
            reader0.close()
            print(f"{shape} header over-count: {over} frames ({over / info.samplerate * 1000:.0f} ms)")
            print(f"{shape} open header only: {head:.2f} ms/file")
            print(f"{shape} open and find the real end: {real:.2f} ms/file (extra {real - head:.2f} ms)")
            with_warmup = cpu_ms(windows, paths, args.repeat)
            audio.WARMUP_SECONDS, audio.WARMUP_FRAMES = 0.0, 0
            try:
                no_warmup = cpu_ms(windows, paths, args.repeat)
            finally:
                audio.WARMUP_SECONDS, audio.WARMUP_FRAMES = warmup
            n_windows = len(plan.starts(int(args.seconds * 16000)))
            print(f"{shape} {n_windows} musicnn windows with warm-up {warmup[0]:g} s (>= {warmup[1]} frames): "
                  f"{with_warmup:.1f} ms/file, without: {no_warmup:.1f} ms/file "
                  f"(extra {with_warmup - no_warmup:.1f} ms, {100 * (with_warmup / no_warmup - 1):.0f} %)")
            print(f"{shape} whole-file librosa.load at 16 kHz: {cpu_ms(whole, paths, args.repeat):.1f} ms/file")
        if args.long_minutes > 0:
            long_file_figures(Path(tmp), args.long_minutes)
    print("command: python " + " ".join(shlex.quote(a) for a in [f"scripts/{Path(__file__).name}", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
