"""Find media files under the given paths and diff them against the store."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xmodal.search.errors import SourceError
from xmodal.search.media import MediaKind, media_kind
from xmodal.search.store import INDEXED, Store

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

    @property
    def uri(self) -> str:
        return str(self.path)


@dataclass
class Plan:
    """What a run has to do: index these, remove those; the rest is unchanged."""

    roots: list[str]
    to_index: list[Candidate] = field(default_factory=list)
    unchanged_ids: list[str] = field(default_factory=list)
    removed_ids: list[str] = field(default_factory=list)
    ignored: int = 0  # files that are not media


def walk_files(root: Path) -> Iterator[Path]:
    """Files under root, recursively, in a stable order; hidden entries skipped."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory, name)


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
    plan = Plan(roots=[str(r) for r in roots])
    seen: set[str] = set()
    # Diff by location against every item, whichever root it was first indexed under,
    # so indexing one file of an indexed folder does not embed it again.
    by_uri = {row["uri"]: row for row in store.items_table(DIFF_COLUMNS).to_pylist()}
    for root in roots:
        known = {uri: row for uri, row in by_uri.items() if row["root"] == str(root)}
        files = [root] if root.is_file() else walk_files(root)
        found: set[str] = set()
        for path in files:
            uri = str(path)
            if uri in seen:  # overlapping roots: the first one owns the file
                continue
            kind = media_kind(path)
            if kind is None:
                plan.ignored += 1
                continue
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished while walking
            seen.add(uri)
            found.add(uri)
            row = by_uri.get(uri)
            indexed = row is not None and row["status"] == INDEXED
            if (
                row is not None
                and indexed
                and row["bytes"] == stat.st_size
                and row["mtime_ns"] == stat.st_mtime_ns
            ):
                plan.unchanged_ids.append(row["id"])
                continue
            plan.to_index.append(
                Candidate(
                    path=path,
                    root=row["root"] if row else str(root),  # the first root keeps its items
                    kind=kind,
                    bytes=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                    previous_hash=(row["content_hash"] or "") if row else "",
                    previously_indexed=indexed,
                    existed=row is not None,
                )
            )
            if on_candidate is not None:
                on_candidate(plan.to_index[-1])
        plan.removed_ids.extend(row["id"] for uri, row in known.items() if uri not in found)
    return plan
