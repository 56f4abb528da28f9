"""What the torch-backed encoders (open_clip, CLAP) share: device, precision, output, errors.

torch is imported inside each function so that importing the encoders stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

# Words in an exception from open_clip, transformers or huggingface_hub (type name
# included where the caller adds it) that mean the weights could not be fetched.
_DOWNLOAD_MARKERS = (
    "download",
    "offline",
    "connect",
    "network",
    "resolve",
    "cannot find the requested files",
    "localentrynotfound",
    "max retries",
    # transformers, for a hub id it has neither cached nor reached
    "does not appear to have",
    "is not a local folder",
)


def pick_device(device: str) -> str:
    """The torch device to load onto: `device` as given, or for "auto" cuda if present else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(device: str, *, prefer_bf16: bool) -> Any:
    """A context that runs the model in half precision on a CUDA device, full precision elsewhere.

    With `prefer_bf16` the half type is bfloat16 where the GPU supports it, float16
    otherwise; without it, float16.
    """
    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    import torch

    dtype = torch.float16
    if prefer_bf16 and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def normalise(features: Any) -> np.ndarray:
    """(n, dim) torch features of any dtype or device -> (n, dim) float32 numpy, unit L2 rows."""
    import torch

    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)


def looks_like_download_failure(message: str) -> bool:
    """Whether an error message reads as weights that could not be downloaded."""
    lowered = message.lower()
    return any(marker in lowered for marker in _DOWNLOAD_MARKERS)


def offline_hint(
    missing: str, alternatives: Sequence[str], *, reachable: str, note: str = ""
) -> str:
    """The advice given when weights are neither cached nor downloadable.

    `missing` says what is not where (a sentence without its end), `reachable` what to
    check about the network, `note` (a sentence or "") comes before the alternatives,
    which are listed as "a, b, or c".
    """
    *others, last = alternatives
    listed = f"{', '.join(others)}, or {last}" if others else last
    note = f"{note} " if note else ""
    return f"{missing} and could not be downloaded ({reachable}?). {note}Alternatives: {listed}."
