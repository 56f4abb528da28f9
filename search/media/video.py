"""Video decoding with PyAV and shot-aware keyframe selection.

Frames are decoded as a stream (memory stays bounded by the kept keyframes, not by
the video's length). Non-reference frames are skipped by the decoder, since sampling
a few frames per second never needs them. Every `sample_interval` seconds 16×16
points of a frame are read from its planes and compared with the previous ones; only
keyframes are converted to RGB at model size. A frame becomes a keyframe when:
  - it is the first one;
  - its content differs from the previous analysed frame by more than
    `shot_threshold` (a cut), once `min_gap` has passed since the last keyframe;
  - `max_gap` seconds have passed since the last keyframe, unless it is nearly
    identical to that keyframe (`duplicate_threshold`).
Each keyframe owns the span [its time, the next keyframe's time); the last one
ends with the video.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pydantic import Field

from xmodal.search.errors import MediaDecodeError
from xmodal.search.settings import SettingsGroup

from .av import (
    Deadline,
    close_container,
    import_av,
    open_container,
    stream_duration,
)

VIDEO_MIME_TYPES = frozenset(
    {
        "video/mp4",
        "video/quicktime",
        "video/x-matroska",
        "video/webm",
        "video/x-msvideo",
        "video/mpeg",
        "video/x-m4v",
        "video/3gpp",
    }
)
SIGNATURE_SIDE = 16  # pixels of the small frames compared for cuts


class KeyframeSettings(SettingsGroup):
    """Which frames of a video are embedded: one per shot, and one at least every
    `max_gap` seconds within a long shot."""

    sample_interval: float = Field(
        0.1, gt=0, description="Seconds between frames compared for cuts (cut accuracy)."
    )
    max_gap: float = Field(
        5.0,
        gt=0,
        description="At least one keyframe this often, in seconds (static scenes excepted).",
    )
    min_gap: float = Field(0.5, ge=0, description="No two keyframes closer than this, in seconds.")
    shot_threshold: float = Field(
        0.2, gt=0, le=1, description="Content change (0..1) between samples that marks a cut."
    )
    duplicate_threshold: float = Field(
        0.04,
        ge=0,
        le=1,
        description="A keyframe this close (0..1) to the previous one is dropped.",
    )


class VideoSettings(SettingsGroup):
    """Videos: what decoding refuses, which frames are embedded, and their sound."""

    max_pixels: int = Field(
        8192 * 4320, ge=1, description="Videos with larger frames, in pixels, are refused."
    )
    max_seconds: float = Field(6 * 3600.0, gt=0, description="Longer videos are refused.")
    sound: bool = Field(
        True, description="Index the soundtrack into the audio space too (needs an audio model)."
    )
    keyframes: KeyframeSettings = KeyframeSettings()


@dataclass
class Keyframe:
    time: float  # seconds, presentation time of the frame
    start: float  # span owned by this keyframe, seconds
    end: float
    image: Image.Image | None  # RGB, display orientation, short side about `draft_side`
    prepared: np.ndarray | None = (
        None  # the model input, when extract_keyframes was given `prepare`
    )


@dataclass
class VideoKeyframes:
    keyframes: list[Keyframe]
    duration: float
    width: int  # display orientation
    height: int
    frames_decoded: int
    warnings: list[str] = field(default_factory=list)


def _av() -> Any:
    return import_av("video")


def _open(path: Path, timeout: float | None = None) -> tuple[Any, BinaryIO]:
    return open_container(path, "video", "not a readable video", timeout)


def _video_stream(container: Any) -> Any:
    if not container.streams.video:
        raise MediaDecodeError("no video stream")
    return container.streams.video[0]


def _rotation(frame: Any) -> int:
    """Degrees counter-clockwise that the display matrix asks for (0, 90, 180, 270)."""
    angle = getattr(frame, "rotation", 0) or 0
    return round(angle / 90.0) * 90 % 360


def _frame_image(frame: Any, short_side: int) -> Image.Image:
    """RGB at reduced size (the scaler does the work), in display orientation."""
    width, height = frame.width, frame.height
    scale = min(1.0, short_side / max(1, min(width, height)))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = frame.to_image(width=size[0], height=size[1])
    rotation = _rotation(frame)
    return image.rotate(rotation, expand=True) if rotation else image


Signature = tuple[np.ndarray, np.ndarray]  # colour histogram, grey thumbnail


def _plane(frame: Any, index: int) -> np.ndarray:
    plane = frame.planes[index]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return rows[: plane.height, : plane.width]


def _thumbnail(frame: Any) -> np.ndarray:
    """SIGNATURE_SIDE² pixels of a frame, three channels (YUV or RGB, the same for a
    whole video). For 8-bit 4:2:0 frames, points are read straight from the planes: the
    scaler would cost more than decoding the frame."""
    if frame.format.name in ("yuv420p", "yuvj420p"):
        luma = _plane(frame, 0)
        rows = np.linspace(0, luma.shape[0] - 1, SIGNATURE_SIDE).astype(np.intp)
        cols = np.linspace(0, luma.shape[1] - 1, SIGNATURE_SIDE).astype(np.intp)
        return np.stack(
            [
                luma[np.ix_(rows, cols)],
                _plane(frame, 1)[np.ix_(rows // 2, cols // 2)],
                _plane(frame, 2)[np.ix_(rows // 2, cols // 2)],
            ],
            axis=-1,
        )
    return frame.to_ndarray(width=SIGNATURE_SIDE, height=SIGNATURE_SIDE, format="rgb24")


def _signature(pixels: np.ndarray) -> Signature:
    """A frame's colour distribution and coarse layout, from a tiny RGB thumbnail.

    The 4×4×4 colour histogram is soft-binned (each value shares its weight between the
    two nearest bins), so a slow fade does not jump bins and look like a cut."""
    small = pixels.astype(np.float32)
    position = np.clip(small / 64.0 - 0.5, 0.0, 3.0)  # bin centres at 32, 96, 160, 224
    low = np.minimum(position.astype(np.int32), 2)
    high_weight = position - low
    histogram = np.zeros(64, np.float32)
    for r in (0, 1):
        for g in (0, 1):
            for b in (0, 1):
                weight = (
                    (high_weight[..., 0] if r else 1 - high_weight[..., 0])
                    * (high_weight[..., 1] if g else 1 - high_weight[..., 1])
                    * (high_weight[..., 2] if b else 1 - high_weight[..., 2])
                )
                codes = (low[..., 0] + r) * 16 + (low[..., 1] + g) * 4 + (low[..., 2] + b)
                histogram += np.bincount(codes.ravel(), weights=weight.ravel(), minlength=64)
    return histogram / histogram.sum(), small.mean(axis=2) / 255.0


def signature_distance(a: Signature, b: Signature) -> float:
    """0 for identical frames, 1 for entirely different colours or layout."""
    colour = 0.5 * float(np.abs(a[0] - b[0]).sum())
    layout = float(np.abs(a[1] - b[1]).mean())
    return min(1.0, max(colour, 2.0 * layout))


def _decoded_frames(
    container: Any, stream: Any, warnings: list[str], deadline: Deadline | None = None
) -> Iterator[Any]:
    """Frames in order; packets that fail to decode are counted and skipped; past the
    `deadline`, MediaDecodeError."""
    av = _av()

    bad_packets = 0
    try:
        for packet in container.demux(stream):
            if deadline is not None:
                deadline.check()
            try:
                yield from packet.decode()
            except av.FFmpegError:
                bad_packets += 1
    except av.FFmpegError as error:  # the container itself is damaged: keep what decoded
        warnings.append(f"stopped reading at a damaged part of the file: {error}")
    if bad_packets:
        warnings.append(f"{bad_packets} corrupt packet(s) skipped")


def extract_keyframes(
    path: Path,
    settings: KeyframeSettings = KeyframeSettings(),
    limits: VideoSettings = VideoSettings(),
    draft_side: int = 224,
    prepare: Callable[[Image.Image], np.ndarray] | None = None,
    timeout: float | None = None,
) -> VideoKeyframes:
    """Keyframes of a video file. Raises MediaDecodeError when nothing usable decodes.

    With `prepare` (an encoder's prepare_image), each keyframe is turned into the model
    input as soon as it is taken and its picture dropped: what a long video keeps in
    memory is then one model input per keyframe. Decoding that lasts over `timeout`
    seconds stops with MediaDecodeError (checked between frames, and by FFmpeg while
    it opens and reads)."""
    deadline = Deadline(timeout)
    container, source_file = _open(path, timeout)
    try:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_pixels:
            raise MediaDecodeError(
                f"video is {width}×{height}, over the limit of {limits.max_pixels:,} pixels per frame (setting video.max_pixels)"
            )
        duration = stream_duration(container, stream)
        if duration > limits.max_seconds:
            raise MediaDecodeError(
                f"video lasts {duration:,.0f} s, over the limit of {limits.max_seconds:,.0f} s (setting video.max_seconds)"
            )
        stream.thread_type = "AUTO"
        stream.codec_context.skip_frame = "NONREF"  # sampling never needs B-frames
        warnings: list[str] = []
        kept: list[tuple[float, Image.Image | np.ndarray, Signature]] = []
        previous: Signature | None = None  # of the last analysed frame
        next_analysis = -math.inf
        pending_cut = False
        frames = 0
        last_time = 0.0
        rotation = 0
        for frame in _decoded_frames(container, stream, warnings, deadline):
            deadline.check()
            frames += 1
            if frames == 1:
                rotation = _rotation(frame)
            # Presentation time, so variable frame rates keep true timestamps.
            time = (
                float(frame.time)
                if frame.time is not None
                else frames / float(stream.average_rate or 25)
            )
            last_time = max(last_time, time)
            if time < next_analysis:
                continue
            next_analysis = time + settings.sample_interval
            signature = _signature(_thumbnail(frame))
            if (
                previous is not None
                and signature_distance(signature, previous) > settings.shot_threshold
            ):
                pending_cut = True
            previous = signature
            if kept:
                last_kf_time, _, last_kf_signature = kept[-1]
                since = time - last_kf_time
                if since < settings.min_gap or not (pending_cut or since >= settings.max_gap):
                    continue
                pending_cut = False
                if signature_distance(signature, last_kf_signature) <= settings.duplicate_threshold:
                    continue  # back to what the last keyframe shows
            picture = _frame_image(frame, draft_side)
            kept.append((time, prepare(picture) if prepare else picture, signature))
        if not kept:
            raise MediaDecodeError(
                "no frame could be decoded" + (f" ({'; '.join(warnings)})" if warnings else "")
            )
    finally:
        close_container(container, source_file)
    duration = max(duration, last_time)
    keyframes = [
        Keyframe(
            time=time,
            start=0.0 if index == 0 else time,
            end=kept[index + 1][0] if index + 1 < len(kept) else duration,
            image=None if prepare else picture,  # type: ignore[arg-type]
            prepared=picture if prepare else None,  # type: ignore[arg-type]
        )
        for index, (time, picture, _) in enumerate(kept)
    ]
    if rotation in (90, 270):
        width, height = height, width
    return VideoKeyframes(keyframes, duration, width, height, frames, warnings)


def frame_at(path: Path, seconds: float, short_side: int = 512) -> Image.Image:
    """The frame shown at `seconds` (RGB, display orientation), for thumbnails."""
    container, source_file = _open(path)
    try:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        target = max(0.0, seconds)
        if target > 0 and stream.time_base is not None:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        chosen = None
        for frame in _decoded_frames(container, stream, []):
            chosen = frame
            if frame.time is None or frame.time >= target - 1e-3:
                break
        if chosen is None:
            raise MediaDecodeError(f"no frame decodes at {seconds:.2f} s")
        return _frame_image(chosen, short_side)
    finally:
        close_container(container, source_file)


def sniff_video_mime(header: bytes) -> str | None:
    import filetype

    kind = filetype.guess(header)
    return kind.mime if kind is not None and kind.mime in VIDEO_MIME_TYPES else None
