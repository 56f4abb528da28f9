"""Videos with no audio model at hand: indexed by their pictures when nobody asked for
sound; an audio model asked for by name still stops the run before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.media.audio import tone, video_with_audio, write_audio
from xmodal.search.encoders import AUDIO_TEXT, DEFAULT_AUDIO_MODEL, IMAGE_TEXT
from xmodal.search.store import FAILED, INDEXED, item_id_for

RATE = 16000


@pytest.fixture
def clips(tmp_path, make_image) -> Path:
    lib = tmp_path / "videos"
    lib.mkdir()
    for i in range(2):
        video_with_audio(lib / f"clip{i}.mp4", seconds=2.0, event_at=1.0)
    write_audio(lib / "beep.wav", tone(440.0, 2.0, RATE), RATE)
    make_image(lib / "still.jpg")
    return lib


def test_without_the_default_audio_model_videos_are_indexed_by_their_pictures(
    xmodal, clips, tiny_spec, hf_cache, tmp_path
):
    # An empty model cache, offline: the default CLAP weights cannot be had.
    code, out, err = xmodal("index", str(clips), "--model", tiny_spec, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["indexed"] == 3
    assert [Path(f["path"]).name for f in report["failed"]] == ["beep.wav"]
    assert "audio model cannot be loaded" in report["failed"][0]["reason"]
    assert report["warnings"] == []  # said once, for the run:
    assert len(report["notices"]) == 1 and "sound not indexed" in report["notices"][0]
    assert DEFAULT_AUDIO_MODEL.split(":", 1)[-1] in report["notices"][0]

    from xmodal.search import Store

    store = Store(tmp_path / "data")
    assert store.space(AUDIO_TEXT) is None and store.space(IMAGE_TEXT) is not None
    for i in range(2):
        item = store.item(item_id_for(str(clips / f"clip{i}.mp4")))
        assert item.status == INDEXED and item.error.startswith("sound not indexed:")
        assert store.item_vectors(IMAGE_TEXT, item.id).shape[0] >= 1
    assert store.item(item_id_for(str(clips / "beep.wav"))).status == FAILED

    # Text mode prints the notice once, on stderr.
    (clips / "clip2.mp4").write_bytes((clips / "clip0.mp4").read_bytes())
    code, out, err = xmodal("index", str(clips))
    assert code == 0 and err.count("sound not indexed") == 1


def test_an_audio_model_asked_for_by_name_still_fails_fast(xmodal, clips, tiny_spec, hf_cache):
    code, out, err = xmodal(
        "index", str(clips), "--model", tiny_spec, "--audio-model", DEFAULT_AUDIO_MODEL
    )
    assert code == 3 and "audio model" in err
    code, out, _ = xmodal("info", "--json")
    assert json.loads(out)["items"] == {}
