"""What an indexing run does while the image model loads: the load itself in a thread,
and decoding that starts before anyone asks for its results.

Loading a model costs seconds (importing torch and open_clip alone, several); finding
and decoding the files need none of it until an image is prepared for the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from xmodal.search.encoders import ImageTextEncoder
from xmodal.search.errors import ModelLoadError

from .decode import Decoded, ImagePreparer, decode_candidate
from .discover import Candidate
from .options import DecodeOptions


class BackgroundLoad:
    """An encoder's load() in a thread of its own, started at most once."""

    def __init__(self, encoder: ImageTextEncoder):
        self.encoder = encoder
        self.seconds = 0.0  # how long the load took
        self.error: BaseException | None = None  # set once it failed
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._load, name="xmodal-model-load", daemon=True
                )
                self._thread.start()

    def _load(self) -> None:
        began = time.perf_counter()
        try:
            self.encoder.load()
        except BaseException as error:
            self.error = error
        finally:
            self.seconds = time.perf_counter() - began

    def join(self) -> None:
        """Wait for the load to end, if it was started."""
        if self._thread is not None:
            self._thread.join()

    def wait(self) -> None:
        """Wait for the load to end; raise its error."""
        self.join()
        if self.error is not None:
            raise self.error


class AfterLoad:
    """The image encoder as decode workers see it while it loads in the background
    (decode.ImagePreparer): preparing an image waits for the load, and once the load
    failed, the workers fail at once instead of each loading the model again (the run
    raises the load's error)."""

    def __init__(self, encoder: ImageTextEncoder, load: BackgroundLoad):
        self._encoder = encoder
        self._background = load

    def _check(self) -> None:
        if self._background.error is not None:
            raise ModelLoadError(f"the image model did not load: {self._background.error}")

    @property
    def input_size(self) -> tuple[int, int]:
        self._check()
        return self._encoder.input_size  # from the model's config: needs no load

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        self._background.join()
        self._check()
        return self._encoder.prepare_image(image)


class DecodeAhead:
    """Decodes files in worker threads from the moment it is made, at most a window of
    files ahead of the consumer; iterating yields them in order."""

    def __init__(
        self,
        candidates: Sequence[Candidate],
        encoder: ImagePreparer,
        options: DecodeOptions,
        workers: int,
        window_size: int,
    ):
        self._encoder = encoder
        self._options = options
        self._pool = ThreadPoolExecutor(workers, "xmodal-decode")
        self._todo = iter(candidates)
        self._window: deque[Future[Decoded]] = deque(
            self._submit(c) for _, c in zip(range(window_size), self._todo, strict=False)
        )

    def _submit(self, candidate: Candidate) -> Future[Decoded]:
        return self._pool.submit(decode_candidate, candidate, self._encoder, self._options)

    def __iter__(self) -> Iterator[Decoded]:
        while self._window:
            decoded = self._window.popleft().result()
            following = next(self._todo, None)
            if following is not None:
                self._window.append(self._submit(following))
            yield decoded

    def close(self) -> None:
        """Stop: files not begun are dropped; waits for those being decoded."""
        self._window.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
