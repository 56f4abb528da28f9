"""Catalog jobs: large batches and manifests written in the background, resumed after
a restart.

A job lives in its own folder, `<data>/jobs/<id>/`:

- `job.json`: what it is and where it stands (replaced atomically after every chunk);
- `entries.jsonl`: a batch job's entries, as the request gave them;
- `results.jsonl`: one line per entry done, appended after each chunk.

A server that stops mid-job (a deploy, a crash) finds the job `running` or `queued`
when it starts again and goes on after the last result written: the chunk in flight
is written again, which costs nothing, since an entry whose media and metadata are
already stored is `unchanged` and never re-embedded.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmodal.search.errors import SourceError, XmodalError

from .catalog import Catalog, CatalogEntry, EntryResult

if TYPE_CHECKING:
    from .distributed import RayJobs

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = frozenset({DONE, FAILED, CANCELLED})
SHOWN_FAILURES = 100  # failures a job's status lists; all of them are in its results


class UnknownJobError(XmodalError):
    """No job with this id."""


@dataclass
class Job:
    id: str
    kind: str  # "batch" (entries given) or "manifest" (rows read from a source)
    state: str = QUEUED
    source: str | None = None  # a manifest job's location
    options: dict[str, Any] = field(default_factory=dict)  # a manifest job's reading options
    total: int | None = None  # entries, when known (a manifest's: once read)
    done: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # by status
    embedded: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)  # the first SHOWN_FAILURES
    error: str = ""  # why the job itself failed (an unreadable manifest)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    resumed: int = 0  # times it was picked up again after a restart

    def record(self, results: list[tuple[int, EntryResult]]) -> None:
        for line, result in results:
            self.done += 1
            self.counts[result.status] = self.counts.get(result.status, 0) + 1
            self.embedded += result.embedded
            if result.status == "failed" and len(self.failures) < SHOWN_FAILURES:
                self.failures.append({"line": line, "id": result.id, "error": result.error})


class JobStore:
    """The jobs of a data directory, on disk."""

    def __init__(self, root: Path):
        self.root = root

    def _folder(self, job_id: str) -> Path:
        if not (len(job_id) == 20 and job_id.isalnum()):
            raise UnknownJobError(f"no job {job_id[:40]!r}")
        return self.root / job_id

    def create(
        self,
        kind: str,
        entries: list[dict[str, Any]] | None = None,
        source: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> Job:
        job = Job(secrets.token_hex(10), kind, source=source, options=dict(options or {}))
        folder = self._folder(job.id)
        folder.mkdir(parents=True)
        if entries is not None:
            job.total = len(entries)
            with open(folder / "entries.jsonl.partial", "w", encoding="utf-8") as file:
                for entry in entries:
                    file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            os.replace(folder / "entries.jsonl.partial", folder / "entries.jsonl")
        self.save(job)
        return job

    def save(self, job: Job) -> None:
        folder = self._folder(job.id)
        partial = folder / "job.json.partial"
        partial.write_text(json.dumps(asdict(job)), encoding="utf-8")
        os.replace(partial, folder / "job.json")

    def get(self, job_id: str) -> Job:
        try:
            data = json.loads((self._folder(job_id) / "job.json").read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise UnknownJobError(f"no job {job_id[:40]!r}") from error
        return Job(**data)

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            try:
                found.append(self.get(folder.name))
            except (UnknownJobError, ValueError, TypeError, OSError):
                continue  # not a job folder, or one being created
        return sorted(found, key=lambda job: -job.created_at)

    def entries(self, job: Job, skip: int) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self._folder(job.id) / "entries.jsonl", encoding="utf-8") as file:
            for line, text in enumerate(file, 1):
                if line > skip:
                    yield line, json.loads(text)

    def append_results(self, job: Job, results: list[tuple[int, EntryResult]]) -> None:
        with open(self._folder(job.id) / "results.jsonl", "a", encoding="utf-8") as file:
            for line, result in results:
                file.write(json.dumps({"line": line, **asdict(result)}) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def results(self, job_id: str, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        path = self._folder(job_id) / "results.jsonl"
        found: list[dict[str, Any]] = []
        if not path.is_file():
            return found
        with open(path, encoding="utf-8") as file:
            for number, text in enumerate(file):
                if number < offset:
                    continue
                if len(found) >= limit:
                    break
                try:
                    found.append(json.loads(text))
                except json.JSONDecodeError:
                    break  # a line cut short by a crash: the job writes it again
        return found

    def results_written(self, job: Job) -> int:
        """Whole result lines on disk (a line cut short by a crash is not one)."""
        path = self._folder(job.id) / "results.jsonl"
        if not path.is_file():
            return 0
        data = path.read_bytes()
        whole = data.count(b"\n")
        if not data.endswith(b"\n") and data:
            # Drop the cut line, so that appending goes on from a whole one.
            with open(path, "r+b") as file:
                file.truncate(data.rfind(b"\n") + 1)
        return whole


# A manifest job's rows -> (line, entry) or (line, problem reason).
ManifestRows = Callable[[Job], Iterator[tuple[int, CatalogEntry | str]]]


class JobRunner:
    """Runs jobs one at a time in a thread of its own, oldest first. With `on_ray`, each
    chunk (of `ray_chunk` entries) is decoded and embedded on that Ray cluster."""

    def __init__(
        self,
        store: JobStore,
        catalog: Catalog,
        manifest_rows: ManifestRows,
        on_ray: RayJobs | None = None,
        ray_chunk: int = 4096,
    ):
        self.store = store
        self.catalog = catalog
        self.manifest_rows = manifest_rows
        self.on_ray = on_ray
        self.chunk_size = catalog.chunk_size if on_ray is None else ray_chunk
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker; unfinished jobs of an earlier run are taken up again."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="xmodal-jobs", daemon=True)
            self._thread.start()
            self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the chunk in flight; an unfinished job resumes on the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.on_ray is not None:
            self.on_ray.close()

    def submit(self, job: Job) -> None:
        """Have a job run (created in the store): the worker starts if it has not."""
        self.start()
        self._wake.set()

    def cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job.state in FINISHED:
            return job
        with self._lock:
            self._cancelled.add(job_id)
            job = self.store.get(job_id)
            if job.state == QUEUED:
                self._finish(job, CANCELLED)
        self._wake.set()
        return job

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            while not self._stop.is_set():
                pending = [j for j in self.store.jobs() if j.state in (QUEUED, RUNNING)]
                if not pending:
                    break
                self._work(min(pending, key=lambda j: j.created_at))

    def _work(self, job: Job) -> None:
        if job.state == RUNNING:
            job.resumed += 1
        job.state = RUNNING
        job.started_at = job.started_at or time.time()
        skip = self.store.results_written(job)
        if skip != job.done:  # the results on disk are the truth: counts follow them
            job.done, job.counts, job.embedded, job.failures = 0, {}, 0, []
            job.record([(r["line"], _result_of(r)) for r in self.store.results(job.id, 0, skip)])
        self.store.save(job)
        try:
            rows = self._rows(job, skip)
            chunk: list[tuple[int, CatalogEntry | str]] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= self.chunk_size:
                    if not self._write(job, chunk):
                        return
                    chunk = []
            if chunk and not self._write(job, chunk):
                return
        except SourceError as error:
            job.error = str(error)
            self._finish(job, FAILED)
            return
        except Exception as error:  # the job fails and says why; the runner goes on
            log.exception("job %s failed", job.id)
            job.error = f"{type(error).__name__}: {error}"
            self._finish(job, FAILED)
            return
        job.total = job.done
        self._finish(job, DONE)

    def _rows(self, job: Job, skip: int) -> Iterator[tuple[int, CatalogEntry | str]]:
        if job.kind == "batch":
            for line, raw in self.store.entries(job, skip):
                entry: CatalogEntry | str
                try:
                    entry = CatalogEntry.from_json(raw)
                except (SourceError, AttributeError) as error:
                    entry = str(error) or "not an entry"
                yield line, entry
        else:
            for line, row in self.manifest_rows(job):
                if line > skip:
                    yield line, row

    def _write(self, job: Job, chunk: list[tuple[int, CatalogEntry | str]]) -> bool:
        """Write one chunk and record it; False when the job was cancelled or the
        runner is stopping (the job stays where it is, to resume)."""
        with self._lock:
            if job.id in self._cancelled:
                self._finish(job, CANCELLED)
                return False
        if self._stop.is_set():
            return False
        entries = [(line, e) for line, e in chunk if isinstance(e, CatalogEntry)]
        indexer = None if self.on_ray is None else self.on_ray.indexer()
        written = iter(self.catalog.put_chunk([e for _, e in entries], indexer))
        results: list[tuple[int, EntryResult]] = []
        for line, entry in chunk:
            if isinstance(entry, CatalogEntry):
                results.append((line, next(written)))
            else:
                results.append((line, EntryResult("", "", "failed", entry)))
        self.store.append_results(job, results)
        job.record(results)
        self.store.save(job)
        return True

    def _finish(self, job: Job, state: str) -> None:
        job.state = state
        job.finished_at = time.time()
        self.store.save(job)


def _result_of(raw: dict[str, Any]) -> EntryResult:
    return EntryResult(
        raw.get("id", ""),
        raw.get("item_id", ""),
        raw.get("status", "failed"),
        raw.get("error", ""),
        bool(raw.get("embedded")),
    )
