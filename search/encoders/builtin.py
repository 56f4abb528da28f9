"""Built-in model names: models that ship inside the package and work offline."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .registry import register_alias

REFERENCE_MODEL = "xmodal-ref"
REFERENCE_AUDIO_MODEL = "xmodal-ref-audio"


def reference_checkpoint() -> Path:
    """The project's own image-text model, trained on generated shapes (training/)."""
    return Path(str(resources.files("search") / "models" / f"{REFERENCE_MODEL}.pt"))


register_alias(REFERENCE_MODEL, lambda: f"open_clip:{REFERENCE_MODEL}/{reference_checkpoint()}")


def reference_audio_folder() -> Path:
    """The project's own audio-text (CLAP-style) model, trained on generated sounds."""
    return Path(str(resources.files("search") / "models" / REFERENCE_AUDIO_MODEL))


register_alias(REFERENCE_AUDIO_MODEL, lambda: f"clap:local-dir:{reference_audio_folder()}")
