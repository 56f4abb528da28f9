"""Bulk ingestion: discover files, diff against the store, decode, encode, write.

Downloads (catalog URLs) are xmodal.indexer.fetch's Fetcher, imported from there: it
brings aiohttp, which the rest of the indexer does not need."""

from .discover import Plan, plan_run
from .distributed import RayIndexer, RayOptions, index_on_ray
from .fetched import Fetched, FetchRequest
from .manifest import ManifestOptions, ManifestProblem, ManifestRow, parse_schema, read_manifest
from .options import AudioIndexing, DecodeOptions, FetchSettings, IndexOptions
from .pipeline import Indexer, index_paths
from .progress import NoProgress, Progress
from .report import IndexReport

__all__ = [
    "AudioIndexing",
    "DecodeOptions",
    "FetchRequest",
    "FetchSettings",
    "Fetched",
    "IndexOptions",
    "IndexReport",
    "Indexer",
    "ManifestOptions",
    "ManifestProblem",
    "ManifestRow",
    "NoProgress",
    "Plan",
    "Progress",
    "RayIndexer",
    "RayOptions",
    "index_on_ray",
    "index_paths",
    "parse_schema",
    "plan_run",
    "read_manifest",
]
