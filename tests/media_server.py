"""A small HTTP server of media on 127.0.0.1 for catalog tests: files the test puts
in a dict, each with an ETag (so conditional requests get 304), and a count of the
requests each path received."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MediaServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), MediaHandler)
        self.files: dict[str, tuple[bytes, str]] = {}  # path -> (body, content type)
        self.hits: Counter[str] = Counter()
        self.bodies_sent: Counter[str] = Counter()  # 200s, not 304s
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up breaks the pipe: expected in fault tests

    def put(self, path: str, body: bytes, content_type: str = "image/jpeg") -> str:
        """Serve `body` at `path`; returns its URL."""
        with self.lock:
            self.files[path] = (body, content_type)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class MediaHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MediaServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits[self.path] += 1
            found = self.server.files.get(self.path)
        if found is None:
            self._answer(404, b"not found", "text/plain")
            return
        body, content_type = found
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            self._answer(304, b"", content_type, etag)
            return
        with self.server.lock:
            self.server.bodies_sent[self.path] += 1
        self._answer(200, body, content_type, etag)

    def _answer(self, status: int, body: bytes, content_type: str, etag: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


@contextmanager
def serving(httpd: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """Run a server in a thread while the block runs; shut down and closed after."""
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
