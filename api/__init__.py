"""Entry points: the HTTP API (`create_app`), the `xmodal` command line and settings.

Imported lazily, so that the command line starts without loading the web stack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xmodal.api.app import create_app
    from xmodal.api.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from xmodal.api.app import create_app

        return create_app
    if name == "Settings":
        from xmodal.api.settings import Settings

        return Settings
    raise AttributeError(f"module 'xmodal.api' has no attribute {name!r}")
