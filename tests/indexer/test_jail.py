"""An indexed root is a jail: what discovery skips, what it reads, and how far."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.media import videos
from xmodal.indexer import IndexOptions, index_paths
from xmodal.search.errors import MediaDecodeError
from xmodal.search.media import open_regular
from xmodal.search.store import INDEXED, item_id_for, location_of, path_of

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX links, FIFOs and names")

LATIN1_NAME = b"caf\xe9-cr\xe8me.jpg"  # "café-crème" as a Latin-1 system writes it


def stored_uris(engine) -> set[str]:
    return {r["uri"] for r in engine.store.items_table(["uri"]).to_pylist()}


def index_in_thread(engine, paths, seconds: float = 60.0, **kwargs):
    """index_paths, failing the test instead of hanging it when the run blocks."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["report"] = index_paths(engine, paths, **kwargs)
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the run still blocks after {seconds:g} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["report"]


def test_links_out_of_the_root_and_special_files_are_skipped_with_a_reason(
    engine, make_image, tmp_path
):
    lib = tmp_path / "lib"
    inside = make_image(lib / "a.jpg", seed=1)
    outside = make_image(tmp_path / "elsewhere" / "secret.jpg", seed=2)
    (lib / "out.jpg").symlink_to(outside)
    (lib / "passwd.jpg").symlink_to("/etc/passwd")
    (lib / "zero.mp4").symlink_to("/dev/zero")
    (lib / "up.jpg").symlink_to("../elsewhere/secret.jpg")  # relative, still out
    (lib / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (lib / "same.jpg").symlink_to(inside)  # stays inside: indexed under its own name
    os.mkfifo(lib / "pipe.mp4")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(lib / "sock.wav"))

    report = index_in_thread(engine, [lib])

    skipped = dict(report.skipped)
    assert set(skipped) == {
        str(lib / n)
        for n in (
            "out.jpg",
            "passwd.jpg",
            "zero.mp4",
            "up.jpg",
            "dangling.jpg",
            "pipe.mp4",
            "sock.wav",
        )
    }
    for name in ("out.jpg", "passwd.jpg", "up.jpg", "zero.mp4"):
        assert skipped[str(lib / name)] == "link to a file outside the indexed folder"
    assert skipped[str(lib / "pipe.mp4")] == "not a regular file: a named pipe (FIFO)"
    assert skipped[str(lib / "sock.wav")] == "not a regular file: a socket"
    assert "broken link" in skipped[str(lib / "dangling.jpg")]
    assert (report.indexed, report.failed) == (2, [])
    assert stored_uris(engine) == {str(inside), str(lib / "same.jpg")}
    assert "skipped 7" in report.summary()
    listener.close()


def test_special_files_without_a_media_name_are_never_opened(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    make_image(lib / "a.jpg")
    os.mkfifo(lib / "no-extension")  # would be sniffed: reading it would wait forever
    (lib / "random").symlink_to("/dev/urandom")
    fifo = tmp_path / "root.mp4"
    os.mkfifo(fifo)
    # Roots that are themselves a device or a FIFO are refused too, not read.
    report = index_in_thread(engine, [lib, Path("/dev/null"), fifo])
    assert report.indexed == 1
    assert dict(report.skipped) == {
        str(lib / "no-extension"): "not a regular file: a named pipe (FIFO)",
        str(lib / "random"): "link to a file outside the indexed folder",
        "/dev/null": "not a regular file: a character device",
        str(fifo): "not a regular file: a named pipe (FIFO)",
    }


def test_an_outside_link_already_in_an_old_store_is_removed_on_the_next_run(
    engine, make_image, tmp_path
):
    from xmodal.search.store import ItemRecord

    lib = tmp_path / "lib"
    make_image(lib / "a.jpg")
    (lib / "passwd.jpg").symlink_to("/etc/passwd")
    link = str(lib / "passwd.jpg")
    # What an older version wrote: the link indexed (a failed image, size and hash shown).
    engine.store.add_root(str(lib))
    engine.store.upsert_items(
        [ItemRecord(item_id_for(link), link, "image", str(lib), "ab" * 32, 1234, status="failed")]
    )
    report = index_paths(engine, [lib])
    assert report.removed == 1 and dict(report.skipped)[link]
    assert stored_uris(engine) == {str(lib / "a.jpg")}


def test_a_file_swapped_for_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "late.mp4"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(MediaDecodeError, match="named pipe"):
        open_regular(fifo)
    with pytest.raises(MediaDecodeError, match="character device"):
        open_regular(Path("/dev/zero"))
    assert time.monotonic() - started < 5


def test_a_fifo_that_appears_after_discovery_fails_that_file_only(
    engine, make_image, tmp_path, monkeypatch
):
    import xmodal.indexer.discover as discover

    lib = tmp_path / "lib"
    make_image(lib / "a.jpg")
    video = videos.write_video(lib / "v.mp4", [(1.0, videos.solid((200, 30, 30)))])
    real_plan = discover.plan_run

    def plan_then_swap(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        video.unlink()
        os.mkfifo(video)  # replaced between discovery and decoding
        return plan

    monkeypatch.setattr("xmodal.indexer.pipeline.plan_run", plan_then_swap)
    report = index_in_thread(engine, [lib])
    assert report.indexed == 1
    assert report.failed == [(str(video), "not a regular file: a named pipe (FIFO)")]


def test_files_over_the_size_caps_are_recorded_unread(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    small = make_image(lib / "small.jpg", size=(64, 48))
    big = make_image(lib / "big.png", size=(400, 300), format="PNG")
    video = videos.write_video(lib / "v.mp4", [(1.0, videos.solid((10, 200, 30)))])
    options = IndexOptions(
        max_image_bytes=small.stat().st_size, max_file_bytes=video.stat().st_size - 1
    )
    report = index_paths(engine, [lib], options)
    reasons = dict(report.failed)
    assert report.indexed == 1 and set(reasons) == {str(big), str(video)}
    assert "over the limit" in reasons[str(big)] and "indexing.max_image_bytes" in reasons[str(big)]
    assert "indexing.max_file_bytes" in reasons[str(video)]
    item = engine.store.item(item_id_for(str(video)))
    assert item.status == "failed" and item.content_hash == ""


def test_names_that_are_not_utf8_are_indexed_and_round_trip(engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    plain = make_image(lib / "plain.jpg", seed=1)
    odd = Path(os.fsdecode(os.fsencode(lib) + b"/" + LATIN1_NAME))
    make_image(odd, seed=2)
    odd_folder = Path(os.fsdecode(os.fsencode(lib) + b"/\xff\xfe"))
    nested = make_image(odd_folder / "b.jpg", seed=3)

    report = index_paths(engine, [lib])
    assert (report.indexed, report.failed) == (3, [])
    uris = stored_uris(engine)
    assert str(plain) in uris  # valid names are kept as they are
    for path in (odd, nested):
        location = location_of(path)
        assert location.startswith("file://") and location in uris
        assert os.fsencode(path_of(location)) == os.fsencode(path)  # bytes round-trip
        item = engine.store.item(item_id_for(location))
        assert item_id_for(str(path)) == item.id  # the path itself gives the same id
        assert item.status == INDEXED
        assert engine.store.original_path(item).read_bytes() == path.read_bytes()
    again = index_paths(engine, [lib])
    assert (again.indexed, again.unchanged, again.removed) == (0, 3, 0)


def test_a_root_whose_name_is_not_utf8(engine, make_image, tmp_path):
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/Fotos-\xe9t\xe9"))
    make_image(root / "a.jpg")
    report = index_paths(engine, [root])
    assert report.indexed == 1
    assert engine.store.roots() == [location_of(root)]
    assert index_paths(engine, [root]).unchanged == 1


def test_location_text_is_lossless_and_leaves_valid_names_alone():
    for raw in (
        b"/a/b c.jpg",
        b"/x/100%.jpg",
        b"/x/%41.jpg",
        b"/n/\xe9\xff%2F.jpg",
        "/ü/é".encode(),
    ):
        path = Path(os.fsdecode(raw))
        location = location_of(path)
        location.encode("utf-8")  # what Arrow needs
        assert os.fsencode(path_of(location)) == raw
    assert location_of("/x/100%.jpg") == "/x/100%.jpg"


def test_decoding_past_the_timeout_is_recorded(audio_engine, tmp_path):
    from tests.media.audio import tone, write_audio

    lib = tmp_path / "lib"
    lib.mkdir()
    video = videos.write_video(lib / "v.mp4", [(2.0, videos.solid((200, 30, 30)))])
    sound = write_audio(lib / "tone.wav", tone(440.0, 3.0, 16000), 16000)
    report = index_paths(audio_engine, [lib], IndexOptions(decode_timeout=1e-6))
    reasons = dict(report.failed)
    assert set(reasons) == {str(video), str(sound)}
    for reason in reasons.values():
        assert "setting indexing.decode_timeout" in reason
