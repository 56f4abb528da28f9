"""Export a store's items and vectors to files other tools read (`xmodal export`).

    OUT/manifest.json                      what was exported, from which models
    OUT/items.parquet                      one row per item (metadata as JSON text)
    OUT/<space>/embeddings.parquet         segment_id, item_id, start, end, vector
    OUT/<space>/img_emb/img_emb_0.npy      (n, dim) float32, the clip-retrieval layout,
    OUT/<space>/metadata/metadata_0.parquet  row-aligned: segment_id, item_id, ..., uri

(`audio_emb/audio_emb_0.npy` in the audio-text space.) Vectors are read from the store
in record batches and written as they come (Parquet row groups, .npy parts appended
to after their header), so memory does not grow with the store's vectors (LanceDB's
scan reads a few fragments ahead: measured in docs/operations.md). The export is written into
a hidden sibling folder and renamed to OUT at the end: OUT is either complete or absent.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xmodal.search.encoders.base import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.errors import StoreError, XmodalError
from xmodal.search.filters import ItemTable, validate_filter
from xmodal.search.settings import QuerySettings
from xmodal.search.store import FAILED, INDEXED, Store
from xmodal.search.store.records import ITEM_COLUMNS
from xmodal.search.store.store import newest_of_each

PARQUET = "parquet"
NPY = "npy"
FORMATS = (PARQUET, NPY)
MANIFEST = "manifest.json"
# The clip-retrieval file prefix of each space's vectors (img_emb/img_emb_0.npy).
NPY_PREFIX = {IMAGE_TEXT: "img", AUDIO_TEXT: "audio"}
# Item columns repeated beside each vector in the npy layout's metadata, when the store has them.
NPY_ITEM_COLUMNS = ("uri", "external_id")
SEGMENT_COLUMNS = ("id", "item_id", "start", "end", "vector")


class ExportError(XmodalError):
    """An export that cannot be written as asked (OUT not empty, no such space)."""


@dataclass(frozen=True)
class ExportOptions:
    spaces: tuple[str, ...] | None = None  # None: every space the store holds
    formats: tuple[str, ...] = (PARQUET,)  # some of FORMATS
    filter: dict[str, Any] | None = None  # the search filter language (search/filters.py)
    include_failed: bool = False  # failed items in items.parquet (they have no vectors)
    force: bool = False  # replace OUT when it holds an earlier export
    batch_rows: int = 65_536  # segments read and written at a time
    part_rows: int = 1_000_000  # rows per .npy part (img_emb_0.npy, img_emb_1.npy, ...)


@dataclass
class SpaceExport:
    """What was exported of one space."""

    name: str
    model_spec: str
    model_identity: str
    dim: int
    segments: int = 0
    items: int = 0  # items with at least one segment in this space
    files: list[str] = field(default_factory=list)  # relative to OUT


@dataclass
class ExportReport:
    out: Path
    items: int  # rows of items.parquet
    failed: int  # of which failed items (with --include-failed)
    spaces: list[SpaceExport]
    bytes: int  # on disk, all files
    seconds: float


def export_store(
    store: Store,
    out: str | Path,
    options: ExportOptions | None = None,
    limits: QuerySettings | None = None,
) -> ExportReport:
    """Write the store's items and vectors under `out` (see the module's docstring).

    Raises ExportError when `out` is not empty (an earlier export is replaced with
    `force`), InvalidQueryError for a bad filter. `limits` caps the filter's size."""
    started = time.perf_counter()
    options = options or ExportOptions()
    spec = validate_filter(options.filter, limits)
    unknown = set(options.formats) - set(FORMATS)
    if unknown or not options.formats:
        raise ExportError(f"export formats are some of {list(FORMATS)}, not {sorted(unknown)}")
    target = Path(out).expanduser().absolute()
    replacing = check_target(target, store.path, options.force)
    records = {record.name: record for record in store.spaces()}
    names = list(records) if options.spaces is None else list(options.spaces)
    for name in names:
        if name not in records:
            raise ExportError(f"{store.path} holds no {name} space (it holds: {list(records)})")

    # Each space's segments are read at the version they have now (both passes below
    # read the same rows); an index run writing meanwhile may leave the items of its
    # current batch with their previous vectors, or none yet, as a query would see them.
    versions = {name: store.segments_version(name) for name in names}
    items = exported_items(store, spec, options.include_failed)
    indexed = pc.equal(items.column("status"), INDEXED)
    indexed_ids = items.column("id").filter(indexed).combine_chunks()

    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        pq.write_table(items, staging / "items.parquet")
        spaces = []
        for name in names:
            record = records[name]
            space = SpaceExport(name, record.model_spec, record.model_identity, record.dim)
            export_space(store, space, versions[name], items, indexed_ids, staging, options)
            spaces.append(space)
        failed = int(pc.sum(pc.equal(items.column("status"), FAILED)).as_py() or 0)
        manifest = {
            "xmodal_version": xmodal_version(),
            "store_format": store.format_version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(store.path),
            "filter": spec or None,
            "include_failed": options.include_failed,
            "formats": [f for f in FORMATS if f in options.formats],
            "items": {"rows": items.num_rows, "indexed": items.num_rows - failed, "failed": failed},
            "item_columns": items.schema.names,
            "spaces": {
                s.name: {
                    "model_spec": s.model_spec,
                    "model_identity": s.model_identity,
                    "dim": s.dim,
                    "segments": s.segments,
                    "items": s.items,
                    "files": s.files,
                }
                for s in spaces
            },
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        size = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())
        move_into_place(staging, target, replacing)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(target, items.num_rows, failed, spaces, size, time.perf_counter() - started)


def check_target(target: Path, data: Path, force: bool) -> bool:
    """Whether `target` holds an earlier export to replace; ExportError when it may not
    be written: a file, a folder that is not empty (without `force`, or that holds no
    export: --force never deletes what xmodal did not write), or the data directory."""
    data = data.expanduser().absolute()
    if target == data or target in data.parents or data in target.parents:
        raise ExportError(f"export into {target}: not into or around the data directory {data}")
    if not target.exists():
        return False
    if not target.is_dir():
        raise ExportError(f"{target} exists and is not a folder")
    if not any(target.iterdir()):
        return False
    if not force:
        raise ExportError(f"{target} is not empty; --force replaces an earlier export there")
    if not (target / MANIFEST).is_file():
        raise ExportError(
            f"{target} is not empty and holds no xmodal export ({MANIFEST}); "
            "--force only replaces an earlier export"
        )
    return True


def move_into_place(staging: Path, target: Path, replacing: bool) -> None:
    """Rename the finished export to `target`; an earlier one is set aside first and
    deleted last, so that a crash leaves one complete export at `target` or beside it."""
    if replacing:
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if target.exists():
            target.rmdir()  # empty, checked before
        staging.rename(target)


def exported_items(store: Store, spec: dict[str, Any], include_failed: bool) -> pa.Table:
    """The item rows to export: one per id (the newest), indexed ones (and failed ones
    when asked), matching the filter; the columns GET /items/{id} shows that the table
    has (so a column added to ItemRecord is exported without a change here)."""
    table = store.items_table()
    if pc.count_distinct(table.column("id")).as_py() < table.num_rows:
        keep = newest_of_each(table.column("id"), table.column("indexed_at"))
        table = table.take(pa.array(keep))
    statuses = [INDEXED, FAILED] if include_failed else [INDEXED]
    table = table.filter(pc.is_in(table.column("status"), value_set=pa.array(statuses)))
    table = table.combine_chunks()
    if spec:
        table = table.filter(pa.array(ItemTable.of(table).matching(spec)))
    names = set(table.schema.names)
    columns = [name for name, c in ITEM_COLUMNS.items() if c.shown_in and name in names]
    return table.select(columns)


def export_space(
    store: Store,
    space: SpaceExport,
    version: int,
    items: pa.Table,
    indexed_ids: pa.Array,
    staging: Path,
    options: ExportOptions,
) -> None:
    """Stream one space's segments of the exported items into its files."""
    folder = staging / space.name
    folder.mkdir()
    count, item_count = count_segments(store, space.name, version, indexed_ids, options)
    space.segments, space.items = count, item_count
    schema = pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("start", pa.float64()),
            pa.field("end", pa.float64()),
            pa.field("vector", pa.list_(pa.float32(), space.dim)),
        ]
    )
    with ExitStack() as stack:
        parquet = None
        if PARQUET in options.formats:
            path = folder / "embeddings.parquet"
            parquet = stack.enter_context(pq.ParquetWriter(path, schema))
            space.files.append(path.relative_to(staging).as_posix())
        npy = None
        if NPY in options.formats:
            npy = stack.enter_context(NpyParts(folder, space, items, count, options.part_rows))
        written = 0
        for batch in matching_segments(store, space.name, version, indexed_ids, options):
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
            if parquet is not None:
                parquet.write_batch(batch)
            if npy is not None:
                npy.write(batch)
            written += batch.num_rows
        if written != count:  # the version is pinned: both passes read the same rows
            raise StoreError(f"{space.name}: read {written} segments, counted {count}")
    if npy is not None:
        space.files.extend(p.relative_to(staging).as_posix() for p in npy.paths)


def matching_segments(
    store: Store,
    space: str,
    version: int,
    indexed_ids: pa.Array,
    options: ExportOptions,
    columns: Sequence[str] = SEGMENT_COLUMNS,
) -> Iterator[pa.RecordBatch]:
    """The segments (of a pinned version) of exported items, in batches: orphans left by
    an interrupted run and segments of items filtered out are dropped."""
    for batch in store.segment_batches(space, columns, options.batch_rows, version):
        kept = batch.filter(pc.is_in(batch.column("item_id"), value_set=indexed_ids))
        if kept.num_rows:
            yield kept


def count_segments(
    store: Store,
    space: str,
    version: int,
    indexed_ids: pa.Array,
    options: ExportOptions,
) -> tuple[int, int]:
    """(segments, items with segments) to export, reading ids only: the .npy parts are
    sized before the vectors are read. Refuses a store with duplicate segment rows."""
    ids: list[pa.Array] = []
    item_ids: list[pa.Array] = []
    for batch in matching_segments(store, space, version, indexed_ids, options, ("id", "item_id")):
        ids.append(batch.column("id"))
        item_ids.append(batch.column("item_id"))
    if not ids:
        return 0, 0
    every = pa.chunked_array(ids)
    if pc.count_distinct(every).as_py() < len(every):
        raise StoreError(
            f"the {space} space of {store.path} holds duplicate segment rows (written "
            f"before the writer lock); run `xmodal repair --data {store.path}` first"
        )
    return len(every), int(pc.count_distinct(pa.chunked_array(item_ids)).as_py())


class NpyParts:
    """One space's vectors as .npy parts of at most `part_rows` rows, each with its
    row-aligned metadata Parquet file (the clip-retrieval layout). A part is a
    file whose size is known in advance: its header is written first, then the rows
    as batches arrive (a memory map of it kept every written page resident)."""

    def __init__(
        self, folder: Path, space: SpaceExport, items: pa.Table, rows: int, part_rows: int
    ):
        prefix = NPY_PREFIX.get(space.name, space.name.replace("-", "_"))
        self.vectors = folder / f"{prefix}_emb"
        self.metadata = folder / "metadata"
        self.vectors.mkdir()
        self.metadata.mkdir()
        self.prefix = prefix
        self.dim = space.dim
        self.sizes = [min(part_rows, rows - start) for start in range(0, rows, part_rows)] or [0]
        self.item_ids = items.column("id").combine_chunks()
        self.item_columns = [c for c in NPY_ITEM_COLUMNS if c in items.schema.names]
        self.items = items
        self.paths: list[Path] = []
        self._part = -1
        self._row = 0  # in the current part
        self._file: BinaryIO | None = None
        self._size = 0  # rows of the current part
        self._writer: pq.ParquetWriter | None = None
        self._next_part()

    def _next_part(self) -> None:
        self._close_part()
        self._part += 1
        self._row = 0
        vectors = self.vectors / f"{self.prefix}_emb_{self._part}.npy"
        metadata = self.metadata / f"metadata_{self._part}.parquet"
        self._size = self.sizes[self._part]
        self._file = vectors.open("wb")
        header = {"descr": "<f4", "fortran_order": False, "shape": (self._size, self.dim)}
        np.lib.format.write_array_header_1_0(self._file, header)
        fields = [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("start", pa.float64()),
            pa.field("end", pa.float64()),
            *(self.items.schema.field(name) for name in self.item_columns),
        ]
        self._writer = pq.ParquetWriter(metadata, pa.schema(fields))
        self.paths += [vectors, metadata]

    def _close_part(self) -> None:
        if self._file is not None:
            assert self._row == self._size, "a part was left short"
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, batch: pa.RecordBatch) -> None:
        done = 0
        while done < batch.num_rows:
            assert self._file is not None and self._writer is not None
            if self._row == self._size:
                self._next_part()
                continue
            take = min(batch.num_rows - done, self._size - self._row)
            rows = batch.slice(done, take)
            vectors = rows.column("vector").flatten().to_numpy(zero_copy_only=False)
            self._file.write(np.ascontiguousarray(vectors, "<f4").tobytes())
            at = pc.index_in(rows.column("item_id"), value_set=self.item_ids)
            extra = [self.items.column(name).take(at) for name in self.item_columns]
            self._writer.write_batch(
                pa.RecordBatch.from_arrays(
                    [*rows.columns[:4], *(c.combine_chunks() for c in extra)],
                    schema=self._writer.schema,
                )
            )
            self._row += take
            done += take

    def __enter__(self) -> NpyParts:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._close_part()
        else:  # the export is abandoned: close without checking the part's length
            if self._file is not None:
                self._file.close()
            if self._writer is not None:
                self._writer.close()


def xmodal_version() -> str:
    try:
        return version("xmodal")
    except PackageNotFoundError:
        return "unknown"


__all__ = [
    "FORMATS",
    "NPY",
    "PARQUET",
    "ExportError",
    "ExportOptions",
    "ExportReport",
    "export_store",
]
