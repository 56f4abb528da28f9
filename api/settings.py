"""One settings class for every entry point (CLI, API, Python).

Values come, highest priority first, from constructor arguments, `XMODAL_*`
environment variables, a TOML file (`XMODAL_CONFIG`, else `./xmodal.toml` when
present) and the defaults below. Built by the caller, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("xmodal", appauthor=False))


def _config_file() -> Path:
    return Path(os.environ.get("XMODAL_CONFIG", "xmodal.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_", extra="ignore")

    # Where the LanceDB tables, thumbnails and run logs live.
    data: Path = Field(default_factory=default_data_dir)
    # Image-text model spec for a new store; an existing store keeps the model it was built with.
    model: str | None = None
    # Audio-text model spec for a new store's audio space (audio files and the sound of
    # videos); an existing store keeps its own. "none": audio files are recorded as not
    # indexed and videos are indexed by their pictures only.
    audio_model: str | None = None
    # "auto" picks CUDA when available, else CPU; or name a torch device ("cpu", "cuda:1").
    device: str = "auto"
    # Images per forward pass; larger batches pay off on GPU.
    batch_size: int = Field(default=32, ge=1, le=4096)
    # Threads that read, hash and decode files while the model encodes.
    decode_workers: int = Field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)), ge=1)
    # Rows buffered before one write to the store (a crash loses at most these, never corrupts).
    write_batch_size: int = Field(default=256, ge=1)
    # Decoding limits: images larger than this many pixels are refused as likely decompression bombs.
    max_image_pixels: int = Field(default=128_000_000, ge=1)
    # Images with a side shorter than this (tracking pixels, spacers) are recorded, not indexed.
    min_image_side: int = Field(default=8, ge=1)
    # Videos: frames larger than this many pixels, or longer than this many seconds, are refused.
    max_video_pixels: int = Field(default=8192 * 4320, ge=1)
    max_video_seconds: float = Field(default=6 * 3600.0, gt=0)
    # Keyframes: examine a frame every `keyframe_interval` seconds; a content change above
    # `shot_threshold` (0..1) is a cut; keep a keyframe at least every `keyframe_max_gap`
    # seconds and never two closer than `keyframe_min_gap`; drop a keyframe closer than
    # `duplicate_keyframe_threshold` to the previous one.
    keyframe_interval: float = Field(default=0.1, gt=0)
    keyframe_max_gap: float = Field(default=5.0, gt=0)
    keyframe_min_gap: float = Field(default=0.5, ge=0)
    shot_threshold: float = Field(default=0.2, gt=0, le=1)
    duplicate_keyframe_threshold: float = Field(default=0.04, ge=0, le=1)
    # Audio: windows of the audio model's length (CLAP: 10 s) start every `audio_hop`
    # seconds (0: one window length, no overlap); windows quieter than `silence_dbfs` are
    # skipped; files longer than `max_audio_seconds` are refused.
    audio_hop: float = Field(default=0.0, ge=0)
    silence_dbfs: float = Field(default=-60.0, le=0)
    max_audio_seconds: float = Field(default=6 * 3600.0, gt=0)
    # Index the sound of videos into the audio space too (needs an audio model).
    video_audio: bool = True
    # Stop the run at the first unreadable file instead of recording it and going on.
    fail_fast: bool = False
    # HTTP server.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Threads running searches at once; more requests wait their turn in the event loop.
    # Default twice the cores: on 2 cores, 4 threads served 50 clients at ~1.8x the QPS
    # of anyio's default 40, which only contend for the GIL (bench/api_latency.py).
    api_threads: int = Field(
        default_factory=lambda: max(2, min(64, 2 * (os.cpu_count() or 1))), ge=1, le=256
    )
    # Largest accepted upload for image queries, in bytes.
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # Longest side of generated thumbnails, in pixels.
    thumbnail_size: int = Field(default=256, ge=16, le=2048)
    # Text queries: drop hits whose calibrated score (standard deviations above
    # the best match unrelated queries find in the same space, search/calibration.py)
    # is below this; None keeps every hit. A request's own min_score overrides it.
    min_score: float | None = None
    # Audio queries: only the first this many seconds of an uploaded clip are used.
    max_query_audio_seconds: float = Field(default=60.0, gt=0)
    # Largest k (results per page) a query may ask for.
    max_k: int = Field(default=1000, ge=1)
    # Concurrent text queries share one forward pass; after a pass that had company, the
    # next waits up to this long for as many (bench/text_batching.py: +25% QPS at 8 clients).
    text_batch_wait_ms: float = Field(default=1.0, ge=0, le=50)
    # Vector index: "auto" searches exactly up to `ann_min_segments` segments, then with
    # HNSW (IVF-PQ past 5M); or one of "exact", "flat", "hnsw", "ivfpq".
    index_kind: str = "auto"
    ann_min_segments: int = Field(default=50_000, ge=0)
    # HNSW candidate list per query: recall against speed (bench/ann.py).
    ann_ef_search: int = Field(default=64, ge=1)
    # IVF-PQ cells visited per query.
    ann_nprobe: int = Field(default=8, ge=1)
    # Filters leaving at most this many segments are ranked exactly over those segments.
    ann_exact_filter_below: int = Field(default=20_000, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml)
