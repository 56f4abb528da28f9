"""Downloads over http(s) with aiohttp: slots per host, redirects, retries, size cap.

Runs on the Fetcher's event loop (indexer/fetch.py). Redirects are followed here, one
hop at a time, so that each hop's host is checked (AddressPolicy) and takes that host's
slot; names are checked where they resolve (GuardedResolver).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path

import aiohttp
from yarl import URL

from .addresses import AddressPolicy, AddressRefused, GuardedResolver
from .fetched import FetchDone, Fetched, FetchFailed, FetchRequest, SpoolFile, over_size_cap
from .options import FetchSettings

CHUNK = 256 * 1024  # bytes read from a body at a time
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass
class _HostSlot:
    semaphore: asyncio.Semaphore
    users: int = 0


class HostSlots:
    """At most `per_host` holders per host; a host's entry lives while someone uses it,
    so that a catalog spread over a million hosts does not keep a million semaphores."""

    def __init__(self, per_host: int):
        self._per_host = per_host
        self._slots: dict[str, _HostSlot] = {}

    @asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        slot = self._slots.setdefault(host, _HostSlot(asyncio.Semaphore(self._per_host)))
        slot.users += 1
        try:
            async with slot.semaphore:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[host]


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's wait in seconds (a number, or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def status_line(status: int, reason: str | None) -> str:
    try:
        reason = reason or HTTPStatus(status).phrase
    except ValueError:
        reason = reason or ""
    return f"HTTP {status} {reason}".rstrip()


def refusal_in(error: BaseException) -> str | None:
    """The AddressRefused message an aiohttp error wraps, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return str(current)
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return None


class HttpSource:
    """One aiohttp session for a Fetcher's http(s) downloads; create it on that loop."""

    def __init__(
        self,
        settings: FetchSettings,
        spool_dir: Path,
        policy: AddressPolicy,
        in_flight: asyncio.Semaphore,
    ):
        self._settings = settings
        self._spool_dir = spool_dir
        self._policy = policy
        self._in_flight = in_flight  # shared with the other sources: fetch.concurrency
        self._hosts = HostSlots(settings.per_host)
        connector = aiohttp.TCPConnector(
            limit=settings.concurrency,
            limit_per_host=settings.per_host,
            resolver=GuardedResolver(policy),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout),
            headers={"User-Agent": settings.user_agent, "Accept-Encoding": "identity"},
            trust_env=False,  # a proxy from the environment would bypass the address check
        )

    async def close(self) -> None:
        await self._session.close()

    async def fetch(self, request: FetchRequest) -> Fetched:
        """One Fetched, whatever happens: retried while retries are left and it may help."""
        settings = self._settings
        attempts = 0
        while True:
            attempts += 1
            try:
                done = await self._attempt(request)
            except FetchFailed as failure:
                if not failure.retryable or attempts > settings.retries:
                    after = f" (after {attempts} attempts)" if attempts > 1 else ""
                    return Fetched(request, "failed", error=f"{failure}{after}", attempts=attempts)
                await asyncio.sleep(self._wait_before(attempts, failure.retry_after))
                continue
            return done.result(request, attempts)

    def _wait_before(self, attempt: int, retry_after: float | None) -> float:
        settings = self._settings
        if retry_after is not None:
            return min(retry_after, settings.max_backoff)
        wait = min(settings.backoff * 2 ** (attempt - 1), settings.max_backoff)
        return wait * random.uniform(0.5, 1.0)  # jitter: retries of many rows spread out

    async def _attempt(self, request: FetchRequest) -> FetchDone:
        headers = {}
        if request.etag:
            headers["If-None-Match"] = request.etag
        if request.last_modified:
            headers["If-Modified-Since"] = request.last_modified
        try:
            url = URL(request.url)
        except ValueError as error:
            raise FetchFailed(f"not a valid URL: {error}") from None
        deadline: float | None = None
        for _ in range(self._settings.max_redirects + 1):
            refusal = self._policy.refusal(url.host or "")
            if refusal:
                raise FetchFailed(refusal)
            async with self._hosts.hold(f"{url.host}:{url.port}"), self._in_flight:
                if deadline is None:  # the clock starts once the first hop has its slots
                    deadline = asyncio.get_running_loop().time() + self._settings.timeout
                answer = await self._hop(url, headers, deadline, request.media)
            if isinstance(answer, FetchDone):
                return answer
            url = answer
        raise FetchFailed(f"too many redirects ({self._settings.max_redirects})")

    async def _hop(
        self, url: URL, headers: dict[str, str], deadline: float, media: bool
    ) -> FetchDone | URL:
        """The result of one request, or the URL it redirects to."""
        try:
            async with (
                asyncio.timeout_at(deadline),
                self._session.get(url, headers=headers, allow_redirects=False) as response,
            ):
                location = response.headers.get("Location")
                if response.status in REDIRECTS and location:
                    try:
                        target = url.join(URL(location))
                    except ValueError:
                        raise FetchFailed(f"redirected to an invalid URL: {location!r}") from None
                    if target.scheme not in ("http", "https"):
                        raise FetchFailed(f"redirected to an unsupported scheme {target.scheme}:")
                    return target
                return await self._read(response, media)
        except TimeoutError:
            raise FetchFailed(f"timed out after {self._settings.timeout:g} s", True) from None
        except aiohttp.InvalidURL as error:  # a ValueError too: not worth another attempt
            raise FetchFailed(f"not a valid URL: {error}") from None
        except aiohttp.ClientError as error:
            refusal = refusal_in(error)
            if refusal:
                raise FetchFailed(refusal) from None
            raise FetchFailed(f"connection failed: {error}", retryable=True) from None

    async def _read(self, response: aiohttp.ClientResponse, media: bool) -> FetchDone:
        status = response.status
        etag = response.headers.get("ETag")
        last_modified = response.headers.get("Last-Modified")
        if status == 304:
            return FetchDone("not_modified", etag=etag, last_modified=last_modified)
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            raise FetchFailed(status_line(status, response.reason), True, wait)
        if status not in (200, 203):
            raise FetchFailed(status_line(status, response.reason))
        max_bytes = self._settings.max_bytes
        if response.content_length is not None and response.content_length > max_bytes:
            raise over_size_cap(max_bytes, response.content_length)
        spool = SpoolFile(self._spool_dir, max_bytes, media)
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                spool.write(chunk)
            path, content_hash, kind = spool.finish("the server")
        except BaseException:
            spool.discard()
            raise
        return FetchDone("fetched", path, content_hash, spool.bytes, kind, etag, last_modified)
