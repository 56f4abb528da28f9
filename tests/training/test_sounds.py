"""The captioned-sounds generator: determinism, held-out splits, audio that matches its spec."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import pytest

from xmodal.synthetic import sounds
from xmodal.synthetic.sounds import SoundEvent, SoundSpec

RATE = 48000


def _clip(event: SoundEvent, seed: int = 0, seconds: float = 3.0) -> np.ndarray:
    spec = SoundSpec((event,), "single", "noise", -55.0)
    return sounds.render(spec, RATE, seconds, np.random.default_rng(seed))


def _rms_frames(x: np.ndarray, frame_s: float) -> np.ndarray:
    size = int(frame_s * RATE)
    frames = x[: len(x) // size * size].reshape(-1, size).astype(np.float64)
    return np.sqrt((frames**2).mean(axis=1))


def _rising_edges(envelope: np.ndarray, share: float) -> np.ndarray:
    above = envelope > share * envelope.max()
    return np.flatnonzero(above[1:] & ~above[:-1]) + 1


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)])


def test_same_seed_same_clips_and_captions() -> None:
    a = list(sounds.generate(6, seed=3, split="train", partial=0.5))
    b = list(sounds.generate(6, seed=3, split="train", partial=0.5))
    assert [x.caption for x in a] == [x.caption for x in b]
    assert [x.spec for x in a] == [x.spec for x in b]
    for x, y in zip(a, b, strict=True):
        assert x.samples.dtype == np.float32 and x.samples.shape == (5 * RATE,)
        assert np.array_equal(x.samples, y.samples)
    other = list(sounds.generate(6, seed=4, split="train"))
    assert [x.caption for x in other] != [x.caption for x in a]


def test_no_two_clips_identical() -> None:
    clips = [item.samples for item in sounds.generate(12, seed=5, split="seen")]
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            assert not np.array_equal(clips[i], clips[j])


def test_held_out_combinations_only_in_unseen_split() -> None:
    for split in ("train", "seen"):
        rng = np.random.default_rng(11)
        specs = [sounds.random_spec(rng, split) for _ in range(1500)]
        combos = {c for s in specs for e in s.events for c in e.combinations}
        assert not combos & sounds.UNSEEN_COMBINATIONS
        # Each part of a held-out pair is still seen, in other combinations.
        values = {v for s in specs for e in s.events for c in e.combinations for v in c}
        assert {v for pair in sounds.UNSEEN_COMBINATIONS for v in pair} <= values
    rng = np.random.default_rng(11)
    unseen = [sounds.random_spec(rng, "unseen") for _ in range(400)]
    assert all(s.unseen for s in unseen)
    found = {c for s in unseen for e in s.events for c in e.combinations}
    assert found >= sounds.UNSEEN_COMBINATIONS
    assert all(item.spec.unseen for item in sounds.generate(3, seed=1, split="unseen"))


@pytest.mark.parametrize("pitch", ["low", "mid", "high"])
@pytest.mark.parametrize("timbre", ["sine", "square", "buzzy"])
def test_tone_peak_in_its_pitch_band(pitch: str, timbre: str) -> None:
    x = _clip(SoundEvent("tone", 0.5, 1.5, -6.0, pitch=pitch, timbre=timbre), seed=len(timbre))
    low, high = sounds.PITCH_BANDS[pitch]
    assert low * 0.97 <= _peak_hz(x) <= high * 1.03


def test_timbres_differ_in_harmonics() -> None:
    def harmonic_share(timbre: str) -> tuple[float, float]:
        x = _clip(SoundEvent("tone", 0.5, 1.5, -6.0, pitch="mid", timbre=timbre))
        f0 = _peak_hz(x)
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        freqs = np.fft.rfftfreq(len(x), 1 / RATE)

        def at(f: float) -> float:
            return float(spectrum[np.abs(freqs - f) < 0.03 * f0].max())

        return at(2 * f0) / at(f0), at(3 * f0) / at(f0)

    sine, square, buzzy = (harmonic_share(t) for t in ("sine", "square", "buzzy"))
    assert sine[0] < 0.01 and sine[1] < 0.01
    assert square[0] < 0.05 < square[1]  # odd harmonics only
    assert buzzy[0] > 0.2 and buzzy[1] > 0.2


@pytest.mark.parametrize("direction", ["rising", "falling"])
@pytest.mark.parametrize("speed", ["slow", "fast"])
def test_chirp_sweeps_in_its_direction(direction: str, speed: str) -> None:
    duration = 2.0 if speed == "slow" else 0.4
    start = 0.5
    x = _clip(SoundEvent("chirp", start, duration, -6.0, direction=direction, speed=speed))
    span = x[int(start * RATE) : int((start + duration) * RATE)]
    peaks = [_peak_hz(part) for part in np.array_split(span, 5)]
    steps = np.diff(peaks)
    assert np.all(steps > 0) if direction == "rising" else np.all(steps < 0), peaks


@pytest.mark.parametrize("repeats", [2, 3])
def test_beeps_are_separate_bursts(repeats: int) -> None:
    duration = repeats * 0.15 + (repeats - 1) * 0.15
    event = SoundEvent("tone", 0.4, duration, -6.0, pitch="high", timbre="sine", repeats=repeats)
    for seed in range(3):
        envelope = _rms_frames(_clip(event, seed), 0.01)
        assert len(_rising_edges(envelope, 0.3)) == repeats
        # Between bursts the level drops well below the beeps'.
        active = envelope[int(0.4 / 0.01) : int((0.4 + duration) / 0.01)]
        assert active.min() < 0.1 * active.max()


@pytest.mark.parametrize(("rate", "per_second"), [("slow", 2.0), ("fast", 10.0)])
def test_click_rate(rate: str, per_second: float) -> None:
    duration = 2.5
    x = _clip(SoundEvent("clicks", 0.3, duration, -6.0, rate=rate), seconds=3.5)
    onsets = _rising_edges(_rms_frames(x, 0.002), 0.2)
    assert abs(len(onsets) / duration - per_second) <= 0.25 * per_second


@pytest.mark.parametrize(
    "event",
    [
        SoundEvent("tone", 1.3, 1.0, -10.0, pitch="low", timbre="buzzy"),
        SoundEvent("chirp", 0.7, 0.4, -10.0, direction="rising", speed="fast"),
        SoundEvent("noise", 2.1, 0.5, -10.0, noise="rumble"),
        SoundEvent("noise", 0.9, 0.5, -10.0, noise="hiss"),
        SoundEvent("clicks", 1.6, 1.2, -10.0, rate="fast"),
    ],
    ids=lambda e: f"{e.kind}-{e.noise or e.pitch or e.direction or e.rate}",
)
def test_event_starts_at_its_time(event: SoundEvent) -> None:
    envelope = _rms_frames(_clip(event), 0.01)
    onset = _rising_edges(envelope, 0.1)[0] * 0.01
    assert abs(onset - event.start) <= 0.06
    assert envelope[: int((event.start - 0.05) / 0.01)].max() < 0.05 * envelope.max()


def test_noise_colours_in_their_bands() -> None:
    def centroid(noise: str) -> float:
        x = _clip(SoundEvent("noise", 0.5, 1.5, -6.0, noise=noise))[int(0.5 * RATE) : 2 * RATE]
        power = np.abs(np.fft.rfft(x)) ** 2
        return float((np.fft.rfftfreq(len(x), 1 / RATE) * power).sum() / power.sum())

    rumble, white, hiss = centroid("rumble"), centroid("white"), centroid("hiss")
    assert rumble < 400 < 3000 < white < hiss


def test_sequence_events_in_order_and_band_limited_without_clipping() -> None:
    for item in sounds.generate(25, seed=9, split="train"):
        x = item.samples.astype(np.float64)
        assert np.abs(x).max() <= 10 ** (-1 / 20) + 1e-6
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / RATE)
        assert power[freqs > 16000].sum() <= 1e-6 * power.sum()
        events = item.spec.events
        if item.spec.arrangement == "sequence":
            assert events[0].end < events[1].start
        if item.spec.arrangement == "overlap":
            assert events[0].start < events[1].start < events[0].end
        assert all(e.start >= 0 and e.end <= 5.0 for e in events)


def test_captions_mention_every_attribute() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        spec = sounds.random_spec(rng, "train")
        text = sounds.caption(spec, rng)
        for event in spec.events:
            for value in event.attributes:
                if value in sounds.ATTRIBUTE_WORDS:
                    assert any(w in text for w in sounds.ATTRIBUTE_WORDS[value]), (value, text)
            if event.kind == "chirp":
                assert any(w in text for w in ("whistle", "chirp", "sweep"))
            if event.kind == "clicks":
                assert any(w in text for w in ("click", "ticking"))
        if spec.arrangement == "sequence":
            assert any(w in text for w in (" then ", "followed by", " after "))


def test_partial_captions_are_short_and_true() -> None:
    rng = np.random.default_rng(4)
    texts = set()
    for _ in range(300):
        spec = sounds.random_spec(rng, "train")
        text = sounds.caption(spec, rng, partial=True)
        texts.add(text)
        assert len(text.split()) <= 4
        words = {
            w for e in spec.events for v in e.attributes for w in sounds.ATTRIBUTE_WORDS.get(v, ())
        }
        kinds_said = any(k in text for k in ("beep", "whistle", "click", "tone", "sound"))
        assert (
            kinds_said or any(w in text for w in words) or text in ("static", "a rumble", "a hiss")
        )
    assert len(texts) > 20


def test_write_dataset_writes_wavs_and_captions(tmp_path: Path) -> None:
    captions = sounds.write_dataset(tmp_path / "eval", 3, seed=2, split="unseen", rate=16000)
    with open(captions, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"unseen-{i:05d}.wav" for i in range(3)]
    expected = list(sounds.generate(3, seed=2, split="unseen", rate=16000))
    for row, item in zip(rows, expected, strict=True):
        assert row["caption"] == item.caption
        with wave.open(str(captions.parent / row["file"]), "rb") as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32767.0
        assert pcm.shape == item.samples.shape
        assert np.abs(pcm - item.samples).max() < 1e-4
    from xmodal.search.evaluation import read_captions_csv

    dataset = read_captions_csv(captions.parent)
    assert len(dataset.images) == 3 and len(dataset.captions) == 3
