"""The server's catalog writer and job runner, built from its settings."""

from __future__ import annotations

from collections.abc import Iterator

from xmodal.api.settings import Settings
from xmodal.indexer.catalog import Catalog, CatalogEntry, entry_of_row
from xmodal.indexer.jobs import Job, JobRunner, JobStore
from xmodal.indexer.manifest import ManifestOptions, ManifestProblem, read_manifest
from xmodal.indexer.options import DecodeOptions
from xmodal.search import Engine


def catalog_for(engine: Engine, settings: Settings) -> Catalog:
    """Writes from the server's callers: sources they name are fetched as untrusted
    (public http(s) and the allowed bucket protocols only; indexer/fetch.py)."""
    return Catalog(
        engine,
        settings.fetch,
        settings.indexing,
        DecodeOptions.from_settings(settings),
        trusted=False,
        chunk_size=settings.catalog.chunk_items,
    )


def job_runner_for(catalog: Catalog, settings: Settings) -> JobRunner:
    def manifest_rows(job: Job) -> Iterator[tuple[int, CatalogEntry | str]]:
        assert job.source is not None
        options = ManifestOptions(**job.options)
        with catalog.fetched_manifest(job.source) as local:
            for row in read_manifest(local, options):
                if isinstance(row, ManifestProblem):
                    yield row.line, row.reason
                else:
                    yield row.line, entry_of_row(row)

    on_ray = None
    if settings.catalog.ray_address is not None:
        from xmodal.indexer.distributed import RayJobs, RayOptions

        on_ray = RayJobs(
            catalog.engine,
            settings.indexing,
            DecodeOptions.from_settings(settings),
            RayOptions(settings.catalog.ray_address, actors=settings.catalog.ray_actors),
        )
    return JobRunner(
        JobStore(settings.data / "jobs"),
        catalog,
        manifest_rows,
        on_ray,
        settings.catalog.ray_chunk_items,
    )
