"""The application's settings: every entry point (CLI, server, Python) builds one.

Values come, highest priority first, from constructor arguments, `XMODAL_*`
environment variables (a group's key with a double underscore:
`XMODAL_ANN__EF_SEARCH=128`), a TOML file and the defaults. The TOML file is the one
`XMODAL_CONFIG` names, else `./xmodal.toml`, else `xmodal.toml` in the platform's
config folder (`~/.config/xmodal/` on Linux); groups are tables (`[ann]`). A key
that is not a setting is an error that names it. Built by the caller, never at import.

Each group is declared next to the code that uses it and taken by it as it is:
query limits and the vector index in xmodal.search.settings, images and videos in
xmodal.search.media, indexing runs, sound and downloads in xmodal.indexer.options, logging in
xmodal.api.logs, the HTTP server here. docs/settings.md lists them all
(generated from these classes by `python -m xmodal.api.settings_doc`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from xmodal.api.keys import Rate
from xmodal.indexer.options import AudioIndexing, CatalogSettings, FetchSettings, IndexOptions
from xmodal.search.errors import XmodalError
from xmodal.search.media import ImageLimits, VideoSettings
from xmodal.search.rerank.settings import RerankSettings
from xmodal.search.settings import AnnSettings, QuerySettings, SettingsGroup, StoreSettings

from .logs import LogSettings

CONFIG_NAME = "xmodal.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("xmodal", appauthor=False))


def config_file() -> Path | None:
    """The TOML file settings are read from, if any (see the module's docstring)."""
    named = os.environ.get("XMODAL_CONFIG")
    if named:
        return Path(named).expanduser()  # named: an error later if it is missing
    for candidate in (
        Path(CONFIG_NAME),
        Path(platformdirs.user_config_dir("xmodal", appauthor=False)) / CONFIG_NAME,
    ):
        if candidate.is_file():
            return candidate
    return None


def check_environment() -> None:
    """A misspelt `XMODAL_*` variable is an error that names it, not silently ignored."""
    known = {"XMODAL_CONFIG"}
    for name, field in Settings.model_fields.items():
        known.add(f"XMODAL_{name.upper()}")
        group = field.annotation
        if isinstance(group, type) and issubclass(group, SettingsGroup):
            known.update(_group_variables(f"XMODAL_{name.upper()}", group))
    unknown = sorted(
        name
        for name in os.environ
        if name.upper().startswith("XMODAL_") and name.upper() not in known
    )
    if unknown:
        raise ValueError(
            f"unknown setting in the environment: {', '.join(unknown)} "
            "(docs/settings.md lists the settings; a group's key is GROUP__KEY)"
        )


def _group_variables(prefix: str, group: type[SettingsGroup]) -> set[str]:
    names = set()
    for name, field in group.model_fields.items():
        names.add(f"{prefix}__{name.upper()}")
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, SettingsGroup):
            names.update(_group_variables(f"{prefix}__{name.upper()}", inner))
    return names


class ServerSettings(SettingsGroup):
    """The HTTP server (`xmodal serve`)."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    live_refresh: bool = Field(
        True,
        description="Answer queries from the newest store version already applied while a "
        "newer one (an indexer's commit) is applied in the background, instead of making "
        "the first query after a commit wait for it. Writes through this server are "
        "searchable when their request returns either way.",
    )
    threads: int = Field(
        default_factory=lambda: max(2, min(64, 2 * (os.cpu_count() or 1))),
        ge=1,
        le=256,
        description="Searches running at once; more requests wait their turn. Default twice "
        "the cores: on 2 cores, 4 threads served 50 clients at ~1.8x the QPS of anyio's "
        "default 40, which only contend for the GIL (bench/api_latency.py).",
    )
    upload_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) // 2),
        ge=1,
        le=64,
        description="Uploaded queries (image, sound) decoded and searched at once, in their "
        "own threads apart from `threads`, so that slow uploads never hold up /health and "
        "text searches; more wait their turn. Default half the cores.",
    )
    max_upload_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1,
        description="Largest query upload (image or sound), in bytes; a larger body is "
        "refused (413) before it is read when its size is declared, else as soon as it "
        "passes the limit.",
    )
    max_json_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Largest request body other than an upload (a JSON search), in bytes; "
        "also the most an upload's form fields (a filter) may add to its file.",
    )
    thumbnail_size: int = Field(
        256, ge=16, le=2048, description="Longest side of generated thumbnails, in pixels."
    )
    metrics: bool = Field(
        True,
        description="Serve Prometheus metrics at /metrics and count every request for them "
        "(docs/operations.md).",
    )


class SecuritySettings(SettingsGroup):
    """Who may reach the HTTP server, and how often (docs/security.md). Keys themselves
    are made with `xmodal keys` and kept in the data directory."""

    allowed_hosts: list[str] = Field(
        [],
        description="Host names (or addresses) clients may reach the server by, besides "
        "localhost, 127.0.0.1, ::1 and server.host; `*.example.org` matches its subdomains, "
        "`*` any name. Other Host headers get 400, so that a web page cannot reach a local "
        "server through DNS rebinding.",
    )
    client_rate: str | None = Field(
        "100/s",
        description="Requests one client address may make (N/s, N/min or N/h; a burst of "
        "up to N); 429 with Retry-After beyond. Loopback clients (this machine, a reverse "
        "proxy on it) are not limited by address; null: no limit.",
    )

    media_url_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 86400,
        description="How long the signed thumbnail, media and heatmap URLs of a keyed "
        "server's answers stay valid, in seconds (at least this, at most a quarter more: "
        "expiries are rounded so that a page's URLs stay the same a while and cache).",
    )

    @field_validator("client_rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        return None if value is None else str(Rate.parse(value))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="XMODAL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data: Path = Field(
        default_factory=default_data_dir,
        description="Where the LanceDB tables, indexes and thumbnails live "
        "(default: the platform's user data folder).",
    )
    model: str | None = Field(
        None,
        description="Image-text model spec for a new store (default "
        "open_clip:ViT-B-32/laion2b_s34b_b79k); an existing store keeps its own.",
    )
    audio_model: str | None = Field(
        None,
        description="Audio-text model spec for a new store's sound (default "
        'clap:laion/clap-htsat-unfused); an existing store keeps its own; "none" indexes '
        "no sound.",
    )
    device: str = Field(
        "auto", description='"auto": CUDA when available, else CPU; or a torch device ("cuda:1").'
    )
    server: ServerSettings = ServerSettings()
    security: SecuritySettings = SecuritySettings()
    query: QuerySettings = QuerySettings()
    ann: AnnSettings = AnnSettings()
    indexing: IndexOptions = IndexOptions()
    catalog: CatalogSettings = CatalogSettings()
    images: ImageLimits = ImageLimits()
    video: VideoSettings = VideoSettings()
    audio: AudioIndexing = AudioIndexing()
    fetch: FetchSettings = FetchSettings()
    rerank: RerankSettings = RerankSettings()
    store: StoreSettings = StoreSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_environment()
        path = config_file()
        if path is None:
            return (init_settings, env_settings)
        if not path.is_file():
            raise FileNotFoundError(f"settings file not found: {path} (XMODAL_CONFIG)")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))


class SettingsError(XmodalError):
    """Settings that cannot be used: an unknown key, a bad value, a missing file."""


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the TOML file, `overrides` on top; what is wrong
    with them comes out as one SettingsError naming each setting and where it was read."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        where = config_file()
        source = f" (environment, arguments{f' or {where}' if where else ''})"
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise SettingsError(f"invalid settings{source}: {problems}") from error
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{config_file()} is not valid TOML: {error}") from error
    except (ValueError, OSError) as error:
        raise SettingsError(str(error)) from error
