"""Catalog writes with the caller's own ids: upsert one item, a batch, delete; and the
jobs that write large batches and manifests in the background (write scope).

docs/catalog.md says what each call does; indexer/catalog.py how an entry is written.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from xmodal.indexer.catalog import NO_SUCH_ITEM, Catalog, CatalogEntry, EntryResult
from xmodal.indexer.fetch import check_source
from xmodal.indexer.jobs import JobRunner
from xmodal.search.errors import InvalidQueryError, SourceError, UnknownItemError
from xmodal.search.filters import validate_filter
from xmodal.search.store.records import MAX_EXTERNAL_ID_CHARS

from ..access import WriteCaller, refuse_path_filters, require_write
from ..catalog_schemas import (
    BatchRequest,
    BatchResponse,
    DeleteRequest,
    DeleteResponse,
    EntryOut,
    ItemWrite,
    JobOut,
    JobResultOut,
    ManifestJobRequest,
    counts_of,
)
from ..deps import EngineDep, SettingsDep
from ..errors import PayloadTooLarge
from ..schemas import ErrorResponse

router = APIRouter(tags=["catalog"], dependencies=[Depends(require_write)])
ERRORS: dict[int | str, dict[str, Any]] = {
    # 409: the space's model changed while a write embedded (a migration's switch).
    code: {"model": ErrorResponse}
    for code in (400, 404, 409, 413, 503)
}
ExternalId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_EXTERNAL_ID_CHARS,
        description="The caller's id of the item (a SKU); for reads, xmodal's id too.",
    ),
]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{20}$", description="The job's id.")]
# The prefix of the routes whose bodies may hold media (server's BodyLimits).
CATALOG_BODY_PREFIX = "/items/"


def catalog_of(request: Request) -> Catalog:
    return request.app.state.catalog


def jobs_of(request: Request) -> JobRunner:
    return request.app.state.jobs


CatalogDep = Annotated[Catalog, Depends(catalog_of)]
JobsDep = Annotated[JobRunner, Depends(jobs_of)]

PUT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ItemWrite.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "A JSON object."},
                    },
                }
            },
        },
    }
}


@router.put(
    "/items/{external_id}",
    operation_id="put_item",
    response_model=EntryOut,
    status_code=200,
    responses={201: {"model": EntryOut, "description": "Created"}, **ERRORS},
    openapi_extra=PUT_BODY,
)
async def put_item(external_id: ExternalId, request: Request, catalog: CatalogDep) -> JSONResponse:
    """Create or update one item under the caller's id: its media from a `url`, `data`
    in base64, or a multipart upload (`file`, with `metadata` as a JSON field).

    The same media are never embedded again, and a change of metadata alone never
    re-embeds. 201 when created, 200 when updated or unchanged; 400 with the reason
    when its media cannot be fetched or decoded, 404 for metadata alone of an item that
    does not exist."""
    entry = await _entry_of(external_id, request)
    result = (await run_in_threadpool(catalog.put_chunk, [entry]))[0]
    body = EntryOut.of(result).model_dump()
    if result.status == "failed":
        status = 404 if result.error == NO_SUCH_ITEM else 400
        return JSONResponse({"detail": f"item {external_id!r}: {result.error}", **body}, status)
    return JSONResponse(body, 201 if result.status == "created" else 200)


async def _entry_of(external_id: str, request: Request) -> CatalogEntry:
    """The entry a PUT's body describes: JSON (ItemWrite) or a multipart upload."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=4) as form:
                upload = form.get("file")
                raw_metadata = form.get("metadata")
                data = None
                if upload is not None and not isinstance(upload, str):
                    data = await upload.read()
                metadata = None
                if isinstance(raw_metadata, str) and raw_metadata.strip():
                    metadata = json.loads(raw_metadata)
                    if not isinstance(metadata, dict):
                        raise InvalidQueryError("metadata must be a JSON object")
            return CatalogEntry(external_id, None, data or None, metadata)
        raw = await request.json()
        return ItemWrite.model_validate(raw).entry(external_id)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from error
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise InvalidQueryError("the body is not a JSON object (or metadata is not)") from error
    except SourceError as error:
        raise InvalidQueryError(str(error)) from error


@router.post(
    "/items/batch",
    operation_id="put_items",
    response_model=BatchResponse,
    responses={202: {"model": JobOut, "description": "Run as a job"}, **ERRORS},
)
def put_items(
    body: BatchRequest,
    catalog: CatalogDep,
    jobs: JobsDep,
    settings: SettingsDep,
    response: Response,
) -> BatchResponse | JSONResponse:
    """Create or update many items, each with its own status (created, updated,
    unchanged, failed with a reason). A batch of more than catalog.inline_batch_items
    items, or one with `job: true`, runs as a job: 202 with the job (GET /jobs/{id})."""
    limits = settings.catalog
    if len(body.items) > limits.max_batch_items:
        raise PayloadTooLarge(
            f"a batch may hold at most {limits.max_batch_items} items "
            "(setting catalog.max_batch_items)"
        )
    if body.job or len(body.items) > limits.inline_batch_items:
        job = jobs.store.create("batch", [item.model_dump() for item in body.items])
        jobs.submit(job)
        return JSONResponse(
            JobOut.of(job).model_dump(), 202, headers={"Location": f"/jobs/{job.id}"}
        )
    started = time.perf_counter()
    entries: list[CatalogEntry | str] = []
    for item in body.items:
        try:
            entries.append(item.entry())
        except SourceError as error:
            entries.append(str(error))
    written = iter(catalog.put_chunk([e for e in entries if isinstance(e, CatalogEntry)]))
    results = []
    for item, entry in zip(body.items, entries, strict=True):
        if isinstance(entry, str):
            results.append(EntryResult(item.id, "", "failed", entry))
        else:
            results.append(next(written))
    return BatchResponse(
        results=[EntryOut.of(r) for r in results],
        counts=counts_of(results),
        embedded=sum(r.embedded for r in results),
        took_ms=round((time.perf_counter() - started) * 1000.0, 3),
    )


@router.delete(
    "/items/{external_id}",
    operation_id="delete_item",
    response_model=DeleteResponse,
    responses=ERRORS,
)
def delete_item(external_id: ExternalId, catalog: CatalogDep) -> DeleteResponse:
    """Delete one item (by either id): from the next store version on, no search
    returns it."""
    deleted = catalog.delete([external_id])
    if not deleted:
        raise UnknownItemError(external_id)
    return DeleteResponse(deleted=1, ids=deleted)


@router.post(
    "/items/delete",
    operation_id="delete_items",
    response_model=DeleteResponse,
    responses=ERRORS,
)
def delete_items(
    body: DeleteRequest, catalog: CatalogDep, engine: EngineDep, caller: WriteCaller
) -> DeleteResponse:
    """Delete items by either id (`ids`), or every item a metadata filter matches."""
    if (body.ids is None) == (body.filter is None):
        raise InvalidQueryError("give either `ids` or `filter`")
    if body.ids is not None:
        deleted = catalog.delete(body.ids)
        return DeleteResponse(deleted=len(deleted), ids=deleted)
    spec = validate_filter(body.filter, engine.query)
    if not spec:
        raise InvalidQueryError(
            "an empty filter matches every item: give a filter that names what to delete"
        )
    refuse_path_filters(caller, spec)
    matching = engine.store.item_ids_matching(spec)
    return DeleteResponse(deleted=catalog.delete_ids(matching), ids=[])


# -- jobs -------------------------------------------------------------------------
@router.post(
    "/jobs",
    operation_id="create_job",
    response_model=JobOut,
    status_code=202,
    responses=ERRORS,
)
def create_job(body: ManifestJobRequest, jobs: JobsDep, response: Response) -> JobOut:
    """Index a manifest (CSV, TSV, JSON Lines or Parquet; a url column, an optional id
    column, metadata columns) in the background."""
    check_source(body.manifest, jobs.catalog.fetch_settings, jobs.catalog.trusted)
    options = body.model_dump(exclude={"manifest"}, by_alias=True, exclude_none=True)
    job = jobs.store.create("manifest", source=body.manifest, options=options)
    jobs.submit(job)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.of(job)


@router.get("/jobs", operation_id="list_jobs", response_model=list[JobOut])
def list_jobs(jobs: JobsDep) -> list[JobOut]:
    """Every job, newest first."""
    return [JobOut.of(job) for job in jobs.store.jobs()]


@router.get("/jobs/{job_id}", operation_id="get_job", response_model=JobOut, responses=ERRORS)
def get_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    """Where a job stands: its state, entries done, counts by status, first failures."""
    return JobOut.of(jobs.store.get(job_id))


@router.get(
    "/jobs/{job_id}/results",
    operation_id="get_job_results",
    response_model=list[JobResultOut],
    responses=ERRORS,
)
def get_job_results(
    job_id: JobId,
    jobs: JobsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[JobResultOut]:
    """Each entry's result, in the order they were written."""
    jobs.store.get(job_id)
    return [
        JobResultOut(**{**r, "error": r.get("error") or None})
        for r in jobs.store.results(job_id, offset, limit)
    ]


@router.delete("/jobs/{job_id}", operation_id="cancel_job", response_model=JobOut, responses=ERRORS)
def cancel_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    """Cancel a job after the chunk it is writing; what it wrote stays."""
    return JobOut.of(jobs.cancel(job_id))


__all__ = ["CATALOG_BODY_PREFIX", "router"]
