"""The committed audio reference model (`xmodal-ref-audio`), through ClapEncoder and real decoding."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from xmodal.search.encoders.clap_encoder import ClapEncoder
from xmodal.search.evaluation import retrieval_metrics
from xmodal.search.media import AudioOptions, iter_audio_windows
from xmodal.synthetic import sounds

MODEL_DIR = Path(__file__).resolve().parents[2] / "search" / "models" / "xmodal-ref-audio"
# Training used seeds from 1_000_000 up and the card's figures seed 7; these clips use 3.
HELD_OUT_SEED = 3
# Measured on these 60 clips (48 kHz WAVs): R@1 0.57, R@5 0.95. Exact-caption R@1 has
# a ceiling: clips whose captions say the same thing in other words ("white noise",
# "a burst of static") are indistinguishable, and a model ranking them perfectly by
# meaning would score 0.514 here (0.351 on the card's 500 clips, where it got 0.272).
# The bars sit well below for a 60-clip sample.
SEEN_R1_MIN = 0.35
SEEN_R5_MIN = 0.75


@pytest.fixture(scope="module")
def encoder() -> ClapEncoder:
    encoder = ClapEncoder(f"local-dir:{MODEL_DIR}", device="cpu")
    encoder.load()
    return encoder


def _tone(pitch: str, timbre: str = "sine") -> np.ndarray:
    """One steady tone in the middle of a quiet clip, at the model's rate."""
    event = sounds.SoundEvent(
        "tone", start=1.5, duration=2.0, level_db=-8.0, pitch=pitch, timbre=timbre
    )
    spec = sounds.SoundSpec((event,), "single", "noise", -55.0)
    return sounds.render(spec, 16000, 5.0, np.random.default_rng(0))


def test_loads_through_clap_encoder(encoder: ClapEncoder) -> None:
    assert encoder.sample_rate == 16000
    assert encoder.window_seconds == 5.0
    assert encoder.dim == 128
    assert encoder.identity.startswith("clap:sha256:")
    size = sum(p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file())
    assert size <= 10 * 1024 * 1024


def test_vectors_are_unit_length_and_deterministic(encoder: ClapEncoder) -> None:
    clips = [_tone("high"), _tone("low"), np.zeros(1000, np.float32)]
    audio = encoder.encode_audio(clips, encoder.sample_rate)
    queries = ["a high beep", "a deep hum", "Zebra ünïcode 123"]  # any text tokenizes
    texts = encoder.encode_texts(queries)
    for vectors in (audio, texts):
        assert vectors.shape == (3, 128) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(audio, encoder.encode_audio(clips, encoder.sample_rate))
    one_by_one = np.concatenate([encoder.encode_audio([clip]) for clip in clips])
    np.testing.assert_allclose(audio, one_by_one, atol=1e-5)
    np.testing.assert_array_equal(texts, encoder.encode_texts(queries))
    # Alone, a caption pads differently: the same vector up to float rounding.
    np.testing.assert_allclose(texts[:1], encoder.encode_texts(queries[:1]), atol=1e-5)


def test_held_out_recall_through_decoded_files(tmp_path: Path, encoder: ClapEncoder) -> None:
    # 48 kHz files, as users have them: decoding resamples them to the model's rate.
    captions_csv = sounds.write_dataset(tmp_path, 60, seed=HELD_OUT_SEED, split="seen")
    with open(captions_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    options = AudioOptions(
        sample_rate=encoder.sample_rate,
        window_seconds=encoder.window_seconds,
        hop_seconds=encoder.window_seconds,
    )
    clips = []
    for row in rows:
        windows = list(iter_audio_windows(tmp_path / row["file"], options))
        assert len(windows) == 1  # a 5 s file is one window
        clips.append(windows[0].samples)
    captions = [row["caption"] for row in rows]
    metrics = retrieval_metrics(
        encoder.encode_texts(captions),
        encoder.encode_audio(clips, encoder.sample_rate),
        captions,
        list(range(len(rows))),
    )
    assert metrics.text_to_media.recall[1] >= SEEN_R1_MIN
    assert metrics.text_to_media.recall[5] >= SEEN_R5_MIN


@pytest.mark.parametrize(
    ("query", "right", "wrong"),
    [
        ("a high pure tone", ("high", "sine"), ("low", "sine")),
        ("a deep hum", ("low", "sine"), ("high", "sine")),
        ("a high sound", ("high", "buzzy"), ("low", "square")),
        ("a low sound", ("low", "square"), ("high", "buzzy")),
    ],
)
def test_pitch_words_match_pitch(
    encoder: ClapEncoder, query: str, right: tuple[str, str], wrong: tuple[str, str]
) -> None:
    audio = encoder.encode_audio([_tone(*right), _tone(*wrong)], encoder.sample_rate)
    scores = encoder.encode_texts([query]) @ audio.T
    assert scores[0, 0] > scores[0, 1]
