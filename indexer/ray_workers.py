"""What Ray's workers run for indexer/distributed.py: decoding on CPU actors, embedding
on an actor pool whose actors load their models once.

Rows travel between the stages as pickled bytes (a `candidate`, `decoded` or `embedded`
column, beside the candidate's `position` in the run's list):
a Candidate and a Decoded are plain dataclasses whose model inputs are numpy arrays,
so a row needs no schema of its own. The embedding stage writes the vectors into the
store itself (fragments.py) and adds a `written` column: the fragments of its batch,
on the batch's first row. This module imports no Ray: the classes are
handed to `Dataset.map_batches`, which builds them on the workers.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmodal.search.encoders import AudioTextEncoder, ImageTextEncoder
from xmodal.search.encoders.registry import create_audio_encoder, create_encoder
from xmodal.search.errors import ModelLoadError
from xmodal.search.media import AudioOptions, MediaKind
from xmodal.search.store import FragmentTarget, SegmentRecord

from .audio_encode import AudioEncoder, EncodedAudio
from .decode import Decoded, decode_candidate
from .fragments import WrittenRows, write_fragments
from .options import DecodeOptions
from .segments import file_segments

Batch = dict[str, np.ndarray]


@dataclass
class Embedded:
    """One file as the embedding actors hand it back to the driver: its Decoded and its
    sound, their vectors written to the store's tables by the actor (fragments.py) and
    replaced here by empty ones: one per segment, so that the driver counts and names
    the segments as a local run does, without the vectors travelling to it."""

    decoded: Decoded
    sound: EncodedAudio | None = None
    encoded: int = 0  # inputs the models computed vectors for (pictures and windows)
    encode_seconds: float = 0.0  # this file's share of its batch's model time


NO_VECTOR = np.zeros(0, np.float32)  # a segment's vector, written by the actor already


@dataclass(frozen=True)
class ModelSpecs:
    """Which models the workers load, and where."""

    image: str | None  # None: the run has no picture to prepare or embed
    audio: str | None  # None: the run indexes no sound
    device: str = "cpu"
    audio_options: AudioOptions | None = None  # windows cut as the driver's audio space wants
    batch_size: int = 32  # model inputs per forward pass


def _image_encoder(
    specs: ModelSpecs, device: str, preprocessing_only: bool = False
) -> ImageTextEncoder | None:
    if specs.image is None:
        return None
    encoder = create_encoder(specs.image, device=device)
    if preprocessing_only:
        encoder.load_preprocessing()  # the weights only where that needs them
    else:
        encoder.load()  # here, once per actor
    return encoder


def _failed_rows(batch: Batch, column: str, error: str) -> Batch:
    """A batch's rows answered with why the models did not load: the driver raises it
    (ModelLoadError) before it changed the store. An actor that raised instead would
    die, and Ray would hand the driver its text only."""
    rows = [b"" for _ in batch["position"]]
    return {
        "position": batch["position"],
        column: np.array(rows, dtype=object),
        "model_error": np.array([error] * len(rows), dtype=object),
    }


class DecodeWorker:
    """A CPU actor: reads, hashes and decodes files, and prepares pictures for the model
    with the model's preprocessing (set up once, on the CPU, without the weights where
    the model's preprocessing is known without them)."""

    def __init__(self, specs: ModelSpecs, options: DecodeOptions):
        self._options = options
        self._error = ""
        self._encoder: ImageTextEncoder | None = None
        try:
            self._encoder = _image_encoder(specs, "cpu", preprocessing_only=True)
        except ModelLoadError as error:
            self._error = str(error)

    def __call__(self, batch: Batch) -> Batch:
        if self._error:
            return _failed_rows(batch, "decoded", self._error)
        decoded = []
        for row in batch["candidate"]:
            candidate = pickle.loads(row)
            if self._encoder is None:  # no picture in this run: nothing is prepared
                result = decode_candidate(candidate, _NoPictures(), self._options)
            else:
                result = decode_candidate(candidate, self._encoder, self._options)
            decoded.append(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        return {
            "position": batch["position"],
            "decoded": np.array(decoded, dtype=object),
            "model_error": np.array([""] * len(decoded), dtype=object),
        }


class _NoPictures:
    """The preparer of a run without pictures: never asked to prepare one."""

    input_size = (224, 224)

    def prepare_image(self, image: Any) -> np.ndarray:
        raise AssertionError("a picture in a run planned without pictures")


class EmbedWorker:
    """An embedding actor: the models load once, in the constructor (on its GPU when it
    was given one); each batch's segment rows are written as uncommitted fragments of
    the spaces' tables (`targets`), and its files come back without their vectors, with
    the fragments' metadata for the driver to commit."""

    def __init__(self, specs: ModelSpecs, targets: dict[str, FragmentTarget]):
        self._specs = specs
        self._targets = targets
        self._error = ""
        self._images: ImageTextEncoder | None = None
        self._audio: AudioEncoder | None = None
        try:
            self._images = _image_encoder(specs, specs.device)
            if specs.audio is not None:
                assert specs.audio_options is not None
                encoder: AudioTextEncoder = create_audio_encoder(specs.audio, device=specs.device)
                encoder.load()
                self._audio = AudioEncoder(encoder, specs.audio_options, specs.batch_size)
        except ModelLoadError as error:
            self._error = str(error)

    def __call__(self, batch: Batch) -> Batch:
        failed = next((e for e in batch["model_error"] if e), "") or self._error
        if failed:
            answer = _failed_rows(batch, "embedded", failed)
            answer["written"] = np.array([b""] * len(batch["position"]), dtype=object)
            return answer
        files = [Embedded(pickle.loads(row)) for row in batch["decoded"]]
        started = time.perf_counter()
        pictures = [e for e in files if e.decoded.prepared and not e.decoded.failed]
        # Pictures of the same bytes in a batch (one image under two names) are embedded
        # once, as a local run embeds them; each file keeps its own rows.
        first: dict[str, Embedded] = {}
        copies: list[tuple[Embedded, Embedded]] = []
        computed = []
        for embedded in pictures:
            decoded = embedded.decoded
            if decoded.candidate.kind == MediaKind.IMAGE:
                same = first.get(decoded.content_hash)
                if same is not None:
                    copies.append((embedded, same))
                    continue
                first[decoded.content_hash] = embedded
            computed.append(embedded)
        inputs = [p for e in computed for p in e.decoded.prepared]
        vectors = self._encode_pictures(inputs)
        offset = 0
        for embedded in computed:
            count = len(embedded.decoded.prepared)
            embedded.decoded.prepared = list(vectors[offset : offset + count])
            embedded.encoded = count
            offset += count
        for copy, original in copies:
            copy.decoded.prepared = list(original.decoded.prepared)
        sounds = [e for e in files if e.decoded.has_audio and self._audio is not None]
        if sounds:
            assert self._audio is not None
            encoded = self._audio.encode_files([e.decoded.candidate.path for e in sounds])
            for embedded, sound in zip(sounds, encoded, strict=True):
                embedded.sound = sound
                embedded.encoded += len(sound.vectors)
        seconds = time.perf_counter() - started
        for embedded in files:
            embedded.encode_seconds = seconds / len(files)
        written = self._write(files)
        rows = [pickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL) for e in files]
        # The batch's fragments ride on its first row (Ray Data has no per-batch field).
        meta = [pickle.dumps(written, protocol=pickle.HIGHEST_PROTOCOL)] + [b""] * (len(rows) - 1)
        return {
            "position": batch["position"],
            "embedded": np.array(rows, dtype=object),
            "written": np.array(meta, dtype=object),
            "model_error": batch["model_error"],
        }

    def _write(self, files: list[Embedded]) -> WrittenRows:
        """The batch's segment rows, by the driver's rule (segments.py), written as
        fragments; the files' vectors emptied."""
        rows: dict[str, list[SegmentRecord]] = {}
        replaced = []
        for embedded in files:
            decoded = embedded.decoded
            if decoded.failed or decoded.same_content:
                continue  # the driver records these; they have no rows
            made = file_segments(decoded, decoded.prepared, embedded.sound)
            if made:
                for space, records in made.items():
                    rows.setdefault(space, []).extend(records)
                if decoded.candidate.existed:
                    replaced.append(decoded.candidate.item_id)
            decoded.prepared = [NO_VECTOR] * len(decoded.prepared)
            if embedded.sound is not None:
                embedded.sound.vectors = [NO_VECTOR] * len(embedded.sound.vectors)
        return WrittenRows(write_fragments(rows, self._targets), replaced)

    def _encode_pictures(self, inputs: list[np.ndarray]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, 0), np.float32)
        assert self._images is not None, "pictures in a run planned without pictures"
        size = self._specs.batch_size
        parts = [
            self._images.encode_prepared(inputs[i : i + size]) for i in range(0, len(inputs), size)
        ]
        return np.concatenate(parts)
