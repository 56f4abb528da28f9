"""Where items' files are: the store's text for a path, and the jail of indexed roots.

The store's strings (Lance, Arrow) must be valid UTF-8, and a file name on a POSIX
system is any bytes: a share written by a Latin-1 system holds names that do not
decode. Python reads those as `str` with lone surrogates (surrogateescape). The
store keeps a path as it is when it is valid UTF-8, so ids of ordinary files never
change, and any other one as a `file://` URI whose undecodable bytes (and any `%`)
are percent-encoded: stored paths are absolute, so the two forms never meet, and
`path_of(location_of(p)) == p` for every path.

Every file the server reads for an item (its original, a thumbnail's source, the
picture a reranker looks at) goes through `original_path`: its real location, links
resolved, must lie inside an indexed root and be a regular file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from xmodal.search.errors import OriginalMissing, UnknownItemError

FILE_URI = "file://"


def location_of(path: str | Path) -> str:
    """The store's text for a path: the path itself when it is valid UTF-8, else a
    `file://` URI with its bytes percent-encoded (lossless; see `path_of`)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return FILE_URI + quote(os.fsencode(text), safe="/")
    return text


def path_of(location: str) -> Path:
    """The path a stored location names (the inverse of `location_of`)."""
    if location.startswith(FILE_URI):
        return Path(os.fsdecode(unquote_to_bytes(location[len(FILE_URI) :])))
    return Path(location)


def display_name(location: str) -> str:
    """A stored location as a person reads it: undecodable bytes shown as U+FFFD."""
    return os.fsencode(path_of(location)).decode("utf-8", errors="replace")


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether `path` is one of `roots` or lies under one (both taken as they are)."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def leaves_roots(location: str, roots: Iterable[str]) -> bool:
    """Whether a stored location leads out of the indexed roots (a link to elsewhere, a
    FIFO, a device): an item written by an older version that indexed it. A missing
    file does not leave them."""
    try:
        original_path("", location, roots)
    except UnknownItemError:
        return True
    except OriginalMissing:
        return False
    return False


def original_path(item_id: str, location: str, roots: Iterable[str]) -> Path:
    """The real file behind an item's stored location, for reading or serving.

    Links are resolved and the result must lie inside one of the indexed `roots` (also
    resolved: a root that is itself a link still holds its files) and be a regular
    file. Raises UnknownItemError (404, the same as an unknown id: nothing is said
    about what lies outside) when it does not, and OriginalMissing when the file is gone.
    """
    try:
        real = path_of(location).resolve(strict=True)
    except FileNotFoundError as error:
        raise OriginalMissing(f"the original of item {item_id} is missing") from error
    except (OSError, RuntimeError) as error:  # a link loop, a folder we may not enter
        raise UnknownItemError(item_id) from error
    real_roots = []
    for root in roots:
        try:
            real_roots.append(path_of(root).resolve(strict=True))
        except (OSError, RuntimeError):
            continue  # a root that went away holds nothing servable
    if not inside(real, real_roots):
        raise UnknownItemError(item_id)
    try:
        mode = os.stat(real).st_mode
    except OSError as error:
        raise OriginalMissing(f"the original of item {item_id} is missing") from error
    if not stat.S_ISREG(mode):  # a FIFO, a device, a socket, a folder
        raise UnknownItemError(item_id)
    return real
