"""What one space's served view holds in memory, and handing back what a read freed.

A server's own memory (heap) is what it cannot share or drop; memory-mapped files
(the saved index's vectors, IVF lists) sit in the OS page cache, shared and evictable.
`view_memory` splits a view's bytes the way the issue of a million vectors asks:
vectors kept in memory, vectors mapped, the ANN index in memory and mapped, the
per-row bookkeeping (codes, spans, row addresses, label maps) and the item rows.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from xmodal.search.ann.faiss_index import FaissIndex

if TYPE_CHECKING:
    from .view import SpaceView

# A sample of object arrays' strings sizes their average (ids are alike in length).
_SAMPLE = 1000


@dataclass(frozen=True)
class MemoryUse:
    """Bytes a served view holds, by part (heap unless the name says mapped)."""

    vectors_in_memory: int  # vectors of rows the saved file lacks (added since; exact spaces)
    vectors_mapped: int  # the saved vectors file, memory-mapped (page cache)
    index_in_memory: int  # the ANN index's own heap
    index_mapped: int  # the ANN index's memory-mapped part (IVF lists)
    rows: int  # per-row arrays: item codes, spans, addresses, slots, keys, label maps
    items: int  # item rows (Arrow) and ids (strings)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def view_memory(view: SpaceView) -> MemoryUse:
    snapshot = view.snapshot
    mapped = snapshot.mapped.vectors.nbytes if snapshot.mapped is not None else 0
    rows = sum(
        _array_bytes(getattr(snapshot, name))
        for name in (
            "item_codes",
            "starts",
            "ends",
            "addresses",
            "slot",
            "keys",
            "live",
            "servable",
            "_sealed_order",
            "_sealed_offsets",
            "item_addresses",
            "item_row_code",
            "code_row",
        )
    ) + _array_bytes(snapshot.segment_ids)
    if view.label_map is not None:
        label_map = view.label_map
        rows += sum(
            _array_bytes(a)
            for a in (label_map.label_of_row, label_map.row_of_label, label_map.alive)
        )
    items = snapshot.sealed_items.nbytes + snapshot.grown_items.nbytes
    items += _array_bytes(snapshot.lookup.ids)
    heap, on_disk = (0, 0) if view.ann is None else _index_bytes(view.ann.index)
    return MemoryUse(snapshot.ram.nbytes, mapped, heap, on_disk, rows, items)


def _array_bytes(values: np.ndarray | None) -> int:
    if values is None:
        return 0
    size = values.nbytes
    if values.dtype == object and len(values):
        sample = values[: min(len(values), _SAMPLE)]
        size += int(sum(sys.getsizeof(v) for v in sample) * len(values) / len(sample))
    return size


def _index_bytes(index: Any) -> tuple[int, int]:
    """(heap, mapped) bytes of a FAISS index: an IVF index loaded memory-mapped keeps its
    lists in the mapped file and only its coarse quantizer in the heap."""
    if not isinstance(index, FaissIndex) or index._index is None:
        return 0, 0
    faiss = index._faiss
    inner = index._index
    total = index.source.stat().st_size if index.source is not None else 0
    try:
        ivf = faiss.extract_index_ivf(inner)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        if type(lists).__name__ == "OnDiskInvertedLists":
            quantizer = ivf.nlist * ivf.d * 4
            return quantizer, max(0, total - quantizer)
    if total:
        return total, 0
    # Built in memory (never saved): measured once, since a served index never changes;
    # a metrics scrape must not serialize gigabytes each time.
    if index.heap_bytes is None:
        index.heap_bytes = int(faiss.serialize_index(inner).nbytes)
    return index.heap_bytes, 0


def release_memory() -> None:
    """Hand back to the OS what a whole read of a space freed but kept: Arrow's pool
    keeps freed blocks and glibc's malloc freed heap (at a million 512-d vectors read in
    batches, about 600 MB that no one uses again)."""
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
