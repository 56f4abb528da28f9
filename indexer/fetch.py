"""Downloading catalog sources: http(s) URLs, bucket URLs (fsspec) and, for the
operator, local files, many at once, into a spool folder.

    with Fetcher(settings.fetch, spool_dir) as fetcher:
        for fetched in fetcher.fetch_all(FetchRequest(url, key=row) for row, url in rows):
            ...  # fetched.path (then move or delete it), or fetched.error

Every request gives exactly one Fetched, in the order they finish; failures are
results, never exceptions. Requests are pulled from the iterable as slots free up
(at most 2 x fetch.concurrency taken and not yet handed back), so a manifest of ten
million rows is never held whole. The Fetcher runs its own event loop in a thread of
its own, so it is called from plain threads (a CLI, a FastAPI worker thread), never
from inside a running event loop.

Sources named by a server's caller (`trusted=False`) are limited: http(s) and the
protocols in fetch.fsspec_protocols only, and public addresses only unless
fetch.allow_private_addresses (indexer/addresses.py). The operator's CLI
(`trusted=True`) may name local paths, file:// and any fsspec protocol, and reach any
address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from xmodal.search.errors import SourceError

from .addresses import AddressPolicy
from .fetch_files import is_local, missing_package, read_object
from .fetch_http import HttpSource
from .fetched import FetchDone, Fetched, FetchFailed, FetchRequest
from .options import FetchSettings

log = logging.getLogger(__name__)
HTTP_SCHEMES = ("http", "https")
_END: Any = object()  # the requests' end (a None among them is a request, and fails)


def address_policy(settings: FetchSettings, trusted: bool) -> AddressPolicy:
    return AddressPolicy.create(
        trusted or settings.allow_private_addresses, settings.allowed_networks
    )


def check_source(url: str, settings: FetchSettings, trusted: bool) -> None:
    """SourceError saying why `url` cannot be fetched, found without any I/O (a bad
    scheme, a protocol not allowed or not installed, a refused literal address), so that
    a request can be refused before any work."""
    if not isinstance(url, str) or not url.strip():
        raise SourceError("an empty source URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:  # "http://[::1" and the like
        raise SourceError(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    allowed = ", ".join(["http", "https", *settings.fsspec_protocols])
    if scheme in HTTP_SCHEMES:
        if not host:
            raise SourceError(f"no host in {url!r}")
        refusal = address_policy(settings, trusted).refusal(host)
        if refusal:
            raise SourceError(refusal)
        return
    if is_local(url):
        if not trusted:
            raise SourceError(
                f"local files cannot be named here, only URLs of: {allowed} "
                "(setting fetch.fsspec_protocols)"
            )
        return
    if not trusted:
        if "::" in url:  # fsspec chains (simplecache::s3://) may write or read locally
            raise SourceError("chained fsspec URLs (::) cannot be named here")
        if scheme not in settings.fsspec_protocols:
            raise SourceError(
                f"{scheme}: URLs cannot be named here, only URLs of: {allowed} "
                "(setting fetch.fsspec_protocols)"
            )
    try:
        problem = missing_package(scheme)
    except ValueError as error:
        raise SourceError(f"{error}: not a URL xmodal can read") from None
    if problem:
        raise SourceError(problem)


class Fetcher:
    """Downloads into `spool_dir` (created if missing); one HTTP session and one event
    loop thread for its life: close it (or use it as a context manager)."""

    def __init__(self, settings: FetchSettings, spool_dir: Path, *, trusted: bool = False):
        self._settings = settings
        self._spool_dir = Path(spool_dir)
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        self._trusted = trusted
        self._stop = threading.Event()  # tells file reads in worker threads to give up
        self._files = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="xmodal-fetch")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="xmodal-fetch-loop", daemon=True
        )
        self._thread.start()
        self._closed = False
        self._handoff = threading.Lock()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self) -> None:
        # Made on the loop that uses them: aiohttp and asyncio bind to it.
        self._in_flight = asyncio.Semaphore(self._settings.concurrency)
        policy = address_policy(self._settings, self._trusted)
        self._http = HttpSource(self._settings, self._spool_dir, policy, self._in_flight)

    def fetch(self, request: FetchRequest) -> Fetched:
        """One request's result (see fetch_all)."""
        return next(iter(self.fetch_all([request])))

    def fetch_all(self, requests: Iterable[FetchRequest]) -> Iterator[Fetched]:
        """One Fetched per request, as they finish. Leaving the loop early cancels the
        rest and deletes their files."""
        if self._closed:
            raise RuntimeError("the Fetcher is closed")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:  # it would block that loop while it waits
            raise RuntimeError("Fetcher.fetch_all blocks: call it from a thread, not a coroutine")
        window = 2 * self._settings.concurrency
        source = iter(requests)
        pending: dict[concurrent.futures.Future[Fetched], _Job] = {}
        unclaimed: list[_Job] = []
        try:
            while True:
                while len(pending) < window:
                    request = next(source, _END)
                    if request is _END:
                        break
                    job = _Job(request, self._loop, self._handoff, self._fetch_one)
                    pending[job.future] = job
                if not pending:
                    return
                done, _ = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                unclaimed = [pending.pop(future) for future in done]
                while unclaimed:
                    yield unclaimed.pop().future.result()
        finally:
            for job in [*pending.values(), *unclaimed]:
                job.abandon()

    async def _fetch_one(self, request: FetchRequest) -> Fetched:
        started = time.monotonic()
        try:
            check_source(request.url, self._settings, self._trusted)
            if urlsplit(request.url).scheme.lower() in HTTP_SCHEMES:
                result = await self._http.fetch(request)
            else:
                result = await self._read_file(request)
        except SourceError as error:
            result = Fetched(request, "failed", error=str(error))
        except Exception as error:  # a bug must not lose the row: it fails, with the reason
            log.exception("fetching %s failed unexpectedly", request.url)
            result = Fetched(request, "failed", error=f"unexpected error: {error!r}", attempts=1)
        result.seconds = time.monotonic() - started
        return result

    async def _read_file(self, request: FetchRequest) -> Fetched:
        async with self._in_flight:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(
                self._files,
                read_object,
                request,
                self._settings.max_bytes,
                self._spool_dir,
                self._stop,
            )
            try:
                done = await asyncio.shield(work)
            except FetchFailed as failure:
                return Fetched(request, "failed", error=str(failure), attempts=1)
            except asyncio.CancelledError:
                # The thread reads on; whatever it spools is nobody's.
                work.add_done_callback(_delete_spooled)
                raise
        return done.result(request, attempts=1)

    def close(self) -> None:
        """Cancel what is left, close the session and stop the loop's thread."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._files.shutdown(wait=True)
        self._loop.close()

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Job:
    """One request on the loop, handed to the consumer's thread through `future`. A job
    the consumer abandons (it left fetch_all early) is cancelled, and a result that
    comes all the same has its file deleted: `handoff` orders the two threads."""

    def __init__(
        self,
        request: FetchRequest,
        loop: asyncio.AbstractEventLoop,
        handoff: threading.Lock,
        run: Callable[[FetchRequest], Coroutine[Any, Any, Fetched]],
    ):
        self.request = request
        self.future: concurrent.futures.Future[Fetched] = concurrent.futures.Future()
        self.future.set_running_or_notify_cancel()  # settled by _finish only
        self._loop = loop
        self._handoff = handoff
        self._abandoned = False
        self._task: asyncio.Task[Fetched] | None = None
        loop.call_soon_threadsafe(self._start, run)

    def _start(self, run: Callable[[FetchRequest], Coroutine[Any, Any, Fetched]]) -> None:
        self._task = self._loop.create_task(run(self.request))
        self._task.add_done_callback(self._finish)
        if self._abandoned:
            self._task.cancel()

    def _finish(self, task: asyncio.Task[Fetched]) -> None:
        if task.cancelled():  # the Fetcher closed under a running fetch_all
            result = Fetched(self.request, "failed", error="cancelled: the fetcher was closed")
        else:
            result = task.result()  # _fetch_one returns failures, never raises
        with self._handoff:
            if not self._abandoned:
                self.future.set_result(result)
                return
        _delete_file(result)

    def abandon(self) -> None:
        with self._handoff:
            self._abandoned = True
            result = self.future.result() if self.future.done() else None
        if result is not None:
            _delete_file(result)
        if self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)


def _delete_file(result: Fetched | None) -> None:
    """A result nobody will receive: its spooled file is deleted."""
    if result is not None and result.path is not None:
        result.path.unlink(missing_ok=True)


def _delete_spooled(work: asyncio.Future[FetchDone]) -> None:
    if not work.cancelled() and work.exception() is None and work.result().path is not None:
        work.result().path.unlink(missing_ok=True)  # type: ignore[union-attr]
