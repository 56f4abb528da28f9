"""API keys: who may do what, kept hashed in `<data>/keys.json`.

A key has one scope: `admin` (everything: keys, maintenance, full server paths),
`write` (catalog changes, and search), `search`, or `publishable` (search only, from
the web origins it lists and at its rate: a key safe to put in a web page). The secret
is shown once, when the key is created: `xk_<id>_<random>` (`pk_...` for publishable
keys), 256 random bits. The file keeps its SHA-256 only, which is enough for a secret
that cannot be guessed (no salt or slow hash needed as for a password), and compared in
constant time.

The file is rewritten whole (a temporary file, fsynced, then renamed), readable by its
owner only; a running server re-reads it when it changes, so that a revoked key is
refused by the next request. Once the file exists the server is in keyed mode: every
route but a minimal /health needs a key, even when all the keys are revoked.

Standard library only: the command line imports it without the web stack.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from xmodal.search.errors import InvalidQueryError, StoreError, XmodalError

KEY_FILE = "keys.json"
FILE_FORMAT = 1
DEFAULT_PUBLISHABLE_RATE = "10/s"
_RANDOM_BYTES = 32  # 256 bits: the secret part of a key
_ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")


class KeyFileError(StoreError):
    """The key file cannot be read or written."""


class KeySpecError(InvalidQueryError):
    """A key that cannot be made as asked: a bad origin, rate or name."""


class UnknownKeyError(XmodalError):
    """No key with that id."""


class NotAuthenticated(XmodalError):
    """A keyed server asked without a key, or with one it does not know (or revoked)."""

    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class AccessRefused(XmodalError):
    """A key that may not do this: its scope, or a publishable key's origin."""


class RateLimited(XmodalError):
    """Too many requests for a key or a client address; try again after `retry_after`."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class Scope(enum.StrEnum):
    """What a key may do; each scope includes those below it (publishable: search only,
    and only from its origins)."""

    ADMIN = "admin"
    WRITE = "write"
    SEARCH = "search"
    PUBLISHABLE = "publishable"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Scope) -> bool:
        """Whether a key of this scope may use a route that needs `needed`."""
        return self.rank >= needed.rank

    @property
    def prefix(self) -> str:
        return "pk" if self is Scope.PUBLISHABLE else "xk"


_RANKS = {Scope.ADMIN: 3, Scope.WRITE: 2, Scope.SEARCH: 1, Scope.PUBLISHABLE: 1}
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0}
_PERIODS["hour"] = 3600.0


@dataclass(frozen=True)
class Rate:
    """At most `count` requests per `seconds`, in bursts of up to `count` (a token bucket
    of `count` tokens refilled at count/seconds a second)."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`N/s`, `N/min` or `N/h`, e.g. "10/s", "600/min"."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*([a-z]+)\s*", text.lower())
        if not match or match.group(2) not in _PERIODS or int(match.group(1)) < 1:
            raise KeySpecError(f"rate {text!r}: write N/s, N/min or N/h with N >= 1 (e.g. 10/s)")
        return cls(int(match.group(1)), _PERIODS[match.group(2)])

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.seconds, f"{self.seconds:g}s")
        return f"{self.count}/{unit}"


def normalise_origin(text: str) -> str:
    """A web origin as browsers send it: `scheme://host[:port]`, lower case, no path."""
    parts = urllib.parse.urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise KeySpecError(
            f"origin {text!r}: write scheme://host[:port] with no path, e.g. https://shop.example"
        )
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}{'' if port in (None, default_port) else f':{port}'}"


@dataclass(frozen=True)
class ApiKey:
    """A key as the key file holds it: never its secret, only the secret's hash."""

    id: str  # public, part of the secret: names the key in `xmodal keys` and logs
    name: str
    scope: Scope
    secret_sha256: str
    created_at: str
    origins: tuple[str, ...] = ()  # publishable keys: the web origins that may use it
    rate: str | None = None  # N/s, N/min or N/h; None: not limited by key
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def parsed_rate(self) -> Rate | None:
        return None if self.rate is None else Rate.parse(self.rate)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["scope"] = self.scope.value
        record["origins"] = list(self.origins)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ApiKey:
        return cls(
            id=str(record["id"]),
            name=str(record.get("name", "")),
            scope=Scope(record["scope"]),
            secret_sha256=str(record["secret_sha256"]),
            created_at=str(record.get("created_at", "")),
            origins=tuple(str(o) for o in record.get("origins") or ()),
            rate=None if record.get("rate") is None else str(record["rate"]),
            revoked_at=None if record.get("revoked_at") is None else str(record["revoked_at"]),
        )


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


_NO_KEY_DIGEST = digest("xk_000000000000_" + "0" * 43)


def key_id_of(secret: str) -> str | None:
    """The id a secret names (`xk_<id>_...`), or None when it is not shaped as a key."""
    prefix, _, rest = secret.partition("_")
    key_id, _, random_part = rest.partition("_")
    if prefix not in ("xk", "pk") or not _ID_PATTERN.match(key_id) or not random_part:
        return None
    return key_id


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple[int, ...] | None  # the file's (inode, size, mtime, ctime); None: no file
    keys: tuple[ApiKey, ...]
    by_id: dict[str, ApiKey]
    origins: frozenset[str]  # listed by active publishable keys


_EMPTY = _Snapshot(None, (), {}, frozenset())


class KeyRing:
    """The keys of a data directory, re-read whenever the file changes (a `stat` per
    look-up: microseconds)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._snapshot = _EMPTY
        self._seen_file = False

    @classmethod
    def of_data(cls, data: Path) -> KeyRing:
        return cls(Path(data).expanduser() / KEY_FILE)

    # -- reading -------------------------------------------------------------------------
    def _current(self) -> _Snapshot:
        stamp = _stamp(self.path)
        snapshot = self._snapshot
        if stamp == snapshot.stamp:
            return snapshot
        with self._lock:
            if stamp != self._snapshot.stamp:
                self._snapshot = self._read(stamp)
            return self._snapshot

    def _read(self, stamp: tuple[int, ...] | None) -> _Snapshot:
        if stamp is None:
            return _Snapshot(None, (), {}, frozenset())
        self._seen_file = True
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise KeyFileError(f"cannot read the key file {self.path}: {error}") from error
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
                raise ValueError(f"not a key file of format {FILE_FORMAT}")
            keys = tuple(ApiKey.from_json(record) for record in document["keys"])
        except (ValueError, KeyError, TypeError) as error:
            raise KeyFileError(
                f"the key file {self.path} is damaged ({error}); restore it from a backup, or "
                "remove it and create the keys again"
            ) from error
        origins = frozenset(
            origin
            for key in keys
            if key.active and key.scope is Scope.PUBLISHABLE
            for origin in key.origins
        )
        return _Snapshot(stamp, keys, {key.id: key for key in keys}, origins)

    @property
    def keyed(self) -> bool:
        """Whether keys are required: the key file exists (even with every key revoked),
        or existed once while this ring watched it (a key file removed under a running
        server does not open it to everyone)."""
        return self._current().stamp is not None or self._seen_file

    def all_keys(self) -> tuple[ApiKey, ...]:
        return self._current().keys

    def find(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, or None; compared in constant time."""
        snapshot = self._current()
        key_id = key_id_of(secret)
        key = snapshot.by_id.get(key_id) if key_id else None
        expected = key.secret_sha256 if key is not None else _NO_KEY_DIGEST
        matches = hmac.compare_digest(digest(secret), expected)
        if key is None or not matches or not key.active:
            return None
        if not secret.startswith(key.scope.prefix + "_"):
            return None
        return key

    def origin_listed(self, origin: str) -> bool:
        """Whether an active publishable key lists this web origin."""
        return origin.lower() in self._current().origins

    # -- writing -------------------------------------------------------------------------
    def create(
        self,
        scope: Scope,
        name: str = "",
        origins: Sequence[str] = (),
        rate: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once: the file keeps its hash only)."""
        listed = tuple(dict.fromkeys(normalise_origin(origin) for origin in origins))
        if scope is Scope.PUBLISHABLE:
            if not listed:
                raise KeySpecError(
                    "a publishable key needs at least one --origin, the web page's origin "
                    "(e.g. https://shop.example)"
                )
            rate = rate or DEFAULT_PUBLISHABLE_RATE
        elif listed:
            raise KeySpecError(
                "only publishable keys are limited to origins; a secret key must never be "
                "put in a web page (use --scope publishable)"
            )
        if rate is not None:
            rate = str(Rate.parse(rate))
        if len(name) > 200:
            raise KeySpecError("a key's name takes at most 200 characters")
        with self._writing() as keys:
            key_id = secrets.token_hex(6)
            while any(key.id == key_id for key in keys):
                key_id = secrets.token_hex(6)
            secret = f"{scope.prefix}_{key_id}_{secrets.token_urlsafe(_RANDOM_BYTES)}"
            key = ApiKey(
                id=key_id,
                name=name,
                scope=scope,
                secret_sha256=digest(secret),
                created_at=_now(),
                origins=listed,
                rate=rate,
            )
            keys.append(key)
        return key, secret

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept in the file, listed as revoked); refused from the next
        request on."""
        with self._writing() as keys:
            for position, key in enumerate(keys):
                if key.id == key_id:
                    if key.active:
                        key = replace(key, revoked_at=_now())
                        keys[position] = key
                    return key
        raise UnknownKeyError(f"no key {key_id!r} (`xmodal keys list` shows the keys)")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[list[ApiKey]]:
        """The keys as a list to change; written back atomically, one writer at a time."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(self.path.with_name(KEY_FILE + ".lock")):
                stamp = _stamp(self.path)
                keys = list(self._read(stamp).keys)
                yield keys
                _write_private(
                    self.path, {"format": FILE_FORMAT, "keys": [k.to_json() for k in keys]}
                )
        except OSError as error:
            raise KeyFileError(f"cannot write the key file {self.path}: {error}") from error


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _stamp(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise KeyFileError(f"cannot read the key file {path}: {error}") from error
    # A rewrite is a new file (rename): a new inode, and its times and size.
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _write_private(path: Path, document: dict[str, Any]) -> None:
    """Write `document` as JSON to `path` atomically, readable by its owner only."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(partial, flags, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX); elsewhere, none."""
    try:
        import fcntl
    except ImportError:  # Windows: two `xmodal keys` at the same instant may race
        yield
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def retry_after_seconds(wait: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


__all__ = [
    "KEY_FILE",
    "AccessRefused",
    "ApiKey",
    "KeyFileError",
    "KeyRing",
    "KeySpecError",
    "NotAuthenticated",
    "Rate",
    "RateLimited",
    "Scope",
    "UnknownKeyError",
    "normalise_origin",
]
