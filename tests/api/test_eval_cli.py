"""`xmodal eval` end to end on a dataset whose answer is known by construction."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from search.encoders import ImageTextEncoder, list_encoders, register_encoder

PRIMARIES = {"red": 0, "green": 1, "blue": 2}


class PrimaryColourEncoder(ImageTextEncoder):
    """Embeds an image as its mean colour and a text as the primary colour it names."""

    def __init__(self, rest: str, device: str = "auto"):
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

    def load(self) -> None:
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


@pytest.fixture(scope="module", autouse=True)
def _register_test_encoder():
    if "test-colour:" not in list_encoders():
        register_encoder("test-colour")(PrimaryColourEncoder)


def run_eval(folder, monkeypatch, capsys) -> dict:
    import sys

    from api.cli import main

    monkeypatch.setattr(
        sys, "argv", ["xmodal", "eval", str(folder), "--model", "test-colour:x", "--json"]
    )
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    return json.loads(capsys.readouterr().out)


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

    from api.cli import main

    monkeypatch.setattr(sys, "argv", ["xmodal", "eval", str(tmp_path), "--model", "test-colour:x"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2 and "captions.csv" in capsys.readouterr().err
