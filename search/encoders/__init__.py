"""Encoders: a registry from model spec to encoder, one embedding space each."""

from . import clap_encoder as _clap_encoder  # registers the "clap" family
from . import open_clip_encoder as _open_clip_encoder  # registers the "open_clip" family
from .base import AUDIO_TEXT, IMAGE_TEXT, AudioTextEncoder, ImageTextEncoder, TwoTowerEncoder
from .builtin import DEFAULT_AUDIO_MODEL, DEFAULT_MODEL, NO_AUDIO_MODEL
from .registry import (
    Encoder,
    create_any_encoder,
    create_audio_encoder,
    create_encoder,
    list_encoders,
    register_alias,
    register_encoder,
    resolve_spec,
)

__all__ = [
    "AUDIO_TEXT",
    "DEFAULT_AUDIO_MODEL",
    "DEFAULT_MODEL",
    "IMAGE_TEXT",
    "NO_AUDIO_MODEL",
    "AudioTextEncoder",
    "Encoder",
    "ImageTextEncoder",
    "TwoTowerEncoder",
    "create_any_encoder",
    "create_audio_encoder",
    "create_encoder",
    "list_encoders",
    "register_alias",
    "register_encoder",
    "resolve_spec",
]
del _clap_encoder, _open_clip_encoder
