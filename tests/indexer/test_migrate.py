"""Moving a store's space to another model (indexer/migrate.py): every item embedded
once with the new model, an interrupted run going on where it stopped, items indexed or
removed meanwhile, the one-commit switch, rollback and drop, with tiny models."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_CLAP_WINDOW, make_tiny_clap, photo
from tests.media import videos
from xmodal.indexer import IndexOptions, index_paths
from xmodal.indexer.migrate import MigrationProgress, Migrator
from xmodal.search import Engine, Store, create_encoder
from xmodal.search.ann.synced import IndexDirectory
from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.encoders.open_clip_encoder import OpenClipEncoder
from xmodal.search.errors import MigrationError, ModelLoadError, ModelSpecError
from xmodal.search.settings import AnnSettings
from xmodal.search.store import item_id_for
from xmodal.search.store.migration import (
    BUILDING,
    SWITCHED,
    MigrationLock,
    migration_status,
    next_name,
    previous_name,
)
from xmodal.search.store.schema import index_root


class Stop(Exception):
    """Raised from a commit hook: the run is interrupted there."""


def segment_ids(store: Store, space: str) -> list[str]:
    return store.segments_table(space).column("id").to_pylist()


def items_in(store: Store, space: str) -> set[str]:
    return set(store.segment_item_ids(space))


def ranking(engine: Engine, text: str = "a photo") -> list[tuple[str, float]]:
    return [(hit.item.id, round(hit.score, 5)) for hit in engine.search_text(text, k=20).hits]


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """Five pictures and a video of two shots."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(5):
        photo(i).save(lib / f"{i}.jpg")
    red, green = videos.solid((220, 30, 30)), videos.solid((30, 180, 40))
    videos.write_video(lib / "clip.mp4", [(1.0, red), (1.0, green)], fps=10, size=(96, 64))
    return lib


@pytest.fixture
def indexed(engine: Engine, library: Path) -> Engine:
    report = index_paths(engine, [library])
    assert report.indexed == 6 and not report.failed
    return engine


def migrator(engine: Engine, batch: int = 256, **kwargs) -> Migrator:
    """Commits every `batch` items, which it also encodes together."""
    options = IndexOptions(batch_size=min(batch, 32), write_batch_size=batch, decode_workers=2)
    return Migrator(engine, options, **kwargs)


def test_a_migration_embeds_every_item_with_the_new_model_then_switches(
    indexed, library, tiny_spec, other_tiny_spec
):
    engine, store = indexed, indexed.store
    old_segments = Counter(store.segment_item_ids(IMAGE_TEXT))
    before = ranking(engine)
    report = migrator(engine).migrate(other_tiny_spec)
    assert report.switched and report.total == 6 and report.embedded == 6
    assert report.failed == [] and report.skipped == 0
    new = create_encoder(other_tiny_spec, device="cpu")
    active = store.space(IMAGE_TEXT)
    assert active is not None and active.model_identity == new.identity
    assert active.segments_table != "segments_image_text"  # a table of its own
    previous = store.space(previous_name(IMAGE_TEXT))
    assert previous is not None and previous.model_spec == tiny_spec
    assert store.space(next_name(IMAGE_TEXT)) is None
    # Every item, with as many segments as before (the video's keyframes), each once.
    assert Counter(store.segment_item_ids(IMAGE_TEXT)) == old_segments
    assert len(set(segment_ids(store, IMAGE_TEXT))) == len(segment_ids(store, IMAGE_TEXT))
    # The vectors are the new model's.
    picture = item_id_for(str(library / "2.jpg"))
    expected = new.encode_images([Image.open(library / "2.jpg").convert("RGB")])[0]
    assert np.allclose(store.item_vectors(IMAGE_TEXT, picture)[0], expected, atol=1e-5)
    # A new engine (a server started now) queries with the new model, and so does the
    # running one once it took it up; the answers differ from the old model's.
    reopened = Engine.open(store.path, device="cpu", audio_model="none")
    assert reopened.encoder.identity == new.identity
    after = ranking(reopened)
    assert after != before and {i for i, _ in after} == {i for i, _ in before}
    engine.follow_store()
    assert engine.encoder.identity == new.identity and ranking(engine) == after
    status = migration_status(store, IMAGE_TEXT)
    assert status is not None and status.state == SWITCHED and status.new_model == other_tiny_spec


def test_the_old_model_answers_until_the_new_one_is_taken_up(indexed, other_tiny_spec):
    """A Space reads the table it was made with (Store.pinned): after the switch, an
    engine that has not taken up the new model yet answers from the old vectors, never
    the old model's query vectors against the new model's table."""
    engine = indexed
    engine._next_model_check = float("inf")  # no background take-up during this test
    before = ranking(engine)
    migrator(engine).migrate("xmodal-ref")  # 128-d: the old 32-d queries cannot read it
    assert engine.store.space(IMAGE_TEXT).dim == 128
    assert ranking(engine) == before
    # Its vectors dropped before it took up the new model: the next query that looks
    # waits for the new model rather than fail.
    migrator(engine).drop_previous()
    engine._next_model_check = 0.0
    assert len(ranking(engine)) == 6 and engine.encoder.dim == 128


def test_an_interrupted_migration_goes_on_where_it_stopped(
    engine, tmp_path, other_tiny_spec, monkeypatch
):
    lib = tmp_path / "many"
    lib.mkdir()
    for i in range(7):
        photo(100 + i).save(lib / f"{i}.jpg")
    index_paths(engine, [lib])
    encoded: list[int] = []
    encode = OpenClipEncoder.encode_prepared

    def counted(self, batch):
        encoded.append(len(batch))
        return encode(self, batch)

    monkeypatch.setattr(OpenClipEncoder, "encode_prepared", counted)
    commits: list[MigrationProgress] = []

    def stop_after_first(progress: MigrationProgress) -> None:
        commits.append(progress)
        raise Stop

    with pytest.raises(Stop):
        migrator(engine, batch=3, on_commit=stop_after_first).migrate(other_tiny_spec)
    assert [(p.done, p.total) for p in commits] == [(3, 7)]
    status = migration_status(engine.store, IMAGE_TEXT)
    assert status is not None and status.state == BUILDING and (status.done, status.total) == (3, 7)
    # Queries still use the old model.
    assert engine.store.space(IMAGE_TEXT).model_spec == engine.encoder.spec
    assert len(engine.search_text("a photo", k=10).hits) == 7
    assert sum(encoded) == 3  # the batch committed
    report = migrator(engine, batch=3).migrate(other_tiny_spec)
    assert report.switched and report.skipped == 3 and report.embedded == 4
    # Each picture went through the new model once, in all; none is missing.
    assert sum(encoded) == 7
    ids = segment_ids(engine.store, IMAGE_TEXT)
    assert len(ids) == len(set(ids)) == 7
    assert items_in(engine.store, IMAGE_TEXT) == {item_id_for(str(p)) for p in lib.iterdir()}


def test_items_indexed_changed_or_removed_meanwhile_are_as_they_are_at_the_switch(
    engine, tmp_path, other_tiny_spec
):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(6):
        photo(200 + i).save(lib / f"{i}.jpg")
    index_paths(engine, [lib])

    def stop(progress: MigrationProgress) -> None:
        raise Stop

    with pytest.raises(Stop):
        migrator(engine, batch=3, on_commit=stop).migrate(other_tiny_spec)
    # Meanwhile an indexing run with the old model: one file added, one removed, and
    # one changed among those the migration had embedded already.
    staged = engine.store.space(next_name(IMAGE_TEXT))
    done = set(engine.store.ledger(staged.segments_table))
    changed = next(p for p in sorted(lib.iterdir()) if item_id_for(str(p)) in done)
    photo(999).save(changed)
    removed = next(p for p in sorted(lib.iterdir()) if p != changed)
    removed.unlink()
    photo(300).save(lib / "new.jpg")
    report = index_paths(engine, [lib])
    assert (report.indexed, report.updated, report.removed) == (1, 1, 1)
    result = migrator(engine, batch=3).migrate(other_tiny_spec)
    assert result.switched and result.removed == 1
    store = engine.store
    assert items_in(store, IMAGE_TEXT) == {item_id_for(str(p)) for p in lib.iterdir()}
    new = create_encoder(other_tiny_spec, device="cpu")
    expected = new.encode_images([Image.open(changed).convert("RGB")])[0]
    got = store.item_vectors(IMAGE_TEXT, item_id_for(str(changed)))
    assert len(got) == 1 and np.allclose(got[0], expected, atol=1e-5)


def test_a_switch_interrupted_before_its_commit_leaves_the_old_space(
    indexed, other_tiny_spec, monkeypatch
):
    import xmodal.indexer.migrate as migrate_module

    engine = indexed

    def crash(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(migrate_module, "switch", crash)
    with pytest.raises(Stop):
        migrator(engine).migrate(other_tiny_spec)
    store = engine.store
    assert store.space(IMAGE_TEXT).model_spec == engine.encoder.spec
    assert store.space(next_name(IMAGE_TEXT)) is not None
    assert store.space(previous_name(IMAGE_TEXT)) is None
    assert migration_status(store, IMAGE_TEXT).state == "ready"
    monkeypatch.undo()
    report = migrator(engine).migrate(other_tiny_spec)
    assert report.switched and report.embedded == 0 and report.skipped == 6


def test_rollback_returns_the_old_model_and_its_answers_and_drop_deletes_it(
    indexed, tiny_spec, other_tiny_spec
):
    engine, store = indexed, indexed.store
    before = ranking(engine)
    migrator(engine).migrate(other_tiny_spec)
    engine.follow_store()
    switched = ranking(engine)
    assert switched != before
    old_table = store.space(previous_name(IMAGE_TEXT)).segments_table
    new_table = store.space(IMAGE_TEXT).segments_table

    report = migrator(engine).rollback()
    assert report.switched and report.embedded == 0 and report.skipped == 6
    assert store.space(IMAGE_TEXT).model_spec == tiny_spec
    assert store.space(IMAGE_TEXT).segments_table == old_table
    assert store.space(previous_name(IMAGE_TEXT)).segments_table == new_table
    engine.follow_store()
    assert engine.encoder.spec == tiny_spec and ranking(engine) == before

    # Migrating to the rolled-back-from model again reuses its vectors.
    again = migrator(engine).migrate(other_tiny_spec)
    assert again.switched and again.embedded == 0
    old_index = index_root(store.path, IMAGE_TEXT, old_table)
    old_index.mkdir(parents=True)  # a saved index of the old
    dropped = migrator(engine).drop_previous()
    assert dropped.segments_table == old_table and dropped.model_spec == tiny_spec
    assert store.space(previous_name(IMAGE_TEXT)) is None
    assert old_table not in store.table_versions()
    assert not (store.path / "lance" / f"{old_table}.lance").exists()
    assert not old_index.exists()
    assert migration_status(store, IMAGE_TEXT) is None
    with pytest.raises(MigrationError, match="nothing to roll back"):
        migrator(engine).rollback()
    engine.follow_store()
    assert ranking(engine) == switched


def test_an_item_whose_file_is_gone_is_recorded_as_failed_and_the_rest_switches(
    indexed, library, other_tiny_spec
):
    (library / "3.jpg").unlink()
    report = migrator(indexed).migrate(other_tiny_spec)
    assert report.switched and report.embedded == 5
    assert report.failed == [(str(library / "3.jpg"), "its file is missing")]
    assert item_id_for(str(library / "3.jpg")) not in items_in(indexed.store, IMAGE_TEXT)


def test_refusals_say_why(indexed, tiny_spec, other_tiny_spec, tmp_path):
    engine = indexed
    with pytest.raises(ModelSpecError, match="unknown model spec"):
        migrator(engine).migrate("no-such-model")
    with pytest.raises(ModelLoadError, match="not found"):
        migrator(engine).migrate(f"open_clip:xmodal-tiny/{tmp_path / 'missing.pt'}")
    with pytest.raises(MigrationError, match="already uses"):
        migrator(engine).migrate(tiny_spec)
    with pytest.raises(MigrationError, match="nothing to roll back"):
        migrator(engine).rollback()
    with pytest.raises(MigrationError, match="nothing to drop"):
        migrator(engine).drop_previous()
    with pytest.raises(MigrationError, match="unknown space"):
        migrator(engine).migrate(other_tiny_spec, "video-text")
    with MigrationLock(engine.store.path).held(), pytest.raises(MigrationError, match="running"):
        migrator(engine).migrate(other_tiny_spec)
    with pytest.raises(MigrationError, match="no image-text space"):
        migrator(Engine(Store(tmp_path / "empty"), engine.encoder)).migrate(other_tiny_spec)
    assert engine.store.space(next_name(IMAGE_TEXT)) is None  # nothing was staged

    # One migration under way: another model is refused until it is abandoned.
    def stop(progress: MigrationProgress) -> None:
        raise Stop

    with pytest.raises(Stop):
        migrator(engine, batch=2, on_commit=stop).migrate(other_tiny_spec)
    with pytest.raises(MigrationError, match="under way"):
        migrator(engine).migrate("xmodal-ref")
    staged = migrator(engine).abandon()
    assert engine.store.space(next_name(IMAGE_TEXT)) is None
    assert staged.segments_table not in engine.store.table_versions()
    assert migration_status(engine.store, IMAGE_TEXT) is None


def test_the_audio_text_space_moves_with_its_own_model(
    tmp_path, make_image, tiny_encoder, tiny_audio_encoder
):
    from tests.media.audio import tone, video_with_audio, write_audio
    from xmodal.search.encoders import create_audio_encoder

    lib = tmp_path / "lib"
    make_image(lib / "picture.jpg", seed=1)
    write_audio(lib / "beep.wav", tone(440.0, 2.0 * TINY_CLAP_WINDOW, 16000), 16000)
    video_with_audio(lib / "clip.mp4", seconds=3.0, event_at=1.0, event_seconds=1.0)
    engine = Engine(Store(tmp_path / "data"), tiny_encoder, audio_encoder=tiny_audio_encoder)
    assert not index_paths(engine, [lib]).failed
    store = engine.store
    sounds = Counter(store.segment_item_ids(AUDIO_TEXT))
    pictures = store.segments_table(IMAGE_TEXT)
    other = make_tiny_clap(tmp_path / "other-clap", seed=1)
    spec = f"clap:local-dir:{other}"
    report = migrator(engine).migrate(spec, AUDIO_TEXT)
    assert report.switched and report.embedded == len(sounds) and not report.failed
    assert store.space(AUDIO_TEXT).model_identity == create_audio_encoder(spec).identity
    assert Counter(store.segment_item_ids(AUDIO_TEXT)) == sounds
    assert store.segments_table(IMAGE_TEXT).equals(pictures)  # the pictures' space untouched
    engine.follow_store()
    assert engine.audio_encoder is not None and engine.audio_encoder.spec == spec


def test_the_new_space_index_is_saved_before_the_switch(
    tmp_path, library, tiny_encoder, other_tiny_spec, monkeypatch
):
    # A server takes the new model up by loading its index, not by building it; what
    # was indexed between the save and the switch it serves beside the loaded index.
    ann = AnnSettings(kind="hnsw")
    engine = Engine(Store(tmp_path / "data"), tiny_encoder, ann=ann)
    assert index_paths(engine, [library]).indexed == 6
    late = library / "late.jpg"
    save = engine.save_staged_index

    def save_then_index_one_more(staged: str):
        saved = save(staged)
        photo(9).save(late)
        assert index_paths(engine, [library]).indexed == 1
        return saved

    monkeypatch.setattr(engine, "save_staged_index", save_then_index_one_more)
    report = migrator(engine).migrate(other_tiny_spec)
    assert report.switched and report.index == "hnsw" and "hnsw index saved" in report.summary()
    assert report.embedded == 7 and report.total == 7
    store = engine.store
    table = store.space(IMAGE_TEXT).segments_table
    saved = IndexDirectory(index_root(store.path, IMAGE_TEXT, table)).state()
    assert saved is not None and saved["kind"] == "hnsw" and saved["count"] == 7  # 5 + 2 shots

    server = Engine.open(store.path, device="cpu", audio_model="none", ann=ann)
    answer = server.search_text("a photo", k=20)
    loaded = server.index_reports()[IMAGE_TEXT]
    assert loaded is not None and loaded.kind == "hnsw" and not loaded.built
    assert loaded.added == 1  # the late picture, embedded by the switch's catch-up
    assert {hit.item.id for hit in answer.hits} == items_in(store, IMAGE_TEXT)
    assert item_id_for(str(late)) in {hit.item.id for hit in answer.hits}
