"""Video: keyframes at cuts, timed segments, moments, formats and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.media import videos
from xmodal.indexer import DecodeOptions, VideoSettings, index_paths
from xmodal.indexer.video import KeyframeSettings, extract_keyframes, frame_at
from xmodal.search import MediaDecodeError
from xmodal.search.store import item_id_for
from xmodal.synthetic.shapes import Scene, ShapeObject

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


def shape_scene(colour: str, shape: str, position: str = "center") -> Scene:
    return Scene((ShapeObject(colour, shape, "large", position),))


@pytest.fixture
def reference_engine(tmp_path):
    from xmodal.search import Engine, Store, create_encoder

    return Engine(Store(tmp_path / "data"), create_encoder("xmodal-ref", device="cpu"))


def test_text_finds_the_moment_of_a_red_circle(tmp_path, reference_engine):
    lib = tmp_path / "lib"
    lib.mkdir()
    videos.write_video(
        lib / "story.mp4",
        [
            (7.0, videos.scene_image(shape_scene("blue", "square", "left"), seed=1)),
            (2.0, videos.scene_image(shape_scene("red", "circle"), seed=2)),
            (4.0, videos.scene_image(shape_scene("green", "star", "right"), seed=3)),
        ],
        fps=10,
        size=(192, 144),
    )
    videos.write_video(
        lib / "other.mp4",
        [(5.0, videos.scene_image(shape_scene("yellow", "cross"), seed=4))],
        fps=10,
    )
    report = index_paths(reference_engine, [lib])
    assert report.indexed == 2 and report.failed == []
    hit = reference_engine.search_text("a red circle", k=2).hits[0]
    assert hit.item.uri == str(lib / "story.mp4") and hit.item.kind == "video"
    best = hit.segments[0]
    assert best.start >= 7.0 - 0.25 and best.end <= 9.0 + 0.25


def test_videos_rank_with_images_and_kinds_narrow_the_list(tmp_path, reference_engine):
    from xmodal.synthetic.shapes import render

    lib = tmp_path / "lib"
    lib.mkdir()
    render(shape_scene("red", "circle"), np.random.default_rng(9), side=128).save(lib / "red.jpg")
    videos.write_video(
        lib / "clip.mp4", [(3.0, videos.scene_image(shape_scene("red", "circle"), seed=5))], fps=10
    )
    index_paths(reference_engine, [lib])
    kinds = {h.item.kind for h in reference_engine.search_text("a red circle", k=5).hits}
    assert kinds == {"image", "video"}
    only = reference_engine.search_text("a red circle", k=5, kinds=["video"]).hits
    assert [h.item.kind for h in only] == ["video"]
    by_image = reference_engine.search_image(lib / "red.jpg", k=5, kinds=["video"]).hits[0]
    assert by_image.segments[0].start == 0.0


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("h264.mp4", "libx264"),
        ("h264.mov", "libx264"),
        ("hevc.mkv", "hevc"),
        ("vp9.webm", "libvpx-vp9"),
        ("av1.mkv", "libsvtav1"),
        ("mpeg4.avi", "mpeg4"),
    ],
)
def test_containers_and_codecs(tmp_path, engine, name, codec):
    lib = tmp_path / "lib"
    lib.mkdir()
    videos.write_video(
        lib / name,
        [(1.5, videos.solid(RED)), (1.5, videos.solid(BLUE))],
        fps=10,
        size=(128, 96),
        codec=codec,
    )
    report = index_paths(engine, [lib])
    assert report.failed == [] and report.indexed == 1
    item = engine.store.item(item_id_for(str(lib / name)))
    assert item.kind == "video" and (item.width, item.height) == (128, 96)
    assert item.duration == pytest.approx(3.0, abs=0.2)
    assert report.segments == 2


def test_bad_videos_are_recorded_and_the_job_goes_on(tmp_path, engine, make_image):
    lib = tmp_path / "lib"
    lib.mkdir()
    make_image(lib / "fine.jpg")
    good = videos.write_video(
        lib / "good.mp4", [(2.0, videos.solid(RED)), (2.0, videos.solid(BLUE))], fps=10
    )
    (lib / "empty.mp4").write_bytes(b"")
    videos.write_audio_only(lib / "sound.mp4")
    (lib / "text.mkv").write_text("not a video at all\n" * 50)
    videos.truncated(good, lib / "half.mp4", keep_fraction=0.3)
    report = index_paths(engine, [lib])
    reasons = dict(report.failed)
    assert "empty" in reasons[str(lib / "empty.mp4")]
    assert "no video stream" in reasons[str(lib / "sound.mp4")]
    assert "not a readable video" in reasons[str(lib / "text.mkv")]
    assert {str(lib / "fine.jpg"), str(good)} <= {
        r["uri"]
        for r in engine.store.items_table(["uri", "status"]).to_pylist()
        if r["status"] == "indexed"
    }
    # A truncated file is either indexed in part or recorded: never fatal.
    assert (
        str(lib / "half.mp4") in reasons
        or engine.store.item(item_id_for(str(lib / "half.mp4"))).status == "indexed"
    )


def test_corrupt_middle_indexes_what_decodes_and_records_the_rest(tmp_path, engine):
    lib = tmp_path / "lib"
    lib.mkdir()
    source = videos.write_video(
        tmp_path / "source.mp4",
        [(4.0, videos.solid(RED)), (4.0, videos.solid(GREEN)), (4.0, videos.solid(BLUE))],
        fps=10,
        size=(160, 120),
        gop=10,  # a keyframe a second, so decoding recovers after the damage
    )
    videos.corrupt_middle(source, lib / "damaged.mp4")
    report = index_paths(engine, [lib])
    assert report.failed == [] and report.indexed == 1
    assert report.warnings and "corrupt" in report.warnings[0][1]
    item = engine.store.item(item_id_for(str(lib / "damaged.mp4")))
    assert item.status == "indexed" and "corrupt" in item.error
    segments = engine.store.segments_table("image-text").to_pylist()
    assert max(s["start"] for s in segments) >= 8.0  # the part after the damage is there


def test_limits_are_settings(tmp_path, engine):
    lib = tmp_path / "lib"
    lib.mkdir()
    videos.write_video(lib / "a.mp4", [(3.0, videos.solid(RED))], fps=10, size=(160, 120))
    tight = DecodeOptions(video=VideoSettings(max_pixels=160 * 119, max_seconds=3600))
    assert "video.max_pixels" in index_paths(engine, [lib], decode=tight).failed[0][1]
    short = DecodeOptions(video=VideoSettings(max_seconds=2.0))
    assert "video.max_seconds" in index_paths(engine, [lib], decode=short).failed[0][1]


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
