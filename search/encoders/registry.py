"""Model spec -> model: encoders (one embedding space each) and rerankers.

A spec is `FAMILY:REST`, e.g. `open_clip:ViT-B-32/laion2b_s34b_b79k`. Each
family registers one factory with `@register_encoder("family")`; built-in
names (`xmodal-...`) are aliases for full specs. Rerankers (the `llava:` family,
search/rerank/) are created with `create_model` and checked by their caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xmodal.search.errors import ModelSpecError

from .base import AudioTextEncoder, ImageTextEncoder, LazyModel, TwoTowerEncoder

# Every encoder belongs to one space: image-text (open_clip) or audio-text (CLAP).
Encoder = TwoTowerEncoder
EncoderFactory = Callable[..., LazyModel]

_FACTORIES: dict[str, EncoderFactory] = {}
_ROLES: dict[str, str] = {}  # family -> what its models do, as `xmodal models` says it
_ALIASES: dict[str, Callable[[], str]] = {}


def register_encoder(
    family: str, role: str = "encoder"
) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register the factory for specs `family:...`; it is called as factory(rest, **overrides).
    `role` says what its models are for (e.g. "image-text encoder", "reranker")."""

    def decorator(factory: EncoderFactory) -> EncoderFactory:
        if family in _FACTORIES:
            raise ValueError(f"encoder family {family!r} is already registered")
        _FACTORIES[family] = factory
        _ROLES[family] = role
        return factory

    return decorator


def register_alias(name: str, resolve: Callable[[], str]) -> None:
    """Register a built-in model name; `resolve` returns the full spec when it is used."""
    if name in _ALIASES:
        raise ValueError(f"model alias {name!r} is already registered")
    _ALIASES[name] = resolve


def list_encoders() -> list[str]:
    """Registered encoder families and built-in model names."""
    return sorted([f"{family}:" for family in _FACTORIES] + list(_ALIASES))


def model_roles() -> dict[str, str]:
    """Each family (`family:`) and built-in name, with what its models are for."""
    roles = {f"{family}:": role for family, role in _ROLES.items()}
    for name, resolve in _ALIASES.items():
        roles[name] = _ROLES.get(resolve().partition(":")[0], "encoder")
    return dict(sorted(roles.items()))


def resolve_spec(spec: str) -> str:
    """Expand a built-in name to its full spec; validate the family."""
    spec = spec.strip()
    if spec in _ALIASES:
        return _ALIASES[spec]()
    family, sep, rest = spec.partition(":")
    if not sep or family not in _FACTORIES:
        hint = ""
        if (not sep and "/" in spec) or spec.startswith(("ViT", "RN", "convnext", "EVA")):
            hint = f" Did you mean 'open_clip:{spec}'?"
            if "clap" in spec.lower():
                hint = f" Did you mean 'clap:{spec}'?"
        known = ", ".join(list_encoders())
        raise ModelSpecError(f"unknown model spec {spec!r}.{hint} Known: {known}")
    if not rest:
        raise ModelSpecError(f"model spec {spec!r} names a family but no model")
    return spec


def create_model(spec: str, **overrides: Any) -> LazyModel:
    """Build (but do not load) the model for a spec; `overrides` go to its factory."""
    full = resolve_spec(spec)
    family, _, rest = full.partition(":")
    model = _FACTORIES[family](rest, **overrides)
    if spec.strip() in _ALIASES:
        model.named(spec.strip())
    return model


def create_any_encoder(spec: str, **overrides: Any) -> Encoder:
    """The encoder (of either space) for a spec; a reranker here is a spec error."""
    model = create_model(spec, **overrides)
    if not isinstance(model, TwoTowerEncoder):
        raise ModelSpecError(
            f"{spec.strip()} is a reranker (a vision-language model), not an embedding "
            "model; give it as the rerank model (--rerank-model, XMODAL_RERANK__MODEL)"
        )
    return model


def create_encoder(spec: str, **overrides: Any) -> ImageTextEncoder:
    """The image-text encoder for a spec; an audio model here is a spec error."""
    encoder = create_any_encoder(spec, **overrides)
    if not isinstance(encoder, ImageTextEncoder):
        raise ModelSpecError(
            f"{spec.strip()} is an audio-text model; give it as the audio model "
            "(--audio-model, XMODAL_AUDIO_MODEL), not as the image-text model"
        )
    return encoder


def create_audio_encoder(spec: str, **overrides: Any) -> AudioTextEncoder:
    """The audio-text encoder for a spec; an image model here is a spec error."""
    encoder = create_any_encoder(spec, **overrides)
    if not isinstance(encoder, AudioTextEncoder):
        raise ModelSpecError(
            f"{spec.strip()} is an image-text model; an audio model is a CLAP spec such as "
            "clap:laion/clap-htsat-unfused or xmodal-ref-audio"
        )
    return encoder
