"""Bulk indexing on one machine: discover -> decode (thread pool) -> encode (batches) -> write.

Decoding runs ahead of the encoder in a bounded window of worker threads
(Pillow releases the GIL while decoding), the encoder works on full batches,
and a background thread commits the results.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from search.encoders import IMAGE_TEXT
from search.engine import Engine
from search.errors import IndexingAborted
from search.images import ImageLimits
from search.store import FAILED, INDEXED, ItemRecord, SegmentRecord, item_id_for, segment_id_for

from .decode import Decoded, DecodeOptions, decode_candidate
from .discover import Candidate, plan_run
from .progress import NoProgress, Progress
from .report import IndexReport
from .video import KeyframeSettings, VideoLimits
from .writer import BatchWriter

RECENT_VECTORS = 50_000  # content hash -> vector kept in memory to embed duplicates once


@dataclass(frozen=True)
class IndexOptions:
    batch_size: int = 32  # images per forward pass
    decode_workers: int = 2  # threads reading and decoding ahead of the encoder
    write_batch_size: int = 256  # items per store commit
    fail_fast: bool = False  # stop at the first unreadable file
    decode: DecodeOptions = DecodeOptions()  # limits and keyframe selection

    @classmethod
    def from_settings(cls, settings: Any) -> IndexOptions:
        return cls(
            batch_size=settings.batch_size,
            decode_workers=settings.decode_workers,
            write_batch_size=settings.write_batch_size,
            fail_fast=settings.fail_fast,
            decode=DecodeOptions(
                ImageLimits.from_settings(settings),
                VideoLimits(settings.max_video_pixels, settings.max_video_seconds),
                KeyframeSettings(
                    settings.keyframe_interval,
                    settings.keyframe_max_gap,
                    settings.keyframe_min_gap,
                    settings.shot_threshold,
                    settings.duplicate_keyframe_threshold,
                ),
            ),
        )


class Indexer:
    def __init__(
        self,
        engine: Engine,
        options: IndexOptions = IndexOptions(),
        progress: Progress | None = None,
    ):
        self.engine = engine
        self.store = engine.store
        self.encoder = engine.encoder
        self.options = options
        self.progress = progress or NoProgress()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    def run(
        self,
        paths: Iterable[str | Path],
        metadata: Mapping[str, dict[str, Any]] | None = None,
    ) -> IndexReport:
        """Index files and folders; re-runs only do what changed.

        `metadata` maps a file path to user metadata stored with its item.
        """
        started = time.perf_counter()
        report = IndexReport()
        metadata = {str(Path(k).expanduser().resolve()): v for k, v in (metadata or {}).items()}
        self.encoder.load()  # fail on a bad model before touching the store
        self.engine.ensure_space()
        self.store.remove_orphan_segments(IMAGE_TEXT)

        plan = plan_run(paths, self.store)
        for root in plan.roots:
            self.store.add_root(root)
        report.times.discover = time.perf_counter() - started
        report.ignored = plan.ignored
        report.unchanged = len(plan.unchanged_ids)
        if plan.removed_ids:
            self.store.delete_items(plan.removed_ids)
            report.removed = len(plan.removed_ids)
        self._update_metadata(plan.unchanged_ids, metadata)

        writer = BatchWriter(self.store, IMAGE_TEXT, self.options.write_batch_size)
        self.progress.start(len(plan.to_index))
        try:
            pending: list[Decoded] = []
            for decoded in self._decoded(plan.to_index, report):
                if decoded.failed:
                    self._record_failure(decoded, metadata, writer, report)
                elif decoded.same_content:
                    self._record_touched(decoded, metadata, writer, report)
                else:
                    pending.append(decoded)
                    # Batches count segments: a video brings many keyframes at once.
                    if sum(len(d.prepared) for d in pending) >= self.options.batch_size:
                        self._encode_and_write(pending, metadata, writer, report)
                        pending = []
            self._encode_and_write(pending, metadata, writer, report)
        finally:
            writer.close()
            self.progress.finish()
        report.times.write = writer.seconds
        if report.embedded or report.removed or report.failed:
            self.store.compact()
        self._update_index(report)
        report.times.wall = time.perf_counter() - started
        return report

    def _update_index(self, report: IndexReport) -> None:
        """Sync and save the ANN index here, so that servers load it instead of building
        it on their first query; small spaces are searched exactly and need none."""
        started = time.perf_counter()
        space_index = self.engine.index
        if space_index.wanted_kind() != "exact":
            report.index_kind = space_index.refresh(save=True).kind
        report.times.index = time.perf_counter() - started

    # -- stages ----------------------------------------------------------
    def _decoded(self, candidates: list[Candidate], report: IndexReport) -> Iterator[Decoded]:
        """Decode in worker threads, in order, at most a window of files ahead."""
        window_size = max(2 * self.options.batch_size, 2 * self.options.decode_workers)
        options, encoder = self.options.decode, self.encoder
        with ThreadPoolExecutor(self.options.decode_workers, "xmodal-decode") as pool:
            todo = iter(candidates)
            window: deque[Future[Decoded]] = deque(
                pool.submit(decode_candidate, c, encoder, options)
                for _, c in zip(range(window_size), todo, strict=False)
            )
            while window:
                decoded = window.popleft().result()
                following = next(todo, None)
                if following is not None:
                    window.append(pool.submit(decode_candidate, following, encoder, options))
                report.times.decode += decoded.seconds
                yield decoded

    def _encode_and_write(
        self,
        batch: list[Decoded],
        metadata: Mapping[str, dict[str, Any]],
        writer: BatchWriter,
        report: IndexReport,
    ) -> None:
        if not batch:
            return
        started = time.perf_counter()
        images = [d for d in batch if d.candidate.kind == "image"]
        image_vectors = self._image_vectors(images, report)
        videos = [d for d in batch if d.candidate.kind != "image"]
        video_vectors = self._encode_in_batches([p for d in videos for p in d.prepared])
        report.times.encode += time.perf_counter() - started
        offset = 0
        for decoded in batch:
            c = decoded.candidate
            item = self._item_record(decoded, metadata, INDEXED)
            if c.kind == "image":
                vectors = [image_vectors[decoded.content_hash]]
            else:
                vectors = list(video_vectors[offset : offset + len(decoded.prepared)])
                offset += len(decoded.prepared)
            segments = [
                SegmentRecord(segment_id_for(item.id, index), item.id, vector, start, end)
                for index, (vector, (start, end)) in enumerate(
                    zip(vectors, decoded.spans, strict=True)
                )
            ]
            report.segments += len(segments)
            if decoded.error:
                report.warnings.append((c.uri, decoded.error))
            writer.add(item, segments, replaces=c.existed)
            if c.existed:
                report.updated += 1
            else:
                report.indexed += 1
        self.progress.advance(len(batch))

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
        if missing:
            known.update(self.store.vectors_by_hash(IMAGE_TEXT, missing))
        first_of_hash: dict[str, Decoded] = {}
        for d in batch:
            if d.content_hash in known or d.content_hash in first_of_hash:
                report.duplicates += 1
            else:
                first_of_hash[d.content_hash] = d
        if first_of_hash:
            encoded = self._encode_in_batches([d.prepared[0] for d in first_of_hash.values()])
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
            id=item_id_for(c.uri),
            uri=c.uri,
            kind=c.kind,
            root=c.root,
            content_hash=decoded.content_hash,
            bytes=c.bytes,
            mtime_ns=c.mtime_ns,
            width=decoded.width,
            height=decoded.height,
            duration=decoded.duration,
            metadata=dict(metadata.get(c.uri, {})),
            status=status,
            error=decoded.error,
        )

    def _record_failure(
        self,
        decoded: Decoded,
        metadata: Mapping[str, dict[str, Any]],
        writer: BatchWriter,
        report: IndexReport,
    ) -> None:
        report.failed.append((decoded.candidate.uri, decoded.error))
        item = self._item_record(decoded, metadata, FAILED)
        # A file that used to be indexed and is now unreadable loses its vectors.
        writer.add(item, [], replaces=decoded.candidate.previously_indexed)
        self.progress.advance(1)
        if self.options.fail_fast:
            writer.close()
            raise IndexingAborted(f"{decoded.candidate.uri}: {decoded.error}")

    def _record_touched(
        self,
        decoded: Decoded,
        metadata: Mapping[str, dict[str, Any]],
        writer: BatchWriter,
        report: IndexReport,
    ) -> None:
        """Same bytes, new mtime: refresh the item row, keep its vectors."""
        c = decoded.candidate
        previous = self.store.item(item_id_for(c.uri))
        refreshed = replace(previous, bytes=c.bytes, mtime_ns=c.mtime_ns)
        if c.uri in metadata:
            refreshed.metadata = dict(metadata[c.uri])
        writer.add(refreshed, [], replaces=False)
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


def index_paths(
    engine: Engine,
    paths: Iterable[str | Path],
    options: IndexOptions = IndexOptions(),
    metadata: Mapping[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Index files and folders into the engine's store (see Indexer.run)."""
    return Indexer(engine, options, progress).run(paths, metadata)
