"""Bulk ingestion: discover files, diff against the store, decode, encode, write."""

from .discover import Plan, plan_run
from .options import AudioIndexing, DecodeOptions, IndexOptions
from .pipeline import Indexer, index_paths
from .progress import NoProgress, Progress
from .report import IndexReport

__all__ = [
    "AudioIndexing",
    "DecodeOptions",
    "IndexOptions",
    "IndexReport",
    "Indexer",
    "NoProgress",
    "Plan",
    "Progress",
    "index_paths",
    "plan_run",
]
