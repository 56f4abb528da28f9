"""Entry points: the HTTP API (create_app) and the `xmodal` command line."""

__version__ = "0.1.0"

from .app import create_app

__all__ = ["__version__", "create_app"]
