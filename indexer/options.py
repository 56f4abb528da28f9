"""The indexer's settings groups: how a run batches its work, what it does with sound,
and how catalog sources are downloaded.

Declared once, here; the application's settings nest them (`[indexing]` and `[audio]`
in xmodal.toml, `XMODAL_INDEXING__BATCH_SIZE=64`), and the indexer takes them as they
are. Images' and videos' decoding settings are the search layer's groups (ImageLimits,
VideoSettings in xmodal.search.media), since decoding lives there.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import Field, field_validator

from xmodal.search.media import ImageLimits, VideoSettings
from xmodal.search.settings import SettingsGroup

MIB = 1024 * 1024
GIB = 1024 * MIB


class IndexOptions(SettingsGroup):
    """How a run moves files through decode, encode and write."""

    batch_size: int = Field(
        32, ge=1, le=4096, description="Images per forward pass; larger batches pay off on GPU."
    )
    decode_workers: int = Field(
        default_factory=lambda: max(1, min(8, os.cpu_count() or 1)),
        ge=1,
        description="Threads that read, hash and decode files while the model encodes "
        "(default: the cores, at most 8).",
    )
    write_batch_size: int = Field(
        256,
        ge=1,
        description="Items per store commit: a crash loses at most these, never corrupts.",
    )
    fail_fast: bool = Field(
        False, description="Stop the run at the first unreadable file instead of going on."
    )
    max_file_bytes: int = Field(
        8 * GIB,
        ge=1,
        description="Larger videos and sounds are recorded as not indexed, unread (8 GiB).",
    )
    max_image_bytes: int = Field(
        512 * MIB,
        ge=1,
        description="Larger image files are recorded as not indexed, unread: an image is "
        "read whole (512 MiB; images.max_pixels bounds the decoded size).",
    )
    decode_timeout: float = Field(
        1800.0,
        gt=0,
        description="Seconds one video's or sound's decoding may take before it is recorded "
        "as not indexed (checked between packets; images are bounded by images.max_pixels).",
    )


class AudioIndexing(SettingsGroup):
    """How sound (audio files, videos' soundtracks) is cut into windows."""

    hop: float = Field(
        0.0,
        ge=0,
        description="Seconds between the starts of windows of the audio model's length "
        "(CLAP: 10 s); 0: one window length, no overlap.",
    )
    silence_dbfs: float = Field(-60.0, le=0, description="Windows quieter than this are skipped.")
    max_seconds: float = Field(6 * 3600.0, gt=0, description="Longer audio files are refused.")


def _version() -> str:
    try:
        return version("xmodal")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "dev"


class FetchSettings(SettingsGroup):
    """How catalog sources (http(s) URLs, buckets) are downloaded (indexer/fetch.py)."""

    concurrency: int = Field(32, ge=1, le=1024, description="Downloads in flight, in all.")
    per_host: int = Field(8, ge=1, le=1024, description="Downloads in flight to one host.")
    connect_timeout: float = Field(
        10.0, gt=0, description="Seconds to open a connection (DNS, TCP and TLS)."
    )
    timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds one attempt at a request may take in all, redirects and reading "
        "the body included.",
    )
    retries: int = Field(
        3,
        ge=0,
        le=20,
        description="Extra attempts after a connection error, a timeout, 429 or 5xx; other "
        "failures are final at once.",
    )
    backoff: float = Field(
        0.5,
        ge=0,
        description="Seconds before the first retry, doubled each time, with jitter (x0.5 to "
        "x1); a server's Retry-After is honoured up to max_backoff.",
    )
    max_backoff: float = Field(30.0, ge=0, description="Longest wait before a retry, in seconds.")
    max_bytes: int = Field(
        512 * MIB,
        ge=1,
        description="Larger bodies are refused: before reading when Content-Length (or the "
        "object's size) says so, else as soon as the stream passes it (512 MiB).",
    )
    max_redirects: int = Field(5, ge=0, le=50, description="Redirects followed per request.")
    allow_private_addresses: bool = Field(
        False,
        description="Let sources named by a server's caller reach loopback, private, "
        "link-local (cloud metadata), multicast and reserved addresses; checked on the "
        "addresses a name resolves to, redirects included. The operator's CLI may always.",
    )
    allowed_networks: list[str] = Field(
        [],
        description='Networks reachable despite allow_private_addresses=false ("10.2.0.0/16", '
        '"fd00::/8"): an image server on the company network.',
    )
    fsspec_protocols: list[str] = Field(
        ["s3", "gs", "gcs", "az", "abfs", "abfss", "hf"],
        description="fsspec protocols (bucket URLs) a server's caller may name; the "
        "operator's CLI may name any, and local paths.",
    )
    user_agent: str = Field(
        default_factory=lambda: f"xmodal/{_version()}",
        min_length=1,
        description="The User-Agent header sent (default xmodal/<version>).",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(network, strict=False)) for network in value]


@dataclass(frozen=True)
class DecodeOptions:
    """What the decode stage needs: the groups, as the settings hold them."""

    images: ImageLimits = ImageLimits()
    video: VideoSettings = VideoSettings()
    audio: AudioIndexing = AudioIndexing()
    # Whether this run indexes sound at all (it has an audio model): without one, audio
    # files fail with a reason and videos are indexed by their pictures only.
    sound: bool = True
    # Whether videos' keyframes are decoded: not by a run that embeds sound only (a
    # migration of the audio-text space).
    pictures: bool = True
    # What a file may cost, from IndexOptions (the indexer sets them from its own).
    max_file_bytes: int = IndexOptions().max_file_bytes
    max_image_bytes: int = IndexOptions().max_image_bytes
    timeout: float | None = IndexOptions().decode_timeout

    @classmethod
    def from_settings(cls, settings: Any) -> DecodeOptions:
        """The application settings' `images`, `video` and `audio` groups, as they are."""
        return cls(settings.images, settings.video, settings.audio)


class CatalogSettings(SettingsGroup):
    """How the catalog API takes writes (PUT /items/{id}, POST /items/batch, jobs)."""

    inline_batch_items: int = Field(
        100,
        ge=1,
        description="A batch of at most this many items is written while the request "
        "waits, each with its status in the answer; a larger one runs as a job.",
    )
    max_batch_items: int = Field(10_000, ge=1, description="Items one POST /items/batch may hold.")
    max_request_bytes: int = Field(
        64 * MIB,
        ge=1024,
        description="Largest body of a catalog write (items with their media in base64, "
        "or an upload).",
    )
    chunk_items: int = Field(
        256, ge=1, le=10_000, description="Entries fetched, embedded and written together."
    )
    ray_address: str | None = Field(
        None,
        description="Run catalog jobs (batches past inline_batch_items, manifests) on this "
        "Ray cluster: `local` starts one on this machine, `auto` joins the one it belongs "
        "to, `ray://HEAD:10001` a remote one; none: in the server's process. The data "
        "directory must be at the same path on every node. Needs pip install 'xmodal[ray]'.",
    )
    ray_actors: int = Field(
        1, ge=1, description="Embedding actors of a job on Ray (one GPU each on a GPU cluster)."
    )
    ray_chunk_items: int = Field(
        4096,
        ge=1,
        le=100_000,
        description="Entries per chunk of a job on Ray: each chunk starts the cluster's "
        "actors and loads the model in them, so it is larger than chunk_items.",
    )
