from __future__ import annotations

import duckdb
import lancedb
import numpy as np
import pytest

from tests.conftest import TINY_ARCH
from xmodal.search import Engine, ModelMismatchError, Store, create_encoder
from xmodal.search.store import ItemRecord, SegmentRecord


def test_space_records_model_identity_and_dimension(engine):
    space = engine.bind_space()
    assert space.dim == 32 and space.model_identity == engine.encoder.identity
    reopened = Store(engine.store.path)
    assert reopened.space("image-text") == space


def test_other_model_on_existing_store_is_refused(engine, tmp_path):
    engine.bind_space()
    import open_clip
    import torch

    torch.manual_seed(123)  # same architecture, other weights: another model
    other = tmp_path / "other.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), other)
    with pytest.raises(ModelMismatchError) as caught:
        Engine(Store(engine.store.path), create_encoder(f"open_clip:{TINY_ARCH}/{other}"))
    message = str(caught.value)
    assert engine.encoder.spec in message and "--data" in message


def test_store_without_model_opens_with_the_model_it_was_built_with(engine):
    engine.bind_space()
    reopened = Engine.open(engine.store.path)
    assert reopened.encoder.identity == engine.encoder.identity


def test_tables_are_readable_with_pandas_and_duckdb(engine):
    engine.bind_space()
    vector = np.ones(32, np.float32) / np.sqrt(32)
    engine.store.upsert_segments("image-text", [SegmentRecord("a:0", "a", vector)])
    engine.store.upsert_items(
        [ItemRecord("a", "/x/a.jpg", "image", "/x", content_hash="h", metadata={"k": 1})]
    )
    db = lancedb.connect(engine.store.path / "lance")
    items = db.open_table("items").to_pandas()
    assert items.loc[0, "uri"] == "/x/a.jpg"
    segments = db.open_table("segments_image_text").to_arrow()  # noqa: F841 (duckdb reads it by name)
    joined = duckdb.sql(
        "select i.uri, len(s.vector) from segments s join items i on i.id = s.item_id"
    ).fetchall()
    assert joined == [("/x/a.jpg", 32)]


def test_upserts_are_idempotent(engine):
    engine.bind_space()
    record = ItemRecord("a", "/x/a.jpg", "image", "/x")
    segment = SegmentRecord("a:0", "a", np.ones(32, np.float32))
    for _ in range(3):
        engine.store.upsert_segments("image-text", [segment])
        engine.store.upsert_items([record])
    assert engine.store.count_items() == 1
    assert engine.store.segments_table("image-text").num_rows == 1


def test_a_format_1_store_is_migrated_in_place(engine):
    engine.bind_space()
    engine.store.upsert_items([ItemRecord("a", "/x/a.jpg", "image", "/x", content_hash="h")])
    db = lancedb.connect(engine.store.path / "lance")
    # What the first release wrote: no duration nor catalog columns, format 1.
    db.open_table("items").drop_columns(
        ["duration", "external_id", "source_etag", "source_modified"]
    )
    db.open_table("meta").update(where="key = 'format'", values={"value": "1"})

    migrated = Store(engine.store.path)
    assert {"duration", "external_id"} <= set(db.open_table("items").schema.names)
    item = migrated.item("a")
    assert item.uri == "/x/a.jpg" and item.duration is None and item.external_id is None
    assert item.source_etag == ""
    assert db.open_table("meta").to_pandas().set_index("key").loc["format", "value"] == "3"
    # The migrated table takes rows of the current schema.
    migrated.upsert_items([ItemRecord("b", "/x/b.jpg", "image", "/x", external_id="B")])
    assert migrated.item("b").external_id == "B"


def test_a_store_from_a_newer_release_is_refused(engine):
    from xmodal.search import StoreError

    db = lancedb.connect(engine.store.path / "lance")
    db.open_table("meta").update(where="key = 'format'", values={"value": "99"})
    with pytest.raises(StoreError, match="newer xmodal"):
        Store(engine.store.path)


def test_version_sees_every_commit_even_when_cached(engine, monkeypatch):
    import xmodal.search.store.store as store_module

    engine.bind_space()
    store, space = engine.store, "image-text"
    vector = np.ones(engine.encoder.dim, np.float32)

    def commit(n: int) -> None:
        store.upsert_items([ItemRecord(f"i{n}", f"/x/{n}.jpg", "image", "/x")])

    seen = {store.version(space)}
    for n in range(5):  # back-to-back commits, within one tick of a coarse mtime clock
        commit(n)
        seen.add(store.version(space))
    assert len(seen) == 6
    # Once the folders are older than the margin the version is served from the cache,
    # and the next commit still shows.
    monkeypatch.setattr(store_module, "MTIME_MARGIN_NS", 0)
    before = store.version(space)
    table = store.segments_table_of(space)  # versions are cached per table
    assert store.version(space) == before and store._versions[table][1] == before
    store.upsert_segments(space, [SegmentRecord("s", "i0", vector)])
    assert store.version(space) != before
