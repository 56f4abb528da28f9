"""Content digests of weight files, for the identity a store records for its model."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

# (resolved path, size, mtime_ns) -> sha256 hex: rehashing hundreds of megabytes for
# every encoder instance in a process (engines, tests, an API reload) is wasted time.
_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, cached while its size and mtime stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _cache[key] = value
    return value
