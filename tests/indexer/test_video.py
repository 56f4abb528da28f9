"""Video indexing: timed segments, moments, kinds, formats, bad input and limits.

Decoding alone (keyframes, timestamps, rotation) is tested in tests/search/media/test_video.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.media import videos
from xmodal.indexer import DecodeOptions, index_paths
from xmodal.search.media import VideoSettings
from xmodal.search.store import item_id_for
from xmodal.synthetic.shapes import Scene, ShapeObject

RED, GREEN, BLUE = (220, 30, 30), (30, 180, 40), (30, 60, 220)


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
