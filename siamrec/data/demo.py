"""Embedded, synthesised demo corpus: try siamrec end to end without downloading a dataset.

:func:`ensure_demo` renders (once, deterministically) short clips for each style in
:data:`STYLES` with simple wavetable / additive / FM synthesis and noise-burst drums, and
writes a ``manifest.csv`` (``path,labels,tags,group``).  Styles differ the way real genres
do (tempo range, rhythm pattern, instrumentation and timbre, scale or drone).  Clips vary in
tempo, key, brightness, mix and room; the 4 clips of one pseudo-artist (``group``) share
tonic, timbre and room.  The 2-4 tags per clip cross styles and are derived from each
clip's generation parameters (tempo bucket from its bpm, ``melodic`` when it has a lead
line, ``percussive`` when it has drums, ...).
"""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm.auto import tqdm

STYLES: tuple[str, ...] = ("bhangra", "raga_drone", "rock", "electronic", "jazz", "ambient")

_VERSION = "v1"
_CLIPS_PER_ARTIST = 4
_PEAK = 10 ** (-1 / 20)  # -1 dBFS
_TABLE = 1024  # samples per wavetable cycle
_TAG_ORDER = ("slow", "medium", "fast", "indian", "percussive", "electronic", "acoustic",
              "distorted", "drone", "melodic")
_VELOCITY = {"X": 1.0, "x": 0.7, "o": 0.35}  # step-pattern characters; anything else is a rest

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "major_penta": (0, 2, 4, 7, 9),
    "minor_penta": (0, 3, 5, 7, 10),
}
_RAGAS = {
    "yaman": (0, 2, 4, 6, 7, 9, 11),
    "bhairav": (0, 1, 4, 5, 7, 8, 11),
    "kafi": (0, 2, 3, 5, 7, 9, 10),
    "bhupali": (0, 2, 4, 7, 9),
    "malkauns": (0, 3, 5, 8, 10),
}
_CHORDS = {  # semitones above the chord root; the jazz voicings are rootless (3rd first)
    "m7": (0, 3, 7, 10), "maj7": (0, 4, 7, 11), "7": (0, 4, 7, 10),
    "add9": (0, 4, 7, 14), "madd9": (0, 3, 7, 14), "sus2": (0, 2, 7, 12),
    "m9": (3, 7, 10, 14), "13": (4, 10, 14, 21), "maj9": (4, 7, 11, 14), "7b9": (4, 10, 13, 19),
}
_ROCK_PROGRESSIONS = ((0, 0, -4, -2), (0, 3, 5, 0), (0, -2, 5, 3))  # power-chord roots, 1 per bar
_EDM_PROGRESSIONS = (((0, "m7"), (-4, "maj7"), (3, "maj7"), (-2, "7")),
                     ((0, "m7"), (5, "m7"), (-4, "maj7"), (-2, "7")))
_JAZZ_PROGRESSIONS = (((2, "m9"), (7, "13"), (0, "maj9"), (9, "7b9")),
                      ((0, "maj9"), (9, "7b9"), (2, "m9"), (7, "13")),
                      ((4, "m9"), (9, "7b9"), (2, "m9"), (7, "13")))
_AMBIENT_PROGRESSIONS = (((0, "add9"), (-3, "madd9"), (-7, "add9"), (-5, "sus2")),
                         ((0, "add9"), (5, "add9"), (-3, "madd9"), (-5, "sus2")))
_CHAAL = (  # bhangra dhol (dagga, tilli) over two bars of swung 8th notes
    ("X..xX..xX..xX.x.", ".xx..xx..xx..x.x"),
    ("X..X..x.X..X.xx.", ".xx.xx.x.xx.x..x"),
)
_TEENTAAL = tuple("dha dhin dhin dha dha dhin dhin dha dha tin tin ta ta dhin dhin dha".split())
_BOLS = {"dha": (1.0, 1.0, 0.0), "dhin": (1.0, 0.0, 1.0), "tin": (0.0, 0.0, 1.0), "ta": (0.0, 1.0, 0.0)}
_CYMBAL = (1.0, 1.47, 2.09, 2.56, 3.13, 3.71, 4.3)  # inharmonic partial ratios
_JINGLE = (1.0, 1.34, 1.79, 2.31)


class _Hits(NamedTuple):
    onsets: np.ndarray  # sample index of each hit
    vel: np.ndarray  # velocity (linear gain) of each hit
    step: np.ndarray  # absolute grid step of each hit; pattern position is step % len(pattern)


@dataclass(frozen=True)
class _Clip:
    sr: int
    n: int  # samples
    rng: np.random.Generator  # this clip's own randomness
    artist: np.random.Generator  # the same stream for every clip of one pseudo-artist


# ----------------------------------------------------------------------------- utilities

def _rng(seed: int, style: str, *keys: int) -> np.random.Generator:
    """Independent generator for (seed, style, *keys); never touches global RNG state."""
    return np.random.default_rng([seed, zlib.crc32(style.encode()), *keys])


def _hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=float) - 69.0) / 12.0)


def _vary(rng, value, db):
    """`value` scaled by a random gain within +-`db` decibels."""
    return value * 10 ** (rng.uniform(-db, db) / 20)


def _smooth(x, tau):
    """One-pole low-pass with time constant `tau` samples, starting at rest on x[0]."""
    a = np.exp(-1.0 / max(tau, 1e-9))
    return signal.lfilter([1.0 - a], [1.0, -a], x, zi=[a * x[0]])[0]


def _lowpass(x, sr, hz):
    return signal.sosfilt(signal.butter(2, min(hz, 0.45 * sr), fs=sr, output="sos"), x)


def _bandnoise(rng, sr, n, band):
    """White noise band-passed to `band` Hz (clamped below Nyquist)."""
    hi = min(band[1], 0.475 * sr)
    lo = min(band[0], 0.5 * hi)
    sos = signal.butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def _env(n, sr, tau, attack=0.002):
    """Linear attack of `attack` s, then exponential decay with time constant `tau` s."""
    t = np.arange(n) / sr
    return np.minimum(t / attack, 1.0) * np.exp(-t / tau)


def _since(n, onsets):
    """Per sample: index of the latest onset at or before it (-1 before the first) and samples since it."""
    idx = np.searchsorted(onsets, np.arange(n), side="right") - 1
    return idx, np.arange(n) - onsets[np.maximum(idx, 0)]


# ----------------------------------------------------------------------------- oscillators

def _table(sr, f_max, slope, odd_only=False):
    """One cycle of a harmonic wave, harmonic k at amplitude k**-slope (1: saw-like, 3: nearly
    sine), band-limited so that a note up to `f_max` Hz does not alias."""
    k = np.arange(1, max(1, int(0.45 * sr / f_max)) + 1)
    amps = k ** -float(slope)
    if odd_only:
        amps[1::2] = 0.0
    cycle = amps @ np.sin(np.outer(k, np.arange(_TABLE) * (2 * np.pi / _TABLE)))
    return cycle / np.abs(cycle).max()


def _osc(table, freq, n, sr, phase=0.0):
    """Play `table` at `freq` Hz (scalar or per-sample array) with linear interpolation."""
    pos = (phase + np.cumsum(np.broadcast_to(freq, (n,))) / sr) * _TABLE
    i = pos.astype(np.int64)
    frac = pos - i
    i &= _TABLE - 1
    wrapped = np.append(table, table[0])
    return wrapped[i] + frac * (wrapped[i + 1] - wrapped[i])


def _contour(sr, n, onsets, pitches, gains, *, glide, attack, detach=0.0):
    """Pitch and loudness tracks of a monophonic legato part.  Note i holds `pitches[i]` (MIDI,
    may be fractional) at `gains[i]` from `onsets[i]` (samples, sorted) to the next onset; pitch
    glides with time constant `glide` s (portamento / meend), loudness with `attack` s, and
    `detach` dips the loudness at each onset to re-articulate repeated notes."""
    idx, since = _since(n, onsets)
    cur = np.maximum(idx, 0)
    pitch = _smooth(np.asarray(pitches, dtype=float)[cur], glide * sr)
    loud = _smooth(np.where(idx >= 0, np.asarray(gains, dtype=float)[cur], 0.0), attack * sr)
    if detach:
        loud *= 1.0 - detach * np.exp(-np.maximum(since, 0) / (attack * sr))
    return pitch, loud


def _voice(sr, pitch, vibrato, slope, odd_only=False):
    """Oscillator following a pitch track (MIDI per sample) with `vibrato` = (rate Hz, depth cents)."""
    rate, cents = vibrato
    if cents:
        pitch = pitch + cents / 100.0 * np.sin(2 * np.pi * rate / sr * np.arange(pitch.size))
    freq = _hz(pitch)
    return _osc(_table(sr, freq.max(), slope, odd_only), freq, pitch.size, sr)


def _line(sr, n, onsets, pitches, gains, *, slope, glide, attack, vibrato=(5.0, 0.0),
          detach=0.0, odd_only=False, breath=None):
    """Monophonic legato voice (see `_contour` and `_voice`); `breath` (a noise track) is mixed
    in under the same loudness contour."""
    pitch, loud = _contour(sr, n, onsets, pitches, gains, glide=glide, attack=attack, detach=detach)
    tone = _voice(sr, pitch, vibrato, slope, odd_only)
    return loud * (tone if breath is None else tone + breath)


def _pad(sr, n, period, chords, *, slope, attack, glide, vibrato, detune=0.1, odd_only=False,
         detach=0.0):
    """Sustained chord pad: one legato voice per chord tone (gliding between chords), each
    doubled slightly detuned (ensemble); `chords` (rows of MIDI notes) change every `period` s."""
    onsets = np.round(np.arange(0.0, n / sr, period) * sr).astype(np.int64)
    notes = np.asarray(chords, dtype=float)[np.arange(onsets.size) % len(chords)]
    out = np.zeros(n)
    for v in range(notes.shape[1]):
        pitch, loud = _contour(sr, n, onsets, notes[:, v], np.ones(onsets.size), glide=glide,
                               attack=attack, detach=detach)
        out += loud * (_voice(sr, pitch - detune, vibrato, slope, odd_only)
                       + _voice(sr, pitch + detune, vibrato, slope, odd_only))
    return out


# ----------------------------------------------------------------------------- note templates

def _pluck(sr, f0, dur, slope, tau, bend=0.0):
    """Plucked string: bright attack mellowing as it decays (two wavetables crossfaded);
    `bend` starts the pitch sharp by that fraction, settling within ~20 ms (a twang)."""
    n = int(dur * sr)
    t = np.arange(n) / sr
    freq = f0 * (1.0 + bend * np.exp(-t / 0.02))
    bright = _osc(_table(sr, freq[0], slope), freq, n, sr)
    dull = _osc(_table(sr, freq[0], slope + 2.0), freq, n, sr)
    fade = np.exp(-t / (0.25 * tau))
    return _env(n, sr, tau) * (fade * bright + (1.0 - fade) * dull)


def _piano(sr, f0, dur, slope):
    """Soft piano-like note: slightly stretched (inharmonic) partials, upper ones dying faster."""
    t = np.arange(int(dur * sr)) / sr
    k = np.arange(1, 13)
    fk = f0 * k * np.sqrt(1.0 + 3e-4 * k**2)
    k, fk = k[fk < 0.45 * sr], fk[fk < 0.45 * sr]
    partials = np.sin(2 * np.pi * np.outer(fk, t)) * np.exp(-np.outer(1.0 + 0.6 * k, t))
    return np.minimum(t / 0.003, 1.0) * (k ** -float(slope) @ partials)


def _bell(sr, f0, dur, index):
    """FM bell (inharmonic modulator ratio 1.4) whose brightness `index` fades faster than its body."""
    t = np.arange(int(dur * sr)) / sr
    modulator = index * np.exp(-t / 0.4) * np.sin(2 * np.pi * 1.4 * f0 * t)
    return _env(t.size, sr, 1.0, 0.003) * np.sin(2 * np.pi * f0 * t + modulator)


def _tanpura_string(sr, f0, slope):
    """One tanpura pluck: rings ~3 s and blooms (jawari buzz: upper harmonics swell ~0.3 s in)."""
    t = np.arange(int(4.0 * sr)) / sr
    dull = _osc(_table(sr, f0, slope + 1.5), f0, t.size, sr)
    bright = _osc(_table(sr, f0, slope), f0, t.size, sr)
    bloom = (t / 0.35) * np.exp(1.0 - t / 0.35)
    return _env(t.size, sr, 2.5, 0.005) * (dull + 0.8 * bloom * bright)


# ----------------------------------------------------------------------------- drum templates

def _membrane(sr, f0, dur, tau, *, bend=0.0, bend_tau=0.02, ratios=(1.0,), amps=(1.0,)):
    """Pitched drum head: partials at `ratios` x a pitch gliding from f0*(1+bend) to f0 (bend > 0:
    a struck head settling; bend < 0: a palm-pressed head rising); upper partials decay faster."""
    t = np.arange(int(dur * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1.0 + bend * np.exp(-t / bend_tau))) / sr
    r, a = np.asarray(ratios)[:, None], np.asarray(amps)[:, None]
    audible = r[:, 0] * f0 * (1.0 + max(bend, 0.0)) < 0.45 * sr
    body = (a * np.sin(r * phase) * np.exp(-r * t / tau))[audible].sum(axis=0)
    return np.minimum(t / 0.001, 1.0) * body


def _metal(rng, sr, f0, dur, tau, ratios):
    """Metallic hit (cymbal, chimta): ringing inharmonic partials over a shorter burst of high noise."""
    t = np.arange(int(dur * sr)) / sr
    r = np.asarray(ratios)[:, None]
    r = r[r[:, 0] * f0 < 0.45 * sr]
    tone = np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 2 * np.pi, r.shape)).sum(axis=0) / len(ratios)
    noise = _env(t.size, sr, tau / 3, 0.0005) * _bandnoise(rng, sr, t.size, (3000, 9000))
    return _env(t.size, sr, tau, 0.0005) * tone + 0.5 * noise


def _kick(rng, sr, f0, tau):
    body = _membrane(sr, f0, 0.5, tau, bend=2.0, bend_tau=0.03)
    click = _env(body.size, sr, 0.004, 0.0005) * _bandnoise(rng, sr, body.size, (1000, 5000))
    return body + 0.3 * click


def _snare(rng, sr, f0, snap):
    body = _membrane(sr, f0, 0.4, 0.05, bend=0.3, bend_tau=0.01)
    wires = _env(body.size, sr, snap, 0.0005) * _bandnoise(rng, sr, body.size, (1500, 6000))
    return 0.5 * body + wires


def _hat(rng, sr, tau):
    n = int(6 * tau * sr)
    return _env(n, sr, tau, 0.0005) * _bandnoise(rng, sr, n, (6000, 10000))


def _dagga(rng, sr, f0):
    """Dhol bass side (curved stick): a loud, boomy low pitch that drops as it settles, plus a slap."""
    body = _membrane(sr, f0, 0.6, 0.28, bend=0.5, bend_tau=0.03, ratios=(1.0, 1.5, 2.0),
                     amps=(1.0, 0.4, 0.2))
    slap = _env(body.size, sr, 0.01, 0.0005) * _bandnoise(rng, sr, body.size, (200, 2000))
    return body + 0.4 * slap


def _tilli(rng, sr, f0):
    """Dhol treble side (thin cane): a sharp, short, high crack."""
    body = _membrane(sr, f0, 0.25, 0.06, bend=0.1, bend_tau=0.01, ratios=(1.0, 1.59, 2.14),
                     amps=(1.0, 0.6, 0.4))
    crack = _env(body.size, sr, 0.012, 0.0003) * _bandnoise(rng, sr, body.size, (2000, 6000))
    return body + 0.8 * crack


# ----------------------------------------------------------------------------- rhythm and melody

def _hits(pattern, bpm, steps_per_beat, n, sr, *, swing=0.5, rng=None, jitter=0.0) -> _Hits:
    """Hits of `pattern` looped over the clip ('X' accent, 'x' normal, 'o' ghost, else rest).
    Odd steps sit at `swing` of their step pair (0.5 straight, 2/3 triplet swing); with `rng`,
    timing is humanised by `jitter` s and velocities by up to -2 dB."""
    step = 60.0 / bpm / steps_per_beat
    k = np.arange(int(n / sr / step) + 1)
    vel = np.array([_VELOCITY.get(ch, 0.0) for ch in pattern])[k % len(pattern)]
    t = (k - k % 2 + (k % 2) * 2 * swing) * step
    if rng is not None:
        t = t + rng.normal(0.0, jitter, k.size)
        vel = vel * rng.uniform(0.8, 1.0, k.size)
    onsets = np.round(np.maximum(t, 0.0) * sr).astype(np.int64)
    keep = (vel > 0) & (onsets < n)
    return _Hits(onsets[keep], vel[keep], k[keep])


def _swung(beats, swing):
    """Move off-beat 8th notes (beat + 0.5) to beat + `swing`."""
    whole = np.floor(beats)
    return whole + np.where(beats - whole >= 0.5, swing, 0.0)


def _at_bar(onsets, sr, bar, seq):
    """The entry of `seq` (one per bar, looping) in force at each onset."""
    return np.asarray(seq)[(onsets / sr // bar).astype(np.int64) % len(seq)]


def _walk(rng, size, scale, low, high):
    """Semitones above the tonic of a random walk over scale degrees (steps -2..+2), folded
    into degrees [low, high] (low <= 0 <= high)."""
    deg = np.cumsum(rng.choice((-2, -1, -1, 0, 1, 1, 2), size=size)) - low
    span = high - low
    deg = low + span - np.abs(deg % (2 * span) - span)
    return 12 * (deg // len(scale)) + np.asarray(scale)[deg % len(scale)]


def _melody(rng, total_beats, durations, rest_p, scale, low, high):
    """A phrase filling `total_beats`: onsets (beats), semitones above the tonic, sounding mask."""
    d = rng.choice(durations, size=int(total_beats / min(durations)) + 1)
    onsets = np.concatenate(([0.0], np.cumsum(d)))
    onsets = onsets[onsets < total_beats]
    return onsets, _walk(rng, onsets.size, scale, low, high), rng.random(onsets.size) >= rest_p


def _place(n, template, onsets, gains):
    """Mix copies of `template` starting at `onsets` (samples), scaled by `gains`."""
    out = np.zeros(n)
    for start, gain in zip(onsets, gains):
        if gain > 0:
            seg = template[: n - start]
            out[start : start + seg.size] += gain * seg
    return out


def _place_notes(n, onsets, pitches, gains, render: Callable[[int], np.ndarray]):
    """Mix notes rendered by `render(midi)` (once per distinct pitch) at `onsets`."""
    out = np.zeros(n)
    for midi in np.unique(pitches):
        sel = pitches == midi
        out += _place(n, render(int(midi)), onsets[sel], gains[sel])
    return out


def _drums(rng, sr, n, bpm, parts, *, swing=0.5, jitter=0.0):
    """Mix looping drum `parts` = [(template, pattern, steps_per_beat, gain), ...]; with
    `jitter` > 0 the playing is humanised."""
    out = np.zeros(n)
    for template, pattern, steps, gain in parts:
        h = _hits(pattern, bpm, steps, n, sr, swing=swing, rng=rng if jitter else None, jitter=jitter)
        out += gain * _place(n, template, h.onsets, h.vel)
    return out


def _random_pattern(rng, length, p, char="x"):
    """A step pattern with `char` on each step with probability `p`, rests elsewhere."""
    return "".join(np.where(rng.random(length) < p, char, "."))


# ----------------------------------------------------------------------------- instruments

def _tumbi_riff(rng, sr, n, bpm, swing, tonic, scale, slope, tau):
    """Tumbi: a repeating two-bar riff of bright, twangy high plucks on swung 8th notes."""
    h = _hits("X" + _random_pattern(rng, 15, 0.75), bpm, 2, n, sr, swing=swing, rng=rng, jitter=0.003)
    motif = tonic + _walk(rng, 16, scale, -2, len(scale))
    return _place_notes(n, h.onsets, motif[h.step % 16], h.vel,
                        lambda m: _pluck(sr, _hz(m), 0.6, slope, tau, bend=0.03))


def _tanpura(rng, sr, n, sa, cycle, slope):
    """Tanpura drone: strings Pa, Sa, Sa, low Sa plucked in turn every `cycle` s; the long,
    blooming notes overlap into a continuous drone."""
    out = np.zeros(n)
    for i, midi in enumerate((sa - 5, sa, sa, sa - 12)):
        onsets = np.round(np.arange(i * cycle / 4, n / sr, cycle) * sr).astype(np.int64)
        f0 = _hz(midi + rng.uniform(-0.04, 0.04))
        out += _place(n, _tanpura_string(sr, f0, slope), onsets, rng.uniform(0.8, 1.0, onsets.size))
    return out


def _tabla(rng, sr, n, bpm, sa_hz, bayan_hz, fills):
    """Tabla playing the teentaal theka (16 beats, one bol per beat): the bayan's pitch bends
    upward (palm pressure), dayan 'na' rings with harmonic overtones tuned to Sa, 'tin' is a
    purer, longer ring; on a fraction `fills` of beats quick dry 'tirakita' strokes follow."""
    strokes = (_membrane(sr, bayan_hz, 1.0, 0.45, bend=-0.3, bend_tau=0.15),
               _membrane(sr, sa_hz, 0.8, 0.3, bend=0.02, bend_tau=0.01, ratios=(1, 2, 3, 4, 5),
                         amps=(1.0, 0.6, 0.45, 0.3, 0.2)),
               _membrane(sr, sa_hz, 1.0, 0.6, ratios=(1, 2, 3), amps=(1.0, 0.3, 0.15)))
    beat = _hits("x", bpm, 1, n, sr, rng=rng, jitter=0.006)
    bols = np.array([_BOLS[b] for b in _TEENTAAL])[beat.step % 16]
    out = sum(_place(n, s, beat.onsets, beat.vel * bols[:, j]) for j, s in enumerate(strokes))
    dry = _hits("..xx", bpm, 4, n, sr, rng=rng, jitter=0.004)
    te = _env(int(0.15 * sr), sr, 0.02, 0.0005) * _bandnoise(rng, sr, int(0.15 * sr), (800, 4000))
    chosen = rng.random(int(n / sr * bpm / 60) + 2) < fills
    return out + 0.5 * _place(n, te, dry.onsets, dry.vel * chosen[dry.step // 4])


def _raga_melody(rng, sr, n, bpm, sa, raga, flute, alap):
    """Lead line on the raga's scale, gliding between notes (meend) with vibrato: a breathy
    bansuri-like flute or a bowed, sarangi-like tone; long held notes in alap."""
    beat = 60.0 / bpm
    durations = (1.0, 2.0, 2.0, 3.0, 4.0) if alap else (0.5, 1.0, 1.0, 1.0, 2.0)
    onsets, semis, sounding = _melody(rng, n / sr / beat, durations, 0.1, raga, -3, len(raga) + 2)
    breath = 0.25 * _bandnoise(rng, sr, n, (800, 4000)) if flute else None
    return _line(sr, n, np.round(onsets * beat * sr).astype(np.int64), sa + (24 if flute else 12) + semis,
                 sounding * 1.0, slope=2.6 if flute else 1.1, glide=0.12 if alap else 0.05,
                 attack=0.08, vibrato=(5.5, 12.0 if flute else 25.0), breath=breath)


def _amp_sim(x, sr, drive, cab_hz):
    """Guitar amp: tanh overdrive of the peak-normalised signal, then a low-pass 'cabinet'."""
    return _lowpass(np.tanh(drive * x / (np.abs(x).max() + 1e-12)), sr, cab_hz)


def _power_chords(rng, sr, n, bpm, roots, chug):
    """Power chords (root, fifth, octave; two detuned saws each), one per bar, as palm-muted
    8th-note chugs or ringing whole notes (distort afterwards)."""
    root = np.asarray(roots)[(np.arange(n) / sr // (240.0 / bpm)).astype(np.int64) % len(roots)]
    strings = sum(_osc(_table(sr, _hz(root.max() + iv), 1.0), _hz(root + iv + d), n, sr, rng.random())
                  for iv in (0, 7, 12) for d in (-0.08, 0.08))
    h = _hits("XxxxXxxx", bpm, 2, n, sr) if chug else _hits("X", bpm, 0.25, n, sr)
    idx, since = _since(n, h.onsets)
    return strings * h.vel[np.maximum(idx, 0)] * np.exp(-since / sr / (0.1 if chug else 2.0))


def _lead_guitar(rng, sr, n, bpm, key):
    """Lead guitar line on the minor pentatonic: bends into notes, wide vibrato (distort afterwards)."""
    beat = 60.0 / bpm
    onsets, semis, sounding = _melody(rng, n / sr / beat, (0.5, 0.5, 1.0, 1.0, 2.0), 0.15,
                                      _SCALES["minor_penta"], -2, 7)
    return _line(sr, n, np.round(onsets * beat * sr).astype(np.int64), key + 24 + semis, sounding * 1.0,
                 slope=1.0, glide=0.025, attack=0.01, vibrato=(6.0, 25.0), detach=0.5)


def _walking_bass(rng, roots, thirds):
    """Walking bass, 4 quarter notes per bar: root, third, fifth or octave, then a chromatic
    approach to the next bar's root."""
    size = roots.size
    return np.stack([roots, roots + thirds, roots + rng.choice((7, 12), size),
                     np.roll(roots, -1) + rng.choice((-1, 1), size)], axis=1).ravel()


def _horn_line(rng, sr, n, bpm, swing, key):
    """Muted-horn-like melody on the major scale: swung 8ths and longer notes, detached, light vibrato."""
    beat = 60.0 / bpm
    onsets, semis, sounding = _melody(rng, n / sr / beat, (0.5, 0.5, 1.0, 1.5, 2.0), 0.15,
                                      _SCALES["major"], -2, 9)
    return _line(sr, n, np.round(_swung(onsets, swing) * beat * sr).astype(np.int64), key + 12 + semis,
                 sounding * rng.uniform(0.7, 1.0, onsets.size), slope=1.4, glide=0.015, attack=0.03,
                 vibrato=(5.0, 12.0), detach=0.8)


# ----------------------------------------------------------------------------- mixing

def _reverb(rng, sr, x, rt60, wet):
    """Diffuse room: convolution with exponentially decaying (-60 dB at `rt60` s), darkened noise."""
    m = int(rt60 * sr)
    ir = _smooth(rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m), 2.0)
    return (1.0 - wet) * x + wet * signal.fftconvolve(x, ir / np.linalg.norm(ir))[: x.size]


def _master(c: _Clip, parts, rt60, wet):
    """Mix `parts` [(gain, track)] at gains relative to each track's RMS, add room and a little
    hiss, and peak-normalise to -1 dBFS."""
    mix = sum(g * x / (np.sqrt(np.mean(x**2)) + 1e-12) for g, x in parts)
    mix = _reverb(c.rng, c.sr, mix, rt60, wet)
    mix = mix / np.abs(mix).max() + 10 ** (c.rng.uniform(-60, -45) / 20) * c.rng.standard_normal(c.n)
    return _PEAK * mix / np.abs(mix).max()


# ----------------------------------------------------------------------------- styles
# Each returns (audio, bpm, tag flags).  All artist-level draws come first and depend only on the
# artist stream, so the clips of one pseudo-artist share them.

def _flags(**present):
    """The names whose condition holds, e.g. _flags(melodic=has_lead, percussive=True)."""
    return {name for name, on in present.items() if on}


def _bhangra(c: _Clip):
    """Dhol (booming dagga + cracking tilli) in the swung chaal at 160-190 bpm, optional tumbi
    riff, optional chimta jingles."""
    a, r, sr, n = c.artist, c.rng, c.sr, c.n
    tonic = 69 + int(a.integers(0, 7))  # tumbi Sa, A4..D#5
    scale = _SCALES[str(a.choice(("major_penta", "mixolydian")))]
    dagga_hz, tilli_hz = a.uniform(85, 120), a.uniform(380, 600)
    tumbi_slope, tumbi_tau = a.uniform(0.5, 1.0), a.uniform(0.12, 0.25)
    chimta_hz = a.uniform(1500, 2200) if a.random() < 0.5 else None
    rt60, wet = a.uniform(0.3, 0.8), a.uniform(0.08, 0.2)

    bpm, swing = r.uniform(160, 190), r.uniform(0.58, 0.67)
    melodic = r.random() < 0.65
    dagga_pattern, tilli_pattern = _CHAAL[r.integers(len(_CHAAL))]
    kit = [(_dagga(r, sr, dagga_hz), dagga_pattern, 2, 1.0),
           (_tilli(r, sr, tilli_hz), tilli_pattern, 2, _vary(r, 0.6, 2))]
    if chimta_hz:
        kit.append((_metal(r, sr, chimta_hz, 0.3, 0.08, _JINGLE), "x.X.x.X.", 2, _vary(r, 0.15, 3)))
    parts = [(1.0, _drums(r, sr, n, bpm, kit, swing=swing, jitter=0.004))]
    if melodic:
        parts.append((_vary(r, 0.6, 3), _tumbi_riff(r, sr, n, bpm, swing, tonic, scale,
                                                    tumbi_slope + r.uniform(-0.1, 0.1), tumbi_tau)))
    flags = _flags(indian=True, percussive=True, melodic=melodic)
    return _master(c, parts, rt60, wet), bpm, flags


def _raga_drone(c: _Clip):
    """Tanpura drone (Pa-Sa-Sa-low Sa) with tabla teentaal and/or a gliding raga melody; the
    section decides the line-up: alap (drone + melody), gat (soft drone, tabla, melody) or
    theka (drone + tabla)."""
    a, r, sr, n = c.artist, c.rng, c.sr, c.n
    sa = 48 + int(a.integers(0, 8))  # C3..G3
    raga = _RAGAS[str(a.choice(sorted(_RAGAS)))]
    jawari = a.uniform(0.6, 1.1)  # drone spectral slope: lower is buzzier
    flute = a.random() < 0.5  # bansuri-like vs bowed lead
    bayan_hz = a.uniform(70, 95)
    rt60, wet = a.uniform(1.2, 2.5), a.uniform(0.2, 0.35)

    section = str(r.choice(("alap", "gat", "theka")))
    bpm = r.uniform(60, 110)
    drone_gain = r.uniform(0.25, 0.4) if section == "gat" else r.uniform(0.7, 1.0)
    parts = [(drone_gain, _tanpura(r, sr, n, sa, r.uniform(2.2, 3.2), jawari + r.uniform(-0.1, 0.1)))]
    tabla, melody = section != "alap", section != "theka"
    if tabla:
        fills = r.uniform(0.0, 0.3)
        parts.append((_vary(r, 1.0, 2), _tabla(r, sr, n, bpm, _hz(sa + 12), bayan_hz, fills)))
    if melody:
        parts.append((_vary(r, 0.8, 2), _raga_melody(r, sr, n, bpm, sa, raga, flute, section == "alap")))
    flags = _flags(indian=True, drone=drone_gain >= 0.5, percussive=tabla, melodic=melody)
    return _master(c, parts, rt60, wet), bpm, flags


def _rock(c: _Clip):
    """Overdriven power chords, bass on 8ths, kick/backbeat-snare/8th-hat beat at 110-150 bpm,
    crash every 8 bars, optional lead guitar."""
    a, r, sr, n = c.artist, c.rng, c.sr, c.n
    key = 40 + int(a.integers(0, 8))  # E2..B2
    drive, cab_hz = a.uniform(1.5, 12.0), a.uniform(2500, 4500)
    kick_hz, snare_hz = a.uniform(45, 60), a.uniform(170, 230)
    rt60, wet = a.uniform(0.6, 1.2), a.uniform(0.08, 0.2)

    bpm = r.uniform(110, 150)
    roots = key + np.array(_ROCK_PROGRESSIONS[r.integers(len(_ROCK_PROGRESSIONS))])
    chug, melodic = r.random() < 0.5, r.random() < 0.5
    kit = [(_kick(r, sr, kick_hz, 0.25), str(r.choice(("X...X.x.", "X.x.X...", "X...XX.."))), 2, 1.0),
           (_snare(r, sr, snare_hz, 0.12), "..X...X.", 2, 0.8),
           (_hat(r, sr, 0.04), "XxXxXxXx", 2, 0.3),
           (_metal(r, sr, 350.0, 2.5, 0.9, _CYMBAL), "X.......", 0.25, 0.4)]
    b = _hits("Xxxxxxxx", bpm, 2, n, sr, rng=r, jitter=0.004)
    bass = _place_notes(n, b.onsets, _at_bar(b.onsets, sr, 240.0 / bpm, roots - 12), b.vel,
                        lambda m: _pluck(sr, _hz(m), 0.6, 2.2, 0.2))
    parts = [(1.0, _drums(r, sr, n, bpm, kit, jitter=0.004)),
             (_vary(r, 1.0, 2), _amp_sim(_power_chords(r, sr, n, bpm, roots, chug), sr, drive, cab_hz)),
             (_vary(r, 0.5, 2), bass)]
    if melodic:
        parts.append((_vary(r, 0.7, 2), _amp_sim(_lead_guitar(r, sr, n, bpm, key), sr, drive, cab_hz)))
    flags = _flags(percussive=True, distorted=drive >= 4.0, melodic=melodic)
    return _master(c, parts, rt60, wet), bpm, flags


def _electronic(c: _Clip):
    """Four-on-the-floor kick, clap on 2 and 4, off-beat open hats, side-chain-pumped synth
    bass and saw pad at 120-130 bpm, optional 16th-note arpeggio lead; machine-tight timing."""
    a, r, sr, n = c.artist, c.rng, c.sr, c.n
    root = 36 + int(a.integers(0, 8))  # C2..G2
    bass_slope, cutoff = a.uniform(0.8, 1.5), a.uniform(600, 2500)
    lead_slope, pump = a.uniform(0.8, 2.0), a.uniform(0.4, 0.8)
    kick_hz = a.uniform(45, 60)
    rt60, wet = a.uniform(0.5, 1.5), a.uniform(0.1, 0.25)

    bpm = r.uniform(120, 130)
    bar = 240.0 / bpm
    progression = _EDM_PROGRESSIONS[r.integers(len(_EDM_PROGRESSIONS))]
    chords = np.array([[root + p + iv for iv in _CHORDS[q]] for p, q in progression])
    melodic = r.random() < 0.6
    kit = [(_kick(r, sr, kick_hz, 0.3), "X...", 4, 1.0),
           (_snare(r, sr, 200.0, 0.15), "....X.......X...", 4, 0.5),
           (_hat(r, sr, 0.12), "..X.", 4, 0.35)]
    if r.random() < 0.5:
        kit.append((_hat(r, sr, 0.03), "xoxo", 4, 0.25))
    b = _hits(str(r.choice(("..X.", ".xX.", "..Xx"))), bpm, 4, n, sr)
    bass = _place_notes(n, b.onsets, _at_bar(b.onsets, sr, bar, chords[:, 0]), b.vel,
                        lambda m: _pluck(sr, _hz(m), 0.4, bass_slope, 0.15))
    pad = _pad(sr, n, bar, chords + 24, slope=1.0, attack=0.05, glide=0.0, vibrato=(0.2, 4.0), detune=0.12)
    _, since = _since(n, _hits("x", bpm, 1, n, sr).onsets)
    pumped = 1.0 - pump * np.exp(-since / (0.15 * sr))
    parts = [(1.0, _drums(r, sr, n, bpm, kit)),
             (_vary(r, 0.8, 2), pumped * _lowpass(bass, sr, cutoff)),
             (_vary(r, 0.4, 3), pumped * _lowpass(pad, sr, 2 * cutoff))]
    if melodic:
        arp = _hits("X" + _random_pattern(r, 15, 0.75), bpm, 4, n, sr)
        tones = np.concatenate([chords, chords[:, :1] + 12], axis=1) + 24
        order = r.integers(0, tones.shape[1], 16)
        notes = _at_bar(arp.onsets, sr, bar, tones)[np.arange(arp.onsets.size), order[arp.step % 16]]
        parts.append((_vary(r, 0.5, 2), _place_notes(n, arp.onsets, notes, arp.vel,
                                                     lambda m: _pluck(sr, _hz(m), 0.3, lead_slope, 0.1))))
    flags = _flags(electronic=True, percussive=True, melodic=melodic)
    return _master(c, parts, rt60, wet), bpm, flags


def _jazz(c: _Clip):
    """Swing ride pattern, walking bass and soft-piano rootless extended chords at 90-160 bpm;
    optional drums and horn-like melody."""
    a, r, sr, n = c.artist, c.rng, c.sr, c.n
    key = 53 + int(a.integers(0, 8))  # F3..C4
    swing, piano_slope = a.uniform(0.6, 0.68), a.uniform(1.0, 1.8)
    ride_hz = a.uniform(450, 700)
    rt60, wet = a.uniform(0.8, 1.5), a.uniform(0.15, 0.3)

    bpm = r.uniform(90, 160)
    bar = 240.0 / bpm
    progression = _JAZZ_PROGRESSIONS[r.integers(len(_JAZZ_PROGRESSIONS))]
    roots = np.array([key + (d if d <= 6 else d - 12) for d, _ in progression])
    voicings = roots[:, None] + np.array([_CHORDS[q] for _, q in progression])
    has_drums, melodic = r.random() < 0.75, r.random() < 0.5

    comp = _hits(str(r.choice(("X..x....X..x....", "..x..x....x...x.", "x.....x...x..x.."))),
                 bpm, 2, n, sr, swing=swing, rng=r, jitter=0.01)
    piano = _place_notes(n, np.repeat(comp.onsets, 4), _at_bar(comp.onsets, sr, bar, voicings).ravel(),
                         np.repeat(comp.vel, 4), lambda m: _piano(sr, _hz(m), 1.2, piano_slope))
    beats = _hits("x", bpm, 1, n, sr, rng=r, jitter=0.008)
    n_bars = beats.step.max() // 4 + 1
    walk = _walking_bass(r, 36 + roots[np.arange(n_bars) % 4] % 12,
                         np.array([_CHORDS[q][0] for _, q in progression])[np.arange(n_bars) % 4])
    bass = _place_notes(n, beats.onsets, walk[beats.step], beats.vel,
                        lambda m: _pluck(sr, _hz(m), 1.0, 2.5, 0.35))
    parts = [(_vary(r, 0.8, 2), piano), (_vary(r, 0.8, 2), bass)]
    if has_drums:
        kit = [(_metal(r, sr, ride_hz, 1.5, 0.6, _CYMBAL), "x.Xox.Xo", 2, 1.0),
               (_hat(r, sr, 0.02), "..x...x.", 2, 0.4),
               (_kick(r, sr, 55.0, 0.2), "o.o.o.o.", 2, 0.3),
               (_snare(r, sr, 220.0, 0.08), _random_pattern(r, 16, 0.12, "o"), 2, 0.5)]
        parts.append((_vary(r, 0.6, 2), _drums(r, sr, n, bpm, kit, swing=swing, jitter=0.008)))
    if melodic:
        parts.append((_vary(r, 0.8, 2), _horn_line(r, sr, n, bpm, swing, key)))
    flags = _flags(acoustic=True, percussive=has_drums, melodic=melodic)
    return _master(c, parts, rt60, wet), bpm, flags


def _ambient(c: _Clip):
    """Slow, swelling pad chords (string ensemble or synth) changing every 2 bars at 50-80 bpm,
    big room, no drums; optional low drone and sparse bell / piano melody."""
    a, r, sr, n = c.artist, c.rng, c.sr, c.n
    tonic = 48 + int(a.integers(0, 8))  # C3..G3
    synth = a.random() < 0.5  # synth pad + FM bells vs strings + piano
    slope = a.uniform(1.8, 2.8) if synth else a.uniform(0.9, 1.3)
    cutoff = a.uniform(1200, 3000)
    rt60, wet = a.uniform(2.5, 4.0), a.uniform(0.35, 0.55)

    bpm = r.uniform(50, 80)
    beat = 60.0 / bpm
    progression = _AMBIENT_PROGRESSIONS[r.integers(len(_AMBIENT_PROGRESSIONS))]
    chords = [[tonic + p + iv for iv in _CHORDS[q]] for p, q in progression]
    drone, melodic = r.random() < 0.5, r.random() < 0.5
    pad = _pad(sr, n, 8 * beat, chords, slope=slope + r.uniform(-0.15, 0.15), attack=1.5, glide=0.3,
               vibrato=(0.3, 6.0) if synth else (5.0, 8.0), detune=0.08 if synth else 0.12,
               odd_only=synth, detach=0.7)
    parts = [(1.0, _lowpass(pad, sr, cutoff))]
    if drone:
        pedal = _pad(sr, n, n / sr, [[tonic - 12, tonic - 5]], slope=2.0, attack=2.0, glide=0.0,
                     vibrato=(0.2, 3.0))
        parts.append((_vary(r, 0.5, 2), pedal))
    if melodic:
        onsets, semis, sounding = _melody(r, n / sr / beat, (2.0, 3.0, 4.0), 0.3,
                                          _SCALES["major_penta"], 0, 7)
        render = ((lambda m: _bell(sr, _hz(m), 2.5, 1.5)) if synth
                  else (lambda m: _piano(sr, _hz(m), 2.0, 1.5)))
        on = np.round(onsets * beat * sr).astype(np.int64)
        parts.append((_vary(r, 0.5, 2), _place_notes(n, on, tonic + 24 + semis, sounding * 1.0, render)))
    flags = _flags(electronic=synth, acoustic=not synth, drone=drone, melodic=melodic)
    return _master(c, parts, rt60, wet), bpm, flags


_RENDER = {"bhangra": _bhangra, "raga_drone": _raga_drone, "rock": _rock,
           "electronic": _electronic, "jazz": _jazz, "ambient": _ambient}


# ----------------------------------------------------------------------------- corpus

def _tags(bpm, flags):
    tempo = "slow" if bpm < 100 else "medium" if bpm < 140 else "fast"
    return [tempo] + [t for t in _TAG_ORDER if t in flags]


def _render_clip(style, index, seed, duration, sr):
    """Audio (float, peak -1 dBFS) and tags of clip `index` of `style`."""
    clip = _Clip(sr=sr, n=int(round(duration * sr)), rng=_rng(seed, style, 1, index),
                 artist=_rng(seed, style, 0, index // _CLIPS_PER_ARTIST))
    audio, bpm, flags = _RENDER[style](clip)
    return audio, _tags(bpm, flags)


def _build(folder: pathlib.Path, seed, n_per_style, duration, sr, progress):
    """Write every clip into `folder`, then the manifest (last, marking completion)."""
    rows = []
    jobs = [(style, i) for style in STYLES for i in range(n_per_style)]
    for style, i in tqdm(jobs, desc="siamrec demo corpus", unit="clip", disable=not progress):
        audio, tags = _render_clip(style, i, seed, duration, sr)
        rel = f"{style}/{style}_{i:02d}.flac"
        (folder / style).mkdir(exist_ok=True)
        sf.write(folder / rel, audio, sr, subtype="PCM_16", format="FLAC")
        rows.append((rel, style, "|".join(tags), f"{style}_artist{i // _CLIPS_PER_ARTIST:02d}"))
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("path", "labels", "tags", "group"))
        writer.writerows(rows)


def ensure_demo(cache_dir: str | os.PathLike, *, seed: int = 0, n_per_style: int = 24,
                duration: float = 30.0, sr: int = 12000, progress: bool = True) -> pathlib.Path:
    """Generate (once) and return the demo folder.

    The folder is ``<cache_dir>/demo-v1-s{seed}-n{n_per_style}-d{duration}-r{sr}/`` and holds
    mono 16-bit FLAC files ``<style>/<style>_<nn>.flac`` (``n_per_style`` per style in
    :data:`STYLES`, ``duration`` seconds at ``sr`` Hz) and ``manifest.csv`` with columns
    ``path`` (relative to the folder), ``labels`` (the style), ``tags`` (2-4 tags joined by
    ``|``) and ``group`` (a pseudo-artist id, 4 consecutive clips each).

    The output depends only on the arguments (byte-identical on re-generation).  It is built
    in a temporary folder inside ``cache_dir`` and renamed into place once complete, so an
    interrupted run never leaves a folder that looks finished (a hard-killed run may leave a
    hidden ``.demo-*.tmp`` folder, which is ignored and safe to delete); a folder whose
    manifest exists is returned immediately.  ``progress`` shows a tqdm bar while generating.
    """
    if seed < 0 or n_per_style < 1 or duration <= 0 or sr < 8000:
        raise ValueError("need seed >= 0, n_per_style >= 1, duration > 0 and sr >= 8000")
    duration, sr = float(duration), int(sr)
    cache = pathlib.Path(cache_dir)
    final = cache / f"demo-{_VERSION}-s{seed}-n{n_per_style}-d{duration}-r{sr}"
    if (final / "manifest.csv").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=cache))
    try:
        _build(tmp, seed, n_per_style, duration, sr, progress)
        if final.exists() and not (final / "manifest.csv").is_file():
            shutil.rmtree(final)  # an incomplete folder from elsewhere: replace it
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same corpus meanwhile: keep theirs
            if not (final / "manifest.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
