"""Downloads from fsspec URLs (s3://, gs://, az://, hf://, memory://...) and, for the
operator, local paths: read in a worker thread with the same cap, hash and sniffing as
http(s). The object's validators (ETag, else its modification time) come from its
metadata, so that an unchanged object is not read again."""

from __future__ import annotations

import importlib.util
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from xmodal.search.errors import MediaDecodeError
from xmodal.search.media import open_regular

from .fetched import FetchDone, FetchFailed, FetchRequest, SpoolFile, over_size_cap

CHUNK = 1024 * 1024  # bytes read at a time
_MTIME_KEYS = ("LastModified", "last_modified", "updated", "mtime", "created")


def missing_package(protocol: str) -> str | None:
    """What to install to read `protocol` URLs, when its fsspec package is missing; None
    when it is there. ValueError for a protocol fsspec does not know."""
    from fsspec.registry import known_implementations, registry

    if protocol in registry:
        return None  # already imported
    implementation = known_implementations.get(protocol)
    if implementation is None:
        raise ValueError(f"unknown protocol {protocol}://")
    module = implementation["class"].split(".", 1)[0]
    if importlib.util.find_spec(module) is not None:
        return None
    return f"reading {protocol}:// URLs needs the {module} package: pip install {module}"


def is_local(url: str) -> bool:
    scheme = urlsplit(url).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a Windows drive letter


def local_path(url: str) -> Path:
    if urlsplit(url).scheme == "file":
        return Path(url2pathname(urlsplit(url).path))
    return Path(url).expanduser()


def _validators(info: dict[str, Any]) -> tuple[str | None, str | None]:
    etag = info.get("ETag") or info.get("etag")
    mtime = next((info[key] for key in _MTIME_KEYS if info.get(key) is not None), None)
    if isinstance(mtime, int | float):
        mtime = datetime.fromtimestamp(mtime, UTC)
    if isinstance(mtime, datetime):
        mtime = mtime.isoformat()
    return (str(etag) if etag else None), (str(mtime) if mtime is not None else None)


def _unchanged(request: FetchRequest, etag: str | None, last_modified: str | None) -> bool:
    if request.etag and etag:
        return request.etag == etag
    return bool(request.last_modified) and request.last_modified == last_modified


def read_object(
    request: FetchRequest, max_bytes: int, spool_dir: Path, stop: threading.Event
) -> FetchDone:
    """The object `request.url` names, spooled; FetchFailed with the reason otherwise.
    Stops (and deletes its file) when `stop` is set: the Fetcher is closing."""
    try:
        if is_local(request.url):
            return _read_local(request, local_path(request.url), max_bytes, spool_dir, stop)
        return _read_fsspec(request, max_bytes, spool_dir, stop)
    except FileNotFoundError:
        raise FetchFailed(f"not found: {request.url}") from None
    except PermissionError:
        raise FetchFailed(f"permission denied: {request.url}") from None
    except ImportError as error:
        raise FetchFailed(f"cannot read {request.url}: {error}") from None
    except (OSError, MediaDecodeError, ValueError) as error:
        raise FetchFailed(f"cannot read {request.url}: {error}") from None


def _read_local(
    request: FetchRequest, path: Path, max_bytes: int, spool_dir: Path, stop: threading.Event
) -> FetchDone:
    with open_regular(path) as file:  # a FIFO would block, a device never end
        stat = os.fstat(file.fileno())
        etag, last_modified = None, datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
        if _unchanged(request, etag, last_modified):
            return FetchDone("not_modified", etag=etag, last_modified=last_modified)
        if stat.st_size > max_bytes:
            raise over_size_cap(max_bytes, stat.st_size)
        return _spool(file, max_bytes, spool_dir, stop, etag, last_modified, "the file", request)


def _read_fsspec(
    request: FetchRequest, max_bytes: int, spool_dir: Path, stop: threading.Event
) -> FetchDone:
    import fsspec

    protocol = urlsplit(request.url).scheme
    problem = missing_package(protocol)
    if problem:
        raise FetchFailed(problem)
    filesystem, path = fsspec.core.url_to_fs(request.url)
    info = filesystem.info(path)
    if info.get("type", "file") != "file":
        raise FetchFailed(f"not a file: {request.url} is a {info.get('type')}")
    etag, last_modified = _validators(info)
    if _unchanged(request, etag, last_modified):
        return FetchDone("not_modified", etag=etag, last_modified=last_modified)
    size = info.get("size")
    if isinstance(size, int) and size > max_bytes:
        raise over_size_cap(max_bytes, size)
    with filesystem.open(path, "rb") as file:
        return _spool(file, max_bytes, spool_dir, stop, etag, last_modified, "the object", request)


def _spool(
    file: Any,
    max_bytes: int,
    spool_dir: Path,
    stop: threading.Event,
    etag: str | None,
    last_modified: str | None,
    source: str,
    request: FetchRequest,
) -> FetchDone:
    spool = SpoolFile(spool_dir, max_bytes, request.media)
    try:
        # One byte past the cap at most: an object that grew since its size was read.
        while chunk := file.read(min(CHUNK, max_bytes + 1 - spool.bytes)):
            if stop.is_set():
                raise FetchFailed("cancelled: the fetcher was closed")
            spool.write(chunk)  # raises past the cap
        path, content_hash, kind = spool.finish(source)
    except BaseException:
        spool.discard()
        raise
    return FetchDone("fetched", path, content_hash, spool.bytes, kind, etag, last_modified)
