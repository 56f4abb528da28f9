"""`xmodal eval` end to end on a dataset whose answer is known by construction."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from tests.media.audio import place, silence, tone, write_audio
from xmodal.search.encoders import (
    AudioTextEncoder,
    ImageTextEncoder,
    list_encoders,
    register_encoder,
)

PRIMARIES = {"red": 0, "green": 1, "blue": 2}


class PrimaryColourEncoder(ImageTextEncoder):
    """Embeds an image as its mean colour and a text as the primary colour it names."""

    def __init__(self, rest: str, device: str = "auto"):
        super().__init__()
        self._spec = f"test-colour:{rest}"

    @property
    def identity(self) -> str:
        return self._spec

    @property
    def dim(self) -> int:
        return 3

    @property
    def input_size(self) -> tuple[int, int]:
        return (16, 16)

    def _load(self) -> None:
        pass

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.resize((16, 16)), dtype=np.float32).mean(axis=(0, 1))

    def encode_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        vectors = np.stack(batch) + 1e-3
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.full((len(texts), 3), 1e-3, np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                if word in PRIMARIES:
                    vectors[row, PRIMARIES[word]] += 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


BANDS = {"low": (50.0, 300.0), "mid": (300.0, 1200.0), "high": (1200.0, 8000.0)}


class PitchBandEncoder(AudioTextEncoder):
    """Embeds a clip as its energy per pitch band and a text as the bands it names."""

    def __init__(self, rest: str, device: str = "auto"):
        super().__init__()
        self._spec = f"test-pitch:{rest}"

    identity = property(lambda self: self._spec)
    dim = property(lambda self: 3)
    sample_rate = property(lambda self: 16000)
    window_seconds = property(lambda self: 2.0)

    def _load(self) -> None:
        pass

    def encode_audio(self, batch, sample_rate=None) -> np.ndarray:
        rows = []
        for clip in batch:
            power = np.abs(np.fft.rfft(clip)) ** 2
            freqs = np.fft.rfftfreq(len(clip), 1 / 16000)
            rows.append([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in BANDS.values()])
        vectors = np.sqrt(np.asarray(rows, np.float64)) + 1e-6
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.full((len(texts), 3), 1e-3, np.float32)
        for row, text in enumerate(texts):
            for column, band in enumerate(BANDS):
                vectors[row, column] += band in text.split()
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module", autouse=True)
def _register_test_encoder():
    if "test-colour:" not in list_encoders():
        register_encoder("test-colour")(PrimaryColourEncoder)
    if "test-pitch:" not in list_encoders():
        register_encoder("test-pitch")(PitchBandEncoder)


def run_eval(folder, monkeypatch, capsys, model: str = "test-colour:x", *extra: str) -> dict:
    import sys

    from xmodal.api.cli import main

    argv = ["xmodal", "eval", str(folder), "--model", model, "--json", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    return json.loads(capsys.readouterr().out)


def test_eval_with_rerank_reorders_only_each_captions_top(tmp_path, monkeypatch, capsys):
    from training.vlm_parts import tiny_llava

    colours = {"r": (255, 0, 0), "g": (0, 255, 0), "b": (0, 0, 255), "k": (20, 20, 20)}
    for name, rgb in colours.items():
        Image.new("RGB", (32, 32), rgb).save(tmp_path / f"{name}.png")
    (tmp_path / "captions.csv").write_text(
        "file,caption\nr.png,red\ng.png,green\nb.png,blue\nk.png,red green blue\n"
    )
    vlm = f"llava:{tiny_llava(tmp_path / 'vlm')}"
    args = ("--rerank", "--rerank-top", "2", "--rerank-model", vlm, "--rerank-method", "caption")
    report = run_eval(tmp_path, monkeypatch, capsys, "test-colour:x", *args)
    plain, reranked = report["text_to_image"], report["text_to_image_reranked"]
    assert reranked["model"] == vlm and reranked["method"] == "caption"
    assert reranked["top_n"] == 2 and reranked["pairs"] == 4 * 2
    # Only the first two of each caption move: whether the right image is in them,
    # and so R@5 and R@10, cannot change.
    assert reranked["R@5"] == plain["R@5"] and reranked["R@10"] == plain["R@10"]
    assert reranked["queries"] == plain["queries"] == 4


def test_eval_reports_ranks_known_by_construction(tmp_path, monkeypatch, capsys):
    # Unit vectors: r = (1, 0, 0), g ≈ (0, .988, .155) (a little blue), b = (0, 0, 1).
    for name, rgb in {"r.png": (255, 0, 0), "g.png": (0, 255, 40), "b.png": (0, 0, 255)}.items():
        Image.new("RGB", (32, 32), rgb).save(tmp_path / name)
    (tmp_path / "captions.csv").write_text(
        "file,caption\nr.png,red\ng.png,blue\nb.png,blue green\n"
    )
    report = run_eval(tmp_path, monkeypatch, capsys)
    assert (report["images"], report["captions"]) == (3, 3)
    # text -> image: "red" finds r first (rank 1); "blue" (g's caption) scores b 1.0 above
    # g 0.155 (rank 2); "blue green" scores g 0.81 above b 0.71 (rank 2).
    t2i = report["text_to_image"]
    assert (t2i["R@1"], t2i["R@5"]) == (pytest.approx(1 / 3, abs=1e-4), 1.0)
    assert (t2i["median_rank"], t2i["mean_rank"]) == (2.0, pytest.approx(5 / 3, abs=0.01))
    # image -> text: r's "red" is first (1); for g, "blue green" (0.81) beats "blue" (0.155)
    # (rank 2); for b, "blue" (1.0) beats "blue green" (0.71) (rank 2).
    i2t = report["image_to_text"]
    assert (i2t["R@1"], i2t["median_rank"]) == (pytest.approx(1 / 3, abs=1e-4), 2.0)


def test_identical_captions_count_for_every_image_they_describe(tmp_path, monkeypatch, capsys):
    for name, rgb in {"r.png": (255, 0, 0), "g.png": (0, 255, 0)}.items():
        Image.new("RGB", (32, 32), rgb).save(tmp_path / name)
    # "green" describes both images (by the dataset's own annotations): finding g first is right.
    (tmp_path / "captions.csv").write_text("file,caption\nr.png,red\nr.png,green\ng.png,green\n")
    report = run_eval(tmp_path, monkeypatch, capsys)
    assert report["text_to_image"]["R@1"] == 1.0 and report["image_to_text"]["R@1"] == 1.0


def test_eval_refuses_a_dataset_without_captions(tmp_path, monkeypatch, capsys):
    import sys

    from xmodal.api.cli import main

    monkeypatch.setattr(sys, "argv", ["xmodal", "eval", str(tmp_path), "--model", "test-colour:x"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2 and "captions.csv" in capsys.readouterr().err


def test_eval_on_captioned_sounds_scores_each_by_its_best_window(tmp_path, monkeypatch, capsys):
    rate = 16000
    # 6 s each: three 2 s windows, only one of which holds the tone (the others are
    # silent and skipped, or in "mixed.wav" hold another band).
    write_audio(
        tmp_path / "low.wav", place(silence(6.0, rate), tone(150.0, 2.0, rate), 4.0, rate), rate
    )
    write_audio(
        tmp_path / "high.wav", place(silence(6.0, rate), tone(3000.0, 2.0, rate), 0.0, rate), rate
    )
    mixed = place(tone(600.0, 6.0, rate, amplitude=0.3), tone(150.0, 2.0, rate), 2.0, rate)
    write_audio(tmp_path / "mid.wav", mixed, rate)
    (tmp_path / "captions.csv").write_text(
        "file,caption\nlow.wav,a low hum\nhigh.wav,a high beep\nmid.wav,a mid tone\n"
    )
    report = run_eval(tmp_path, monkeypatch, capsys, model="test-pitch:x")
    assert report["media"] == "audio" and (report["sounds"], report["captions"]) == (3, 3)
    # "a low hum" scores low.wav's tone window 1.0 and mid.wav's 150 + 600 Hz window about
    # 0.86, so every caption (and every sound, by its best window) ranks its own first.
    assert report["text_to_audio"]["R@1"] == 1.0
    assert report["audio_to_text"]["R@1"] == 1.0
