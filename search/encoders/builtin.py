"""Built-in model names: models that ship inside the package and work offline."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .registry import register_alias

# The models a new store gets when none is named: a user's first run downloads them once.
DEFAULT_MODEL = "open_clip:ViT-B-32/laion2b_s34b_b79k"
DEFAULT_AUDIO_MODEL = "clap:laion/clap-htsat-unfused"
NO_AUDIO_MODEL = "none"  # as the audio model: index and search no sound

REFERENCE_MODEL = "xmodal-ref"
REFERENCE_AUDIO_MODEL = "xmodal-ref-audio"


def reference_checkpoint() -> Path:
    """The project's own image-text model, trained on generated shapes (training/)."""
    return Path(str(resources.files("xmodal.search") / "models" / f"{REFERENCE_MODEL}.pt"))


register_alias(REFERENCE_MODEL, lambda: f"open_clip:{REFERENCE_MODEL}/{reference_checkpoint()}")


def reference_audio_folder() -> Path:
    """The project's own audio-text (CLAP-style) model, trained on generated sounds."""
    return Path(str(resources.files("xmodal.search") / "models" / REFERENCE_AUDIO_MODEL))


register_alias(REFERENCE_AUDIO_MODEL, lambda: f"clap:local-dir:{reference_audio_folder()}")


REFERENCE_RERANKER = "xmodal-ref-vlm"


def reference_reranker_folder() -> Path:
    """The project's own reranker, a small LLaVA trained on generated shapes."""
    return Path(str(resources.files("xmodal.search") / "models" / REFERENCE_RERANKER))


register_alias(REFERENCE_RERANKER, lambda: f"llava:local-dir:{reference_reranker_folder()}")
