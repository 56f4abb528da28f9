"""Find media files under the given paths and diff them against the store.

An indexed root is a jail: a link whose target lies outside its root, a broken
link, and anything that is not a regular file (a named pipe, a device, a socket,
a link to one) are skipped and recorded with the reason, never read. Links that
stay inside their root are indexed under their own name. Hidden entries (a name
starting with ".") are not looked at.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmodal.search.errors import SourceError
from xmodal.search.media import MediaKind, file_type_name, media_kind
from xmodal.search.store import INDEXED, Store, catalog_item_id, item_id_for, location_of

DIFF_COLUMNS = ["id", "uri", "root", "bytes", "mtime_ns", "content_hash", "status"]


@dataclass
class Candidate:
    path: Path
    root: str
    kind: MediaKind
    bytes: int
    mtime_ns: int
    previous_hash: str = ""  # content hash stored by an earlier run, if any
    previously_indexed: bool = False
    existed: bool = False  # the store has a row for it (indexed or failed)
    # Catalog items (indexer/catalog.py): the file is their kept media, and these say
    # where it came from and what the caller called it.
    source: str | None = None  # its URL (or "upload"), stored as the item's uri
    external_id: str | None = None  # the caller's id; the item id derives from it
    metadata: dict[str, Any] | None = None  # wins over the run's metadata mapping
    source_etag: str = ""
    source_modified: str = ""
    # What the run did with it: "indexed", "updated", "unchanged" or "failed" (error).
    outcome: str = ""
    error: str = ""

    @property
    def uri(self) -> str:
        """Its location as the store keeps it (see xmodal.search.store.location_of),
        or a catalog item's source."""
        return self.source if self.source is not None else location_of(self.path)

    @property
    def item_id(self) -> str:
        if self.external_id is not None:
            return catalog_item_id(self.external_id)
        return item_id_for(self.uri)


@dataclass
class Plan:
    """What a run has to do: index these, remove those; the rest is unchanged."""

    roots: list[str]
    to_index: list[Candidate] = field(default_factory=list)
    unchanged_ids: list[str] = field(default_factory=list)
    removed_ids: list[str] = field(default_factory=list)
    ignored: int = 0  # files that are not media
    # Media files left alone, unread: (location, why), e.g. a link out of its root.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def walk_files(root: Path) -> Iterator[Path]:
    """Files under root, recursively, in a stable order; hidden entries skipped."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory, name)


def jail_check(path: Path, root: Path) -> tuple[os.stat_result | None, str]:
    """The file's status when it may be read as part of `root` (resolved), else why not.

    Returns (None, "") when it vanished while the folder was walked."""
    try:
        status = os.lstat(path)
    except OSError:
        return None, ""
    if stat.S_ISLNK(status.st_mode):
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None, "broken link (or a loop of links)"
        if not (target == root or target.is_relative_to(root)):
            return None, "link to a file outside the indexed folder"
        try:
            status = os.stat(target)
        except OSError:
            return None, ""
    if not stat.S_ISREG(status.st_mode):
        return None, f"not a regular file: {file_type_name(status.st_mode)}"
    return status, ""


def resolve_roots(paths: Iterable[str | Path]) -> list[Path]:
    roots = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise SourceError(f"no such file or folder: {raw}")
        roots.append(path.resolve())
    if not roots:
        raise SourceError("no paths to index")
    return roots


def plan_run(
    paths: Iterable[str | Path],
    store: Store,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> Plan:
    """What to index, leave and remove; `on_candidate` hears of each file to index as it
    is found (the indexer starts loading the image model at the first picture)."""
    roots = resolve_roots(paths)
    plan = Plan(roots=[location_of(r) for r in roots])
    seen: set[str] = set()
    # Diff by location against every item, whichever root it was first indexed under,
    # so indexing one file of an indexed folder does not embed it again.
    by_uri = {row["uri"]: row for row in store.items_table(DIFF_COLUMNS).to_pylist()}
    for root, root_location in zip(roots, plan.roots, strict=True):
        known = {uri: row for uri, row in by_uri.items() if row["root"] == root_location}
        files = walk_files(root) if root.is_dir() else [root]
        found: set[str] = set()
        for path in files:
            uri = location_of(path)
            if uri in seen:  # overlapping roots: the first one owns the file
                continue
            # Checked before the kind: a file without a known extension is sniffed,
            # and reading a FIFO's first bytes would wait for a writer.
            status, refused = jail_check(path, root)
            if status is None:
                if refused:
                    seen.add(uri)
                    plan.skipped.append((uri, refused))
                continue  # vanished while walking, or refused: not read
            kind = media_kind(path)
            if kind is None:
                plan.ignored += 1
                continue
            seen.add(uri)
            found.add(uri)
            row = by_uri.get(uri)
            indexed = row is not None and row["status"] == INDEXED
            if (
                row is not None
                and indexed
                and row["bytes"] == status.st_size
                and row["mtime_ns"] == status.st_mtime_ns
            ):
                plan.unchanged_ids.append(row["id"])
                continue
            plan.to_index.append(
                Candidate(
                    path=path,
                    root=row["root"] if row else root_location,  # the first root keeps its items
                    kind=kind,
                    bytes=status.st_size,
                    mtime_ns=status.st_mtime_ns,
                    previous_hash=(row["content_hash"] or "") if row else "",
                    previously_indexed=indexed,
                    existed=row is not None,
                )
            )
            if on_candidate is not None:
                on_candidate(plan.to_index[-1])
        plan.removed_ids.extend(row["id"] for uri, row in known.items() if uri not in found)
    return plan
