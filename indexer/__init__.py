"""Bulk ingestion: discover files, diff against the store, decode, encode, write."""

from .discover import Plan, plan_run
from .manifest import ManifestOptions, ManifestProblem, ManifestRow, parse_schema, read_manifest
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
    "ManifestOptions",
    "ManifestProblem",
    "ManifestRow",
    "NoProgress",
    "Plan",
    "Progress",
    "index_paths",
    "parse_schema",
    "plan_run",
    "read_manifest",
]
