"""Indexing on a local Ray cluster (2 CPUs, no GPU) gives what a local run gives, item by
item; re-runs do nothing; an interrupted run resumes exactly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo, truncated_jpeg
from tests.media.audio import tone_in_silence, video_with_audio, write_audio
from xmodal.indexer import IndexOptions, index_paths
from xmodal.search import Engine, Store
from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.store import FAILED, INDEXED

pytestmark = pytest.mark.slow

# Columns a Ray run and a local run may differ in: when the row was written.
WHEN = {"indexed_at"}


def ray_options(**overrides):
    from xmodal.indexer.distributed import RayOptions

    return RayOptions(**{"actors": 1, "decode_actors": 1, "batch_size": 2, **overrides})


def index_on_ray(engine, paths, options=None, **kwargs):
    from xmodal.indexer.distributed import index_on_ray

    return index_on_ray(engine, paths, options, ray_options=ray_options(), **kwargs)


def mixed_library(folder: Path) -> Path:
    """5 pictures, one corrupt, one short video with sound, one sound file."""
    folder.mkdir(parents=True)
    for seed in range(5):
        photo(seed).save(folder / f"photo{seed}.jpg")
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    video_with_audio(folder / "clip.mp4", seconds=3.0, event_at=1.0, event_seconds=1.0)
    write_audio(folder / "beep.wav", tone_in_silence(5.0, 2.0, 1.0, 22050, freq=440.0), 22050)
    return folder


def items(store: Store) -> dict[str, dict]:
    rows = store.items_table().to_pylist()
    assert len(rows) == len({r["id"] for r in rows})
    return {r["id"]: {k: v for k, v in r.items() if k not in WHEN} for r in rows}


def segments(store: Store, space: str) -> dict[str, dict]:
    rows = store.segments_table(space).to_pylist()
    assert len(rows) == len({r["id"] for r in rows})
    return {r["id"]: r for r in rows}


def test_a_ray_run_gives_what_a_local_run_gives_item_by_item(
    ray_cluster, tiny_encoder, tiny_audio_encoder, tmp_path
):
    lib = mixed_library(tmp_path / "lib")
    metadata = {str(lib / "photo1.jpg"): {"colour": "red"}}
    options = IndexOptions(batch_size=2, write_batch_size=3, decode_workers=1)
    local = Engine(Store(tmp_path / "local"), tiny_encoder, audio_encoder=tiny_audio_encoder)
    on_ray = Engine(Store(tmp_path / "ray"), tiny_encoder, audio_encoder=tiny_audio_encoder)

    expected = index_paths(local, [lib], options, metadata)
    report = index_on_ray(on_ray, [lib], options, metadata=metadata)

    assert (report.indexed, report.failed[0][0]) == (7, str(lib / "broken.jpg"))
    assert (report.indexed, report.updated, report.segments) == (
        expected.indexed,
        expected.updated,
        expected.segments,
    )
    assert report.failed == expected.failed and report.warnings == expected.warnings
    same_stores(on_ray.store, local.store)
    statuses = sorted(r["status"] for r in items(on_ray.store).values())
    assert statuses == [FAILED] + [INDEXED] * 7
    assert len(segments(on_ray.store, IMAGE_TEXT)) > 5  # the video's keyframes too

    again = index_on_ray(on_ray, [lib], options, metadata=metadata)
    assert (again.embedded, again.unchanged, again.removed, again.encoded) == (0, 7, 0, 0)
    assert [path for path, _ in again.failed] == [str(lib / "broken.jpg")]  # tried again

    # Changed files: a picture redrawn, another broken, the sound replaced by a longer
    # one. The workers' new rows replace the old ones as a local run's do, in both
    # spaces, and the broken picture's old row goes.
    photo(11).save(lib / "photo2.jpg")
    (lib / "photo3.jpg").write_bytes(truncated_jpeg())
    write_audio(lib / "beep.wav", tone_in_silence(7.0, 3.0, 1.0, 22050, freq=660.0), 22050)
    expected = index_paths(local, [lib], options, metadata)
    report = index_on_ray(on_ray, [lib], options, metadata=metadata)
    assert (
        (report.updated, len(report.failed))
        == (expected.updated, len(expected.failed))
        == (
            2,
            2,
        )
    )
    same_stores(on_ray.store, local.store)


def same_stores(mine: Store, theirs: Store) -> None:
    """The same items, and the same segments with the same vectors, in both spaces."""
    assert items(mine) == items(theirs)
    for space in (IMAGE_TEXT, AUDIO_TEXT):
        ours, others = segments(mine, space), segments(theirs, space)
        assert ours.keys() == others.keys() and ours
        for segment_id, row in ours.items():
            other = others[segment_id]
            assert (row["item_id"], row["start"], row["end"]) == (
                other["item_id"],
                other["start"],
                other["end"],
            )
            a, b = np.asarray(row["vector"]), np.asarray(other["vector"])
            assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.9999


def test_the_workers_write_the_vectors_and_the_driver_commits_them(
    ray_cluster, tiny_encoder, tmp_path, monkeypatch
):
    from xmodal.indexer.fragments import FragmentWriter

    lib = tmp_path / "lib"
    lib.mkdir()
    for seed in range(5):
        photo(seed).save(lib / f"{seed}.jpg")
    (lib / "copy.jpg").write_bytes((lib / "3.jpg").read_bytes())  # the same bytes twice
    engine = Engine(Store(tmp_path / "data"), tiny_encoder)

    def refuse(self, space, segments):
        raise AssertionError("the driver wrote segment rows itself")

    handed: list[int] = []  # the size of each vector the driver was handed
    add = FragmentWriter.add

    def counting_add(self, item, segments, replaces):
        handed.extend(row.vector.size for rows in segments.values() for row in rows)
        return add(self, item, segments, replaces)

    monkeypatch.setattr(Store, "upsert_segments", refuse)
    monkeypatch.setattr(FragmentWriter, "add", counting_add)
    from xmodal.indexer.distributed import index_on_ray as on_ray

    options = IndexOptions(batch_size=8, write_batch_size=2, decode_workers=1)
    # One embedding call for the six files: the copy is embedded once, as locally.
    report = on_ray(engine, [lib], options, ray_options=ray_options(batch_size=8))
    assert (report.indexed, report.segments, report.failed) == (6, 6, [])
    assert (report.encoded, report.duplicates) == (5, 1)
    assert handed == [0] * 6  # ids and counts only: the vectors stayed with the workers
    store = engine.store
    by_uri = items_by_uri(store)
    copy = store.item_vectors(IMAGE_TEXT, by_uri[str(lib / "copy.jpg")])[0]
    original = store.item_vectors(IMAGE_TEXT, by_uri[str(lib / "3.jpg")])[0]
    assert np.array_equal(copy, original)
    expected = tiny_encoder.encode_images([Image.open(lib / "3.jpg").convert("RGB")])[0]
    stored = store.item_vectors(IMAGE_TEXT, items_by_uri(store)[str(lib / "3.jpg")])[0]
    assert float(stored @ expected / np.linalg.norm(stored) / np.linalg.norm(expected)) >= 0.9999
    searched = engine.search_image(photo(3), k=1).hits[0].item.uri
    assert searched in {str(lib / "3.jpg"), str(lib / "copy.jpg")}  # the same vector


def items_by_uri(store: Store) -> dict[str, str]:
    return {r["uri"]: r["id"] for r in store.items_table(["id", "uri"]).to_pylist()}


def test_without_ray_the_error_names_the_extra(monkeypatch):
    import sys

    from xmodal.indexer.distributed import import_ray
    from xmodal.search import SourceError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SourceError, match=r"pip install 'xmodal\[ray\]'"):
        import_ray()


def test_an_interrupted_ray_run_resumes_without_duplicates_or_losses(
    ray_cluster, tiny_encoder, tmp_path, monkeypatch
):
    lib = tmp_path / "lib"
    lib.mkdir()
    for seed in range(7):
        photo(seed).save(lib / f"{seed}.jpg")
    engine = Engine(Store(tmp_path / "data"), tiny_encoder)
    options = IndexOptions(batch_size=2, write_batch_size=2, decode_workers=1)

    # The driver dies as it commits the second batch's item rows (the workers' segment
    # rows of every batch that came back by then are committed): the first batch
    # stays, the rest of the rows are orphans.
    real = Store.upsert_items
    commits = []

    def upsert_then_fail(self, records):
        commits.append(len(records))
        if len(commits) == 2:
            raise KeyboardInterrupt
        return real(self, records)

    monkeypatch.setattr(Store, "upsert_items", upsert_then_fail)
    with pytest.raises(KeyboardInterrupt):
        index_on_ray(engine, [lib], options)
    monkeypatch.setattr(Store, "upsert_items", real)
    store = Store(tmp_path / "data")
    assert store.count_items() == 2
    assert 4 <= store.count_segments(IMAGE_TEXT) <= 7  # two or more of them orphans

    resumed = index_on_ray(Engine(store, tiny_encoder), [lib], options)
    assert (resumed.indexed, resumed.unchanged, resumed.failed) == (5, 2, [])
    ids = store.items_table(["id"]).column("id").to_pylist()
    owners = store.segments_table(IMAGE_TEXT).column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) == 7 == store.count_items()
    assert sorted(owners) == sorted(ids)  # one vector per item: no orphans, none twice


def dying_embed_worker(marker: Path):
    """An embedding actor whose process is killed (SIGKILL) as it takes its second
    batch, once (the marker file says it happened)."""
    from xmodal.indexer.ray_workers import EmbedWorker

    class Dying(EmbedWorker):
        calls = 0

        def __call__(self, batch):
            Dying.calls += 1
            if Dying.calls == 2 and not marker.exists():
                marker.write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    return Dying


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(ray_cluster, tiny_encoder, tmp_path):
    from xmodal.indexer.distributed import RayIndexer

    lib = tmp_path / "lib"
    lib.mkdir()
    for seed in range(8):
        photo(seed).save(lib / f"{seed}.jpg")
    store = Store(tmp_path / "data")
    options = IndexOptions(batch_size=2, write_batch_size=2, decode_workers=1)
    marker = tmp_path / "killed"
    indexer = RayIndexer(Engine(store, tiny_encoder), options, ray_options=ray_options())
    indexer.embed_worker = dying_embed_worker(marker)

    report = indexer.run([lib])
    assert marker.exists()  # the actor was killed; Ray restarted it and ran its batch again
    assert (report.indexed, report.failed) == (8, [])
    ids = store.items_table(["id"]).column("id").to_pylist()
    owners = store.segments_table(IMAGE_TEXT).column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) == 8
    assert sorted(owners) == sorted(ids)


def test_a_model_the_workers_cannot_load_fails_the_run_before_any_write(ray_cluster, tmp_path):
    from xmodal.search import ModelLoadError, create_encoder

    lib = tmp_path / "lib"
    lib.mkdir()
    photo(0).save(lib / "0.jpg")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    encoder = create_encoder(f"open_clip:xmodal-tiny/{broken}", device="cpu")
    store = Store(tmp_path / "data")

    with pytest.raises(ModelLoadError, match="on the Ray workers: could not load"):
        index_on_ray(Engine(store, encoder), [lib])
    assert store.count_items(None) == 0
    # Nor is the store bound to that model: another indexes it as a first run would.
    assert store.space(IMAGE_TEXT) is None and store.all_spaces() == []
    assert (
        index_on_ray(Engine(store, create_encoder("xmodal-ref", device="cpu")), [lib]).indexed == 1
    )
