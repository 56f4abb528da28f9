"""The synthetic video helpers write what they claim (read back with PyAV)."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media.videos import (
    CAN_WRITE_ROTATION,
    DECODER_NAME,
    HUGE_SIZE,
    MARKER_BACKGROUND,
    MARKER_RGB,
    apply_rotation,
    corner_colours,
    corrupt_middle,
    default_vfr_shots,
    garbage_file,
    moving_scene,
    read_back,
    scene_image,
    shape_scene,
    shot_bounds,
    solid,
    truncated,
    vfr_frame_times,
    write_audio_only,
    write_huge_resolution_header,
    write_rotated_video,
    write_vfr_video,
    write_video,
    zero_bytes,
)

RED, BLUE, GREEN = (220, 30, 30), (30, 50, 210), (40, 170, 60)
DEFAULT_MAX_PIXELS = 8192 * 4320  # VideoSettings' default


def close_to(actual, expected, tolerance: float = 12.0) -> bool:
    return bool(np.abs(np.asarray(actual, float) - np.asarray(expected, float)).max() <= tolerance)


@pytest.mark.parametrize(
    ("codec", "suffix"),
    [
        ("libx264", ".mp4"),
        ("libx264", ".mov"),
        ("hevc", ".mkv"),
        ("hevc", ".mp4"),
        ("libvpx-vp9", ".webm"),
        ("libsvtav1", ".mkv"),
        ("mpeg4", ".avi"),
    ],
)
def test_codecs_and_containers(tmp_path: Path, codec: str, suffix: str) -> None:
    shots = [(1.0, solid(RED)), (1.5, scene_image(seed=3)), (1.0, solid(BLUE))]
    path = write_video(tmp_path / f"clip{suffix}", shots, fps=10, codec=codec)
    assert path == tmp_path / f"clip{suffix}"

    got = read_back(path, keep_frames=True)
    assert got.codec == DECODER_NAME[codec]
    assert (got.width, got.height) == (160, 120)
    assert got.errors == []
    assert got.frame_count == 35
    assert sorted(got.times) == pytest.approx([i / 10 for i in range(35)], abs=1e-3)
    assert got.duration == pytest.approx(3.5, abs=0.06)
    by_time = dict(zip(got.times, got.frames, strict=True))
    assert close_to(by_time[0.0].reshape(-1, 3).mean(0), RED)
    assert close_to(by_time[3.4].reshape(-1, 3).mean(0), BLUE)


def test_shot_bounds_and_contents(tmp_path: Path) -> None:
    shots = [(1.25, solid(RED)), (2.0, scene_image(seed=1)), (0.75, scene_image(seed=2))]
    # boundaries are rounded half up from cumulative durations: 12.5 -> 13, 32.5 -> 33
    assert shot_bounds(shots, fps=10) == [(0.0, 1.3), (1.3, 3.3), (3.3, 4.0)]
    path = write_video(tmp_path / "shots.mp4", shots, fps=10, size=(96, 64))
    got = read_back(path, keep_frames=True)
    assert got.frame_count == 40
    frames = [f.astype(np.float32) for _, f in sorted(zip(got.times, got.frames, strict=True))]
    mean_diff = [np.abs(b - a).mean() for a, b in itertools.pairwise(frames)]
    cuts = [i + 1 for i, d in enumerate(mean_diff) if d > 15]
    assert cuts == [13, 33]  # frames 13 and 33 start the second and third shots
    still = [d for i, d in enumerate(mean_diff) if i + 1 not in cuts]
    assert max(still) < 3  # within a still shot, frames are (nearly) identical


def test_same_call_same_bytes(tmp_path: Path) -> None:
    shots = [(1.0, scene_image(seed=5, noise=2.0)), (1.0, moving_scene(seed=6))]
    a = write_video(tmp_path / "a.mkv", shots).read_bytes()
    b = write_video(tmp_path / "b.mkv", shots).read_bytes()
    assert a == b


def test_scene_frames() -> None:
    still = scene_image(shape_scene("red", "circle"), seed=0)
    draw = still.for_size((160, 120))
    assert draw(0.0, 0).shape == (120, 160, 3)
    assert np.array_equal(draw(0.0, 0), draw(0.5, 5))
    assert "red circle" in still.caption()
    assert scene_image(seed=1).scene == scene_image(seed=1).scene  # seeded

    noisy = scene_image(seed=1, noise=2.0).for_size((160, 120))
    diff = np.abs(noisy(0, 0).astype(int) - noisy(0.1, 1).astype(int))
    assert 0 < diff.mean() < 4

    moving = moving_scene(seed=1, noise=0).for_size((160, 120))
    assert np.abs(moving(0.0, 0).astype(int) - moving(1.0, 10).astype(int)).mean() > 1


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".mkv", "libx264")])
def test_variable_frame_rate(tmp_path: Path, suffix: str, codec: str) -> None:
    path = write_vfr_video(tmp_path / f"vfr{suffix}", codec=codec)
    got = read_back(path, keep_frames=True)
    expected = vfr_frame_times(default_vfr_shots())
    gaps = np.diff(expected)
    assert gaps.min() < 0.05 and gaps.max() > 0.9  # really variable
    assert sorted(got.times) == pytest.approx(expected, abs=1e-3)
    assert got.duration == pytest.approx(6.5, abs=1e-3)
    # the frames at the shot starts (0, 2 and 5 s) have the shots' colours
    by_time = {round(t, 3): f for t, f in zip(got.times, got.frames, strict=True)}
    assert close_to(by_time[2.0].reshape(-1, 3).mean(0), (40, 60, 200))
    assert close_to(by_time[5.0].reshape(-1, 3).mean(0), (40, 170, 60))


@pytest.mark.skipif(not CAN_WRITE_ROTATION, reason="this PyAV cannot write a display matrix")
@pytest.mark.parametrize(
    ("rotation", "suffix", "codec"),
    [
        (90, ".mp4", "libx264"),
        (-90, ".mov", "libx264"),
        (180, ".mkv", "hevc"),
        (270, ".webm", "libvpx-vp9"),
    ],
)
def test_rotation_metadata(tmp_path: Path, rotation: int, suffix: str, codec: str) -> None:
    # shown upright as 120 wide x 160 high (portrait): stored turned, 160 x 120 for +-90
    path = write_rotated_video(tmp_path / f"rot{suffix}", rotation, size=(120, 160), codec=codec)
    got = read_back(path, keep_frames=True)
    assert got.rotation % 360 == rotation % 360  # 180 reads back -180, 270 as -90
    coded = (160, 120) if rotation % 180 else (120, 160)
    assert (got.width, got.height) == coded
    assert got.frames[0].shape == (coded[1], coded[0], 3)

    upright = apply_rotation(got.frames[0], got.rotation)
    assert upright.shape == (160, 120, 3)
    corners = corner_colours(upright)
    assert close_to(corners["top_left"], MARKER_RGB)
    for name in ("top_right", "bottom_left", "bottom_right"):
        assert close_to(corners[name], MARKER_BACKGROUND)
    # without the rotation, the marker is in another corner
    assert not close_to(corner_colours(got.frames[0])["top_left"], MARKER_RGB)


def test_unrotated_video_reads_zero(tmp_path: Path) -> None:
    got = read_back(write_video(tmp_path / "plain.mp4", [(0.5, solid(RED))]))
    assert got.rotation == 0


@pytest.mark.parametrize("name", ["tone.m4a", "tone.mp4"])
def test_audio_only(tmp_path: Path, name: str) -> None:
    got = read_back(write_audio_only(tmp_path / name, seconds=1.0))
    assert (got.video_streams, got.audio_streams) == (0, 1)
    assert got.duration == pytest.approx(1.0, abs=0.05)
    assert got.frame_count == 0


def test_corrupt_middle(tmp_path: Path) -> None:
    shots = [(4.0, solid(RED)), (4.0, solid(GREEN)), (4.0, solid(BLUE))]
    clean = write_video(tmp_path / "clean.mp4", shots, fps=10)
    assert read_back(clean).errors == []
    broken = corrupt_middle(clean, tmp_path / "broken.mp4", fraction=0.1)
    assert broken.stat().st_size == clean.stat().st_size
    assert broken.read_bytes() != clean.read_bytes()

    got = read_back(broken, keep_frames=True)
    assert got.errors, "some packets must fail to decode"
    assert {name for _, name in got.errors} == {"InvalidDataError"}
    error_times = [t for t, _ in got.errors]
    assert min(error_times) >= 5.0 and max(error_times) < 8.0  # the middle of the green shot
    assert 0 < got.frame_count < 120
    # frames decode before the damage, and correctly again from the next keyframe on
    by_time = dict(zip(got.times, got.frames, strict=True))
    assert close_to(by_time[0.0].reshape(-1, 3).mean(0), RED)
    assert close_to(by_time[4.5].reshape(-1, 3).mean(0), GREEN)
    assert max(got.times) == pytest.approx(11.9)
    assert all(close_to(by_time[t].reshape(-1, 3).mean(0), BLUE) for t in got.times if t >= 8)
    # the same with frame threading, errors caught per packet
    assert read_back(broken, thread_type="AUTO").frame_count == got.frame_count


@pytest.mark.parametrize(
    ("codec", "suffix"),
    [
        ("libx264", ".mkv"),
        ("hevc", ".mkv"),
        ("libvpx-vp9", ".webm"),
        ("libsvtav1", ".mkv"),
        ("mpeg4", ".avi"),
    ],
)
def test_corrupt_middle_any_format(tmp_path: Path, codec: str, suffix: str) -> None:
    shots = [(1.5, scene_image(seed=s)) for s in range(3)] + [(1.5, moving_scene(seed=9))]
    clean = write_video(tmp_path / f"clean{suffix}", shots, fps=10, gop=10, codec=codec)
    got = read_back(corrupt_middle(clean, tmp_path / f"broken{suffix}"))
    assert {name for _, name in got.errors} == {"InvalidDataError"}
    # the middle 10% of 0-5.9 s, and what depends on it up to the next keyframe (gop 1 s)
    assert all(2.5 <= t < 4.5 for t, _ in got.errors)
    assert 0 < got.frame_count < 60
    assert min(got.times) == 0.0 and max(got.times) == pytest.approx(5.9)


def test_corrupt_middle_by_bytes(tmp_path: Path) -> None:
    shots = [(1.5, scene_image(seed=s)) for s in range(3)] + [(1.5, moving_scene(seed=9))]
    clean = write_video(tmp_path / "clean.mp4", shots, fps=10, gop=10)
    broken = corrupt_middle(clean, tmp_path / "broken.mp4", fraction=0.1, where="bytes")
    got = read_back(broken)
    assert got.errors and 0 < got.frame_count < 60
    assert min(got.times) == 0.0 and max(got.times) == pytest.approx(5.9)


def test_truncated(tmp_path: Path) -> None:
    shots = [(1.0, scene_image(seed=s)) for s in range(4)]
    plain = write_video(tmp_path / "plain.mp4", shots, gop=10)
    with pytest.raises(av.error.InvalidDataError):  # the moov index is at the end
        read_back(truncated(plain, tmp_path / "plain-half.mp4", 0.5))

    for name, kwargs in (("fast.mp4", {"faststart": True}), ("clip.mkv", {})):
        whole = write_video(tmp_path / name, shots, gop=10, **kwargs)
        half = truncated(whole, tmp_path / f"half-{name}", 0.5)
        assert half.stat().st_size == whole.stat().st_size // 2
        got = read_back(half)
        assert 0 < got.frame_count < 40
        assert min(got.times) == 0.0


def test_unreadable_files(tmp_path: Path) -> None:
    empty = zero_bytes(tmp_path / "empty.mp4")
    assert empty.stat().st_size == 0
    junk = garbage_file(tmp_path / "junk.mkv")
    assert junk.stat().st_size == 4096
    for path in (empty, junk):
        with pytest.raises(av.error.InvalidDataError):
            read_back(path)


def test_huge_resolution(tmp_path: Path) -> None:
    path = write_huge_resolution_header(tmp_path / "huge.mp4")
    assert path.stat().st_size < 400_000
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
    assert (width, height) == HUGE_SIZE
    assert width * height > DEFAULT_MAX_PIXELS


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", [(1.0, solid(RED))], size=(161, 120))
    with pytest.raises(ValueError, match="no frame"):
        write_video(tmp_path / "short.mp4", [(0.01, solid(RED))], fps=10)
    with pytest.raises(ValueError, match="multiple of 90"):
        write_rotated_video(tmp_path / "r.mp4", rotation=45)
