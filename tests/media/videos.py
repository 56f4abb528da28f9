"""Synthetic test videos, written at run time with PyAV: deterministic, small, fast.

A video is a list of shots, each `(duration_seconds, frame_fn)`, written back to back;
`frame_fn(t_in_shot, index_in_shot)` returns the picture of one frame as an HxWx3 uint8
array (or a PIL image, or a single RGB colour); pictures of another size are resized to
the video's size. `solid(rgb)`, `scene_image(scene, seed)`, `moving_scene(scene, seed)`
and `orientation_marker()` are ready-made frame functions.

    from tests.media.videos import scene_image, solid, write_video
    write_video(tmp_path / "a.mp4", [(2.0, solid((255, 0, 0))), (3.0, scene_image(seed=1))])

Every writer passes `fflags=+bitexact` to the muxer, so the same call writes the same
bytes (Matroska and WebM otherwise embed a random segment UID). Frames are encoded as
yuv420p, so width and height must be even.

Damaged inputs: `corrupt_middle`, `truncated`, `zero_bytes`, `garbage_file`,
`write_audio_only` (no video stream) and `write_huge_resolution_header` (a genuine
stream over the default `VideoSettings.max_pixels`). `read_back(path)` decodes a file
packet by packet and says what it found; the tests of these helpers use it.

What PyAV 18.1 (FFmpeg 8) does with these files, measured when this was written:

- rotation: `VideoStream.set_display_rotation(deg)` writes a display matrix (mp4, mov,
  mkv, webm). Reading it back, `VideoFrame.rotation` is `deg` (counter-clockwise degrees,
  FFmpeg's `av_display_rotation_get`; the DISPLAYMATRIX entry is also in
  `frame.side_data`). PyAV 18 has no stream-level getter, so a reader must decode a frame
  to learn the rotation. To display the frame upright, rotate the decoded picture
  `frame.rotation` degrees counter-clockwise: `np.rot90(array, k=frame.rotation // 90)`
  or `image.rotate(frame.rotation, expand=True)` (see `apply_rotation`). A phone's
  portrait clip (legacy tag rotate=90, i.e. turn 90 degrees clockwise) reads -90. The
  legacy `stream.metadata["rotate"] = "90"` is ignored by FFmpeg 8's muxers.
- corrupt data (`corrupt_middle`, default where="time": the payloads of the packets in
  the middle of the timeline): with every codec and container above, the damaged packets
  raise `av.error.InvalidDataError` from `packet.decode()` (a few also produce no frame)
  and frames decode again from the next keyframe, up to the end. Overwriting raw bytes
  around the file's middle instead (where="bytes") varies: MP4 + H.264 raises per packet;
  Matroska/WebM can lose sync and silently skip a cluster; MPEG-4 part 2 in AVI conceals
  (every frame decodes, no error). Decode packet by packet and catch `av.FFmpegError`
  per packet: an error raised through `container.decode()` ends that generator, and with
  `thread_type` "AUTO" or "FRAME" closing the container afterwards deadlocked in most
  runs (never seen when the error is caught per packet).
- truncation: a plain MP4 from PyAV has its `moov` index at the end, so a truncated MP4
  does not open at all ("moov atom not found", InvalidDataError). With `faststart=True`
  (index first) or in Matroska, the frames before the cut decode.
- zero bytes, or random bytes: `av.open` raises `av.error.InvalidDataError`.
- variable frame rate (`write_vfr_video`): frame pts are kept exactly (time_base 1/1000;
  MP4 rescales to 1/16000). H.264 with B-frames in MP4 makes the stream's duration the
  DTS span (2.25 s for frames up to 2.7 s) and the per-frame `duration`s come out in
  decode order, so the writer turns B-frames off for VFR; never clamp frame times to the
  stream's duration, and do not trust `frame.duration` in MP4.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

FrameFn = Callable[[float, int], Any]  # (t_in_shot, index_in_shot) -> HxWx3 uint8
Shot = tuple[float, FrameFn]
Size = tuple[int, int]  # (width, height)

# Formats by name or suffix; None lets FFmpeg guess from the file name.
_FORMATS = {"mkv": "matroska", "matroska": "matroska", "webm": "webm", "mp4": "mp4"}
_FORMATS |= {"mov": "mov", "avi": "avi", "m4a": "ipod", "m4v": "mp4"}

# Options per encoder: quiet, fast, and still the codec's usual structure (B-frames etc.).
CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast"},
    "hevc": {"preset": "veryfast", "x265-params": "log-level=error"},
    "libx265": {"preset": "veryfast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libsvtav1": {"preset": "10"},
    "mpeg4": {},
}
# The suffix each codec is usually written with (the test matrix uses these).
USUAL_SUFFIX = {
    "libx264": ".mp4",
    "hevc": ".mkv",
    "libvpx-vp9": ".webm",
    "libsvtav1": ".mkv",
    "mpeg4": ".avi",
}
# What the decoder reports as codec_context.name when reading each back.
DECODER_NAME = {
    "libx264": "h264",
    "hevc": "hevc",
    "libx265": "hevc",
    "libvpx-vp9": "vp9",
    "libsvtav1": "libdav1d",
    "mpeg4": "mpeg4",
}
DEFAULT_VFR_INTERVALS = (0.033, 0.25, 0.1, 0.5, 0.04, 1.0, 0.2)  # seconds between frames
# Writing a display matrix needs VideoStream.set_display_rotation (PyAV 18, PR #2287);
# reading one (VideoFrame.rotation) works with older PyAV too.
CAN_WRITE_ROTATION = hasattr(av.video.stream.VideoStream, "set_display_rotation")


# -- frame functions -------------------------------------------------------------------
class _Sized:
    """A frame function that can prepare itself once for a video size (`for_size`)."""

    def for_size(self, size: Size) -> FrameFn:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, t: float, index: int) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Solid(_Sized):
    rgb: tuple[int, int, int]

    def __call__(self, t: float, index: int) -> np.ndarray:
        return np.asarray(self.rgb, dtype=np.uint8).reshape(1, 1, 3)

    def for_size(self, size: Size) -> FrameFn:
        width, height = size
        picture = np.empty((height, width, 3), np.uint8)
        picture[:] = np.asarray(self.rgb, dtype=np.uint8)
        return lambda t, index: picture


def solid(rgb: Sequence[int]) -> Solid:
    """Every frame one colour."""
    r, g, b = (int(v) for v in rgb)
    return Solid((r, g, b))


def _resolve_scene(scene: Any, seed: int) -> Any:
    from xmodal.synthetic.shapes import Scene, ShapeObject, random_scene

    if scene is None:
        return random_scene(np.random.default_rng([seed, 0]))
    if isinstance(scene, ShapeObject):
        return Scene((scene,))
    if isinstance(scene, Scene):
        return scene
    raise TypeError(f"scene must be a Scene, a ShapeObject or None, not {type(scene).__name__}")


def shape_scene(colour: str, shape: str, size: str = "large", position: str = "center"):
    """A one-object Scene, e.g. shape_scene("red", "circle")."""
    from xmodal.synthetic.shapes import Scene, ShapeObject

    return Scene((ShapeObject(colour, shape, size, position),))


def _render(scene: Any, seed: int, side: int) -> Image.Image:
    from xmodal.synthetic.shapes import render

    return render(scene, np.random.default_rng([seed, 1]), side=side)


def _noisy(picture: np.ndarray, noise: float, seed: int, index: int) -> np.ndarray:
    if noise <= 0:
        return picture
    rng = np.random.default_rng([seed, 2, index])
    grain = rng.normal(0.0, noise, picture.shape).astype(np.float32)
    return np.clip(picture + grain, 0, 255).astype(np.uint8)


class SceneFrames(_Sized):
    """Frames of one rendered `xmodal.synthetic.shapes` scene: the same picture in every frame,
    plus, with `noise` > 0, a little Gaussian grain that differs per frame (seeded)."""

    def __init__(self, scene: Any = None, seed: int = 0, noise: float = 0.0) -> None:
        self.scene = _resolve_scene(scene, seed)
        self.seed = seed
        self.noise = noise

    def picture(self, size: Size) -> np.ndarray:
        """The noiseless picture at a video size: rendered square at the longer side, then
        resized (stretched) to width x height."""
        width, height = size
        image = _render(self.scene, self.seed, max(width, height))
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        return np.asarray(image.convert("RGB"))

    def for_size(self, size: Size) -> FrameFn:
        picture = self.picture(size)
        return lambda t, index: _noisy(picture, self.noise, self.seed, index)

    def __call__(self, t: float, index: int) -> np.ndarray:
        return self.for_size((256, 256))(t, index)

    def caption(self) -> str:
        from xmodal.synthetic.shapes import caption

        return caption(self.scene, np.random.default_rng([self.seed, 3]))


def scene_image(scene: Any = None, seed: int = 0, noise: float = 0.0) -> SceneFrames:
    """A still shot of a shapes scene (`None`: a random scene drawn from `seed`)."""
    return SceneFrames(scene, seed, noise)


class MovingScene(SceneFrames):
    """A shapes scene seen through a window that pans back and forth diagonally
    (`travel`: fraction of the longer side, `period`: seconds per back-and-forth),
    with per-frame grain, so that consecutive frames differ and do not compress to
    nothing. The scene is rendered at most `render_side` pixels and scaled up."""

    def __init__(
        self,
        scene: Any = None,
        seed: int = 0,
        noise: float = 3.0,
        travel: float = 0.2,
        period: float = 4.0,
        render_side: int = 512,
    ) -> None:
        super().__init__(scene, seed, noise)
        self.travel, self.period, self.render_side = travel, period, render_side

    def for_size(self, size: Size) -> FrameFn:
        width, height = size
        shift = max(2, round(self.travel * max(width, height)))
        side = max(width, height) + shift
        image = _render(self.scene, self.seed, min(side, self.render_side))
        big = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))
        # a few grain fields, reused cyclically: cheap and still different frame to frame
        rng = np.random.default_rng([self.seed, 4])
        grains = [
            rng.normal(0.0, self.noise, (height, width, 3)).astype(np.int16) for _ in range(5)
        ]
        y0 = (side - height - shift) // 2

        def frame(t: float, index: int) -> np.ndarray:
            phase = (t / self.period) % 1.0
            offset = round(shift * (2 * phase if phase < 0.5 else 2 - 2 * phase))
            crop = big[y0 + offset // 2 : y0 + offset // 2 + height, offset : offset + width]
            if self.noise <= 0:
                return np.ascontiguousarray(crop)
            out = crop.astype(np.int16)
            out += grains[index % len(grains)]
            return np.clip(out, 0, 255, out=out).astype(np.uint8)

        return frame

    def __call__(self, t: float, index: int) -> np.ndarray:
        return self.for_size((256, 256))(t, index)


def moving_scene(scene: Any = None, seed: int = 0, **kwargs: Any) -> MovingScene:
    """A shapes scene with camera motion and grain (see `MovingScene`)."""
    return MovingScene(scene, seed, **kwargs)


MARKER_RGB = (220, 30, 30)
MARKER_BACKGROUND = (110, 110, 110)


class OrientationMarker(_Sized):
    """Grey, with a red block in the top-left corner (a third of each side), so that any
    rotation shows: upright, the top-left corner is red and the other corners grey."""

    def for_size(self, size: Size) -> FrameFn:
        width, height = size
        picture = np.empty((height, width, 3), np.uint8)
        picture[:] = MARKER_BACKGROUND
        picture[: height // 3, : width // 3] = MARKER_RGB
        return lambda t, index: picture

    def __call__(self, t: float, index: int) -> np.ndarray:
        return self.for_size((96, 64))(t, index)


def orientation_marker() -> OrientationMarker:
    return OrientationMarker()


def corner_colours(picture: np.ndarray, fraction: float = 0.15) -> dict[str, np.ndarray]:
    """Mean RGB of each corner region: top_left, top_right, bottom_left, bottom_right."""
    height, width = picture.shape[:2]
    h, w = max(1, int(height * fraction)), max(1, int(width * fraction))
    regions = {
        "top_left": picture[:h, :w],
        "top_right": picture[:h, -w:],
        "bottom_left": picture[-h:, :w],
        "bottom_right": picture[-h:, -w:],
    }
    return {name: region.reshape(-1, 3).mean(axis=0) for name, region in regions.items()}


def apply_rotation(picture: np.ndarray, rotation: float) -> np.ndarray:
    """What a reader must do with a decoded frame whose `frame.rotation` is `rotation`
    (counter-clockwise degrees) to show it upright."""
    quarter = round(rotation / 90)
    if abs(rotation - 90 * quarter) > 1:
        raise ValueError(f"only multiples of 90 degrees, not {rotation}")
    return np.ascontiguousarray(np.rot90(picture, k=quarter % 4))


# -- writing ---------------------------------------------------------------------------
def _as_rate(fps: float | Fraction) -> Fraction:
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    return rate


def _check_size(size: Size) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"width and height must be positive and even (yuv420p), not {size}")
    return width, height


def _specialise(fn: FrameFn, size: Size) -> FrameFn:
    return fn.for_size(size) if isinstance(fn, _Sized) else fn


def _fit(picture: Any, size: Size) -> np.ndarray:
    """The picture as a C-contiguous HxWx3 uint8 array of the video's size."""
    width, height = size
    if isinstance(picture, Image.Image):
        picture = np.asarray(picture.convert("RGB"))
    array = np.asarray(picture)
    if array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, not {array.dtype}")
    if array.shape == (3,):
        array = array.reshape(1, 1, 3)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"frames must be HxWx3, not {array.shape}")
    if array.shape[:2] == (height, width):
        return np.ascontiguousarray(array)
    if array.shape[:2] == (1, 1):
        return np.ascontiguousarray(np.broadcast_to(array, (height, width, 3)))
    image = Image.fromarray(np.ascontiguousarray(array)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(image)


def shot_frames(shots: Sequence[Shot], fps: float | Fraction) -> list[tuple[int, int]]:
    """(first frame, end frame) of each shot, end exclusive, at a constant frame rate.
    Boundaries are rounded (half up) from the cumulative durations, so rounding errors
    never accumulate."""
    rate = _as_rate(fps)
    bounds, elapsed, first = [], Fraction(0), 0
    for duration, _ in shots:
        if duration <= 0:
            raise ValueError(f"shot durations must be positive, not {duration}")
        elapsed += Fraction(duration)
        end = math.floor(elapsed * rate + Fraction(1, 2))  # half up, not to even
        if end <= first:
            raise ValueError(f"a shot of {duration} s has no frame at {float(rate)} fps")
        bounds.append((first, end))
        first = end
    return bounds


def shot_bounds(shots: Sequence[Shot], fps: float | Fraction = 10) -> list[tuple[float, float]]:
    """(start, end) in seconds of each shot as `write_video` writes it."""
    rate = _as_rate(fps)
    return [(float(a / rate), float(b / rate)) for a, b in shot_frames(shots, rate)]


def _format_name(container: str | None) -> str | None:
    if container is None:
        return None  # FFmpeg guesses from the suffix (.mp4, .mkv, .webm, .avi, .mov, .m4a)
    return _FORMATS.get(container.lower().lstrip("."), container)


def _encode(
    path: str | os.PathLike[str],
    frames: Iterable[tuple[int, int, np.ndarray]],
    *,
    size: Size,
    codec: str,
    container: str | None,
    rate: Fraction,
    time_base: Fraction,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    faststart: bool = False,
    rotation: float | None = None,
    b_frames: bool = True,
) -> Path:
    """Encode (pts, duration, rgb) frames, pts and duration in `time_base`."""
    path = Path(path)
    width, height = _check_size(size)
    container_options = {"fflags": "+bitexact"}
    if faststart:
        container_options["movflags"] = "+faststart"
    codec_options = {**CODEC_OPTIONS.get(codec, {}), **(options or {})}
    if not b_frames:
        codec_options["bf"] = "0"
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # errors only; SVT-AV1 logs to stderr itself
    durations: dict[Fraction, Fraction] = {}  # frame start (s) -> its duration (s)

    with av.open(str(path), "w", format=_format_name(container), options=container_options) as out:
        stream = out.add_stream(codec, rate=rate, options=codec_options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        if gop:
            stream.codec_context.gop_size = gop
        if rotation:
            if not CAN_WRITE_ROTATION:
                raise RuntimeError(f"PyAV {av.__version__} cannot write a display matrix")
            stream.set_display_rotation(rotation)

        def mux(packets: Iterable[av.Packet]) -> None:
            for packet in packets:
                # Encoders leave durations at 0; without them the muxer guesses the last
                # frame's duration (and MP4 gets the VFR durations wrong).
                if packet.pts is not None and packet.time_base is not None:
                    seconds = durations.pop(packet.pts * packet.time_base, None)
                    if seconds is not None:
                        packet.duration = round(seconds / packet.time_base)
                out.mux(packet)

        for pts, duration, picture in frames:
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = pts
            frame.time_base = time_base
            durations[pts * time_base] = duration * time_base
            mux(stream.encode(frame))
        mux(stream.encode(None))
    return path


def write_video(
    path: str | os.PathLike[str],
    shots: Sequence[Shot],
    fps: float = 10,
    size: Size = (160, 120),
    codec: str = "libx264",
    container: str | None = None,
    *,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    faststart: bool = False,
) -> Path:
    """Write `shots` back to back at a constant frame rate; returns the path.

    Shot k covers frames `shot_frames(shots, fps)[k]`; `frame_fn` gets the time since the
    shot's start and the frame's index in the shot. `container`: a format name ("mp4",
    "mkv", "webm", "avi", "mov"), default: from the suffix. `gop`: maximum keyframe
    interval in frames (default: the encoder's, 250 for x264, with extra keyframes at
    scene cuts). `options`: extra encoder options. `faststart`: MP4/MOV index first.
    Codecs: libx264 (.mp4, .mov, .mkv), hevc (.mkv, .mp4), libvpx-vp9 (.webm),
    libsvtav1 (.mkv), mpeg4 (.avi).
    """
    rate = _as_rate(fps)
    width, height = _check_size(size)
    bounds = shot_frames(shots, rate)

    def frames() -> Iterator[tuple[int, int, np.ndarray]]:
        for (_, fn), (first, end) in zip(shots, bounds, strict=True):
            draw = _specialise(fn, (width, height))
            for index in range(end - first):
                yield first + index, 1, _fit(draw(float(index / rate), index), (width, height))

    return _encode(
        path,
        frames(),
        size=(width, height),
        codec=codec,
        container=container,
        rate=rate,
        time_base=1 / rate,
        gop=gop,
        options=options,
        faststart=faststart,
    )


def _vfr_schedule(
    durations: Sequence[float], intervals: Sequence[float]
) -> list[tuple[int, int, int, int]]:
    """(pts_ms, duration_ms, shot, index_in_shot) for every frame."""
    if not intervals or min(intervals) <= 0:
        raise ValueError("intervals must be positive")
    gaps = [max(1, round(1000 * g)) for g in intervals]
    schedule: list[tuple[int, int, int, int]] = []
    start, elapsed, gap_index = 0, 0.0, 0
    for shot, duration in enumerate(durations):
        elapsed += duration
        end = round(1000 * elapsed)
        if end <= start:
            raise ValueError(f"shot {shot} is shorter than a millisecond")
        pts, index = start, 0
        while pts < end:
            schedule.append((pts, 0, shot, index))
            pts += gaps[gap_index % len(gaps)]
            gap_index += 1
            index += 1
        start = end
    total = start
    return [
        (pts, (schedule[i + 1][0] if i + 1 < len(schedule) else total) - pts, shot, index)
        for i, (pts, _, shot, index) in enumerate(schedule)
    ]


def vfr_frame_times(
    shots: Sequence[Shot] | Sequence[float], intervals: Sequence[float] = DEFAULT_VFR_INTERVALS
) -> list[float]:
    """The frame times (s) that `write_vfr_video` writes for these shots (or durations)."""
    durations = [s[0] if isinstance(s, tuple) else float(s) for s in shots]
    return [pts / 1000 for pts, _, _, _ in _vfr_schedule(durations, intervals)]


def default_vfr_shots() -> list[Shot]:
    return [(2.0, solid((200, 40, 40))), (3.0, solid((40, 60, 200))), (1.5, solid((40, 170, 60)))]


def write_vfr_video(
    path: str | os.PathLike[str],
    shots: Sequence[Shot] | None = None,
    intervals: Sequence[float] = DEFAULT_VFR_INTERVALS,
    size: Size = (160, 120),
    codec: str = "libx264",
    container: str | None = None,
    *,
    b_frames: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """A variable frame rate video: time_base 1/1000, explicit pts.

    Within each shot, frames follow each other by gaps cycling through `intervals`
    (seconds, rounded to ms; the cycle runs on across shots); each shot's first frame
    is at the shot's start, and the last frame lasts until the end of the video (the
    sum of the durations). `vfr_frame_times(shots, intervals)` lists the times written.
    Default shots: red 2 s, blue 3 s, green 1.5 s. B-frames are off by default: with
    them, MP4 records the DTS span as the duration (see the module docstring).
    """
    shots = list(shots) if shots is not None else default_vfr_shots()
    width, height = _check_size(size)
    schedule = _vfr_schedule([d for d, _ in shots], intervals)
    average = Fraction(len(schedule) * 1000, max(1, sum(d for _, d, _, _ in schedule)))

    def frames() -> Iterator[tuple[int, int, np.ndarray]]:
        draws = [_specialise(fn, (width, height)) for _, fn in shots]
        starts = {shot: pts for pts, _, shot, index in schedule if index == 0}
        for pts, duration, shot, index in schedule:
            picture = draws[shot]((pts - starts[shot]) / 1000, index)
            yield pts, duration, _fit(picture, (width, height))

    return _encode(
        path,
        frames(),
        size=(width, height),
        codec=codec,
        container=container,
        rate=average.limit_denominator(1000),
        time_base=Fraction(1, 1000),
        options=options,
        b_frames=b_frames,
    )


def write_rotated_video(
    path: str | os.PathLike[str],
    rotation: int = 90,
    shots: Sequence[Shot] | None = None,
    fps: float = 10,
    size: Size = (160, 120),
    codec: str = "libx264",
    container: str | None = None,
) -> Path:
    """A video whose stream carries a display matrix: players turn the stored frames
    `rotation` degrees counter-clockwise for display (what `VideoFrame.rotation` reads
    back; a phone's portrait clip reads -90).

    `size` and the shots' pictures are the upright, displayed ones; the stored (coded)
    frames are turned the other way, and are height x width for +-90 (so a portrait
    `size` is stored landscape, as phones do). A reader that applies the rotation
    (`apply_rotation`) gets the shots' pictures back. Default shots: 1 s of
    `orientation_marker()` (red top-left corner when upright). Containers: mp4, mov,
    mkv, webm (AVI has no display matrix).
    """
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90, not {rotation}")
    shots = list(shots) if shots is not None else [(1.0, orientation_marker())]
    width, height = _check_size(size)
    quarter = (rotation // 90) % 4
    coded = (height, width) if quarter % 2 else (width, height)
    rate = _as_rate(fps)
    bounds = shot_frames(shots, rate)

    def frames() -> Iterator[tuple[int, int, np.ndarray]]:
        for (_, fn), (first, end) in zip(shots, bounds, strict=True):
            draw = _specialise(fn, (width, height))
            for index in range(end - first):
                upright = _fit(draw(float(index / rate), index), (width, height))
                yield first + index, 1, np.ascontiguousarray(np.rot90(upright, k=-quarter))

    return _encode(
        path,
        frames(),
        size=coded,
        codec=codec,
        container=container,
        rate=rate,
        time_base=1 / rate,
        rotation=rotation if quarter else None,
    )


def write_audio_only(
    path: str | os.PathLike[str], seconds: float = 1.0, sample_rate: int = 44100
) -> Path:
    """An AAC file (.m4a or .mp4) with one mono audio stream (a 440 Hz tone), no video."""
    path = Path(path)
    with av.open(str(path), "w", format=_format_name(None), options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("aac", rate=sample_rate, layout="mono")
        total, chunk = round(seconds * sample_rate), 1024
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            t = np.arange(start, start + n) / sample_rate
            samples = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


HUGE_SIZE = (8192, 4352)  # 35,651,584 px: over VideoLimits' default 8192*4320 = 35,389,440


def write_huge_resolution_header(
    path: str | os.PathLike[str], size: Size = HUGE_SIZE, codec: str = "libx264"
) -> Path:
    """One black frame at a huge size: a small file (about 100 kB) whose stream really
    is `size`. The default, 8192x4352, is H.264 level 6.2's largest frame (139,264
    macroblocks) and just over `VideoSettings`' default max_pixels; it takes about 0.5 s
    to write and 0.3 s to open (FFmpeg decodes the frame while probing). 16000x16000
    works too but takes about 4 s to write and 1.6 s to open; 16384 and more are refused
    by FFmpeg ("Picture size is invalid")."""
    width, height = _check_size(size)
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, value in zip(frame.planes, (16, 128, 128), strict=True):  # limited-range black
        np.frombuffer(plane, np.uint8)[:] = value
    path = Path(path)
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as out:
        options = {"preset": "ultrafast"} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=1, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# -- damaged files ---------------------------------------------------------------------
def _video_packet_spans(path: Path) -> list[tuple[float, int, int]]:
    """(time, payload position, size) of every video packet the demuxer can place. The
    payload is looked for from `packet.pos` on: in MP4 and AVI it starts there, in
    Matroska `pos` is the block's track number, 4 bytes before the payload."""
    data = path.read_bytes()
    spans = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return []
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                placed = packet.size and packet.pos is not None and packet.pos >= 0
                if placed and packet.pts is not None and packet.time_base is not None:
                    head = bytes(packet)[:16]
                    found = data.find(head, packet.pos, packet.pos + 64 + len(head))
                    start = float(packet.pts * packet.time_base)
                    spans.append((start, packet.pos if found < 0 else found, packet.size))
    except av.FFmpegError:
        return []
    return spans


def corrupt_middle(
    path_in: str | os.PathLike[str],
    path_out: str | os.PathLike[str],
    fraction: float = 0.1,
    seed: int = 0,
    where: str = "time",
) -> Path:
    """A copy with random bytes over the middle of the video.

    where="time" (default): the payloads of the video packets whose times lie in the
    middle `fraction` of the timeline are overwritten (found with PyAV's packet
    positions), so the damage is where the middle of the video is, whatever the file's
    layout; the container's index, headers and block headers stay intact. In MP4 + H.264 those packets
    raise InvalidDataError on decode, so do the frames that depend on them up to the
    next keyframe, and decoding is correct again from that keyframe on (a damaged
    keyframe makes the following P-frames decode against a stale picture, silently).
    where="bytes": `fraction` of the file's bytes around its middle (which can be the
    end of the media data, or the index, in a small file). Falls back to "bytes" when
    the packets cannot be placed. See the module docstring for other formats.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    path_in, path_out = Path(path_in), Path(path_out)
    data = bytearray(path_in.read_bytes())
    rng = np.random.default_rng(seed)
    spans = _video_packet_spans(path_in) if where == "time" else []
    if where not in ("time", "bytes"):
        raise ValueError(f'where must be "time" or "bytes", not {where!r}')
    if spans:
        times = [t for t, _, _ in spans]
        first, last = min(times), max(times)
        middle, half = (first + last) / 2, (last - first) * fraction / 2
        chosen = [s for s in spans if middle - half <= s[0] <= middle + half]
        if not chosen:  # a very short window: the packet nearest the middle
            chosen = [min(spans, key=lambda s: abs(s[0] - middle))]
        for _, pos, size in chosen:
            data[pos : pos + size] = rng.bytes(min(size, len(data) - pos))
    else:
        count = max(1, int(len(data) * fraction))
        start = (len(data) - count) // 2
        data[start : start + count] = rng.bytes(count)
    path_out.write_bytes(bytes(data))
    return path_out


def truncated(
    path_in: str | os.PathLike[str], path_out: str | os.PathLike[str], keep_fraction: float
) -> Path:
    """A copy of the first `keep_fraction` of the bytes."""
    if not 0 <= keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in [0, 1], not {keep_fraction}")
    data = Path(path_in).read_bytes()
    path_out = Path(path_out)
    path_out.write_bytes(data[: int(len(data) * keep_fraction)])
    return path_out


def zero_bytes(path: str | os.PathLike[str]) -> Path:
    """An empty file (e.g. "empty.mp4")."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def garbage_file(path: str | os.PathLike[str], size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video's name."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path


# -- reading back ----------------------------------------------------------------------
@dataclass
class ReadBack:
    """What decoding a file packet by packet found."""

    video_streams: int = 0
    audio_streams: int = 0
    codec: str | None = None  # decoder name, e.g. "h264", "libdav1d"
    width: int = 0
    height: int = 0
    rotation: int = 0  # VideoFrame.rotation of the first frame
    duration: float | None = None  # container duration, seconds
    stream_duration: float | None = None  # video stream duration, seconds (None in mkv)
    times: list[float] = field(default_factory=list)  # frame times, decode order
    errors: list[tuple[float | None, str]] = field(default_factory=list)  # (packet time, error)
    frames: list[np.ndarray] = field(default_factory=list)  # RGB, when keep_frames

    @property
    def frame_count(self) -> int:
        return len(self.times)


def read_back(
    path: str | os.PathLike[str], keep_frames: bool = False, thread_type: str | None = None
) -> ReadBack:
    """Decode every video packet of a file, catching errors per packet. Raises what
    `av.open` raises (InvalidDataError for unreadable files)."""
    result = ReadBack()
    with av.open(str(path)) as container:
        result.video_streams = len(container.streams.video)
        result.audio_streams = len(container.streams.audio)
        if container.duration is not None:
            result.duration = container.duration / av.time_base
        if not container.streams.video:
            return result
        stream = container.streams.video[0]
        if thread_type:
            stream.thread_type = thread_type
        result.codec = stream.codec_context.name
        result.width, result.height = stream.codec_context.width, stream.codec_context.height
        if stream.duration is not None and stream.time_base is not None:
            result.stream_duration = float(stream.duration * stream.time_base)
        first = True
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                when = float(packet.pts * packet.time_base) if packet.pts is not None else None
                result.errors.append((when, type(error).__name__))
                continue
            for frame in decoded:
                if first:
                    result.rotation = int(frame.rotation)
                    first = False
                result.times.append(float(frame.time) if frame.time is not None else math.nan)
                if keep_frames:
                    result.frames.append(frame.to_ndarray(format="rgb24"))
    return result
