"""Encoders: a registry from model spec to encoder, one embedding space each."""

from . import builtin as _builtin  # registers the built-in model names
from . import open_clip_encoder as _open_clip_encoder  # registers the "open_clip" family
from .base import IMAGE_TEXT, ImageTextEncoder
from .registry import create_encoder, list_encoders, register_alias, register_encoder, resolve_spec

__all__ = [
    "IMAGE_TEXT",
    "ImageTextEncoder",
    "create_encoder",
    "list_encoders",
    "register_alias",
    "register_encoder",
    "resolve_spec",
]
del _builtin, _open_clip_encoder
