"""Built-in model names: models that ship inside the package and work offline."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .registry import register_alias

REFERENCE_MODEL = "xmodal-ref"


def reference_checkpoint() -> Path:
    """The project's own image-text model, trained on generated shapes (training/)."""
    return Path(str(resources.files("search") / "models" / f"{REFERENCE_MODEL}.pt"))


register_alias(REFERENCE_MODEL, lambda: f"open_clip:{REFERENCE_MODEL}/{reference_checkpoint()}")
