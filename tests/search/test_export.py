"""Exporting a store: items and vectors as Parquet and the clip-retrieval .npy layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.media import videos
from xmodal.indexer import index_paths
from xmodal.search.errors import InvalidQueryError
from xmodal.search.export import ExportError, ExportOptions, export_store
from xmodal.search.store import item_id_for

BOTH = ("parquet", "npy")


@pytest.fixture
def library(engine, make_image, tmp_path):
    """Four pictures (two red, two blue), a video of three shots, an unreadable file."""
    lib = tmp_path / "lib"
    pictures = [make_image(lib / f"{i}.jpg", seed=i) for i in range(4)]
    video = videos.write_video(
        lib / "clip.mp4",
        [(1.0, videos.solid(rgb)) for rgb in ((220, 30, 30), (30, 180, 40), (30, 60, 220))],
        fps=10,
        size=(96, 64),
    )
    (lib / "broken.jpg").write_text("not a picture")
    metadata = {str(p): {"colour": "red" if i < 2 else "blue"} for i, p in enumerate(pictures)}
    metadata[str(video)] = {"colour": "red"}
    index_paths(engine, [lib], metadata=metadata)
    return {"pictures": pictures, "video": video, "broken": lib / "broken.jpg"}


def store_vectors(engine) -> dict[str, np.ndarray]:
    segments = engine.store.segments_table("image-text")
    vectors = np.stack(segments.column("vector").to_numpy(zero_copy_only=False))
    return dict(zip(segments.column("id").to_pylist(), vectors, strict=True))


def read_npy_layout(folder) -> tuple[np.ndarray, pd.DataFrame]:
    parts = sorted((folder / "img_emb").glob("img_emb_*.npy"), key=lambda p: int(p.stem[8:]))
    metadata = [folder / "metadata" / f"metadata_{p.stem[8:]}.parquet" for p in parts]
    return (
        np.concatenate([np.load(p) for p in parts]),
        pd.concat([pd.read_parquet(m) for m in metadata], ignore_index=True),
    )


def test_both_formats_hold_the_stores_vectors_row_aligned(engine, library, tmp_path):
    out = tmp_path / "export"
    report = export_store(engine.store, out, ExportOptions(formats=BOTH, part_rows=2))
    expected = store_vectors(engine)
    video_id = item_id_for(str(library["video"]))
    assert sum(key.startswith(video_id) for key in expected) >= 2  # several segments an item
    assert report.items == 5 and report.spaces[0].segments == len(expected)

    items = pd.read_parquet(out / "items.parquet")
    assert sorted(items["uri"]) == sorted(map(str, [*library["pictures"], library["video"]]))
    assert "root" not in items.columns and set(items["status"]) == {"indexed"}
    video_row = items.set_index("id").loc[video_id]
    assert json.loads(video_row["metadata"]) == {"colour": "red"} and video_row["duration"] > 2

    embeddings = pq.read_table(out / "image-text" / "embeddings.parquet")
    assert embeddings.schema.field("vector").type == pa.list_(pa.float32(), 32)
    assert embeddings.column_names == ["segment_id", "item_id", "start", "end", "vector"]
    for segment_id, vector in zip(
        embeddings.column("segment_id").to_pylist(),
        embeddings.column("vector").to_pylist(),
        strict=True,
    ):
        assert np.allclose(vector, expected[segment_id])

    matrix, metadata = read_npy_layout(out / "image-text")
    assert matrix.dtype == np.float32 and matrix.shape == (len(expected), 32)
    assert len(list((out / "image-text" / "img_emb").iterdir())) == -(-len(expected) // 2)
    assert np.allclose(matrix, np.stack([expected[s] for s in metadata["segment_id"]]))
    uris = items.set_index("id")["uri"]
    assert list(metadata["uri"]) == list(uris.loc[metadata["item_id"]])

    manifest = json.loads((out / "manifest.json").read_text())
    space = manifest["spaces"]["image-text"]
    assert space["dim"] == 32 and space["segments"] == len(expected) and space["items"] == 5
    assert space["model_identity"] == engine.store.space("image-text").model_identity
    assert manifest["store_format"] == engine.store.format_version
    assert manifest["items"] == {"rows": 5, "indexed": 5, "failed": 0}


def test_filter_exports_matching_items_and_only_their_segments(engine, library, tmp_path):
    out = tmp_path / "red"
    options = ExportOptions(formats=BOTH, filter={"colour": "red"}, include_failed=True)
    report = export_store(engine.store, out, options)
    red = {item_id_for(str(p)) for p in [*library["pictures"][:2], library["video"]]}
    items = pd.read_parquet(out / "items.parquet")
    # The failed file has no colour: the filter leaves it out too.
    assert set(items["id"]) == red and report.failed == 0
    embeddings = pd.read_parquet(out / "image-text" / "embeddings.parquet")
    assert set(embeddings["item_id"]) == red
    _, metadata = read_npy_layout(out / "image-text")
    assert list(metadata["segment_id"]) == list(embeddings["segment_id"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filter"] == {"colour": "red"}

    with pytest.raises(InvalidQueryError):
        export_store(engine.store, tmp_path / "bad", ExportOptions(filter={"w": {"$gt": []}}))


def test_failed_items_only_with_include_failed_and_never_with_vectors(engine, library, tmp_path):
    export_store(engine.store, tmp_path / "a", ExportOptions())
    assert "failed" not in set(pd.read_parquet(tmp_path / "a" / "items.parquet")["status"])
    report = export_store(engine.store, tmp_path / "b", ExportOptions(include_failed=True))
    items = pd.read_parquet(tmp_path / "b" / "items.parquet")
    failed = items[items["status"] == "failed"]
    assert list(failed["uri"]) == [str(library["broken"])] and failed["error"].iloc[0]
    assert report.failed == 1 and report.items == 6
    embeddings = pd.read_parquet(tmp_path / "b" / "image-text" / "embeddings.parquet")
    assert not set(failed["id"]) & set(embeddings["item_id"])


def test_a_non_empty_out_is_refused_and_an_earlier_export_replaced_with_force(
    engine, library, tmp_path
):
    out = tmp_path / "export"
    export_store(engine.store, out, ExportOptions(filter={"kind": "video"}))
    with pytest.raises(ExportError, match="not empty"):
        export_store(engine.store, out, ExportOptions())
    assert len(pd.read_parquet(out / "items.parquet")) == 1  # untouched

    export_store(engine.store, out, ExportOptions(force=True))
    assert len(pd.read_parquet(out / "items.parquet")) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="holds no xmodal export"):
        export_store(engine.store, other, ExportOptions(force=True))
    assert (other / "mine.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match="data directory"):
        export_store(engine.store, engine.store.path.parent, ExportOptions(force=True))


def test_a_failed_export_leaves_nothing_that_looks_complete(engine, library, tmp_path, monkeypatch):
    import xmodal.search.export as export_module

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "export_space", crash)
    with pytest.raises(OSError, match="disk full"):
        export_store(engine.store, tmp_path / "export", ExportOptions())
    assert not (tmp_path / "export").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == []


def test_an_external_id_column_passes_through(engine, library, tmp_path):
    from dataclasses import replace

    video_id = item_id_for(str(library["video"]))
    engine.store.upsert_items([replace(engine.store.item(video_id), external_id="SKU-0042")])

    out = tmp_path / "export"
    export_store(engine.store, out, ExportOptions(formats=BOTH))
    items = pd.read_parquet(out / "items.parquet").set_index("id")
    assert items.loc[video_id, "external_id"] == "SKU-0042"
    assert items.drop(index=video_id)["external_id"].isna().all()
    _, metadata = read_npy_layout(out / "image-text")
    of_video = metadata[metadata["item_id"] == video_id]
    assert len(of_video) >= 2 and set(of_video["external_id"]) == {"SKU-0042"}


def test_an_exported_vector_finds_its_own_item_first(engine, library, tmp_path):
    out = tmp_path / "export"
    export_store(engine.store, out, ExportOptions(formats=("npy",)))
    matrix, metadata = read_npy_layout(out / "image-text")
    assert not (out / "image-text" / "embeddings.parquet").exists()
    for row in range(len(metadata)):
        hit = engine.search_vector(matrix[row], k=1).hits[0]
        assert hit.item.id == metadata["item_id"][row]
