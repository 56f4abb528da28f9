"""Bulk ingestion: discover files, diff against the store, decode, encode, write."""

from .discover import Plan, plan_run
from .pipeline import Indexer, IndexOptions, index_paths
from .progress import NoProgress, Progress
from .report import IndexReport

__all__ = [
    "IndexOptions",
    "IndexReport",
    "Indexer",
    "NoProgress",
    "Plan",
    "Progress",
    "index_paths",
    "plan_run",
]
