"""The URLs of an item's pictures and sound in answers, signed on a keyed server.

A browser cannot send `X-API-Key` from an `<img>`, `<video>` or `<audio>` element, so
a keyed server's answers carry URLs that are their own permission: `?exp=UNIX&sig=HEX`
appended, an HMAC-SHA256 of the path and query before `sig` under a secret kept in the
data directory (`media-url.key`, owner-only, made on first use). The access gate
(api/access.py KeyGate) lets a GET of exactly that URL through without a key until
`exp`; another item, another query, a later expiry or a changed signature gets 401.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from xmodal.search.errors import StoreError

SECRET_FILE = "media-url.key"
# The routes a signed URL may open: an item's thumbnail, original and heatmap.
SIGNABLE = re.compile(r"^/items/[^/]+/(?:thumbnail|media|explain\.png)$")
SIGNATURE = re.compile(r"^(?P<signed>(?:.*&)?exp=(?P<exp>[0-9]{1,12}))&sig=(?P<sig>[0-9a-f]{64})$")


class MediaLinks:
    """Builds the item URLs of answers, and checks the signed ones."""

    def __init__(
        self,
        data: Path,
        seconds: int,
        keyed: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`seconds`: how long a signed URL is valid (security.media_url_seconds);
        `keyed`: whether the server has keys now (then URLs are signed)."""
        self.path = Path(data) / SECRET_FILE
        self.seconds = seconds
        self.keyed = keyed
        self.clock = clock
        # Expiries rounded up to this step: a page asked twice in a few minutes gets the
        # same URLs, so the browser's cache serves its thumbnails.
        self.step = max(60, seconds // 4)
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    # -- building ---------------------------------------------------------------
    def thumbnail(self, item_id: str, seconds: float | None = None) -> str:
        """An item's thumbnail; `seconds`: a video's moment."""
        query = "" if seconds is None else f"t={seconds:.3f}"
        return self.url(f"/items/{quote(item_id, safe='')}/thumbnail", query)

    def media(self, item_id: str) -> str:
        """An item's original file."""
        return self.url(f"/items/{quote(item_id, safe='')}/media")

    def url(self, path: str, query: str = "") -> str:
        """`path?query` as given on an open server; signed on a keyed one."""
        if not self.keyed():
            return f"{path}?{query}" if query else path
        expires = math.ceil((self.clock() + self.seconds) / self.step) * self.step
        signed = f"{query}&exp={expires}" if query else f"exp={expires}"
        return f"{path}?{signed}&sig={self._sign(f'{path}?{signed}')}"

    def sign_relative(self, url: str) -> str:
        """A relative URL someone else built (`/items/ID/explain.png?q=...`), signed
        when the server is keyed."""
        path, _, query = url.partition("?")
        return self.url(path, query)

    # -- checking ---------------------------------------------------------------
    def allows(self, method: str, raw_path: str, query: str) -> bool | None:
        """Whether a request opens a signed URL: None when it carries no signature (or
        is not a GET of a signable path); False when the signature is wrong or expired."""
        if method not in ("GET", "HEAD") or not SIGNABLE.match(raw_path) or "sig=" not in query:
            return None
        found = SIGNATURE.match(query)
        if found is None:
            return False
        if int(found["exp"]) < self.clock():
            return False
        expected = self._sign(f"{raw_path}?{found['signed']}")
        return hmac.compare_digest(expected, found["sig"])

    def _sign(self, message: str) -> str:
        return hmac.new(self._key(), message.encode(), hashlib.sha256).hexdigest()

    def _key(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = read_or_make_secret(self.path)
            return self._secret


def read_or_make_secret(path: Path) -> bytes:
    """The server's signing secret (32 random bytes, hex in an owner-only file); made
    when missing, by one process when several race."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    secret = secrets.token_bytes(32)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret.hex())
        file.flush()
        os.fsync(file.fileno())
    return secret


def _read_secret(path: Path) -> bytes:
    text = path.read_text().strip()
    for _ in range(50):  # another process made it and is writing it now
        if text:
            break
        time.sleep(0.02)
        text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 32:
        # A file cut short (a crash while it was written): refuse, do not sign weakly.
        raise StoreError(f"{path}: a damaged signing secret; delete it to make a new one")
    return secret


# Unsigned URLs: an open server's answers, the command line's.
PLAIN_LINKS = MediaLinks(Path(), 3600, keyed=lambda: False)

__all__ = ["PLAIN_LINKS", "SECRET_FILE", "MediaLinks"]
