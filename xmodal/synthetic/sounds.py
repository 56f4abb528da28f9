"""Captioned sounds, deterministic from a seed: the audio counterpart of `shapes`.

python -m xmodal.synthetic.sounds eval-sounds-unseen --split unseen --count 200

Each clip holds one or two sound events over a faint background; each event has
a kind (tone, chirp, noise burst, clicks) and attributes (pitch, timbre, number
of beeps, sweep direction and speed, noise colour, click rate), and each clip
gets a caption in varied English. Rendering varies on purpose (exact pitch,
envelopes, beep spacing, loudness, background) so that a model trained on these
learns the concepts, not the waveforms.

Some attribute pairs are held out (`UNSEEN_COMBINATIONS`): the training split
never produces them, so evaluation can measure composition of known concepts.

Audio is float32 mono in [-1, 1], band-limited below ~15 kHz (it survives
resampling and lossy coding) and peaking at -1 dBFS at most.
"""

from __future__ import annotations

import csv
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

KINDS = ("tone", "chirp", "noise", "clicks")
PITCHES = ("low", "mid", "high")
TIMBRES = ("sine", "square", "buzzy")
REPEATS = (1, 2, 3)
DIRECTIONS = ("rising", "falling")
SPEEDS = ("slow", "fast")  # chirps: a long glide or a short sweep
NOISES = ("white", "rumble", "hiss")
RATES = ("slow", "fast")  # clicks per second, see `_CLICK_RATES`
ARRANGEMENTS = ("single", "sequence", "overlap")
REPEAT_NAMES = {1: "once", 2: "twice", 3: "three times"}

# Pairs of attribute values of one event, as returned by `SoundEvent.combinations`.
UNSEEN_COMBINATIONS = frozenset(
    {
        ("high", "square"),
        ("low", "buzzy"),
        ("mid", "three times"),
        ("low", "twice"),
        ("falling", "slow"),
    }
)

PITCH_BANDS: dict[str, tuple[float, float]] = {
    "low": (100.0, 200.0),
    "mid": (400.0, 800.0),
    "high": (1500.0, 4000.0),
}
_CLICK_RATES = {"slow": (1.7, 2.3), "fast": (9.0, 11.0)}  # per second
_CHIRP_DURATIONS = {"slow": (1.2, 2.5), "fast": (0.25, 0.5)}
_CHIRP_LOW, _CHIRP_HIGH = (450.0, 800.0), (1800.0, 3500.0)  # ends of a sweep, Hz
_MAX_HARMONICS = 40  # beyond this a 1/k series adds nothing audible at these levels
CUTOFF_HZ = 15000.0  # nothing above this survives `render`

# Words a full caption uses for each attribute value (tests and evaluation can look
# for them); partial captions use the same words.
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    "low": ("low", "deep"),
    "mid": ("mid-pitched", "medium-pitched", "mid-range"),
    "high": ("high", "shrill"),
    "sine": ("pure", "smooth", "clean"),
    "square": ("square", "hollow"),
    "buzzy": ("buzzy", "buzzing", "harsh"),
    "twice": ("twice", "two"),
    "three times": ("three times", "three"),
    "rising": ("rising", "upward", "going up"),
    "falling": ("falling", "downward", "going down"),
    "white": ("white noise", "static"),
    "rumble": ("rumble", "rumbling"),
    "hiss": ("hiss", "hissing"),
}
_CHIRP_SPEED_WORDS = {"slow": ("slow", "long"), "fast": ("quick", "short")}
_CLICK_RATE_WORDS = {"slow": ("slow", "sparse"), "fast": ("fast", "rapid")}


@dataclass(frozen=True)
class SoundEvent:
    """One event; attributes that do not apply to its kind are "" (or 1 for `repeats`)."""

    kind: str
    start: float  # seconds from the start of the clip
    duration: float  # seconds, from the first onset to the end of the last decay
    level_db: float  # peak level of the event alone, dBFS
    pitch: str = ""  # tone
    timbre: str = ""  # tone
    repeats: int = 1  # tone: 1 is a single tone, 2-3 are beeps
    direction: str = ""  # chirp
    speed: str = ""  # chirp
    noise: str = ""  # noise
    rate: str = ""  # clicks

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attribute values a full caption mentions."""
        if self.kind == "tone":
            count = (REPEAT_NAMES[self.repeats],) if self.repeats > 1 else ()
            return (self.pitch, self.timbre, *count)
        if self.kind == "chirp":
            return (self.direction, self.speed)
        if self.kind == "noise":
            return (self.noise,)
        return (self.rate,)

    @property
    def combinations(self) -> tuple[tuple[str, str], ...]:
        if self.kind == "tone":
            return ((self.pitch, self.timbre), (self.pitch, REPEAT_NAMES[self.repeats]))
        if self.kind == "chirp":
            return ((self.direction, self.speed),)
        return ()


@dataclass(frozen=True)
class SoundSpec:
    events: tuple[SoundEvent, ...]  # in order of start time
    arrangement: str  # "single", "sequence" (one after the other) or "overlap"
    background: str  # "silence" or "noise"
    background_db: float  # RMS of the background noise, dBFS

    @property
    def unseen(self) -> bool:
        return any(c in UNSEEN_COMBINATIONS for e in self.events for c in e.combinations)


# -- specs ---------------------------------------------------------------------
def _random_event(rng: np.random.Generator, start: float, max_duration: float) -> SoundEvent:
    kind = str(rng.choice(KINDS))
    level = float(rng.uniform(-18.0, -4.0))
    if kind == "tone":
        repeats = int(rng.choice(REPEATS))
        if repeats == 1:
            duration = float(rng.uniform(0.4, 2.5))
        else:
            # Beeps and gaps of at least 0.12 s keep the count audible (and measurable).
            beep, gap = rng.uniform(0.12, 0.25), rng.uniform(0.12, 0.3)
            duration = float(repeats * beep + (repeats - 1) * gap)
        return SoundEvent(
            kind,
            start,
            min(duration, max_duration) if repeats == 1 else duration,
            level,
            pitch=str(rng.choice(PITCHES)),
            timbre=str(rng.choice(TIMBRES)),
            repeats=repeats,
        )
    if kind == "chirp":
        speed = str(rng.choice(SPEEDS))
        duration = float(rng.uniform(*_CHIRP_DURATIONS[speed]))
        return SoundEvent(
            kind, start, duration, level, direction=str(rng.choice(DIRECTIONS)), speed=speed
        )
    if kind == "noise":
        duration = min(float(rng.uniform(0.3, 2.0)), max_duration)
        return SoundEvent(kind, start, duration, level, noise=str(rng.choice(NOISES)))
    rate = str(rng.choice(RATES))
    # At least three clicks, so that the rate is heard.
    shortest = 3.0 / _CLICK_RATES[rate][0]
    duration = max(shortest, min(float(rng.uniform(1.5, 3.0)), max_duration))
    return SoundEvent(kind, start, duration, level, rate=rate)


def _place(event: SoundEvent, start: float) -> SoundEvent:
    return replace(event, start=round(float(start), 4))


def random_spec(rng: np.random.Generator, split: str = "train", seconds: float = 5.0) -> SoundSpec:
    """A clip for a split: "train"/"seen" avoid the held-out combinations, "unseen" has one."""
    margin = 0.1
    while True:
        arrangement = str(rng.choice(ARRANGEMENTS, p=[0.5, 0.3, 0.2]))
        room = seconds - 2 * margin
        first = _random_event(rng, 0.0, room)
        events: tuple[SoundEvent, ...]
        if arrangement == "single":
            if first.duration > room:
                continue
            events = (_place(first, rng.uniform(margin, seconds - margin - first.duration)),)
        elif arrangement == "sequence":
            gap = float(rng.uniform(0.15, 0.8))
            second = _random_event(rng, 0.0, room - first.duration - gap)
            total = first.duration + gap + second.duration
            if total > room or second.duration <= 0:
                continue
            start = rng.uniform(margin, seconds - margin - total)
            events = (_place(first, start), _place(second, start + first.duration + gap))
        else:
            second = _random_event(rng, 0.0, room)
            if first.duration < 0.5 or first.kind == second.kind:
                continue  # too short to overlap audibly, or two of a kind blur into one
            start = float(rng.uniform(margin, seconds - margin - first.duration))
            # The second starts inside the first, late enough to be heard as a second onset.
            latest = min(start + first.duration - 0.2, seconds - margin - second.duration)
            if latest < start + 0.15:
                continue
            second_start = float(rng.uniform(start + 0.15, latest))
            events = (_place(first, start), _place(second, second_start))
        if len(events) == 2 and events[0].attributes == events[-1].attributes:
            continue
        background = "silence" if rng.random() < 0.3 else "noise"
        spec = SoundSpec(events, arrangement, background, round(float(rng.uniform(-62, -45)), 2))
        if (split == "unseen") == spec.unseen:
            return spec


# -- captions ------------------------------------------------------------------
def _word(value: str, rng: np.random.Generator) -> str:
    return str(rng.choice(ATTRIBUTE_WORDS[value]))


def _event_phrase(e: SoundEvent, rng: np.random.Generator) -> str:
    """A noun phrase naming every attribute of the event."""
    if e.kind == "tone":
        pitch, timbre = _word(e.pitch, rng), _word(e.timbre, rng)
        if e.repeats == 1:
            noun = str(
                rng.choice(("hum", "tone", "drone") if e.pitch == "low" else ("tone", "note"))
            )
            options: tuple[str, ...] = (f"a {pitch} {timbre} {noun}", f"a {timbre} {pitch} {noun}")
            return str(rng.choice(options))
        count = REPEAT_NAMES[e.repeats]
        number = "two" if e.repeats == 2 else "three"
        options = (
            f"a {pitch} {timbre} beep repeated {count}",
            f"{number} {timbre} {pitch} beeps",
            f"{number} short {pitch} {timbre} beeps",
            f"a {timbre} {pitch} beep, {count}",
        )
        return str(rng.choice(options))
    if e.kind == "chirp":
        direction, speed = _word(e.direction, rng), str(rng.choice(_CHIRP_SPEED_WORDS[e.speed]))
        noun = str(rng.choice(("whistle", "chirp", "sweep")))
        if direction.startswith("going"):
            return f"a {speed} {noun} {direction}"
        return f"a {speed} {direction} {noun}"
    if e.kind == "noise":
        options = {
            "white": ("a burst of white noise", "a burst of static", "white noise"),
            "rumble": ("a low rumble", "a deep rumble", "a rumbling noise"),
            "hiss": ("a hiss", "a burst of hiss", "a hissing sound"),
        }[e.noise]
        return str(rng.choice(options))
    rate = str(rng.choice(_CLICK_RATE_WORDS[e.rate]))
    return str(rng.choice((f"{rate} clicking", f"{rate} clicks", f"a {rate} ticking")))


def caption(spec: SoundSpec, rng: np.random.Generator, partial: bool = False) -> str:
    """A full caption (every attribute of every event, in time order) or a partial one."""
    if partial:
        return partial_caption(spec, rng)
    if spec.arrangement == "single":
        (e,) = spec.events
        thing = _event_phrase(e, rng)
        templates: tuple[str, ...] = (thing, f"the sound of {thing}", f"a recording of {thing}")
        return str(rng.choice(templates))
    a, b = (_event_phrase(e, rng) for e in spec.events)
    if spec.arrangement == "sequence":
        templates = (
            f"{a} then {b}",
            f"{a} followed by {b}",
            f"first {a}, then {b}",
            f"{b} after {a}",
        )
    else:
        templates = (f"{a} and {b} at the same time", f"{a} together with {b}", f"{a} over {b}")
    return str(rng.choice(templates))


def partial_caption(spec: SoundSpec, rng: np.random.Generator) -> str:
    """A short caption with one attribute of one event ("a high sound", "fast clicking")."""
    e = spec.events[int(rng.integers(len(spec.events)))]
    if e.kind == "tone":
        which = int(rng.integers(3 if e.repeats > 1 else 2))
        if which == 0:
            return str(
                rng.choice((f"a {_word(e.pitch, rng)} sound", f"a {_word(e.pitch, rng)} tone"))
            )
        if which == 1:
            return str(
                rng.choice((f"a {_word(e.timbre, rng)} tone", f"a {_word(e.timbre, rng)} sound"))
            )
        return str(rng.choice((f"a beep, {REPEAT_NAMES[e.repeats]}", f"{e.repeats} beeps")))
    if e.kind == "chirp":
        if rng.random() < 0.5:
            return f"a {_word(e.direction, rng)} whistle"
        return f"a {rng.choice(_CHIRP_SPEED_WORDS[e.speed])} whistle"
    if e.kind == "noise":
        return {"white": "static", "rumble": "a rumble", "hiss": "a hiss"}[e.noise]
    return str(rng.choice(("clicking", f"{rng.choice(_CLICK_RATE_WORDS[e.rate])} clicking")))


# -- rendering -----------------------------------------------------------------
def _cutoff(rate: int) -> float:
    return min(CUTOFF_HZ, 0.45 * rate)


def _spectral_filter(
    x: np.ndarray, rate: int, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Filter by a magnitude response `gain(frequencies) -> array` (zero phase, whole signal)."""
    spectrum = np.fft.rfft(x)
    spectrum *= gain(np.fft.rfftfreq(len(x), 1.0 / rate))
    return np.fft.irfft(spectrum, len(x))


def _band_limit(x: np.ndarray, rate: int) -> np.ndarray:
    top = _cutoff(rate)

    def gain(f: np.ndarray) -> np.ndarray:
        # A raised-cosine edge rather than a brick wall: less ringing around onsets.
        t = np.clip((f - 0.9 * top) / (0.1 * top), 0.0, 1.0)
        return 0.5 + 0.5 * np.cos(np.pi * t)

    return _spectral_filter(x, rate, gain)


def _envelope(n: int, rate: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a = min(n // 2, max(1, int(attack * rate)))
    r = min(n - a, max(1, int(release * rate)))
    env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    env[n - r :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env


def _harmonic_tone(
    f0: float, timbre: str, n: int, rate: int, rng: np.random.Generator
) -> np.ndarray:
    t = np.arange(n) / rate
    # A slow, slight vibrato so that two tones of one pitch never match sample for sample.
    depth, speed = rng.uniform(0.0, 0.004), rng.uniform(3.0, 6.0)
    phase = 2 * np.pi * f0 * (t + depth / (2 * np.pi * speed) * np.sin(2 * np.pi * speed * t))
    if timbre == "sine":
        return np.sin(phase)
    top = int(min(_MAX_HARMONICS, 0.9 * _cutoff(rate) / f0))
    ks = range(1, top + 1, 2) if timbre == "square" else range(1, top + 1)
    out = np.zeros(n)
    for k in ks:
        out += np.sin(k * phase) / k
    return out


def _render_tone(e: SoundEvent, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    f0 = float(rng.uniform(*PITCH_BANDS[e.pitch]))
    wave_ = _harmonic_tone(f0, e.timbre, n, rate, rng)
    if e.repeats == 1:
        return wave_ * _envelope(n, rate, rng.uniform(0.005, 0.08), rng.uniform(0.02, 0.2))
    # Beep length b and gap g with n*b + (n-1)*g = duration; the ratio varies per clip.
    ratio = rng.uniform(0.7, 1.4)
    beep = n / (e.repeats + (e.repeats - 1) * ratio)
    gate = np.zeros(n)
    attack, release = rng.uniform(0.003, 0.012), rng.uniform(0.005, 0.02)
    for i in range(e.repeats):
        first = round(i * beep * (1 + ratio))
        last = n if i == e.repeats - 1 else min(n, round(first + beep))
        gate[first:last] = _envelope(last - first, rate, attack, release)
    return wave_ * gate


def _render_chirp(e: SoundEvent, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    low, high = rng.uniform(*_CHIRP_LOW), rng.uniform(*_CHIRP_HIGH)
    lo, hi = (low, high) if e.direction == "rising" else (high, low)
    # An exponential sweep: equal time per octave, as whistles sound.
    freq = lo * (hi / lo) ** (np.arange(n) / max(n - 1, 1))
    phase = 2 * np.pi * np.cumsum(freq) / rate
    out = np.sin(phase) + rng.uniform(0.0, 0.2) * np.sin(2 * phase)
    return out * _envelope(n, rate, rng.uniform(0.005, 0.04), rng.uniform(0.01, 0.06))


def _render_noise(e: SoundEvent, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if e.noise == "rumble":
        corner = rng.uniform(120.0, 300.0)
        shaped = _spectral_filter(white, rate, lambda f: 1.0 / (1.0 + (f / corner) ** 4))
    elif e.noise == "hiss":
        corner = rng.uniform(3000.0, 6000.0)
        shaped = _spectral_filter(
            white, rate, lambda f: (f / corner) ** 4 / (1.0 + (f / corner) ** 4)
        )
    else:
        shaped = white
    return shaped * _envelope(n, rate, rng.uniform(0.003, 0.05), rng.uniform(0.02, 0.2))


def _render_clicks(e: SoundEvent, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    per_second = rng.uniform(*_CLICK_RATES[e.rate])
    out = np.zeros(n)
    # A click is a short damped ring: band-limited, unlike a one-sample impulse.
    length = int(0.012 * rate)
    t = np.arange(length) / rate
    ring = np.sin(2 * np.pi * rng.uniform(1500.0, 4000.0) * t) * np.exp(
        -t / rng.uniform(0.001, 0.003)
    )
    ring *= _envelope(length, rate, 0.0005, 0.002)
    position = 0.0
    while int(position * rate) < n:
        first = int(position * rate)
        last = min(n, first + length)
        out[first:last] += ring[: last - first] * rng.uniform(0.75, 1.0)
        position += rng.uniform(0.9, 1.1) / per_second  # slightly irregular, like a real ticker
    return out


_RENDERERS = {
    "tone": _render_tone,
    "chirp": _render_chirp,
    "noise": _render_noise,
    "clicks": _render_clicks,
}


def render(
    spec: SoundSpec, rate: int = 48000, seconds: float = 5.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The clip as float32 mono samples; small variations are drawn from `rng`."""
    rng = rng if rng is not None else np.random.default_rng(0)
    total = round(seconds * rate)
    mix = np.zeros(total)
    for e in spec.events:
        first = round(e.start * rate)
        n = min(round(e.duration * rate), total - first)
        if n <= 0:
            continue
        samples = _RENDERERS[e.kind](e, n, rate, rng)
        peak = float(np.max(np.abs(samples))) or 1.0
        mix[first : first + n] += samples / peak * 10 ** (e.level_db / 20)
    if spec.background == "noise":
        mix += rng.standard_normal(total) * 10 ** (spec.background_db / 20)
    mix = _band_limit(mix, rate)
    # Two loud events can sum above full scale: scale the clip down rather than clip it.
    peak = float(np.max(np.abs(mix)))
    ceiling = 10 ** (-1 / 20)
    if peak > ceiling:
        mix *= ceiling / peak
    return mix.astype(np.float32)


# -- datasets ------------------------------------------------------------------
class CaptionedSound(NamedTuple):
    samples: np.ndarray
    caption: str
    spec: SoundSpec


def generate(
    count: int,
    seed: int,
    split: str = "train",
    rate: int = 48000,
    seconds: float = 5.0,
    partial: float = 0.0,
) -> Iterator[CaptionedSound]:
    """`count` captioned clips of a split ("train", "seen" or "unseen"); same seed, same samples.

    `partial` is the share of captions that name one attribute only.
    """
    # Each split has its own stream, so a test split never repeats a training clip.
    offset = {"train": 0, "seen": 1, "unseen": 2}[split]
    rng = np.random.default_rng([seed, offset, 1])  # 1: not the stream of shapes' images
    for _ in range(count):
        spec = random_spec(rng, "unseen" if split == "unseen" else "train", seconds)
        samples = render(spec, rate, seconds, rng)
        text = caption(spec, rng, partial=bool(rng.random() < partial))
        yield CaptionedSound(samples, text, spec)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM; `soundfile` when installed, else the standard library."""
    try:
        import soundfile
    except ImportError:
        pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
    else:
        soundfile.write(str(path), samples, rate, subtype="PCM_16")


def write_dataset(
    folder: Path,
    count: int,
    seed: int,
    split: str = "seen",
    rate: int = 48000,
    seconds: float = 5.0,
    partial: float = 0.0,
) -> Path:
    """WAVs and `captions.csv` (`file`, `caption`), the layout of the image eval sets."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, item in enumerate(generate(count, seed, split, rate, seconds, partial)):
        name = f"{split}-{index:05d}.wav"
        write_wav(folder / name, item.samples, rate)
        rows.append({"file": name, "caption": item.caption})
    captions = folder / "captions.csv"
    with open(captions, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["file", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return captions


__all__ = [
    "ATTRIBUTE_WORDS",
    "PITCH_BANDS",
    "UNSEEN_COMBINATIONS",
    "CaptionedSound",
    "SoundEvent",
    "SoundSpec",
    "caption",
    "generate",
    "partial_caption",
    "random_spec",
    "render",
    "write_dataset",
    "write_wav",
]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write a captioned sounds dataset.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--split", choices=["train", "seen", "unseen"], default="seen")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    print(write_dataset(args.folder, args.count, args.seed, args.split, args.rate, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
