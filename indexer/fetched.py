"""What a download is asked for and what it gives back, and the spool file a body is
streamed into (hashed, capped and sniffed on the way), shared by every kind of source."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import filetype

from xmodal.search.media import MediaKind, sniff_kind
from xmodal.search.media.kinds import SNIFF_BYTES

Outcome = Literal["fetched", "not_modified", "failed"]
SIZE_SETTING = "fetch.max_bytes"


@dataclass(frozen=True)
class FetchRequest:
    url: str  # http(s), an fsspec URL (s3://...), or (trusted callers) a local path
    etag: str | None = None  # validators from an earlier fetch: a conditional request
    last_modified: str | None = None
    key: Any = None  # opaque, handed back on the result (the caller's row)
    # False for a document that is not media (a manifest): any body is taken, kind None.
    media: bool = True


@dataclass
class Fetched:
    request: FetchRequest
    outcome: Outcome
    path: Path | None = None  # the body, in the spool dir: the caller moves or deletes it
    content_hash: str = ""  # sha256 hex of the body
    bytes: int = 0
    kind: MediaKind | None = None  # sniffed from the first bytes, never from URL or headers
    etag: str | None = None
    last_modified: str | None = None
    error: str = ""  # why it failed, one line
    attempts: int = 0
    seconds: float = 0.0  # from the start of the request, waits for a slot included

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


@dataclass
class FetchDone:
    """What one source found, before the request and the attempts are added."""

    outcome: Outcome
    path: Path | None = None
    content_hash: str = ""
    bytes: int = 0
    kind: MediaKind | None = None
    etag: str | None = None
    last_modified: str | None = None

    def result(self, request: FetchRequest, attempts: int) -> Fetched:
        unchanged = self.outcome == "not_modified"  # a 304 need not repeat the validators
        return Fetched(
            request,
            self.outcome,
            self.path,
            self.content_hash,
            self.bytes,
            self.kind,
            self.etag or (request.etag if unchanged else None),
            self.last_modified or (request.last_modified if unchanged else None),
            attempts=attempts,
        )


class FetchFailed(Exception):
    """A download that failed; `retryable` for what another attempt may fix (timeouts,
    connection errors, 429, 5xx), `retry_after` seconds when the server said."""

    def __init__(self, reason: str, retryable: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after


def over_size_cap(max_bytes: int, declared: int | None = None) -> FetchFailed:
    said = f"the source declares {declared:,} bytes, " if declared is not None else ""
    return FetchFailed(f"{said}over the size cap of {max_bytes:,} bytes (setting {SIZE_SETTING})")


def describe_bytes(header: bytes) -> str:
    """What the first bytes of a non-media body are, in words ("text/html")."""
    guess = filetype.guess(header)
    if guess is not None:
        return guess.mime
    text = header.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "text/html"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "XML (an SVG is not indexed)" if b"<svg" in text else "XML"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if not header:
        return "an empty body"
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return "data of no known media type"
    return "text"


class SpoolFile:
    """A body streamed to a new file in `spool_dir`: sha256 and size counted as it goes,
    refused past `max_bytes`, its kind sniffed from the first bytes. `finish()` keeps the
    file; `discard()` (after any failure) deletes it."""

    def __init__(self, spool_dir: Path, max_bytes: int, media: bool = True):
        self._media = media
        self._max_bytes = max_bytes
        self._name = uuid.uuid4().hex
        self._path = spool_dir / f"{self._name}.part"
        self._file = open(self._path, "xb")  # noqa: SIM115 - closed by finish() or discard()
        self._digest = hashlib.sha256()
        self._header = b""
        self.bytes = 0

    def write(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if self.bytes > self._max_bytes:
            raise over_size_cap(self._max_bytes)
        if len(self._header) < SNIFF_BYTES:
            self._header += chunk[: SNIFF_BYTES - len(self._header)]
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self, source: str) -> tuple[Path, str, MediaKind | None]:
        """The file (named by its type's extension), its sha256 and its kind; FetchFailed
        when it is not media (`source` says who sent it: "the server", "the object"),
        unless it was not asked to be."""
        self._file.close()
        kind = sniff_kind(self._header)
        if kind is None and self._media:
            raise FetchFailed(f"not a media file: {source} sent {describe_bytes(self._header)}")
        guess = filetype.guess(self._header)
        extension = guess.extension if guess else kind.value if kind else "body"
        final = self._path.with_name(f"{self._name}.{extension}")
        os.replace(self._path, final)
        self._path = final
        return final, self._digest.hexdigest(), kind

    def discard(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)
