"""The demo corpus class catalogue: procedurally synthesised sound classes.

Why synthesise: the embedded demo must exercise every later stage (mixing, separation, pseudo-labelling,
filtering) with no download, so each class is a small numpy program. Classes are chosen to be distinguishable
(pitch range, harmonicity, temporal pattern) yet every call draws a new instance (pitch, timbre, envelope,
onset, tempo, loudness) from the generator it is given, so a separator has to generalise across instances.

A synthesiser has the signature `(rng, num_frames, sample_rate) -> float32 [num_frames]`; `render_instance`
wraps it with loudness normalisation so callers get comparable levels.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
from scipy import signal

Domain = Literal["speech", "music", "sound"]
Synth = Callable[[np.random.Generator, int, int], np.ndarray]

TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class SoundClass:
    """One catalogue entry: `name` is the label, `phrase` the text query used for prompts and captions."""

    name: str
    domain: Domain
    phrase: str
    synth: Synth

    @property
    def slug(self) -> str:
        """File-name-safe form of the label."""
        return self.name.replace(" ", "_")

    @property
    def key(self) -> int:
        """Stable numeric key for seeding: independent of catalogue order, so adding a class changes no other."""
        return zlib.crc32(self.name.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------------------
# building blocks


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def harmonic_tone(f0: np.ndarray | float, amps: Sequence[float], n: int, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Sum of integer harmonics k*f0 with amplitudes `amps`, band-limited below 0.45*sr.

    Harmonics come from the Chebyshev recurrence sin(k th) = 2 cos(th) sin((k-1) th) - sin((k-2) th): exact integer
    multiples at the cost of a few multiplies instead of one `sin` per harmonic (about 10x faster). Harmonics
    near Nyquist are faded out smoothly so gliding pitches never alias or click.
    """
    f0_arr = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    theta = TWO_PI * np.cumsum(f0_arr) / sr + phase0
    theta -= TWO_PI * np.floor(theta / TWO_PI)  # keep the argument small: precise sin/cos at any length
    s_prev, s_cur = np.zeros(n), np.sin(theta)
    two_c = 2.0 * np.cos(theta)
    f_max, f_min = float(f0_arr.max()), float(f0_arr.min())
    limit = 0.45 * sr
    for k, amp in enumerate(amps, start=1):
        if k > 1:
            s_prev, s_cur = s_cur, two_c * s_cur - s_prev
        if k * f_min >= limit:
            break
        if amp == 0.0:
            continue
        if k * f_max > 0.9 * limit:
            out += amp * s_cur * np.clip((limit - k * f0_arr) / (0.1 * limit), 0.0, 1.0)
        else:
            out += amp * s_cur
    return out


def _biquad(kind: str, f0: float, q: float, sr: int) -> np.ndarray:
    """One second-order section (RBJ cookbook) as an sos row: closed form, ~100x cheaper than a scipy design."""
    f0 = float(np.clip(f0, 1.0, 0.49 * sr))
    w0 = TWO_PI * f0 / sr
    alpha = np.sin(w0) / (2.0 * q)
    cw = np.cos(w0)
    if kind == "lowpass":
        b = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2]
    elif kind == "highpass":
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
    else:  # band-pass with 0 dB peak gain
        b = [alpha, 0.0, -alpha]
    a0 = 1 + alpha
    return np.array([b[0] / a0, b[1] / a0, b[2] / a0, 1.0, -2 * cw / a0, (1 - alpha) / a0])


def _butterworth_qs(order: int) -> list[float]:
    """Section Qs of an even-order Butterworth filter (order 2 -> [0.7071])."""
    order = max(2, order + order % 2)
    return [1.0 / (2.0 * np.sin(np.pi * (2 * k - 1) / (2 * order))) for k in range(1, order // 2 + 1)]


def bandpass(x: np.ndarray, lo: float, hi: float, sr: int, order: int = 2) -> np.ndarray:
    """Band-pass between `lo` and `hi` Hz: `order` cascaded resonant sections centred on sqrt(lo*hi)."""
    lo = max(lo, 1.0)
    hi = min(hi, 0.49 * sr)
    if hi <= lo:
        return np.zeros_like(x)
    centre = float(np.sqrt(lo * hi))
    sos = np.stack([_biquad("bandpass", centre, centre / (hi - lo), sr)] * order)
    return signal.sosfilt(sos, x)


def lowpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    sos = np.stack([_biquad("lowpass", cutoff, q, sr) for q in _butterworth_qs(order)])
    return signal.sosfilt(sos, x)


def highpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    sos = np.stack([_biquad("highpass", cutoff, q, sr) for q in _butterworth_qs(order)])
    return signal.sosfilt(sos, x)


def decay_env(n: int, sr: int, tau: float, attack: float = 0.002) -> np.ndarray:
    """Linear attack then exponential decay with time constant `tau` seconds."""
    t = _time(n, sr)
    env = np.exp(-t / max(tau, 1e-4))
    a = max(int(attack * sr), 1)
    env[:a] *= np.linspace(0.0, 1.0, a, endpoint=False)[: min(a, n)]
    return env


def smooth_env(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Raised-cosine attack and release around a flat sustain."""
    env = np.ones(n, dtype=np.float64)
    a = min(int(attack * sr), n // 2)
    r = min(int(release * sr), n - a)
    if a > 0:
        env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, a))
    if r > 0:
        env[n - r:] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, r))
    return env


def add_at(out: np.ndarray, x: np.ndarray, start: int) -> None:
    """Add `x` into `out` at `start`, truncating at the end."""
    if start >= out.shape[0] or start + x.shape[0] <= 0:
        return
    if start < 0:
        x = x[-start:]
        start = 0
    end = min(out.shape[0], start + x.shape[0])
    out[start:end] += x[: end - start]


def midi_to_hz(m: float | np.ndarray) -> float | np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m) - 69.0) / 12.0)


def step_contour(n: int, sr: int, times: Sequence[float], values: Sequence[float], glide: float) -> np.ndarray:
    """Piecewise-constant contour (value i from times[i]) smoothed by a one-pole glide of `glide` seconds."""
    contour = np.full(n, float(values[0]))
    for t, v in zip(times, values):
        contour[int(t * sr):] = v
    if glide > 0:
        alpha = np.exp(-1.0 / (glide * sr))
        contour = signal.lfilter([1 - alpha], [1, -alpha], contour, zi=[alpha * contour[0]])[0]
    return contour


def pink_noise(rng: np.random.Generator, n: int, slope: float = 1.0) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^slope (shaped in the frequency domain)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.shape[0], dtype=np.float64)
    f[0] = 1.0
    spec /= f ** (slope / 2.0)
    x = np.fft.irfft(spec, n)
    return x / (np.std(x) + 1e-12)


# ---------------------------------------------------------------------------------------------------------------
# speech-like

VOWELS = np.array(  # F1, F2, F3 (Hz) of an adult male voice; scaled for other voices
    [[730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [570, 840, 2410], [300, 870, 2240], [660, 1720, 2410]],
    dtype=np.float64,
)


def _speech(rng: np.random.Generator, n: int, sr: int, f0_range: tuple[float, float], formant_scale: float) -> np.ndarray:
    """Glottal pulse train through per-syllable vowel formants, with consonant noise and phrase pauses."""
    t = _time(n, sr)
    f0_base = rng.uniform(*f0_range)
    intonation = 1.0 + 0.12 * np.sin(TWO_PI * rng.uniform(0.3, 0.9) * t + rng.uniform(0, TWO_PI))
    declination = 1.0 - 0.1 * (t % rng.uniform(1.5, 3.0)) / 3.0
    f0 = f0_base * intonation * declination
    tilt = rng.uniform(1.0, 1.6)
    n_harm = int(min(40, 4000 / f0_base))
    amps = [1.0 / k**tilt for k in range(1, n_harm + 1)]
    source = harmonic_tone(f0, amps, n, sr, phase0=rng.uniform(0, TWO_PI))
    source += rng.uniform(0.01, 0.05) * rng.standard_normal(n)  # breathiness
    scale = formant_scale * rng.uniform(0.92, 1.08)
    out = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.25) * sr)
    while pos < n - int(0.05 * sr):
        dur = int(rng.uniform(0.12, 0.32) * sr)
        seg_end = min(n, pos + dur)
        seg = source[pos:seg_end]
        formants = VOWELS[rng.integers(len(VOWELS))] * scale
        voiced = sum(w * bandpass(seg, f * 0.88, f * 1.12, sr) for f, w in zip(formants, (1.0, 0.6, 0.3)))
        voiced *= smooth_env(seg.shape[0], sr, 0.03, 0.06)
        out[pos:seg_end] += voiced
        if rng.random() < 0.5:  # consonant: short fricative burst before the vowel
            c_len = int(rng.uniform(0.03, 0.08) * sr)
            fric = highpass(rng.standard_normal(c_len), rng.uniform(2000, 4500), sr) * decay_env(c_len, sr, 0.03, 0.005)
            add_at(out, 0.15 * fric, pos - c_len // 2)
        gap = rng.uniform(0.03, 0.12) if rng.random() > 0.15 else rng.uniform(0.2, 0.45)
        pos = seg_end + int(gap * sr)
    return out


def synth_male_speech(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _speech(rng, n, sr, (85.0, 150.0), 1.0)


def synth_female_speech(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _speech(rng, n, sr, (170.0, 260.0), 1.17)


def synth_whistling(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A gliding near-sine melody with vibrato and breath noise, in phrases."""
    times, values = [], []
    tpos = 0.0
    centre = rng.uniform(68, 82)
    while tpos < n / sr:
        times.append(tpos)
        values.append(centre + rng.integers(-7, 8))
        tpos += rng.uniform(0.15, 0.5)
    pitch = step_contour(n, sr, times, values, glide=rng.uniform(0.02, 0.08))
    t = _time(n, sr)
    pitch = pitch + rng.uniform(0.1, 0.4) * np.sin(TWO_PI * rng.uniform(4.5, 7.0) * t)
    f0 = midi_to_hz(pitch)
    tone = harmonic_tone(f0, [1.0, rng.uniform(0.02, 0.1)], n, sr)
    breath = bandpass(rng.standard_normal(n), 1000, 4000, sr) * rng.uniform(0.03, 0.1)
    env = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.3) * sr)
    while pos < n:
        length = int(rng.uniform(0.8, 2.5) * sr)
        seg = smooth_env(min(length, n - pos), sr, 0.04, 0.1)
        env[pos:pos + seg.shape[0]] = seg
        pos += length + int(rng.uniform(0.1, 0.4) * sr)
    return (tone + breath) * env


# ---------------------------------------------------------------------------------------------------------------
# music-like


def synth_piano(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Struck, slightly inharmonic strings whose upper partials decay faster; notes and small chords.

    Partials are computed in float32 (the SIMD sine is ~40x faster; note arguments stay below ~5e4 rad, so the
    phase error is < 3e-3 rad, far below audibility on a decaying partial).
    """
    out = np.zeros(n)
    root = rng.integers(45, 72)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    tilt = rng.uniform(1.0, 1.8)
    tau0 = rng.uniform(0.4, 1.2)
    b = rng.uniform(5e-5, 4e-4)
    max_len = int(min(2.5 * tau0, 1.6) * sr)
    steps = np.arange(max_len, dtype=np.float32)
    base_decay = np.exp(-steps / np.float32(tau0 * sr))  # exp(-t/tau0)
    step_decay = base_decay ** np.float32(0.4)  # extra decay per harmonic: exp(-0.4 t/tau0)
    pos = int(rng.uniform(0.0, 0.2) * sr)
    while pos < n:
        chord = rng.choice(scale, size=int(rng.integers(1, 4)), replace=False)
        vel = rng.uniform(0.5, 1.0)
        length = min(n - pos, max_len)
        for degree in chord:
            f0 = float(midi_to_hz(root + degree))
            n_harm = int(min(10, 5000 / f0))
            note = np.zeros(length, dtype=np.float32)
            env = base_decay[:length].copy()
            for k in range(1, n_harm + 1):
                env *= step_decay[:length]
                fk = k * f0 * np.sqrt(1 + b * k * k)
                note += np.float32(1.0 / k**tilt) * np.sin(np.float32(TWO_PI * fk / sr) * steps[:length]) * env
            attack = min(int(0.002 * sr), length)
            note[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False, dtype=np.float32)
            add_at(out, note * vel, pos)
        pos += int(rng.uniform(0.15, 0.55) * sr)
    return out


def synth_violin(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bowed sawtooth with delayed vibrato, bow noise and body resonances; legato notes."""
    times, values = [], []
    tpos = 0.0
    root = rng.integers(55, 76)
    while tpos < n / sr:
        times.append(tpos)
        values.append(root + rng.choice([0, 2, 3, 5, 7, 9, 10, 12]))
        tpos += rng.uniform(0.3, 1.0)
    pitch = step_contour(n, sr, times, values, glide=0.02)
    t = _time(n, sr)
    vib_depth = rng.uniform(0.1, 0.35)
    pitch = pitch + vib_depth * np.sin(TWO_PI * rng.uniform(5.0, 7.0) * t) * np.clip(t / 0.3, 0, 1)
    f0 = midi_to_hz(pitch)
    saw = harmonic_tone(f0, [1.0 / k for k in range(1, 21)], n, sr, phase0=rng.uniform(0, TWO_PI))
    body = saw * 0.4
    for centre in (rng.uniform(280, 320), rng.uniform(450, 550), rng.uniform(2500, 3200)):
        body += bandpass(saw, centre * 0.8, centre * 1.2, sr)
    body += 0.02 * highpass(rng.standard_normal(n), 3000, sr)
    env = np.ones(n)
    bounds = [int(x * sr) for x in times] + [n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            env[a:b] = smooth_env(b - a, sr, rng.uniform(0.04, 0.15), 0.05) * rng.uniform(0.6, 1.0)
    return body * env


def synth_flute(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Nearly sinusoidal high notes with breath noise and soft tonguing."""
    times, values = [], []
    tpos = 0.0
    root = rng.integers(72, 86)
    while tpos < n / sr:
        times.append(tpos)
        values.append(root + rng.choice([0, 2, 4, 5, 7, 9, 12]))
        tpos += rng.uniform(0.2, 0.7)
    pitch = step_contour(n, sr, times, values, glide=0.01)
    t = _time(n, sr)
    pitch = pitch + rng.uniform(0.05, 0.2) * np.sin(TWO_PI * rng.uniform(4.5, 6.0) * t)
    f0 = midi_to_hz(pitch)
    tone = harmonic_tone(f0, [1.0, rng.uniform(0.1, 0.4), rng.uniform(0.02, 0.15), 0.03], n, sr)
    f_mid = float(np.median(f0))
    tone += rng.uniform(0.05, 0.15) * bandpass(rng.standard_normal(n), f_mid * 0.7, f_mid * 1.5, sr) * 3.0
    env = np.ones(n)
    bounds = [int(x * sr) for x in times] + [n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            env[a:b] = smooth_env(b - a, sr, 0.03, 0.03)
    return tone * env


def synth_drums(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Kick, snare and hi-hat on a 16th-note grid at a random tempo with a random pattern."""
    bpm = rng.uniform(80, 160)
    step = 60.0 / bpm / 4.0
    k_len, s_len, h_len = int(0.35 * sr), int(0.25 * sr), int(0.08 * sr)
    tk = _time(k_len, sr)
    f_hi, f_lo = rng.uniform(100, 160), rng.uniform(40, 60)
    k_freq = f_lo + (f_hi - f_lo) * np.exp(-tk / 0.04)
    kick = np.sin(TWO_PI * np.cumsum(k_freq) / sr) * decay_env(k_len, sr, rng.uniform(0.08, 0.18))
    snare = bandpass(rng.standard_normal(s_len), 1000, rng.uniform(4000, 7000), sr) * decay_env(s_len, sr, rng.uniform(0.05, 0.12))
    snare += 0.5 * np.sin(TWO_PI * rng.uniform(160, 220) * _time(s_len, sr)) * decay_env(s_len, sr, 0.04)
    hat = highpass(rng.standard_normal(h_len), rng.uniform(6000, 7000), sr, 4) * decay_env(h_len, sr, rng.uniform(0.015, 0.04))
    kick_pat = np.zeros(16, bool)
    kick_pat[[0, 8]] = True
    kick_pat[rng.choice(16, size=int(rng.integers(0, 3)), replace=False)] = True
    snare_pat = np.zeros(16, bool)
    snare_pat[[4, 12]] = True
    hat_every = int(rng.choice([1, 2]))
    out = np.zeros(n)
    offset = int(rng.uniform(0.0, 0.2) * sr)
    for i in range(int((n / sr) / step) + 1):
        pos = offset + int(i * step * sr)
        j = i % 16
        if kick_pat[j]:
            add_at(out, kick * rng.uniform(0.8, 1.0), pos)
        if snare_pat[j]:
            add_at(out, 0.6 * snare * rng.uniform(0.7, 1.0), pos)
        if j % hat_every == 0 and rng.random() > 0.1:
            add_at(out, 0.25 * hat * rng.uniform(0.5, 1.0), pos)
    return out


def synth_bass_guitar(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low plucked strings: decaying harmonics, darker with time, on an eighth-note grid."""
    bpm = rng.uniform(80, 140)
    step = 60.0 / bpm / 2.0
    root = rng.integers(28, 45)
    out = np.zeros(n)
    tau = rng.uniform(0.3, 0.8)
    pos_t = rng.uniform(0.0, 0.15)
    while pos_t < n / sr:
        hold = step * int(rng.choice([1, 1, 2, 2, 3]))
        length = min(int(hold * sr), n - int(pos_t * sr))
        if length <= 0:
            break
        f0 = float(midi_to_hz(root + rng.choice([0, 0, 3, 5, 7, 10, 12])))
        steps = np.arange(length, dtype=np.float32)
        env = np.exp(-steps / np.float32(tau * sr))
        step_decay = env ** np.float32(0.6)
        note = np.zeros(length, dtype=np.float32)
        for k in range(1, 11):  # float32 partials as in synth_piano
            if k * f0 > 2500:
                break
            env = env * step_decay
            note += np.float32(1.0 / k**1.2) * np.sin(np.float32(TWO_PI * k * f0 / sr) * steps) * env
        note = note * smooth_env(length, sr, 0.003, 0.02)
        add_at(out, note * rng.uniform(0.7, 1.0), int(pos_t * sr))
        pos_t += hold
    return lowpass(out, rng.uniform(1200, 2500), sr)


# ---------------------------------------------------------------------------------------------------------------
# sound events


def synth_dog(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Groups of 1-4 barks: noisy harmonic bursts with a falling pitch."""
    out = np.zeros(n)
    f_start = rng.uniform(450, 900)
    pos = int(rng.uniform(0.0, 0.4) * sr)
    while pos < n:
        for _ in range(int(rng.integers(1, 5))):
            length = int(rng.uniform(0.1, 0.25) * sr)
            tt = _time(length, sr)
            f0 = f_start * rng.uniform(0.9, 1.1) * (1.0 - 0.35 * tt / tt[-1])
            bark = harmonic_tone(f0, [1.0, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1], length, sr)
            bark += 0.5 * bandpass(rng.standard_normal(length), 500, 3000, sr)
            bark = bandpass(bark, 300, 3500, sr) * decay_env(length, sr, rng.uniform(0.05, 0.12), 0.01)
            add_at(out, bark * rng.uniform(0.7, 1.0), pos)
            pos += length + int(rng.uniform(0.1, 0.3) * sr)
        pos += int(rng.uniform(0.3, 0.9) * sr)
    return out


def synth_siren(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A square-ish tone sweeping slowly (wail) or quickly (yelp)."""
    t = _time(n, sr)
    rate = rng.uniform(0.2, 0.6) if rng.random() < 0.6 else rng.uniform(2.5, 5.0)
    fc = rng.uniform(700, 1100)
    depth = rng.uniform(0.2, 0.4)
    f0 = fc * (1.0 + depth * np.sin(TWO_PI * rate * t + rng.uniform(0, TWO_PI)))
    tone = harmonic_tone(f0, [1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14], n, sr)
    return tone * smooth_env(n, sr, rng.uniform(0.05, 0.5), 0.05)


def synth_bird(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Trills of fast frequency-swept chirps at 2-6 kHz."""
    out = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.3) * sr)
    f_a = rng.uniform(2500, 5000)
    f_b = float(np.clip(f_a + rng.uniform(-1500, 1500), 1800, 6500))
    while pos < n:
        for _ in range(int(rng.integers(3, 9))):
            length = int(rng.uniform(0.04, 0.12) * sr)
            tt = _time(length, sr)
            f0 = f_a + (f_b - f_a) * (tt / tt[-1]) ** rng.uniform(0.5, 2.0)
            f0 = f0 * (1.0 + 0.03 * np.sin(TWO_PI * rng.uniform(30, 80) * tt))
            chirp = harmonic_tone(f0, [1.0, 0.15], length, sr) * np.sin(np.pi * tt / tt[-1]) ** 2
            add_at(out, chirp * rng.uniform(0.6, 1.0), pos)
            pos += length + int(rng.uniform(0.02, 0.08) * sr)
        pos += int(rng.uniform(0.15, 0.6) * sr)
    return out


def synth_clock(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Regular tick-tock clicks: short resonant bursts alternating between two pitches."""
    out = np.zeros(n)
    period = rng.uniform(0.25, 0.6)
    f_tick = rng.uniform(2500, 4500)
    f_tock = f_tick * rng.uniform(0.7, 0.85)
    length = int(0.15 * sr)
    tt = _time(length, sr)
    ring = rng.uniform(0.015, 0.03)  # the case resonance lets each tick ring briefly
    pos_t = rng.uniform(0.0, period)
    i = 0
    while pos_t < n / sr:
        f = f_tick if i % 2 == 0 else f_tock
        click = np.sin(TWO_PI * f * tt) * decay_env(length, sr, ring, 0.0005)
        click += 0.5 * np.sin(TWO_PI * f * 0.5 * tt) * decay_env(length, sr, ring * 1.5, 0.001)
        click += 0.3 * highpass(rng.standard_normal(length), 3000, sr) * decay_env(length, sr, 0.003, 0.0005)
        add_at(out, click, int(pos_t * sr))
        pos_t += period * rng.uniform(0.98, 1.02)
        i += 1
    return out


def synth_door_knock(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Groups of 2-5 knocks: damped wooden modes plus a contact click."""
    out = np.zeros(n)
    modes = rng.uniform(90, 260, size=3) * np.array([1.0, 2.3, 3.9])
    pos = int(rng.uniform(0.0, 0.4) * sr)
    while pos < n:
        spacing = rng.uniform(0.12, 0.25)
        for _ in range(int(rng.integers(2, 6))):
            length = int(0.15 * sr)
            tt = _time(length, sr)
            tau = rng.uniform(0.03, 0.07)
            knock = sum((1.0 / (i + 1)) * np.sin(TWO_PI * m * tt) * np.exp(-tt * (1 + i) / tau) for i, m in enumerate(modes))
            knock += 0.4 * bandpass(rng.standard_normal(length), 800, 4000, sr) * decay_env(length, sr, 0.004, 0.0005)
            add_at(out, knock * rng.uniform(0.7, 1.0), pos)
            pos += int(spacing * rng.uniform(0.9, 1.1) * sr)
        pos += int(rng.uniform(0.4, 1.0) * sr)
    return out


def synth_engine(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A low firing-rate drone with many harmonics, slow rpm drift and combustion noise."""
    t = _time(n, sr)
    f_fire = rng.uniform(25, 60)
    f0 = f_fire * (1.0 + rng.uniform(0.02, 0.1) * np.sin(TWO_PI * rng.uniform(0.1, 0.4) * t))
    n_harm = int(min(30, 2500 / f_fire))
    amps = rng.uniform(0.3, 1.0, size=n_harm) / np.arange(1, n_harm + 1) ** 0.8
    drone = harmonic_tone(f0, list(amps), n, sr)
    noise = lowpass(rng.standard_normal(n), rng.uniform(400, 1200), sr) * rng.uniform(0.3, 0.8)
    am = 1.0 + 0.3 * np.sin(TWO_PI * np.cumsum(f0) / sr)
    return (drone + noise) * am * smooth_env(n, sr, 0.1, 0.1)


def synth_rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Broadband pink-ish noise plus random droplet impacts."""
    bed = bandpass(pink_noise(rng, n, rng.uniform(0.3, 1.0)), rng.uniform(300, 800), rng.uniform(5000, 7500), sr)
    drops = np.zeros(n)
    count = int(rng.uniform(20, 80) * n / sr)
    positions = rng.integers(0, n, size=count)
    impulses = np.zeros(n)
    np.add.at(impulses, positions, rng.uniform(0.5, 3.0, size=count) * rng.choice([-1.0, 1.0], size=count))
    drops = bandpass(impulses, 1500, 6000, sr)
    return bed * rng.uniform(0.5, 1.0) + drops * rng.uniform(1.0, 3.0)


def synth_telephone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Two beating tones with a fast tremolo in an on/off ring cadence."""
    t = _time(n, sr)
    f1 = rng.uniform(400, 1000)
    f2 = f1 + rng.uniform(20, 60)
    tone = np.sin(TWO_PI * f1 * t) + np.sin(TWO_PI * f2 * t + rng.uniform(0, TWO_PI))
    tone *= 0.6 + 0.4 * np.sin(TWO_PI * rng.uniform(15, 25) * t)
    env = np.zeros(n)
    on, off = rng.uniform(0.4, 1.0), rng.uniform(0.2, 0.5)
    pos_t = rng.uniform(0.0, 0.3)
    while pos_t < n / sr:
        a = int(pos_t * sr)
        b = min(n, int((pos_t + on) * sr))
        if b > a:
            env[a:b] = smooth_env(b - a, sr, 0.01, 0.01)
        pos_t += on + off
    return tone * env


CATALOGUE: tuple[SoundClass, ...] = (
    SoundClass("male speech", "speech", "a man speaking", synth_male_speech),
    SoundClass("female speech", "speech", "a woman speaking", synth_female_speech),
    SoundClass("whistling", "speech", "someone whistling a tune", synth_whistling),
    SoundClass("piano", "music", "piano playing", synth_piano),
    SoundClass("violin", "music", "a violin playing", synth_violin),
    SoundClass("flute", "music", "a flute playing", synth_flute),
    SoundClass("drums", "music", "a drum kit playing a beat", synth_drums),
    SoundClass("bass guitar", "music", "a bass guitar playing", synth_bass_guitar),
    SoundClass("dog", "sound", "a dog barking", synth_dog),
    SoundClass("siren", "sound", "a siren wailing", synth_siren),
    SoundClass("bird", "sound", "a bird chirping", synth_bird),
    SoundClass("clock", "sound", "a clock ticking", synth_clock),
    SoundClass("door knock", "sound", "knocking on a door", synth_door_knock),
    SoundClass("engine", "sound", "an engine idling", synth_engine),
    SoundClass("rain", "sound", "rain falling", synth_rain),
    SoundClass("telephone", "sound", "a telephone ringing", synth_telephone),
)

BY_NAME: dict[str, SoundClass] = {c.name: c for c in CATALOGUE}


def get_classes(names: Sequence[str] | None = None) -> list[SoundClass]:
    """Resolve class names (None or empty = the whole catalogue) with a clear error for unknown names."""
    if not names:
        return list(CATALOGUE)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown demo class(es) {unknown}; known: {sorted(BY_NAME)}")
    return [BY_NAME[name] for name in names]


def active_rms(x: np.ndarray, sr: int, frame_s: float = 0.05, rel_db: float = -30.0) -> float:
    """RMS over the frames that are within `rel_db` of the loudest frame: the level of the sound when it sounds.

    Why: event classes (clock, knocks) are mostly gaps; plain RMS would make them far too loud after normalising.
    """
    hop = max(int(frame_s * sr), 1)
    usable = (x.shape[0] // hop) * hop
    if usable == 0:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    frames = x[:usable].astype(np.float64).reshape(-1, hop)
    power = np.mean(frames**2, axis=1)
    peak = float(power.max())
    if peak <= 0:
        return 0.0
    keep = power >= peak * 10.0 ** (rel_db / 10.0)
    return float(np.sqrt(power[keep].mean()))


def render_instance(cls: SoundClass, rng: np.random.Generator, n: int, sr: int, level_db: float,
                    peak_limit: float = 0.95) -> np.ndarray:
    """Synthesise one instance normalised to an active RMS of `level_db` dBFS (peak-limited), as float32."""
    x = np.asarray(cls.synth(rng, n, sr), dtype=np.float64)
    if x.shape != (n,):
        raise RuntimeError(f"synthesiser for {cls.name!r} returned shape {x.shape}, expected ({n},)")
    level = active_rms(x, sr)
    if level <= 0 or not np.isfinite(level):
        raise RuntimeError(f"synthesiser for {cls.name!r} produced silence or non-finite audio")
    x *= 10.0 ** (level_db / 20.0) / level
    peak = float(np.abs(x).max())
    if peak > peak_limit:
        x *= peak_limit / peak
    return x.astype(np.float32)
