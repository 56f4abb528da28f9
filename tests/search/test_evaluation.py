from __future__ import annotations

import json

import numpy as np
import pytest

from xmodal.search import SourceError
from xmodal.search.evaluation import read_dataset, retrieval_metrics


def unit(*rows):
    matrix = np.asarray(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_metrics_on_a_case_whose_answer_is_known_by_construction():
    # Images on the axes, so a score is a caption vector's coordinate. Every caption row is
    # a permutation of the same values, so rows stay comparable after normalising.
    images = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    texts = unit(
        [0.8, 0.5, 0.33],  # caption of image 0: image 0 first              -> rank 1
        [0.33, 0.5, 0.8],  # caption of image 1: image 2 above it           -> rank 2
        [0.8, 0.5, 0.33],  # caption of image 2: images 0 and 1 above it    -> rank 3
    )
    metrics = retrieval_metrics(texts, images, ["a", "b", "c"], [0, 1, 2], ks=(1, 2, 3))
    t2i = metrics.text_to_media
    assert t2i.recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    assert (t2i.median_rank, t2i.mean_rank, t2i.queries) == (2.0, 2.0, 3)
    # image -> text, by columns: image 0 ties with caption c (a tie is not "above") -> 1;
    # image 1 scores 0.5 everywhere -> 1; image 2's caption (0.33) is below caption b -> 2.
    i2t = metrics.media_to_text
    assert i2t.recall == {1: pytest.approx(2 / 3), 2: 1.0, 3: 1.0}
    assert (i2t.median_rank, i2t.mean_rank) == (1.0, pytest.approx(4 / 3))


def test_identical_captions_of_different_images_are_all_relevant():
    images = unit([1, 0], [0.9, 0.1])
    texts = unit([0, 1], [0, 1])  # both captions point nowhere near image 0
    metrics = retrieval_metrics(texts, images, ["a red circle", "A red  circle"], [0, 1], ks=(1,))
    assert metrics.text_to_media.recall[1] == 1.0


def test_reads_captions_csv_and_coco_json(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "captions.csv").write_text("file,caption\na.jpg,one\na.jpg,uno\nb.jpg,two\n")
    from_csv = read_dataset(tmp_path)
    assert [p.name for p in from_csv.images] == ["a.jpg", "b.jpg"]
    assert from_csv.caption_image == [0, 0, 1]
    coco = {
        "images": [{"id": 7, "file_name": "b.jpg"}, {"id": 9, "file_name": "a.jpg"}],
        "annotations": [{"image_id": 9, "caption": "one"}, {"image_id": 7, "caption": "two"}],
    }
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    from_coco = read_dataset(tmp_path / "captions.json")
    assert [p.name for p in from_coco.images] == ["a.jpg", "b.jpg"]
    assert from_coco.captions == ["one", "two"]


@pytest.mark.parametrize(
    "content",
    ["file,text\na.jpg,x\n", "file,caption\n"],
    ids=["wrong-columns", "empty"],
)
def test_bad_datasets_are_refused(tmp_path, content):
    (tmp_path / "captions.csv").write_text(content)
    with pytest.raises(SourceError):
        read_dataset(tmp_path)
    with pytest.raises(SourceError, match="no such dataset"):
        read_dataset(tmp_path / "absent")
