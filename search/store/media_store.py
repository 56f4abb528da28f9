"""The media of catalog items, kept in the data directory by content hash.

A catalog item's picture comes from a URL, an upload or a bucket: nothing on the
server's disk stays where it was, yet thumbnails, the original, reranking and
explanations need its bytes. They are kept once per distinct content, under
`<data>/media/ab/abcdef...` (the sha256 the item row holds), so two SKUs with one
picture share a file, and a file is removed when no item holds its hash any more.
The path is derived from a hash the store wrote, never from caller input, so no
name can lead out of the folder.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from xmodal.search.errors import OriginalMissing

_SHA256 = re.compile(r"[0-9a-f]{64}")


class MediaStore:
    def __init__(self, root: Path):
        self.root = root

    def path_for(self, content_hash: str) -> Path:
        if not _SHA256.fullmatch(content_hash or ""):
            raise OriginalMissing("the item's media is not kept (no content hash)")
        return self.root / content_hash[:2] / content_hash

    def has(self, content_hash: str) -> bool:
        try:
            return self.path_for(content_hash).is_file()
        except OriginalMissing:
            return False

    def keep(self, source: Path, content_hash: str) -> Path:
        """Move (or, across filesystems, copy) a spooled file in as `content_hash`; the
        file already kept wins, and the source is removed either way."""
        target = self.path_for(content_hash)
        if target.is_file():
            source.unlink(missing_ok=True)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.move(str(source), partial)
        os.replace(partial, target)  # atomic: a reader sees the whole file or none
        return target

    def existing(self, content_hash: str) -> Path:
        """The kept file of a hash; OriginalMissing when it is not there."""
        path = self.path_for(content_hash)
        if not path.is_file():
            raise OriginalMissing("the item's media is missing from the media store")
        return path

    def discard(self, content_hashes: set[str]) -> int:
        """Remove the files of these hashes (the caller checked no item holds them)."""
        removed = 0
        for content_hash in content_hashes:
            try:
                self.path_for(content_hash).unlink()
                removed += 1
            except (FileNotFoundError, OriginalMissing):
                continue
        return removed
