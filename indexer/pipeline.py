"""Bulk indexing on one machine: discover -> decode (thread pool) -> encode (batches) -> write.

Decoding runs ahead of the encoder in a bounded window of worker threads
(Pillow releases the GIL while decoding), the encoder works on full batches,
and a background thread commits the results.

Images and video keyframes go to the image-text space. Audio files and the sound
of videos go to the audio-text space: their windows are decoded as a stream next to
the audio encoder (indexer/audio_encode.py), so no file is ever held whole.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.search.encoders import (
    AUDIO_TEXT,
    IMAGE_TEXT,
    AudioTextEncoder,
    Encoder,
    ImageTextEncoder,
)
from xmodal.search.engine import Engine, audio_window_options
from xmodal.search.errors import IndexingAborted, ModelLoadError
from xmodal.search.media import MediaKind, kinds_in_space
from xmodal.search.store import (
    FAILED,
    INDEXED,
    ItemRecord,
    location_of,
)

from .audio_encode import AudioEncoder, EncodedAudio
from .background import AfterLoad, BackgroundLoad, DecodeAhead
from .decode import Decoded
from .discover import Candidate, plan_run
from .options import DecodeOptions, IndexOptions
from .progress import NoProgress, Progress
from .report import IndexReport
from .segments import file_segments
from .writer import BatchWriter, ItemWriter

RECENT_VECTORS = 50_000  # content hash -> vector kept in memory to embed duplicates once


@dataclass(frozen=True)
class SpaceTarget:
    """What a run embeds when not the engine's spaces: one space with a model of its own
    (a migration to a new model, indexer/migrate.py). Only that space's segments are
    made, and the writer given to `Indexer.embed` decides where they go."""

    space: str  # IMAGE_TEXT or AUDIO_TEXT
    encoder: Encoder  # an ImageTextEncoder for IMAGE_TEXT, an AudioTextEncoder for AUDIO_TEXT


class Indexer:
    """Index files into the engine's store. With a `target`, `embed` makes the vectors of
    one space with the target's model instead (nothing else is written)."""

    def __init__(
        self,
        engine: Engine,
        options: IndexOptions | None = None,
        progress: Progress | None = None,
        decode: DecodeOptions | None = None,
        *,
        target: SpaceTarget | None = None,
    ):
        self.engine = engine
        self.store = engine.store
        self.target = target
        self.encoder: ImageTextEncoder = engine.encoder
        if target is not None and isinstance(target.encoder, ImageTextEncoder):
            self.encoder = target.encoder
        self.options = options or IndexOptions()
        self.decode = decode or DecodeOptions(images=engine.limits)
        self.progress = progress or NoProgress()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._audio: AudioEncoder | None = None
        self._no_sound = ""  # why this run indexes no sound though it has some to index

    def run(
        self,
        paths: Iterable[str | Path],
        metadata: Mapping[str, dict[str, Any]] | None = None,
    ) -> IndexReport:
        """Index files and folders; re-runs only do what changed.

        `metadata` maps a file path to user metadata stored with its item. The run
        holds the data directory's writer lock from its plan to its last commit (a
        caller may take it first, with its own wait: Store.writing); a second writer
        waits for it, so two runs never plan the same files.
        """
        with self.store.writing():
            self._use_engine_models()
            return self._run(paths, metadata)

    def _use_engine_models(self) -> None:
        """The models the store's spaces have now: after a migration switched a space to
        another model, the engine takes it up and the next run embeds with it. Called
        under the writer lock, so that no switch happens during the run."""
        if self.target is None:
            self.engine.follow_store()
            self.encoder = self.engine.encoder

    def _run(
        self,
        paths: Iterable[str | Path],
        metadata: Mapping[str, dict[str, Any]] | None,
    ) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport()
        metadata = {
            location_of(Path(k).expanduser().resolve()): v for k, v in (metadata or {}).items()
        }
        # The image model loads in the background while files are found and decoded. It
        # starts when discovery finds the first picture to index: a re-run with nothing
        # new, or a sound library, never loads it.
        image_load = self._image_load()
        pictures = kinds_in_space(IMAGE_TEXT)

        def found(candidate: Candidate) -> None:
            if candidate.kind in pictures:
                image_load.start()

        # Rows duplicated by writers that raced before the writer lock: one of each is
        # kept and their items marked, so this very run embeds them again.
        report.repaired = self.store.repair_duplicates().items
        plan = plan_run(paths, self.store, on_candidate=found)
        report.times.discover = time.perf_counter() - started

        def prepare() -> None:
            # Done once the models loaded, before anything is written.
            for space in self.store.spaces():
                self.store.remove_orphan_segments(space.name)
            for root in plan.roots:
                self.store.add_root(root)
            report.ignored = plan.ignored
            report.skipped = plan.skipped
            report.unchanged = len(plan.unchanged_ids)
            if plan.removed_ids:
                self.store.delete_items(plan.removed_ids)
                report.removed = len(plan.removed_ids)
            self._update_metadata(plan.unchanged_ids, metadata)

        self._index_candidates(plan.to_index, metadata, report, image_load, prepare)
        if self._audio is not None:
            report.times.decode += self._audio.stats.decode_seconds
            report.times.encode += self._audio.stats.encode_seconds
        if report.embedded or report.removed or report.failed:
            self.store.compact()
        self._update_index(report)
        report.times.wall = time.perf_counter() - started
        return report

    def index_catalog(self, candidates: list[Candidate]) -> IndexReport:
        """Index catalog items (indexer/catalog.py): their media are already kept and
        each candidate carries its id, source and metadata. No folder is walked, no
        store upkeep is done (that is a folder run's); each candidate's `outcome` says
        what became of it."""
        started = time.perf_counter()
        report = IndexReport()
        with self.store.writing():
            self._use_engine_models()
            image_load = self._image_load()
            if any(c.kind in kinds_in_space(IMAGE_TEXT) for c in candidates):
                image_load.start()
            self._index_candidates(candidates, {}, report, image_load, lambda: None)
        report.times.wall = time.perf_counter() - started
        return report

    def embed(self, candidates: list[Candidate], writer: ItemWriter) -> IndexReport:
        """Decode and embed files into the target space (SpaceTarget), handing each item
        to `writer` with its segments, or as failed with the reason. Nothing else is
        written and no writer lock is taken here: the writer takes it to commit."""
        if self.target is None:
            raise ValueError("Indexer.embed needs a target space (SpaceTarget)")
        started = time.perf_counter()
        report = IndexReport()
        image_load = self._image_load()
        if self.target.space == IMAGE_TEXT and candidates:
            image_load.start()
        self._index_candidates(candidates, {}, report, image_load, lambda: None, writer)
        if self._audio is not None:
            report.times.decode += self._audio.stats.decode_seconds
            report.times.encode += self._audio.stats.encode_seconds
        report.times.wall = time.perf_counter() - started
        return report

    def _image_load(self) -> BackgroundLoad:
        """How this run loads the image model: beside discovery, in a thread of its own."""
        return BackgroundLoad(self.encoder)

    def _index_candidates(
        self,
        candidates: list[Candidate],
        metadata: Mapping[str, dict[str, Any]],
        report: IndexReport,
        image_load: BackgroundLoad,
        prepare: Callable[[], None],
        writer: ItemWriter | None = None,
    ) -> None:
        """Decode, encode and write candidates (to `writer`, default a BatchWriter to the
        store); `prepare` runs once the models loaded and the spaces are bound, before
        the first write."""
        sound = self._wants_sound(candidates)
        window_size = max(2 * self.options.batch_size, 2 * self.options.decode_workers)
        options = self.options
        decoding = DecodeAhead(
            candidates,
            AfterLoad(self.encoder, image_load),
            replace(
                self.decode,
                sound=sound,
                pictures=self.target is None or self.target.space == IMAGE_TEXT,
                max_file_bytes=options.max_file_bytes,
                max_image_bytes=options.max_image_bytes,
                timeout=options.decode_timeout,
            ),
            self.options.decode_workers,
            window_size,
        )
        try:
            # Models are loaded before the store is written to, so that a bad one fails
            # the run before it changed anything. The audio model loads after the image
            # model: importing their libraries (torchvision, transformers) in two threads
            # at once can deadlock.
            image_load.wait()
            loading = time.perf_counter()
            audio_encoder = self._load_audio(report) if sound else None
            report.times.load = image_load.seconds + time.perf_counter() - loading
            preparing = time.perf_counter()
            if image_load.started and self.target is None:
                self.engine.bind_space(IMAGE_TEXT)
            self._audio = None if audio_encoder is None else self._bind_audio(audio_encoder)
            prepare()
            report.times.discover += time.perf_counter() - preparing
            self._index(decoding, metadata, report, len(candidates), writer)
        finally:
            decoding.close()
            image_load.join()  # on an error, not left importing while the process exits

    def _index(
        self,
        decoding: Iterable[Decoded],
        metadata: Mapping[str, dict[str, Any]],
        report: IndexReport,
        count: int,
        writer: ItemWriter | None = None,
    ) -> None:
        """Encode and write the decoded files, batch by batch."""
        writer = writer or BatchWriter(self.store, self.options.write_batch_size)
        self.progress.start(count)
        try:
            pending: list[Decoded] = []
            for decoded in decoding:
                report.times.decode += decoded.seconds
                if decoded.has_audio and self._audio is None:
                    self._without_sound(decoded)
                if decoded.failed:
                    self._record_failure(decoded, metadata, writer, report)
                elif decoded.same_content:
                    self._record_touched(decoded, metadata, writer, report)
                else:
                    pending.append(decoded)
                    # Batches count segments: a video brings many keyframes at once (an
                    # audio file counts one; its windows are batched as they stream).
                    if (
                        sum(len(d.prepared) + d.has_audio for d in pending)
                        >= self.options.batch_size
                    ):
                        self._encode_and_write(pending, metadata, writer, report)
                        pending = []
            self._encode_and_write(pending, metadata, writer, report)
        finally:
            writer.close()
            self.progress.finish()
        report.times.write = writer.seconds

    def _without_sound(self, decoded: Decoded) -> None:
        """A file decoded for its sound in a run that turned out to have no audio model:
        an audio file fails with the reason, a video keeps its pictures and a note."""
        decoded.has_audio = False
        note = self._no_sound or "no audio model"
        if decoded.candidate.kind == MediaKind.AUDIO:
            decoded.error = note
        else:
            decoded.sound_note = f"sound not indexed: {note}"

    def _wants_sound(self, candidates: list[Candidate]) -> bool:
        """Whether this run indexes sound: it has an audio model and audio to index (audio
        files, or videos when their sound is indexed); otherwise audio files fail with
        a reason."""
        decode = self.decode
        if self.target is not None and self.target.space != AUDIO_TEXT:
            return False
        return self._audio_encoder is not None and any(
            c.kind == MediaKind.AUDIO or (c.kind == MediaKind.VIDEO and decode.video.sound)
            for c in candidates
        )

    @property
    def _audio_encoder(self) -> AudioTextEncoder | None:
        """The audio model this run embeds sound with: the target's, else the engine's."""
        if self.target is not None and isinstance(self.target.encoder, AudioTextEncoder):
            return self.target.encoder
        return self.engine.audio_encoder

    def _load_audio(self, report: IndexReport) -> AudioTextEncoder | None:
        """The loaded audio model; None when it cannot load and was not asked for by
        name: the run goes on without sound (videos by their pictures, audio files
        recorded as not indexed), which `report.notices` says once. One asked for by
        name fails the run here, before any work."""
        encoder = self._audio_encoder
        assert encoder is not None
        try:
            encoder.load()
        except ModelLoadError as error:
            if self.engine.audio_model_requested or self.target is not None:
                raise ModelLoadError(
                    f"{error} (the audio model is needed for sound; to index pictures only, "
                    "set --audio-model none or XMODAL_AUDIO_MODEL=none)"
                ) from error
            self._no_sound = f"the audio model cannot be loaded: {error}"
            report.notices.append(
                f"sound not indexed: {self._no_sound} (videos are indexed by their "
                "pictures; ask for an audio model with --audio-model, or set "
                "XMODAL_AUDIO_MODEL=none to say no sound)"
            )
            return None
        return encoder

    def _bind_audio(self, encoder: AudioTextEncoder) -> AudioEncoder:
        """The audio space bound to the loaded model, and the encoder for this run."""
        if self.target is None:
            self.engine.bind_space(AUDIO_TEXT)
        audio = self.decode.audio
        options = replace(
            audio_window_options(encoder, audio.max_seconds, audio.hop),
            silence_dbfs=audio.silence_dbfs,
            timeout=self.options.decode_timeout,
        )
        return AudioEncoder(encoder, options, self.options.batch_size)

    def _update_index(self, report: IndexReport) -> None:
        """Sync and save the ANN indexes here, so that servers load them instead of
        building them on their first query; small spaces are searched exactly."""
        started = time.perf_counter()
        refreshed = self.engine.refresh_indexes(save=True, needed_only=True)
        if IMAGE_TEXT in refreshed:
            report.index_kind = refreshed[IMAGE_TEXT].kind
        report.times.index = time.perf_counter() - started

    # -- stages ----------------------------------------------------------
    def _encode_and_write(
        self,
        batch: list[Decoded],
        metadata: Mapping[str, dict[str, Any]],
        writer: ItemWriter,
        report: IndexReport,
    ) -> None:
        if not batch:
            return
        started = time.perf_counter()
        images = [d for d in batch if d.candidate.kind == MediaKind.IMAGE]
        image_vectors = self._image_vectors(images, report)
        videos = [d for d in batch if d.candidate.kind == MediaKind.VIDEO]
        video_vectors = self._encode_in_batches([p for d in videos for p in d.prepared])
        report.encoded += len(video_vectors)
        report.times.encode += time.perf_counter() - started
        sounds = [d for d in batch if d.has_audio]
        audio = self._encode_audio(sounds)
        report.encoded += sum(len(e.vectors) for e in audio.values())
        offset = 0
        for decoded in batch:
            c = decoded.candidate
            if c.kind == MediaKind.IMAGE:
                vectors = [image_vectors[decoded.content_hash]]
            else:
                vectors = list(video_vectors[offset : offset + len(decoded.prepared)])
                offset += len(decoded.prepared)
            item = self._item_record(decoded, metadata, INDEXED)
            sound = audio.get(id(decoded))
            segments = file_segments(decoded, vectors, sound)
            if segments is None:  # an audio file whose sound gave no vector
                assert sound is not None
                decoded.error = sound.error or (
                    f"silent: no window louder than {self.decode.audio.silence_dbfs:g} dBFS"
                )
                self._record_failure(decoded, metadata, writer, report)
                continue
            if sound is not None:
                self._note_sound(decoded, item, sound)
            report.segments += sum(len(rows) for rows in segments.values())
            if item.error:
                report.warnings.append((c.uri, item.error))
            if decoded.sound_note:  # said once for the run, in report.notices
                item.error = "; ".join(filter(None, [item.error, decoded.sound_note]))
            writer.add(item, segments, replaces=c.existed)
            if c.existed:
                report.updated += 1
                c.outcome = "updated"
            else:
                report.indexed += 1
                c.outcome = "indexed"
            self.progress.advance(1)

    def _encode_audio(self, sounds: list[Decoded]) -> dict[int, EncodedAudio]:
        if not sounds:
            return {}
        assert self._audio is not None
        encoded = self._audio.encode_files([d.candidate.path for d in sounds])
        return {id(d): e for d, e in zip(sounds, encoded, strict=True)}

    def _note_sound(self, decoded: Decoded, item: ItemRecord, sound: EncodedAudio) -> None:
        """What a file's sound adds to its item: warnings, or why a video's sound was
        not indexed (it keeps its pictures), and an audio file's duration."""
        notes = [item.error] if item.error else []
        if sound.error:
            notes.append(f"sound not indexed: {sound.error}")
        else:
            notes.extend(sound.warnings)
        if decoded.candidate.kind == MediaKind.AUDIO:
            item.duration = sound.duration or item.duration
        item.error = "; ".join(notes)

    def _encode_in_batches(self, prepared: list[np.ndarray]) -> np.ndarray:
        size = self.options.batch_size
        parts = [
            self.encoder.encode_prepared(prepared[i : i + size])
            for i in range(0, len(prepared), size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.encoder.dim), np.float32)

    def _image_vectors(self, batch: list[Decoded], report: IndexReport) -> dict[str, np.ndarray]:
        """One vector per distinct image content hash; known contents are not embedded again."""
        hashes = {d.content_hash for d in batch}
        known = {h: self._recent[h] for h in hashes if h in self._recent}
        missing = hashes - known.keys()
        if missing and self.target is None:
            # (A migration's new space is not asked: its rows may be of content that
            # changed since; the recent vectors of the run still embed duplicates once.)
            known.update(self.store.vectors_by_hash(IMAGE_TEXT, missing))
        first_of_hash: dict[str, Decoded] = {}
        for d in batch:
            if d.content_hash in known or d.content_hash in first_of_hash:
                report.duplicates += 1
            else:
                first_of_hash[d.content_hash] = d
        if first_of_hash:
            encoded = self._encode_in_batches([d.prepared[0] for d in first_of_hash.values()])
            report.encoded += len(encoded)
            known.update(zip(first_of_hash, encoded, strict=True))
        for h, vector in known.items():
            self._recent[h] = vector
            self._recent.move_to_end(h)
        while len(self._recent) > RECENT_VECTORS:
            self._recent.popitem(last=False)
        return known

    # -- records ---------------------------------------------------------
    def _item_record(
        self, decoded: Decoded, metadata: Mapping[str, dict[str, Any]], status: str
    ) -> ItemRecord:
        c = decoded.candidate
        return ItemRecord(
            id=c.item_id,
            uri=c.uri,
            kind=c.kind,
            root=c.root,
            content_hash=decoded.content_hash,
            bytes=c.bytes,
            mtime_ns=c.mtime_ns,
            width=decoded.width,
            height=decoded.height,
            duration=decoded.duration,
            metadata=dict(_metadata_of(c, metadata) or {}),
            status=status,
            error=decoded.error,
            external_id=c.external_id,
            source_etag=c.source_etag,
            source_modified=c.source_modified,
        )

    def _record_failure(
        self,
        decoded: Decoded,
        metadata: Mapping[str, dict[str, Any]],
        writer: ItemWriter,
        report: IndexReport,
    ) -> None:
        report.failed.append((decoded.candidate.uri, decoded.error))
        decoded.candidate.outcome, decoded.candidate.error = FAILED, decoded.error
        item = self._item_record(decoded, metadata, FAILED)
        # A file that used to be indexed and is now unreadable loses its vectors.
        writer.add(item, {}, replaces=decoded.candidate.previously_indexed)
        self.progress.advance(1, failed=1)
        if self.options.fail_fast:
            writer.close()
            raise IndexingAborted(f"{decoded.candidate.uri}: {decoded.error}")

    def _record_touched(
        self,
        decoded: Decoded,
        metadata: Mapping[str, dict[str, Any]],
        writer: ItemWriter,
        report: IndexReport,
    ) -> None:
        """Same bytes, new mtime: refresh the item row, keep its vectors."""
        c = decoded.candidate
        previous = self.store.item(c.item_id)
        refreshed = replace(previous, bytes=c.bytes, mtime_ns=c.mtime_ns)
        given = _metadata_of(c, metadata)
        if given is not None:
            refreshed.metadata = dict(given)
        if c.source is not None:
            refreshed.uri = c.source
            refreshed.source_etag, refreshed.source_modified = c.source_etag, c.source_modified
        writer.add(refreshed, {}, replaces=False)
        c.outcome = "unchanged" if refreshed == previous else "updated"
        report.unchanged += 1
        self.progress.advance(1)

    def _update_metadata(self, item_ids: list[str], metadata: Mapping[str, dict[str, Any]]) -> None:
        if not metadata or not item_ids:
            return
        records = self.store.items(item_ids)
        changed = [
            replace(r, metadata=dict(metadata[r.uri]))
            for r in records.values()
            if r.uri in metadata and metadata[r.uri] != r.metadata
        ]
        self.store.upsert_items(changed)


def _metadata_of(
    candidate: Candidate, metadata: Mapping[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """A candidate's own metadata (catalog items), else the run's for its location;
    None when neither says anything."""
    if candidate.metadata is not None:
        return candidate.metadata
    return metadata.get(candidate.uri)


def index_paths(
    engine: Engine,
    paths: Iterable[str | Path],
    options: IndexOptions | None = None,
    metadata: Mapping[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
    decode: DecodeOptions | None = None,
) -> IndexReport:
    """Index files and folders into the engine's store (see Indexer.run). `decode`
    defaults to the engine's image limits and the default video and audio groups."""
    return Indexer(engine, options, progress, decode).run(paths, metadata)
