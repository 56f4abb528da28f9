"""Damage and duplicates: reads never crash on them, writes and `repair` mend them.

Cases reproduced from issue 13: duplicate rows left by two racing runs made every search
crash and the next run call everything unchanged; an empty keys.npy or alive.npy
stopped search with "Aborted."; a truncated table gave a 62-line traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lancedb
import pytest

from xmodal.indexer import index_paths
from xmodal.search import AnnSettings, Engine, Store
from xmodal.search.ann.synced import IndexDirectory
from xmodal.search.errors import StoreDamagedError
from xmodal.search.store.repair import repair_store
from xmodal.search.store.schema import index_root

FILES = 10


@pytest.fixture
def library(make_image, tmp_path) -> Path:
    lib = tmp_path / "lib"
    for i in range(FILES):
        make_image(lib / f"{i:02d}.jpg", seed=i, size=(64, 48))
    return lib


def open_engine(data: Path, encoder, **ann) -> Engine:
    return Engine(Store(data), encoder, ann=AnnSettings(**ann) if ann else None)


def table(data: Path, name: str):
    return lancedb.connect(data / "lance").open_table(name)


def ids(data: Path, name: str) -> list[str]:
    return table(data, name).to_arrow().column("id").to_pylist()


def test_duplicates_of_an_older_version_are_searchable_and_repaired_by_the_next_run(
    tiny_encoder, library, tmp_path
):
    data = tmp_path / "data"
    index_paths(open_engine(data, tiny_encoder), [library])
    # What two racing runs of an older version left: item rows and segments twice.
    items, segments = table(data, "items"), table(data, "segments_image_text")
    items.add(items.to_arrow().slice(0, 3))
    twice = segments.to_arrow().slice(0, 4)
    segments.add(twice)
    segments.add(twice)
    assert len(ids(data, "items")) == FILES + 3

    engine = open_engine(data, tiny_encoder)
    hits = engine.search_text("a photo", k=50).hits
    assert sorted(h.item.id for h in hits) == sorted(set(ids(data, "items")))
    similar = engine.search_similar(hits[0].item.id, k=50).hits
    assert len({h.item.id for h in similar}) == len(similar)

    report = index_paths(open_engine(data, tiny_encoder), [library])
    # The items concerned are embedded again, once; nothing else is touched.
    assert report.repaired == 4 and report.updated == 4 and report.indexed == 0
    assert report.unchanged == FILES - 4
    assert len(ids(data, "items")) == len(set(ids(data, "items"))) == FILES
    segment_ids = ids(data, "segments_image_text")
    assert len(segment_ids) == len(set(segment_ids)) == FILES
    again = index_paths(open_engine(data, tiny_encoder), [library])
    assert (again.repaired, again.unchanged) == (0, FILES)


@pytest.mark.parametrize("damaged", ["keys.npy", "alive.npy", "index.faiss"])
def test_an_unreadable_saved_index_is_rebuilt_with_one_log_line(
    tiny_encoder, library, tmp_path, caplog, damaged
):
    data = tmp_path / "data"
    index_paths(open_engine(data, tiny_encoder, kind="hnsw"), [library])
    directory = IndexDirectory(index_root(data, "image-text"))
    saved = directory.current()
    assert saved is not None and directory.intact()
    expected = [h.item.id for h in open_engine(data, tiny_encoder).search_text("a photo").hits]
    (saved / damaged).write_bytes(b"")

    with caplog.at_level(logging.INFO, logger="xmodal"):
        engine = open_engine(data, tiny_encoder, kind="hnsw")
        found = [h.item.id for h in engine.search_text("a photo").hits]
    assert found == expected
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "unreadable" in lines[0] and "rebuilding it" in lines[0]
    assert not directory.intact()
    # The next write run saves it whole again, though the store did not change.
    report = index_paths(open_engine(data, tiny_encoder, kind="hnsw"), [library])
    assert report.unchanged == FILES and directory.intact() and directory.loads()


def test_a_damaged_table_is_one_error_naming_it_and_repair_restores_it(
    tiny_encoder, library, make_image, tmp_path
):
    data = tmp_path / "data"
    index_paths(open_engine(data, tiny_encoder), [library])
    for i in range(FILES, FILES + 4):
        make_image(library / f"{i:02d}.jpg", seed=i, size=(64, 48))
    index_paths(open_engine(data, tiny_encoder), [library])
    # Cut short the newest data file of the segments table (the last run's compaction).
    files = sorted(
        (data / "lance" / "segments_image_text.lance" / "data").glob("*.lance"),
        key=lambda p: p.stat().st_mtime_ns,
    )
    newest = files[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])

    with pytest.raises(StoreDamagedError) as caught:
        open_engine(data, tiny_encoder).search_text("a photo")
    message = str(caught.value)
    assert "segments_image_text table" in message and "xmodal repair" in message
    assert "\n" not in message and caught.value.table == "segments_image_text"

    report = repair_store(data)
    (repaired,) = report.damaged
    assert repaired.table == "segments_image_text"
    assert repaired.state in ("restored", "salvaged", "emptied")
    assert repaired.rows_before == FILES + 4 and repaired.rows_lost is not None
    # Every item whose vectors may be gone is embedded again by the next run.
    engine = open_engine(data, tiny_encoder)
    run = index_paths(engine, [library])
    assert run.indexed == 0 and run.updated == report.items_to_embed_again
    assert run.updated + run.unchanged == FILES + 4
    hits = open_engine(data, tiny_encoder).search_text("a photo", k=50).hits
    assert len(hits) == FILES + 4
    segment_ids = ids(data, "segments_image_text")
    assert len(segment_ids) == len(set(segment_ids)) == FILES + 4
    assert not repair_store(data).changed
