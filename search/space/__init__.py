"""One embedding space: its encoder, its vectors kept in step with the store, its
index, the ranking of its items and the calibration of its scores (space.py lists
which file holds which part)."""

from .calibration import Calibration, null_queries
from .index import IndexState, RefreshReport, SpaceIndex, saved_index_state
from .moments import best_moments, segment_hits
from .ranking import RankedItem, rank_items
from .snapshot import Snapshot
from .space import Space
from .view import RowFilter, SpaceView

__all__ = [
    "Calibration",
    "IndexState",
    "RankedItem",
    "RefreshReport",
    "RowFilter",
    "Snapshot",
    "Space",
    "SpaceIndex",
    "SpaceView",
    "best_moments",
    "null_queries",
    "rank_items",
    "saved_index_state",
    "segment_hits",
]
