"""Catalogs: items with the caller's own ids, their media from URLs, buckets or uploads.

An e-commerce catalog changes every hour: prices move, SKUs come and go, a product
gets a new picture. Each entry names its item by the caller's id (`external_id`),
gives its media (a source to fetch, or the bytes) and its metadata. What an entry
costs depends on what changed:

- the same media (an HTTP 304 to a conditional request, or the same content hash)
  never reaches the model: at most the item row is rewritten, for new metadata;
- new media are fetched, kept in the media store (search/store/media_store.py) and
  embedded, and the item's old vectors and (unshared) old media go;
- a failure (a 404, a timeout, HTML served as a JPEG, a picture that does not
  decode) is that entry's outcome with its reason; the others go on. An item that
  was indexed keeps its vectors when its new source cannot be fetched.

Entries are taken in chunks: each chunk is fetched concurrently, then decoded,
embedded and written by the indexer (indexer/pipeline.py `index_catalog`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from xmodal.search.engine import Engine
from xmodal.search.errors import SourceError, UnknownItemError
from xmodal.search.media import SNIFF_BYTES, MediaKind, sniff_kind
from xmodal.search.store import (
    CATALOG_ROOT,
    FAILED,
    INDEXED,
    ItemRecord,
    catalog_item_id,
)
from xmodal.search.store.records import MAX_EXTERNAL_ID_CHARS

from .discover import Candidate
from .fetch import Fetched, Fetcher, FetchRequest, check_source
from .manifest import ManifestRow
from .options import DecodeOptions, FetchSettings, IndexOptions
from .pipeline import Indexer
from .progress import NoProgress, Progress

UPLOAD = "upload"  # the uri of an item whose media came in the request itself

# Why an entry that only gives metadata fails: there is no item to change.
NO_SUCH_ITEM = "no such item: give a url or the data"
# What became of an entry.
CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"


@dataclass
class CatalogEntry:
    """One item of a catalog: the caller's id, its media, its metadata.

    `source` is a URL (or, from the operator's CLI, a path); `data` the media's bytes
    (an upload). With neither, the entry changes an existing item's metadata only.
    `metadata` None keeps the item's metadata; {} clears it."""

    external_id: str
    source: str | None = None
    data: bytes | None = None
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """As a job keeps it (indexer/jobs.py): bytes in base64."""
        data = None if self.data is None else base64.b64encode(self.data).decode("ascii")
        return {"id": self.external_id, "url": self.source, "data": data, "metadata": self.metadata}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CatalogEntry:
        """An entry from its JSON form (the batch API's, and a job's): `id`, `url`,
        `data` (base64) and `metadata`. SourceError when `data` is not base64."""
        data = raw.get("data")
        if data is not None:
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError, TypeError) as error:
                raise SourceError("data is not valid base64") from error
        return cls(raw.get("id"), raw.get("url"), data, raw.get("metadata"))  # type: ignore[arg-type]


@dataclass
class EntryResult:
    id: str  # the caller's id
    item_id: str  # xmodal's
    status: str  # created | updated | unchanged | failed
    error: str = ""
    embedded: bool = False  # its media went through the model


@dataclass
class CatalogCounters:
    """What this process's catalog writes did, for /metrics and for callers to prove
    that a price change did not re-embed anything."""

    entries: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((CREATED, UPDATED, UNCHANGED, FAILED), 0)
    )
    embedded: int = 0  # items whose media went through the model
    encoded: int = 0  # model inputs (pictures, keyframes, sound windows)
    fetched: int = 0  # sources downloaded
    not_modified: int = 0  # sources answered 304: nothing downloaded
    fetched_bytes: int = 0
    deleted: int = 0

    def count(self, results: Iterable[EntryResult]) -> None:
        for result in results:
            self.entries[result.status] = self.entries.get(result.status, 0) + 1
            self.embedded += result.embedded


MAX_METADATA_BYTES = 64 * 1024  # an item's metadata as JSON
MAX_METADATA_DEPTH = 16  # nested objects and lists: filters reach in with dotted keys


def check_metadata(metadata: Any) -> None:
    """SourceError unless `metadata` is None or a JSON object of bounded size and depth."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise SourceError("metadata must be a JSON object")
    if _depth(metadata) > MAX_METADATA_DEPTH:
        raise SourceError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    try:
        size = len(json.dumps(metadata, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as error:
        raise SourceError(f"metadata is not plain JSON: {error}") from error
    if size > MAX_METADATA_BYTES:
        raise SourceError(f"metadata larger than {MAX_METADATA_BYTES // 1024} KiB as JSON")


def _depth(value: Any, level: int = 0) -> int:
    """How deep `value` nests, stopping as soon as it passes the cap (no recursion)."""
    deepest, stack = level, [(value, level)]
    while stack:
        current, at = stack.pop()
        deepest = max(deepest, at)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        children = current.values() if isinstance(current, dict) else current
        if isinstance(current, dict | list):
            stack.extend((child, at + 1) for child in children)
    return deepest


def check_external_id(external_id: Any) -> str:
    """The caller's id, checked: a non-empty string of at most 512 characters, without
    control characters (it appears in URLs, logs and CSV exports)."""
    if not isinstance(external_id, str) or not external_id.strip():
        raise SourceError("an item id must be a non-empty string")
    if len(external_id) > MAX_EXTERNAL_ID_CHARS:
        raise SourceError(f"an item id may have at most {MAX_EXTERNAL_ID_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in external_id):
        raise SourceError("an item id may not hold control characters")
    return external_id


class Catalog:
    """Writes catalog entries into an engine's store; one write at a time per process.

    `trusted`: sources come from the operator (the CLI: local paths, private
    addresses), not from a server's caller (indexer/fetch.py)."""

    def __init__(
        self,
        engine: Engine,
        fetch: FetchSettings | None = None,
        options: IndexOptions | None = None,
        decode: DecodeOptions | None = None,
        *,
        trusted: bool = False,
        progress: Progress | None = None,
        chunk_size: int = 256,
        indexer: Indexer | None = None,
    ):
        self.engine = engine
        self.store = engine.store
        self.fetch_settings = fetch or FetchSettings()
        self.trusted = trusted
        # `indexer`: another one for the same engine (indexer/distributed.RayIndexer).
        self.indexer = indexer or Indexer(engine, options, progress or NoProgress(), decode)
        self.chunk_size = chunk_size
        self.counters = CatalogCounters()
        self._lock = threading.Lock()
        self._spool: Path | None = None
        self._fetcher: Fetcher | None = None

    def holding(self) -> AbstractContextManager[object]:
        """Hold off this catalog's writes for a block: a model migration in the same
        process holds it for its commits and its switch, since threads of one process
        share the data directory's writer lock."""
        return self._lock

    # -- lifecycle ---------------------------------------------------------
    def _spool_dir(self) -> Path:
        """This process's folder for bodies on their way in: on the media store's
        filesystem, so keeping one is a rename."""
        if self._spool is None:
            parent = self.store.path / "spool"
            parent.mkdir(parents=True, exist_ok=True)
            _sweep_spool(parent)
            self._spool = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))
        return self._spool

    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.fetch_settings, self._spool_dir(), trusted=self.trusted)
        return self._fetcher

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def fetched_manifest(self, location: str) -> Iterator[str]:
        """A manifest where read_manifest can read it. The operator's (trusted) is read
        where it is; a server caller's is downloaded first through the fetcher, so that
        its address is checked as every source's is (never a file on the server)."""
        if self.trusted:
            yield location
            return
        check_source(location, self.fetch_settings, self.trusted)
        fetched = self.fetcher().fetch(FetchRequest(location, media=False))
        if fetched.failed or fetched.path is None:
            raise SourceError(f"cannot fetch the manifest {location}: {fetched.error}")
        # Named with the URL's suffixes, which say its format (.csv.gz, .parquet).
        suffixes = "".join(PurePosixPath(urlsplit(location).path).suffixes[-2:])
        local = fetched.path.with_name(fetched.path.stem + suffixes)
        fetched.path.rename(local)
        try:
            yield str(local)
        finally:
            local.unlink(missing_ok=True)

    # -- writes ------------------------------------------------------------
    def put(self, entries: Iterable[CatalogEntry]) -> Iterator[EntryResult]:
        """Write entries, chunk by chunk; yields one result per entry, in order."""
        chunk: list[CatalogEntry] = []
        for entry in entries:
            chunk.append(entry)
            if len(chunk) >= self.chunk_size:
                yield from self.put_chunk(chunk)
                chunk = []
        if chunk:
            yield from self.put_chunk(chunk)

    def put_chunk(
        self, entries: Sequence[CatalogEntry], indexer: Indexer | None = None
    ) -> list[EntryResult]:
        """Write a chunk of entries (a later entry with the same id wins); `indexer`:
        another one than the catalog's for this chunk (a job's on Ray)."""
        with self._lock:
            results = self._put(entries, indexer or self.indexer)
        self.engine.catch_up()  # searchable when the write returns, also in a live server
        self.counters.count(results)
        return results

    def _put(self, entries: Sequence[CatalogEntry], indexer: Indexer) -> list[EntryResult]:
        results: list[EntryResult | None] = [None] * len(entries)
        last_of: dict[str, int] = {}
        for position, entry in enumerate(entries):
            try:
                check_external_id(entry.external_id)
                check_metadata(entry.metadata)
                if entry.source is not None and entry.data is not None:
                    raise SourceError("give the media as a url or as data, not both")
                if entry.source is None and entry.data is None and entry.metadata is None:
                    raise SourceError("nothing to write: give a url, the data or metadata")
            except SourceError as error:
                results[position] = _failed(entry, str(error))
                continue
            earlier = last_of.get(entry.external_id)
            if earlier is not None:  # the later one wins; the earlier is superseded
                results[earlier] = _failed(entries[earlier], "superseded by a later entry")
            last_of[entry.external_id] = position
        wanted = {p: entries[p] for p in last_of.values()}
        existing = self.store.items([catalog_item_id(e.external_id) for e in wanted.values()])
        arrived = self._media_of(wanted, existing)
        rows: list[ItemRecord] = []  # item rows to rewrite, nothing to embed
        candidates: dict[int, Candidate] = {}
        for position, entry in wanted.items():
            item_id = catalog_item_id(entry.external_id)
            before = existing.get(item_id)
            media = arrived.get(position)
            if media is not None and media.error:
                results[position] = self._fetch_failed(entry, before, media, rows)
            elif media is None or media.same_as(before):
                results[position] = self._metadata_only(entry, before, media, rows)
            else:
                candidates[position] = self._candidate(entry, before, media)
        if rows:
            self.store.upsert_items(rows)
        if candidates:
            report = indexer.index_catalog(list(candidates.values()))
            self.counters.encoded += report.encoded
            for position, candidate in candidates.items():
                results[position] = _indexed(entries[position], candidate)
            # Media the updated items held before: gone unless another item holds them.
            self.store.prune_media(
                {existing[c.item_id].content_hash for c in candidates.values() if c.existed}
            )
        for media in arrived.values():
            media.discard()
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _fetch_failed(
        self,
        entry: CatalogEntry,
        before: ItemRecord | None,
        media: Arrival,
        rows: list[ItemRecord],
    ) -> EntryResult:
        """A source that cannot be fetched: a new item is recorded as failed with the
        reason; an item that exists keeps its media and vectors."""
        item_id = catalog_item_id(entry.external_id)
        if before is None or before.status != INDEXED:
            rows.append(
                ItemRecord(
                    id=item_id,
                    uri=entry.source or UPLOAD,
                    kind=MediaKind.IMAGE,  # not known: nothing was read
                    root=CATALOG_ROOT,
                    metadata=dict(entry.metadata or (before.metadata if before else {})),
                    status=FAILED,
                    error=media.error,
                    external_id=entry.external_id,
                )
            )
        return EntryResult(entry.external_id, item_id, FAILED, media.error)

    def _metadata_only(
        self,
        entry: CatalogEntry,
        before: ItemRecord | None,
        media: Arrival | None,
        rows: list[ItemRecord],
    ) -> EntryResult:
        """The same media (or none given): only the row may change."""
        item_id = catalog_item_id(entry.external_id)
        if before is None:
            return EntryResult(entry.external_id, item_id, FAILED, NO_SUCH_ITEM)
        after = before
        if entry.metadata is not None and entry.metadata != before.metadata:
            after = replace(after, metadata=dict(entry.metadata))
        if media is not None and entry.source is not None:
            after = replace(
                after,
                uri=entry.source,
                source_etag=media.etag or before.source_etag,
                source_modified=media.last_modified or before.source_modified,
            )
        if after == before:
            return EntryResult(entry.external_id, item_id, UNCHANGED)
        rows.append(replace(after, indexed_at=0.0))  # stamped now by the store
        return EntryResult(entry.external_id, item_id, UPDATED)

    def _candidate(
        self, entry: CatalogEntry, before: ItemRecord | None, media: Arrival
    ) -> Candidate:
        assert media.path is not None and media.kind is not None
        kept = self.store.media.keep(media.path, media.content_hash)
        media.path = None  # kept: nothing left to discard
        metadata = entry.metadata if entry.metadata is not None else None
        if metadata is None:
            metadata = dict(before.metadata) if before is not None else {}
        return Candidate(
            path=kept,
            root=CATALOG_ROOT,
            kind=media.kind,
            bytes=media.bytes,
            mtime_ns=0,
            previous_hash=before.content_hash if before is not None else "",
            previously_indexed=before is not None and before.status == INDEXED,
            existed=before is not None,
            source=entry.source if entry.source is not None else UPLOAD,
            external_id=entry.external_id,
            metadata=metadata,
            source_etag=media.etag or "",
            source_modified=media.last_modified or "",
        )

    # -- media in ------------------------------------------------------------
    def _media_of(
        self, entries: dict[int, CatalogEntry], existing: dict[str, ItemRecord]
    ) -> dict[int, Arrival]:
        """The media each entry brings: its bytes spooled, or its source fetched
        (concurrently; conditionally when its item was fetched from there before)."""
        arrived: dict[int, Arrival] = {}
        requests: list[FetchRequest] = []
        for position, entry in entries.items():
            if entry.data is not None:
                arrived[position] = self._spool_bytes(entry.data)
            elif entry.source is not None:
                try:
                    check_source(entry.source, self.fetch_settings, self.trusted)
                except SourceError as error:
                    arrived[position] = Arrival(error=str(error))
                    continue
                before = existing.get(catalog_item_id(entry.external_id))
                same_source = (
                    before is not None
                    and before.status == INDEXED
                    and before.uri == entry.source
                    and self.store.media.has(before.content_hash)
                )
                requests.append(
                    FetchRequest(
                        entry.source,
                        etag=(before.source_etag or None) if same_source and before else None,
                        last_modified=(before.source_modified or None)
                        if same_source and before
                        else None,
                        key=position,
                    )
                )
        if requests:
            for fetched in self.fetcher().fetch_all(requests):
                arrived[fetched.request.key] = self._arrival(fetched, existing, entries)
        return arrived

    def _arrival(
        self,
        fetched: Fetched,
        existing: dict[str, ItemRecord],
        entries: dict[int, CatalogEntry],
    ) -> Arrival:
        if fetched.outcome == "fetched":
            self.counters.fetched += 1
            self.counters.fetched_bytes += fetched.bytes
        if fetched.outcome == "not_modified":
            self.counters.not_modified += 1
            before = existing[catalog_item_id(entries[fetched.request.key].external_id)]
            return Arrival(
                content_hash=before.content_hash,
                kind=before.kind,
                bytes=before.bytes,
                etag=fetched.etag or before.source_etag,
                last_modified=fetched.last_modified or before.source_modified,
            )
        if fetched.outcome != "fetched":
            return Arrival(error=fetched.error or "could not be fetched")
        return Arrival(
            path=fetched.path,
            content_hash=fetched.content_hash,
            kind=fetched.kind,
            bytes=fetched.bytes,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
        )

    def _spool_bytes(self, data: bytes) -> Arrival:
        kind = sniff_kind(data[:SNIFF_BYTES])
        if kind is None:
            return Arrival(error="not a media file: no image, video or audio format recognised")
        descriptor, name = tempfile.mkstemp(dir=self._spool_dir(), suffix=".upload")
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        return Arrival(
            path=Path(name),
            content_hash=hashlib.sha256(data).hexdigest(),
            kind=kind,
            bytes=len(data),
        )

    # -- deletes -------------------------------------------------------------
    def delete(self, names: Sequence[str]) -> list[str]:
        """Delete items named by either id; returns the caller's names of those found."""
        found: dict[str, str] = {}
        for name in names:
            try:
                found[name] = self.store.find_item(name).id
            except UnknownItemError:  # not there: nothing to delete
                continue
        if found:
            with self._lock:
                self.store.delete_items(sorted(set(found.values())))
            self.engine.catch_up()
            self.counters.deleted += len(set(found.values()))
        return list(found)

    def delete_ids(self, item_ids: Sequence[str]) -> int:
        """Delete items by xmodal's ids (those a filter matched)."""
        if item_ids:
            with self._lock:
                self.store.delete_items(list(item_ids))
            self.engine.catch_up()
            self.counters.deleted += len(item_ids)
        return len(item_ids)


@dataclass
class Arrival:
    """An entry's media as it arrived: a spooled body, validators, or why it did not."""

    path: Path | None = None
    content_hash: str = ""
    kind: MediaKind | None = None
    bytes: int = 0
    etag: str | None = None
    last_modified: str | None = None
    error: str = ""

    def same_as(self, item: ItemRecord | None) -> bool:
        """Whether the item already holds these media (indexed, from the same bytes)."""
        return (
            item is not None
            and item.status == INDEXED
            and bool(self.content_hash)
            and item.content_hash == self.content_hash
        )

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _sweep_spool(parent: Path) -> None:
    """Remove the spool folders of processes that are gone (killed mid-download)."""
    for folder in parent.iterdir():
        pid = folder.name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue  # alive, someone else's


def entry_of_row(row: ManifestRow) -> CatalogEntry:
    """A manifest row as a catalog entry: without an id column, its url is its id (the
    img2dataset layout has none), so a re-run finds the same items."""
    return CatalogEntry(row.external_id or row.source, row.source, None, row.metadata)


def _failed(entry: CatalogEntry, reason: str) -> EntryResult:
    external_id = entry.external_id if isinstance(entry.external_id, str) else ""
    item_id = catalog_item_id(external_id) if external_id else ""
    return EntryResult(external_id, item_id, FAILED, reason)


def _indexed(entry: CatalogEntry, candidate: Candidate) -> EntryResult:
    status = {"indexed": CREATED, "updated": UPDATED, "unchanged": UNCHANGED}.get(
        candidate.outcome, FAILED
    )
    embedded = candidate.outcome in ("indexed", "updated")
    error = candidate.error if status == FAILED else ""
    if status == FAILED and not error:
        error = "not indexed"
    return EntryResult(entry.external_id, candidate.item_id, status, error, embedded)
