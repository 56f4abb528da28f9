"""How `xmodal search` finds and asks a running `xmodal serve` of the same data directory.

`xmodal serve` writes `<data>/server.json` (host, port, pid, data, started_at, and a
token) once its port is open, and removes it on shutdown (only while the file is still
its own). A search reads it, checks that the process lives and that GET /health on that
port answers for the same data directory, process and models, then sends the query over
HTTP: the server has the models and the vectors loaded already, where a search of its
own would load them first (seconds). Anything amiss and the search runs in-process.

The token lets the server's own user through a server that needs API keys, with full
paths (api/access.py): the file is readable by its owner only, who can read the store
and the key file as well.

Standard library only (urllib): this module is imported on every search, and must
stay cheap.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import mimetypes
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmodal.search.errors import (
    InvalidQueryError,
    MediaDecodeError,
    ModelMismatchError,
    StoreError,
    XmodalError,
)

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger("xmodal.api")

SERVER_FILE = "server.json"
HEALTH_TIMEOUT = 1.0  # seconds: a live server on this machine answers /health in milliseconds
QUERY_TIMEOUT = 300.0  # seconds: a query may wait behind others on a busy server
NO_AUDIO = "none"

# Never through an HTTP proxy from the environment: the server is on this machine.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# HTTP status -> the error the same query raises in-process (api/errors.py's mapping).
_ERROR_BY_STATUS: dict[int, type[XmodalError]] = {
    400: InvalidQueryError,
    409: ModelMismatchError,
    413: InvalidQueryError,
    415: MediaDecodeError,
    422: InvalidQueryError,
    503: StoreError,
}


def server_file(data: Path) -> Path:
    return Path(data).expanduser().resolve() / SERVER_FILE


# -- the server's side -----------------------------------------------------------------
def write_server_file(data: Path, host: str, port: int, token: str | None = None) -> dict[str, Any]:
    """Announce this process as the server of `data` (atomically: a reader sees the
    whole file or none; readable by its owner only, as it holds the local `token`)."""
    path = server_file(data)
    record: dict[str, Any] = {
        "host": host,
        "port": port,
        "pid": os.getpid(),
        "data": str(path.parent),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if token:
        record["token"] = token
    partial = path.with_name(f".{SERVER_FILE}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(json.dumps(record, indent=2) + "\n")
    os.replace(partial, path)
    return record


def remove_server_file(data: Path, record: dict[str, Any]) -> None:
    """Remove `<data>/server.json` if it is still the one this process wrote (a server
    started later on the same data directory may have replaced it)."""
    path = server_file(data)
    if read_server_file(path) == record:
        path.unlink(missing_ok=True)


def read_server_file(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def serve_announced(
    app: FastAPI, data: Path, host: str, port: int, on_started: Callable[[str], None]
) -> None:
    """Serve `app` until stopped (as uvicorn.run), announced in `<data>/server.json`
    while its port is open; `on_started(url)` is called once it is."""
    server = announced_server(app, data, host, port, on_started)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, e.g. the port is taken


def announced_server(
    app: FastAPI,
    data: Path,
    host: str,
    port: int,
    on_started: Callable[[str], None] | None = None,
) -> uvicorn.Server:
    """A uvicorn server that writes `<data>/server.json` once its port is open and
    removes it when it stops (set `should_exit` to stop one run in a thread)."""
    import uvicorn

    class AnnouncedServer(uvicorn.Server):
        record: dict[str, Any] | None = None

        def run(self, sockets: Any = None) -> None:
            try:
                super().run(sockets)
            finally:
                self.withdraw()

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            bound = _bound_port(self) or port
            access = getattr(app.state, "access", None)  # api/access.py's policy
            token = getattr(access, "local_token", None)
            try:
                self.record = write_server_file(data, host, bound, token)
            except OSError as error:  # a read-only data directory: serve unannounced
                log.warning("cannot announce the server in %s: %s", data, error)
            if on_started is not None:
                on_started(base_url(host, bound))

        async def shutdown(self, sockets: Any = None) -> None:
            # Here, not only after run(): uvicorn re-raises a SIGTERM once it has stopped.
            self.withdraw()
            await super().shutdown(sockets)

        def withdraw(self) -> None:
            if self.record is not None:
                remove_server_file(data, self.record)
                self.record = None

    # uvicorn's loggers go to the handler configure_logging (api/logs.py) put on the root
    # logger, in xmodal's format and at its level; requests are logged by the app's own
    # access log (api/observe.py), which knows the route.
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    return AnnouncedServer(config)


def _bound_port(server: uvicorn.Server) -> int | None:
    """The port actually listened on (asked for port 0: one the system picked)."""
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets or []:
            return int(sock.getsockname()[1])
    return None


# -- the searching side -----------------------------------------------------------------
def base_url(host: str, port: int) -> str:
    # A server listening on every interface is reached on the loopback one.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def is_loopback(url: str) -> bool:
    """Whether a server URL names this machine's loopback interface."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # os.kill(pid, 0) would end the process there; /health decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OSError, OverflowError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class ServerLink:
    """A running server of the data directory, ready to be asked."""

    url: str
    health: dict[str, Any]
    token: str | None = None  # the server's local token (server.json)

    # -- queries: each returns the response body (api/schemas.py SearchResponse) --------
    def search(self, body: dict[str, Any]) -> bytes:
        """POST /search: `text` or `item_id`, k, offset, filter, kinds, min_score, rerank,
        explain."""
        data = json.dumps(body).encode()
        return self._post("/search", data, "application/json")

    def explain(self, body: dict[str, Any]) -> bytes:
        """POST /explain: text, item_id, t, model (api/schemas ExplainResponse)."""
        return self._post("/explain", json.dumps(body).encode(), "application/json")

    def get(self, path: str) -> bytes:
        """GET a path relative to the server (e.g. an explanation's heatmap_url)."""
        request = urllib.request.Request(self.url + path, headers=self._auth(), method="GET")
        return self._send(request)

    def search_upload(
        self,
        route: str,
        file: Path,
        k: int,
        offset: int,
        filter: dict[str, Any] | None,
        kinds: Sequence[str] | None,
    ) -> bytes:
        """POST /search/image or /search/audio with the file as a multipart upload."""
        fields: list[tuple[str, str]] = [("k", str(k)), ("offset", str(offset))]
        if filter is not None:
            fields.append(("filter", json.dumps(filter)))
        fields.extend(("kinds", kind) for kind in kinds or [])
        body, content_type = _multipart(fields, file)
        return self._post(route, body, content_type)

    def _post(self, route: str, data: bytes, content_type: str) -> bytes:
        headers = {"content-type": content_type, **self._auth()}
        request = urllib.request.Request(
            self.url + route, data=data, headers=headers, method="POST"
        )
        return self._send(request)

    def _auth(self) -> dict[str, str]:
        return _auth_headers(self.token)

    def _send(self, request: urllib.request.Request) -> bytes:
        try:
            with _opener.open(request, timeout=QUERY_TIMEOUT) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            raise _error_from(error) from None
        except (OSError, ValueError) as error:  # refused, reset, timed out: gone meanwhile
            raise ServerGone(f"{self.url}: {error}") from error


class ServerGone(Exception):
    """The server stopped answering between its health check and the query."""


def find_server(
    data: Path, model: str | None = None, audio_model: str | None = None
) -> tuple[ServerLink | None, str]:
    """The running server of `data` that queries with the models asked for (None: the
    store's), or None with why not ("" when none was announced)."""
    path = server_file(data)
    record = read_server_file(path)
    if record is None:
        return None, ""
    try:
        pid, url, served = (
            int(record["pid"]),
            base_url(record["host"], int(record["port"])),
            record["data"],
        )
    except (KeyError, TypeError, ValueError):
        return None, f"ignored {path}: not a server file"
    token = record.get("token")
    token = token if isinstance(token, str) else None
    if not is_loopback(url):
        # The file may be another user's doing: queries (and uploaded files) never leave
        # this machine on its word.
        return None, f"ignored {path}: {url} is not a loopback address"
    if not pid_alive(pid):
        _remove_stale(path, record)
        return None, f"ignored the stale {path} (process {pid} is gone)"
    if served != str(path.parent):
        return None, f"the server at {url} serves {served}"
    health = _health(url, token)
    if health is None:
        return None, f"the server at {url} did not answer"
    if health.get("pid") != pid or health.get("data") != served:
        return None, f"another server answers at {url}"
    if model and model.strip() != health.get("model"):
        return None, f"the server at {url} uses the model {health.get('model')}"
    if audio_model:
        wanted = None if audio_model.strip().lower() == NO_AUDIO else audio_model.strip()
        if wanted != health.get("audio_model"):
            return None, f"the server at {url} uses the audio model {health.get('audio_model')}"
    return ServerLink(url, health, token), ""


def _auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def _health(url: str, token: str | None = None) -> dict[str, Any] | None:
    request = urllib.request.Request(url + "/health", headers=_auth_headers(token))
    try:
        with _opener.open(request, timeout=HEALTH_TIMEOUT) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("status") == "ok" else None


def _remove_stale(path: Path, record: dict[str, Any]) -> None:
    try:
        if read_server_file(path) == record:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only data directory: it is ignored all the same


def _error_from(error: urllib.error.HTTPError) -> XmodalError:
    """The server's {"detail": ...} as the error the query raises in-process."""
    try:
        detail: Any = json.loads(error.read()).get("detail")
    except (OSError, ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # request validation (422): [{"loc": [...], "msg": ...}]
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
            for d in detail
            if isinstance(d, dict)
        )
    message = str(detail) if detail else f"the server answered {error.code} {error.reason}"
    return _ERROR_BY_STATUS.get(error.code, XmodalError)(message)


def _multipart(fields: list[tuple[str, str]], file: Path) -> tuple[bytes, str]:
    boundary = f"xmodal-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    filename = file.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts.append(
        f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"content-type: {mime}\r\n\r\n".encode()
        + file.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"
