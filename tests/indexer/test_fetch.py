"""indexer/fetch.py against a real HTTP server on 127.0.0.1, and fsspec's memory://."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import fsspec
import pytest
from PIL import Image

from tests.media_server import serving
from xmodal.indexer import fetch_files
from xmodal.indexer.addresses import AddressPolicy, AddressRefused, GuardedResolver
from xmodal.indexer.fetch import Fetcher, FetchRequest, check_source
from xmodal.indexer.fetch_http import retry_after_seconds
from xmodal.indexer.options import FetchSettings
from xmodal.search.errors import SourceError
from xmodal.search.media import MediaKind


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


JPEG = _jpeg()
HTML = b"<!DOCTYPE html><html><body>Sorry, this product has no picture</body></html>"


class CatalogServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a slow handler must not hold up the fixture

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CatalogHandler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (a timeout) breaks the pipe: expected here

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CatalogHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CatalogServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", kind: str = "image/jpeg", **headers: str):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        route, query = parts.path, parse_qs(parts.query)
        with self.server.lock:
            self.server.hits[self.path] += 1
            hits = self.server.hits[self.path]
        if route == "/image.jpg":
            self._send(200, JPEG)
        elif route == "/octet":
            self._send(200, JPEG, "application/octet-stream")
        elif route == "/missing":
            self._send(404, b"no", "text/plain")
        elif route == "/flaky":  # 500 first, then the image
            self._send(500, b"oops", "text/plain") if hits == 1 else self._send(200, JPEG)
        elif route == "/busy":
            if hits == 1:
                self._send(429, b"slow down", "text/plain", Retry_After="0")
            else:
                self._send(200, JPEG)
        elif route == "/slow":
            time.sleep(2)
            self._send(200, JPEG)
        elif route == "/big":
            self._send(200, JPEG + b"\0" * 2048)
        elif route == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in (JPEG, b"\0" * 1024, b"\0" * 1024):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif route == "/loop":
            self._send(302, Location="/loop")
        elif route == "/redirect":
            self._send(302, Location=query["to"][0])
        elif route == "/html-as-jpeg":
            self._send(200, HTML, "image/jpeg")
        elif route == "/etag":
            if self.headers.get("If-None-Match") == '"v1"':
                self._send(304, ETag='"v1"')
            else:
                self._send(200, JPEG, ETag='"v1"')
        elif route == "/counted":
            with self.server.lock:
                self.server.in_flight += 1
                self.server.most_in_flight = max(self.server.most_in_flight, self.server.in_flight)
            time.sleep(0.05)
            with self.server.lock:
                self.server.in_flight -= 1
            self._send(200, JPEG)
        else:
            self._send(404, b"no", "text/plain")


@pytest.fixture
def server() -> Iterator[CatalogServer]:
    with serving(CatalogServer()) as httpd:
        yield httpd  # type: ignore[misc]


SETTINGS = FetchSettings(
    concurrency=8, per_host=4, timeout=5.0, connect_timeout=2.0, backoff=0.01, max_backoff=0.05
)


@pytest.fixture
def make_fetcher(tmp_path: Path) -> Iterator[Callable[..., Fetcher]]:
    made: list[Fetcher] = []

    def make(trusted: bool = True, **settings: object) -> Fetcher:
        fetcher = Fetcher(SETTINGS.model_copy(update=settings), tmp_path / "spool", trusted=trusted)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


def spooled(tmp_path: Path) -> set[Path]:
    return set((tmp_path / "spool").iterdir())


def test_an_image_is_spooled_hashed_and_sniffed(server, make_fetcher, tmp_path):
    result = make_fetcher().fetch(FetchRequest(f"{server.base}/image.jpg", key=7))
    assert result.outcome == "fetched", result.error
    assert result.request.key == 7
    assert result.kind is MediaKind.IMAGE
    assert result.path is not None and result.path.read_bytes() == JPEG
    assert result.path.suffix == ".jpg"
    assert result.content_hash == hashlib.sha256(JPEG).hexdigest()
    assert result.bytes == len(JPEG)
    assert result.attempts == 1


def test_the_kind_comes_from_the_bytes_not_the_content_type(server, make_fetcher, tmp_path):
    fetcher = make_fetcher()
    octet = fetcher.fetch(FetchRequest(f"{server.base}/octet"))
    assert octet.outcome == "fetched" and octet.kind is MediaKind.IMAGE
    html = fetcher.fetch(FetchRequest(f"{server.base}/html-as-jpeg"))
    assert html.outcome == "failed"
    assert html.error == "not a media file: the server sent text/html"
    assert spooled(tmp_path) == {octet.path}


def test_404_fails_at_once(server, make_fetcher):
    result = make_fetcher().fetch(FetchRequest(f"{server.base}/missing"))
    assert (result.outcome, result.error, result.attempts) == ("failed", "HTTP 404 Not Found", 1)
    assert result.path is None


def test_a_500_is_retried(server, make_fetcher):
    result = make_fetcher().fetch(FetchRequest(f"{server.base}/flaky"))
    assert result.outcome == "fetched" and result.attempts == 2


def test_a_429_is_retried_after_the_servers_wait(server, make_fetcher):
    result = make_fetcher().fetch(FetchRequest(f"{server.base}/busy"))
    assert result.outcome == "fetched" and result.attempts == 2
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None


def test_retries_run_out(server, make_fetcher):
    result = make_fetcher(retries=0).fetch(FetchRequest(f"{server.base}/flaky"))
    assert result.error == "HTTP 500 Internal Server Error" and result.attempts == 1


def test_a_slow_server_times_out(server, make_fetcher, tmp_path):
    result = make_fetcher(timeout=0.3, retries=1).fetch(FetchRequest(f"{server.base}/slow"))
    assert result.outcome == "failed"
    assert result.error == "timed out after 0.3 s (after 2 attempts)"
    assert spooled(tmp_path) == set()


@pytest.mark.parametrize("route", ["/big", "/big-chunked"])
def test_bodies_over_the_cap_are_refused(server, make_fetcher, tmp_path, route):
    result = make_fetcher(max_bytes=1024).fetch(FetchRequest(f"{server.base}{route}"))
    assert result.outcome == "failed" and result.attempts == 1
    assert result.error.endswith("over the size cap of 1,024 bytes (setting fetch.max_bytes)")
    if route == "/big":  # declared: refused before reading
        assert result.error.startswith(f"the source declares {len(JPEG) + 2048:,} bytes")
    assert spooled(tmp_path) == set()


def test_a_redirect_loop_fails(server, make_fetcher):
    result = make_fetcher(max_redirects=3).fetch(FetchRequest(f"{server.base}/loop"))
    assert result.error == "too many redirects (3)"
    assert server.hits["/loop"] == 4


def test_redirects_are_followed(server, make_fetcher):
    url = f"{server.base}/redirect?to=/image.jpg"
    assert make_fetcher().fetch(FetchRequest(url)).outcome == "fetched"


def test_a_conditional_request_answered_304(server, make_fetcher, tmp_path):
    fetcher = make_fetcher()
    first = fetcher.fetch(FetchRequest(f"{server.base}/etag"))
    assert first.outcome == "fetched" and first.etag == '"v1"'
    again = fetcher.fetch(FetchRequest(f"{server.base}/etag", etag=first.etag))
    assert (again.outcome, again.path, again.etag) == ("not_modified", None, '"v1"')
    assert spooled(tmp_path) == {first.path}


def test_no_more_than_per_host_requests_at_once(server, make_fetcher):
    fetcher = make_fetcher(concurrency=16, per_host=2)
    urls = [f"{server.base}/counted?n={n}" for n in range(12)]
    results = list(fetcher.fetch_all(FetchRequest(url) for url in urls))
    assert all(r.outcome == "fetched" for r in results)
    assert 1 <= server.most_in_flight <= 2


def test_every_request_of_a_mix_gets_one_result(server, make_fetcher, tmp_path):
    good = [f"{server.base}/image.jpg?n={n}" for n in range(20)]
    bad = [f"{server.base}/{route}?n={n}" for n in range(5) for route in ("missing", "loop")]
    bad += [f"{server.base}/html-as-jpeg?n={n}" for n in range(5)]
    bad += ["gopher://example.com/a.jpg", "http://127.0.0.1:1/refused.jpg", "not a url"] * 4
    bad += ["http://[::1/a.jpg", f"{server.base}/redirect?to=ftp://x/", "http://[::1/b.jpg"]
    requests = [FetchRequest(url, key=n) for n, url in enumerate(good + bad)]
    assert len(requests) == 50
    results = list(make_fetcher(max_redirects=1, retries=0).fetch_all(requests))
    assert sorted(r.request.key for r in results) == list(range(50))
    assert {r.request.url for r in results if r.outcome == "fetched"} == set(good)
    assert all(r.error for r in results if r.outcome == "failed")
    assert spooled(tmp_path) == {r.path for r in results if r.path}


def test_requests_are_pulled_lazily(server, make_fetcher):
    pulled = 0

    def requests() -> Iterator[FetchRequest]:
        nonlocal pulled
        for n in range(1000):
            pulled += 1
            yield FetchRequest(f"{server.base}/image.jpg?n={n}")

    fetcher = make_fetcher(concurrency=2)
    results = fetcher.fetch_all(requests())
    next(results)
    assert pulled <= 2 * 2 + 1
    results.close()  # leaving early: the rest are cancelled


def test_leaving_early_keeps_no_files_of_the_rest(server, tmp_path):
    with Fetcher(SETTINGS, tmp_path / "spool", trusted=True) as fetcher:
        results = fetcher.fetch_all(
            FetchRequest(f"{server.base}/image.jpg?n={n}") for n in range(40)
        )
        first = next(results)
        results.close()
    assert spooled(tmp_path) == {first.path}


def test_fetch_all_refuses_to_block_an_event_loop(make_fetcher):
    fetcher = make_fetcher()

    async def inside() -> None:
        next(iter(fetcher.fetch_all([FetchRequest("http://example.com/")])))

    with pytest.raises(RuntimeError, match="from a thread"):
        asyncio.run(inside())


# Addresses a server's caller may not reach (SSRF).


@pytest.mark.parametrize(
    ("host", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("[fd00::1]", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-public"),
    ],
)
def test_untrusted_sources_cannot_name_private_addresses(host, category):
    with pytest.raises(SourceError, match=f"is a {category} address"):
        check_source(f"http://{host}/a.jpg", FetchSettings(), trusted=False)
    check_source(f"http://{host}/a.jpg", FetchSettings(allow_private_addresses=True), False)
    check_source(f"http://{host}/a.jpg", FetchSettings(), trusted=True)


def test_an_untrusted_fetcher_refuses_loopback(server, make_fetcher, tmp_path):
    fetcher = make_fetcher(trusted=False)
    literal = fetcher.fetch(FetchRequest(f"{server.base}/image.jpg"))
    assert literal.error == (
        "refused: 127.0.0.1 is a loopback address (setting fetch.allow_private_addresses)"
    )
    port = server.server_address[1]
    named = fetcher.fetch(FetchRequest(f"http://localhost:{port}/image.jpg"))
    assert named.outcome == "failed" and named.attempts == 1
    assert named.error.startswith("refused: localhost resolves to ")
    assert named.error.endswith(", a loopback address (setting fetch.allow_private_addresses)")
    assert server.hits == Counter()
    assert spooled(tmp_path) == set()


def test_a_redirect_to_a_private_address_is_refused(server, make_fetcher):
    # The test server stands for a public host: its own network is allowed, no other.
    fetcher = make_fetcher(trusted=False, allowed_networks=["127.0.0.1/32"])
    port = server.server_address[1]
    assert fetcher.fetch(FetchRequest(f"{server.base}/image.jpg")).outcome == "fetched"
    for target, address in [("127.0.0.2", "127.0.0.2"), ("[::1]", "::1")]:
        url = f"{server.base}/redirect?to=http://{target}:{port}/image.jpg"
        result = fetcher.fetch(FetchRequest(url))
        assert result.error == (
            f"refused: {address} is a loopback address (setting fetch.allow_private_addresses)"
        )
    metadata = f"{server.base}/redirect?to=http://169.254.169.254/latest/meta-data/"
    assert "link-local" in fetcher.fetch(FetchRequest(metadata)).error


def test_the_resolver_drops_refused_addresses():
    async def resolve(policy: AddressPolicy) -> list[str]:
        resolver = GuardedResolver(policy)
        try:
            return [r["host"] for r in await resolver.resolve("localhost", 80)]
        finally:
            await resolver.close()

    with pytest.raises(AddressRefused, match="loopback"):
        asyncio.run(resolve(AddressPolicy()))
    assert "127.0.0.1" in asyncio.run(resolve(AddressPolicy.create(True)))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.jpg", "ftp: URLs cannot be named here"),
        ("file:///etc/passwd", "local files cannot be named here"),
        ("/etc/passwd", "local files cannot be named here"),
        ("javascript:alert(1)", "javascript: URLs cannot be named here"),
        ("memory://catalog/a.jpg", "memory: URLs cannot be named here"),
        ("simplecache::s3://bucket/a.jpg", "chained fsspec URLs"),
        ("http:///a.jpg", "no host"),
        ("http://[::1/a.jpg", "not a valid URL"),
        ("", "an empty source URL"),
    ],
)
def test_check_source_refuses(url, reason):
    with pytest.raises(SourceError, match=reason):
        check_source(url, FetchSettings(), trusted=False)


def test_check_source_names_the_missing_package(monkeypatch):
    real = fetch_files.importlib.util.find_spec
    monkeypatch.setattr(
        fetch_files.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "s3fs" else real(name, *a),
    )
    with pytest.raises(SourceError, match="pip install s3fs"):
        check_source("s3://bucket/a.jpg", FetchSettings(), trusted=False)
    with pytest.raises(SourceError, match="unknown protocol"):
        check_source("javascript:alert(1)", FetchSettings(), trusted=True)
    check_source("/etc/passwd", FetchSettings(), trusted=True)


# fsspec and local files (trusted).


@pytest.fixture
def memory_catalog() -> Iterator[fsspec.AbstractFileSystem]:
    memory = fsspec.filesystem("memory")
    memory.pipe("/catalog/shoe.jpg", JPEG)
    memory.pipe("/catalog/page.html", HTML)
    memory.pipe("/catalog/huge.jpg", JPEG + b"\0" * 4096)
    yield memory
    memory.rm("/catalog", recursive=True)


def test_fsspec_objects_are_fetched_then_skipped_when_unchanged(
    memory_catalog, make_fetcher, tmp_path
):
    fetcher = make_fetcher()
    first = fetcher.fetch(FetchRequest("memory://catalog/shoe.jpg"))
    assert first.outcome == "fetched", first.error
    assert first.kind is MediaKind.IMAGE and first.path is not None
    assert first.content_hash == hashlib.sha256(JPEG).hexdigest()
    assert first.last_modified
    again = FetchRequest("memory://catalog/shoe.jpg", first.etag, first.last_modified)
    assert fetcher.fetch(again).outcome == "not_modified"
    results = {
        r.request.url: r
        for r in make_fetcher(max_bytes=1024).fetch_all(
            FetchRequest(f"memory://catalog/{name}") for name in ("page.html", "huge.jpg", "gone")
        )
    }
    assert results["memory://catalog/page.html"].error == (
        "not a media file: the object sent text/html"
    )
    assert "over the size cap of 1,024 bytes" in results["memory://catalog/huge.jpg"].error
    assert results["memory://catalog/gone"].error == "not found: memory://catalog/gone"
    assert spooled(tmp_path) == {first.path}


def test_untrusted_fetchers_refuse_memory_and_file_urls(memory_catalog, make_fetcher, tmp_path):
    (tmp_path / "a.jpg").write_bytes(JPEG)
    fetcher = make_fetcher(trusted=False)
    for url in (
        "memory://catalog/shoe.jpg",
        (tmp_path / "a.jpg").as_uri(),
        str(tmp_path / "a.jpg"),
    ):
        result = fetcher.fetch(FetchRequest(url))
        assert result.outcome == "failed" and "cannot be named here" in result.error


def test_trusted_local_files_are_read(make_fetcher, tmp_path):
    (tmp_path / "a.jpg").write_bytes(JPEG)
    fetcher = make_fetcher()
    for url in (str(tmp_path / "a.jpg"), (tmp_path / "a.jpg").as_uri()):
        result = fetcher.fetch(FetchRequest(url))
        assert result.outcome == "fetched" and result.kind is MediaKind.IMAGE
        assert result.content_hash == hashlib.sha256(JPEG).hexdigest()
    unchanged = FetchRequest(str(tmp_path / "a.jpg"), last_modified=result.last_modified)
    assert fetcher.fetch(unchanged).outcome == "not_modified"
