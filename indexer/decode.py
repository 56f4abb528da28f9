"""The decode stage: read, hash, decode and prepare one file (runs in worker threads)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from search.encoders import ImageTextEncoder
from search.errors import MediaDecodeError
from search.images import ImageLimits, decode_image

from .discover import Candidate


@dataclass
class Decoded:
    candidate: Candidate
    content_hash: str = ""
    width: int = 0
    height: int = 0
    prepared: np.ndarray | None = None  # model input, None when failed or unchanged content
    error: str = ""  # why it could not be indexed
    same_content: bool = False  # touched but byte-identical to what is indexed
    seconds: float = 0.0


def decode_candidate(
    candidate: Candidate, encoder: ImageTextEncoder, limits: ImageLimits
) -> Decoded:
    started = time.perf_counter()
    result = Decoded(candidate)
    try:
        data = candidate.path.read_bytes()
        result.content_hash = hashlib.sha256(data).hexdigest()
        if candidate.previously_indexed and result.content_hash == candidate.previous_hash:
            result.same_content = True
        else:
            decoded = decode_image(data, limits, draft_to=encoder.input_size)
            result.width, result.height = decoded.width, decoded.height
            result.prepared = encoder.prepare_image(decoded.image)
    except MediaDecodeError as error:
        result.error = str(error)
    except OSError as error:
        result.error = f"cannot read file: {error.strerror or error}"
    except Exception as error:  # one bad file must never end the job
        result.error = f"unexpected {type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - started
    return result
