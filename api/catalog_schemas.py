"""Bodies of the catalog routes: writes with the caller's ids, and jobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from xmodal.indexer.catalog import CatalogEntry, EntryResult
from xmodal.indexer.jobs import Job
from xmodal.search.store.records import MAX_EXTERNAL_ID_CHARS

MAX_URL_CHARS = 4096
Status = Literal["created", "updated", "unchanged", "failed"]


class ItemWrite(BaseModel):
    """An item's media and metadata. Give the media as `url` or `data`, or neither to
    change the metadata of an existing item only."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="Where to fetch the media: http(s), or a bucket (s3://, gs://) the "
        "server may read (setting fetch.fsspec_protocols).",
    )
    data: str | None = Field(
        None, min_length=1, description="The media's bytes, in base64 (instead of `url`)."
    )
    metadata: dict[str, Any] | None = Field(
        None,
        description="The item's metadata, replacing what it had; absent: kept as it is. "
        'Types are kept (a SKU "00123" stays text).',
    )

    def entry(self, external_id: str) -> CatalogEntry:
        return CatalogEntry.from_json({**self.model_dump(), "id": external_id})


class BatchItem(ItemWrite):
    id: str = Field(
        min_length=1, max_length=MAX_EXTERNAL_ID_CHARS, description="The caller's id (a SKU)."
    )

    def entry(self, external_id: str | None = None) -> CatalogEntry:
        return CatalogEntry.from_json(self.model_dump())


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem] = Field(
        min_length=1,
        description="The items (at most catalog.max_batch_items); a later item with the "
        "same id wins over an earlier one.",
    )
    job: bool = Field(
        False,
        description="Run as a job even when the batch is small enough to be written while "
        "the request waits (catalog.inline_batch_items).",
    )


class EntryOut(BaseModel):
    id: str = Field(description="The caller's id.")
    item_id: str = Field(description="xmodal's id of the item.")
    status: Status
    error: str | None = Field(None, description="Why it failed.")
    embedded: bool = Field(description="Whether its media went through the model.")

    @classmethod
    def of(cls, result: EntryResult) -> EntryOut:
        return cls(
            id=result.id,
            item_id=result.item_id,
            status=result.status,
            error=result.error or None,
            embedded=result.embedded,
        )


def counts_of(results: list[EntryResult]) -> dict[str, int]:
    counts = dict.fromkeys(("created", "updated", "unchanged", "failed"), 0)
    for result in results:
        counts[result.status] += 1
    return counts


class BatchResponse(BaseModel):
    results: list[EntryOut] = Field(description="One per item, in the request's order.")
    counts: dict[str, int] = Field(description="Items by status.")
    embedded: int = Field(description="Items whose media went through the model.")
    took_ms: float


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(
        None,
        max_length=10_000,
        description="Items to delete, by either id.",
    )
    filter: dict[str, Any] | None = Field(
        None, description="Delete every item this metadata filter matches (not empty)."
    )


class DeleteResponse(BaseModel):
    deleted: int = Field(description="Items deleted.")
    ids: list[str] = Field(
        description="The ids given that were found and deleted (for a filter: empty)."
    )


class JobFailure(BaseModel):
    line: int
    id: str
    error: str


class JobOut(BaseModel):
    id: str
    kind: Literal["batch", "manifest"]
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    source: str | None = Field(None, description="A manifest job's manifest.")
    total: int | None = Field(None, description="Entries in all, once known.")
    done: int = Field(description="Entries written (each with its result).")
    counts: dict[str, int] = Field(description="Entries done, by status.")
    embedded: int
    failures: list[JobFailure] = Field(
        description="The first 100 failures; GET /jobs/{id}/results lists every result."
    )
    error: str | None = Field(None, description="Why the job itself failed.")
    created_at: float
    started_at: float | None
    finished_at: float | None
    resumed: int = Field(description="Times it was taken up again after a server restart.")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            source=job.source,
            total=job.total,
            done=job.done,
            counts=job.counts,
            embedded=job.embedded,
            failures=[JobFailure(**f) for f in job.failures],
            error=job.error or None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            resumed=job.resumed,
        )


class ManifestJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="The manifest's URL (http(s), or a bucket the server may read): CSV, "
        "TSV, JSON Lines or Parquet, one item per row.",
    )
    url_column: str | None = Field(None, max_length=256)
    id_column: str | None = Field(None, max_length=256)
    schema_: dict[str, Literal["text", "int", "float", "bool", "json"]] | None = Field(
        None, alias="schema", max_length=1000, description="Column types that win over the file's."
    )
    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = None


class JobResultOut(BaseModel):
    line: int
    id: str
    item_id: str
    status: Status
    error: str | None = None
    embedded: bool
