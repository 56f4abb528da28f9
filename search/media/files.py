"""Opening media files safely: never blocking on a FIFO, never reading past a size cap.

An indexed folder may hold a named pipe, a device or a link to one (`/dev/zero`);
opening a FIFO for reading blocks until a writer comes, and reading a device may
never end. Files are opened non-blocking and checked to be regular files (on the
open descriptor, so a file swapped for a FIFO after it was found is caught too), and
whole-file reads stop one byte past their cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from xmodal.search.errors import MediaDecodeError

_NOT_REGULAR = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def file_type_name(mode: int) -> str:
    """What a file's `st_mode` says it is, in words ("a named pipe (FIFO)")."""
    return _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading (buffered), only when it is a regular file.

    Raises MediaDecodeError for anything else, and OSError when it cannot be opened."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise MediaDecodeError(f"not a regular file: {file_type_name(mode)}")
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)  # a regular file: reads as usual from here
        return open(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def over_cap(size: int, max_bytes: int, setting: str) -> MediaDecodeError:
    return MediaDecodeError(
        f"file is {size:,} bytes, over the limit of {max_bytes:,} (setting {setting})"
    )


def read_capped(path: Path, max_bytes: int, setting: str) -> bytes:
    """The whole file, when it is a regular file of at most `max_bytes` bytes; else
    MediaDecodeError naming the `setting` that sets the cap."""
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise over_cap(size, max_bytes, setting)
        data = file.read(max_bytes + 1)  # the file may have grown since
    if len(data) > max_bytes:
        raise over_cap(len(data), max_bytes, setting)
    return data
