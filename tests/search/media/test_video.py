"""Video decoding: keyframes at cuts, true timestamps, rotation, bad input (search.media.video)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.media import videos
from xmodal.search import MediaDecodeError
from xmodal.search.media.video import KeyframeSettings, extract_keyframes, frame_at

RED, GREEN, BLUE, WHITE = (220, 30, 30), (30, 180, 40), (30, 60, 220), (240, 240, 240)


def starts(result) -> list[float]:
    return [k.start for k in result.keyframes]


def test_keyframes_land_within_one_sampling_interval_of_each_cut(tmp_path):
    path = videos.write_video(
        tmp_path / "cuts.mp4",
        [
            (3.0, videos.solid(RED)),
            (2.5, videos.solid(GREEN)),
            (4.0, videos.solid(BLUE)),
            (1.5, videos.solid(WHITE)),
        ],
        fps=10,
    )
    settings = KeyframeSettings()
    result = extract_keyframes(path, settings)
    assert result.duration == pytest.approx(11.0, abs=0.15)
    for cut in (3.0, 5.5, 9.5):
        nearest = min(starts(result), key=lambda s: abs(s - cut))
        assert abs(nearest - cut) <= settings.sample_interval + 1e-6, (cut, starts(result))
    # Spans tile the video: [0, c1), [c1, c2), ... [cn, duration).
    spans = [(k.start, k.end) for k in result.keyframes]
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(result.duration)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_static_video_keeps_one_keyframe_and_max_gap_applies_to_slow_change(tmp_path):
    static = videos.write_video(tmp_path / "static.mp4", [(12.0, videos.solid(GREEN))], fps=5)
    assert len(extract_keyframes(static).keyframes) == 1  # max-gap keyframes would be duplicates

    def drifting(t: float, index: int) -> np.ndarray:
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[..., 0] = int(20 + 15 * t)  # slow: never a cut between frames 0.1 s apart
        frame[..., 2] = 120
        return frame

    slow = videos.write_video(tmp_path / "slow.mp4", [(12.0, drifting)], fps=5)
    result = extract_keyframes(slow, KeyframeSettings(max_gap=3.0))
    gaps = np.diff([*starts(result), result.duration])
    # A max-gap keyframe comes at the first analysed frame past the gap (reference
    # frames only, here 5 fps with B-frames skipped).
    assert len(result.keyframes) >= 4 and gaps.max() <= 3.0 + 0.5


def test_min_gap_limits_keyframes_on_flicker(tmp_path):
    shots = [(0.2, videos.solid(RED if i % 2 else BLUE)) for i in range(20)]
    path = videos.write_video(tmp_path / "flicker.mp4", shots, fps=10)
    result = extract_keyframes(path, KeyframeSettings(min_gap=1.0, duplicate_threshold=0.0))
    assert np.diff(starts(result)[1:]).min() >= 1.0 - 1e-6


def test_variable_frame_rate_keeps_true_timestamps(tmp_path):
    # Red 2 s, blue 3 s, green 1.5 s, frames 33 ms to 1 s apart: cuts at exactly 2.0 and 5.0.
    path = videos.write_vfr_video(tmp_path / "vfr.mkv")
    written = set(videos.vfr_frame_times(videos.default_vfr_shots()))
    settings = KeyframeSettings()
    result = extract_keyframes(path, settings)
    cuts = [k.start for k in result.keyframes]
    assert len(cuts) == 3 and cuts[0] == 0.0
    for found, true in zip(cuts[1:], (2.0, 5.0), strict=True):
        assert true <= found <= true + settings.sample_interval
    assert all(round(k.time, 3) in written for k in result.keyframes)  # real frame times
    assert result.duration == pytest.approx(6.5, abs=0.05)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    # Shown upright as 96 wide × 128 high, with a red top-left corner; coded turned.
    path = videos.write_rotated_video(tmp_path / "rotated.mp4", rotation=rotation, size=(96, 128))
    result = extract_keyframes(path)
    assert (result.width, result.height) == (96, 128)
    for image in (result.keyframes[0].image, frame_at(path, 0.5)):
        assert image.width < image.height
        corners = videos.corner_colours(np.asarray(image))
        assert corners["top_left"][0] > 180 and corners["bottom_right"][0] < 140


def test_zero_byte_file_raises_a_reason(tmp_path):
    path = tmp_path / "zero.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaDecodeError, match="empty"):
        extract_keyframes(path)
