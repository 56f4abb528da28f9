from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from xmodal.indexer import IndexOptions, index_paths
from xmodal.indexer.metadata_file import read_metadata_file
from xmodal.search import IndexingAborted, SourceError
from xmodal.search.store import FAILED, INDEXED, item_id_for


def rows(engine):
    """uri -> (status, content_hash) for every item, and the segment count."""
    items = engine.store.items_table(["uri", "status", "content_hash"]).to_pylist()
    segments = engine.store.segments_table("image-text")
    return {r["uri"]: (r["status"], r["content_hash"]) for r in items}, segments


def test_indexes_a_folder_recursively(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    paths = [make_image(lib / f"a{i}.jpg") for i in range(3)]
    paths += [make_image(lib / "nested" / "deeper" / "b.png", format="PNG")]
    paths += [make_image(lib / "no-extension", format="WEBP")]  # recognised by content
    (lib / "notes.txt").write_text("not media")
    report = index_paths(engine, [lib])
    assert (report.indexed, report.failed, report.ignored) == (5, [], 1)
    items, segments = rows(engine)
    assert set(items) == {str(p) for p in paths}
    assert segments.num_rows == 5
    assert sorted(segments.column("item_id").to_pylist()) == sorted(
        item_id_for(str(p)) for p in paths
    )


def test_incremental_rerun_adds_updates_and_removes_exactly(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    keep, change, delete = (make_image(lib / f"{n}.jpg") for n in ("keep", "change", "delete"))
    index_paths(engine, [lib])
    before, _ = rows(engine)
    old_vector = engine.store.item_vectors("image-text", item_id_for(str(change)))

    added = make_image(lib / "added.jpg", seed=500)
    make_image(change, seed=501)  # new pixels at the same path
    delete.unlink()
    report = index_paths(engine, [lib])

    assert (report.indexed, report.updated, report.unchanged, report.removed) == (1, 1, 1, 1)
    items, segments = rows(engine)
    assert set(items) == {str(keep), str(change), str(added)}
    assert items[str(keep)] == before[str(keep)]
    assert items[str(change)][1] != before[str(change)][1]
    assert segments.num_rows == 3 and len(set(segments.column("id").to_pylist())) == 3
    new_vector = engine.store.item_vectors("image-text", item_id_for(str(change)))
    assert not np.allclose(old_vector, new_vector)

    again = index_paths(engine, [lib])
    assert (again.indexed, again.updated, again.unchanged, again.removed) == (0, 0, 3, 0)


def test_touched_file_with_same_bytes_is_not_re_embedded(engine, make_image, tmp_path):
    path = make_image(tmp_path / "lib" / "a.jpg")
    index_paths(engine, [tmp_path / "lib"])
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    report = index_paths(engine, [tmp_path / "lib"])
    assert (report.indexed, report.updated, report.unchanged) == (0, 0, 1)
    assert engine.store.item(item_id_for(str(path))).mtime_ns == 1_000_000_000


def test_corrupt_inputs_are_recorded_and_valid_files_indexed(
    engine, make_image, corrupt_files, tmp_path
):
    lib = tmp_path / "lib"
    good = [make_image(lib / f"good{i}.jpg") for i in range(3)]
    bad = corrupt_files(lib)
    report = index_paths(engine, [lib])
    assert report.indexed == 3
    reasons = dict(report.failed)
    assert set(reasons) == {str(p) for p in bad.values()}
    assert "empty" in reasons[str(bad["zero_bytes"])]
    assert "corrupt" in reasons[str(bad["truncated_jpeg"])]
    assert "not a readable image" in reasons[str(bad["text_as_jpeg"])]
    assert "corrupt" in reasons[str(bad["bad_crc_png"])]
    assert "smaller than" in reasons[str(bad["one_pixel"])]
    assert "images.max_pixels" in reasons[str(bad["huge_header"])]
    items, segments = rows(engine)
    assert all(items[str(p)][0] == INDEXED for p in good)
    assert all(items[str(p)][0] == FAILED for p in bad.values())
    assert segments.num_rows == 3
    assert (
        engine.store.item(item_id_for(str(bad["zero_bytes"]))).error
        == reasons[str(bad["zero_bytes"])]
    )


def test_fixed_file_is_indexed_on_the_next_run(engine, make_image, tmp_path):
    path = tmp_path / "lib" / "later.jpg"
    path.parent.mkdir()
    path.write_bytes(b"")
    assert len(index_paths(engine, [tmp_path / "lib"]).failed) == 1
    make_image(path)
    report = index_paths(engine, [tmp_path / "lib"])
    assert report.failed == [] and report.updated == 1
    assert engine.store.item(item_id_for(str(path))).status == INDEXED


def test_fail_fast_stops_at_the_first_bad_file(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    make_image(lib / "a.jpg")
    (lib / "b.jpg").write_bytes(b"")
    with pytest.raises(IndexingAborted, match=r"b\.jpg"):
        index_paths(engine, [lib], IndexOptions(fail_fast=True))


def test_exact_duplicates_are_embedded_once(engine, make_image, tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    original = make_image(lib / "a.jpg")
    shutil.copy(original, lib / "copy1.jpg")
    shutil.copy(original, lib / "copy2.jpg")
    make_image(lib / "other.jpg")
    encoded = []
    real = engine.encoder.encode_prepared
    monkeypatch.setattr(
        engine.encoder, "encode_prepared", lambda batch: encoded.append(len(batch)) or real(batch)
    )
    report = index_paths(engine, [lib])
    assert report.indexed == 4 and report.duplicates == 2 and sum(encoded) == 2
    vectors = [
        engine.store.item_vectors("image-text", item_id_for(str(lib / n)))[0]
        for n in ("a.jpg", "copy1.jpg", "copy2.jpg")
    ]
    assert np.allclose(vectors[0], vectors[1]) and np.allclose(vectors[0], vectors[2])
    # A later copy reuses the stored vector instead of embedding again.
    shutil.copy(original, lib / "copy3.jpg")
    encoded.clear()
    report = index_paths(engine, [lib])
    assert report.indexed == 1 and report.duplicates == 1 and sum(encoded) == 0


def test_crash_between_writes_resumes_without_duplicates_or_losses(
    engine, make_image, tmp_path, monkeypatch
):
    lib = tmp_path / "lib"
    paths = [make_image(lib / f"{i:02d}.jpg") for i in range(10)]
    store = engine.store
    real_upsert_items = store.upsert_items
    calls = {"n": 0}

    def crash_on_second_batch(records):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash after segments, before items")
        real_upsert_items(records)

    monkeypatch.setattr(store, "upsert_items", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        index_paths(engine, [lib], IndexOptions(batch_size=4, write_batch_size=4))
    monkeypatch.setattr(store, "upsert_items", real_upsert_items)
    committed = store.count_items()
    assert 0 < committed < 10

    report = index_paths(engine, [lib], IndexOptions(batch_size=4, write_batch_size=4))
    assert report.indexed == 10 - committed and report.unchanged == committed
    items, segments = rows(engine)
    assert set(items) == {str(p) for p in paths}
    segment_items = segments.column("item_id").to_pylist()
    assert len(segment_items) == 10 and len(set(segment_items)) == 10


def test_explicit_files_and_missing_paths(engine, make_image, tmp_path):
    single = make_image(tmp_path / "one.jpg")
    assert index_paths(engine, [single]).indexed == 1
    with pytest.raises(SourceError, match="no such file"):
        index_paths(engine, [tmp_path / "absent"])


def test_metadata_from_a_file_is_stored_and_updated(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    a = make_image(lib / "a.jpg")
    meta = tmp_path / "meta.csv"
    meta.write_text("file,category,price\nlib/a.jpg,shoes,49.5\n")
    index_paths(engine, [lib], metadata=read_metadata_file(meta))
    assert engine.store.item(item_id_for(str(a))).metadata == {"category": "shoes", "price": 49.5}
    meta.write_text("file,category,price\nlib/a.jpg,boots,60\n")
    index_paths(engine, [lib], metadata=read_metadata_file(meta))
    assert engine.store.item(item_id_for(str(a))).metadata == {"category": "boots", "price": 60}


def test_indexing_one_file_of_an_indexed_folder_changes_nothing(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    paths = [make_image(lib / f"{i}.jpg") for i in range(3)]
    index_paths(engine, [lib])
    report = index_paths(engine, [paths[1]])
    assert (report.indexed, report.updated, report.unchanged, report.removed) == (0, 0, 1, 0)
    paths[1].unlink()
    assert index_paths(engine, [lib]).removed == 1  # the folder still owns it


def test_csv_metadata_columns_keep_one_type_and_codes_keep_their_zeros(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "file,sku,ean,price,stock,size,note\n"
        "a.jpg,00123,4006381333931,49.5,3,42,\n"
        "b.jpg,123,0400638133393,60,,L,1e3\n"
        "c.jpg,A-7,4006381333932,1e2,-2,40,-\n"
    )
    rows = read_metadata_file(meta)
    a, b, c = (rows[str(tmp_path / name)] for name in ("a.jpg", "b.jpg", "c.jpg"))
    # A column with one code that a number would change stays text, all of it.
    assert (a["sku"], b["sku"], c["sku"]) == ("00123", "123", "A-7")
    assert (a["ean"], b["ean"]) == ("4006381333931", "0400638133393")
    # Numbers stay numbers (range filters), one type per column; empty is None.
    assert (a["price"], b["price"], c["price"]) == (49.5, 60.0, 100.0)
    assert all(isinstance(row["price"], float) for row in (a, b, c))
    assert (a["stock"], b["stock"], c["stock"]) == (3, None, -2)
    assert (a["size"], b["size"], c["size"]) == ("42", "L", "40")
    assert (a["note"], b["note"], c["note"]) == ("", "1e3", "-")
