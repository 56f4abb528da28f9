"""What changed in one LanceDB table between two of its versions, from Lance's fragments.

A Lance version lists its fragments; a commit never rewrites one in place. An append
adds fragments, a delete (or the delete half of an upsert) gives a fragment a new
deletion file, and a compaction or a delete of all of a fragment's rows drops it. So
the rows a reader of the old version lacks are those of the new fragments, and the
rows it must forget are those of dropped fragments plus the newly deleted rows of
fragments present in both: found by reading row addresses only (no column data) of
the fragments whose deletion count moved. A reader holding a million rows applies a
commit of a thousand by reading about a thousand rows.

Row addresses (`_rowaddr`) are the fragment id in the high 32 bits and the row's
offset in that fragment in the low ones: stable for as long as the row exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

ROW_ADDRESS = "_rowaddr"


def fragment_deletions(dataset: Any) -> dict[int, int]:
    """Fragment id -> deleted rows, for every fragment of a dataset version."""
    return {f.fragment_id: int(f.metadata.num_deletions) for f in dataset.get_fragments()}


@dataclass(frozen=True)
class TableChange:
    """The difference from a version a reader holds to a newer one."""

    gone_fragments: np.ndarray  # int64 ids of fragments the new version dropped
    changed_fragments: np.ndarray  # int64 ids of fragments with new deletions
    surviving: np.ndarray  # uint64 addresses of the live rows of the changed fragments
    added: pa.Table  # rows of the new fragments, with their _rowaddr
    fragments: dict[int, int]  # the new version's fragment_deletions

    @property
    def empty(self) -> bool:
        return not (len(self.gone_fragments) or len(self.changed_fragments) or self.added.num_rows)

    def deleted(self, addresses: np.ndarray) -> np.ndarray:
        """Which of a reader's row addresses (uint64) the new version no longer has."""
        if not (len(self.gone_fragments) or len(self.changed_fragments)):
            return np.zeros(len(addresses), bool)
        fragment = (addresses >> np.uint64(32)).astype(np.int64)
        gone = np.isin(fragment, self.gone_fragments)
        touched = np.flatnonzero(np.isin(fragment, self.changed_fragments))
        if len(touched):
            gone[touched] |= ~np.isin(addresses[touched], self.surviving)
        return gone


def table_change(held: dict[int, int], dataset: Any, columns: Sequence[str]) -> TableChange:
    """The change from a reader's fragments (`held`: fragment_deletions of its version)
    to `dataset` (a pinned newer version); `columns` of the new rows are read."""
    fragments = {f.fragment_id: f for f in dataset.get_fragments()}
    now = {fid: int(f.metadata.num_deletions) for fid, f in fragments.items()}
    gone = np.array(sorted(set(held) - set(now)), np.int64)
    changed = sorted(
        fid for fid, deletions in now.items() if fid in held and deletions != held[fid]
    )
    surviving = [
        fragments[fid].to_table(columns=[], with_row_address=True).column(ROW_ADDRESS)
        for fid in changed
    ]
    new = [fid for fid in sorted(now) if fid not in held]
    parts = [fragments[fid].to_table(columns=list(columns), with_row_address=True) for fid in new]
    added = pa.concat_tables(parts) if parts else empty_rows(dataset, columns)
    return TableChange(
        gone,
        np.array(changed, np.int64),
        np.concatenate([c.to_numpy() for c in surviving]).astype(np.uint64)
        if surviving
        else np.zeros(0, np.uint64),
        added,
        now,
    )


def empty_rows(dataset: Any, columns: Sequence[str]) -> pa.Table:
    schema = dataset.schema
    fields = [schema.field(name) for name in columns] + [pa.field(ROW_ADDRESS, pa.uint64())]
    return pa.schema(fields).empty_table()


def read_rows(dataset: Any, columns: Sequence[str], batch_rows: int = 65_536) -> Any:
    """Every live row of a dataset version, `columns` and _rowaddr, in record batches."""
    return dataset.to_batches(columns=list(columns), with_row_address=True, batch_size=batch_rows)
