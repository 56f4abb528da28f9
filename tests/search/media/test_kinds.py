"""The table of media kinds: extensions, content sniffing, and the spaces each kind goes to."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import photo
from tests.media import audio, videos
from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.media import KINDS, MediaKind, kinds_in_space, media_kind


def test_kinds_are_the_strings_the_store_and_the_api_hold():
    assert [kind.value for kind in MediaKind] == ["image", "video", "audio"]
    assert MediaKind.VIDEO == "video" and MediaKind("audio") is MediaKind.AUDIO
    assert json.dumps({"kind": MediaKind.IMAGE}) == '{"kind": "image"}'
    assert f"{MediaKind.AUDIO}" == str(MediaKind.AUDIO) == "audio"
    assert set(KINDS) == set(MediaKind)


def test_every_extension_maps_to_exactly_one_kind(tmp_path):
    extensions = [ext for spec in KINDS.values() for ext in spec.extensions]
    assert len(extensions) == len(set(extensions))
    for kind, spec in KINDS.items():
        assert spec.extensions
        for ext in spec.extensions:
            assert ext.startswith(".") and ext == ext.lower()
            # By name alone: the files need not exist.
            assert media_kind(tmp_path / f"a{ext}") is kind
            assert media_kind(tmp_path / f"A{ext.upper()}") is kind


def _image(path: Path) -> Path:
    photo(1).save(path, "JPEG")
    return path


def _png(path: Path) -> Path:
    photo(2).save(path, "PNG")
    return path


def _video(path: Path) -> Path:
    return videos.write_video(path, [(1.0, videos.solid((200, 40, 40)))], fps=10)


def _vp9(path: Path) -> Path:
    return videos.write_video(
        path, [(1.0, videos.solid((40, 40, 200)))], fps=10, codec="libvpx-vp9"
    )


def _sound(path: Path) -> Path:
    return audio.write_audio(path, audio.tone(440.0, 1.0, 44100), 44100)


@pytest.mark.parametrize(
    ("written_as", "write", "kind"),
    [
        ("a.jpg", _image, MediaKind.IMAGE),
        ("a.png", _png, MediaKind.IMAGE),
        ("a.mp4", _video, MediaKind.VIDEO),
        ("a.mkv", _video, MediaKind.VIDEO),
        ("a.webm", _vp9, MediaKind.VIDEO),
        ("a.wav", _sound, MediaKind.AUDIO),
        ("a.flac", _sound, MediaKind.AUDIO),
        ("a.mp3", _sound, MediaKind.AUDIO),
        ("a.ogg", _sound, MediaKind.AUDIO),
    ],
)
def test_sniffing_recognises_each_kind_without_an_extension(
    tmp_path: Path, written_as: str, write: Callable[[Path], Path], kind: MediaKind
):
    renamed = write(tmp_path / written_as).rename(tmp_path / "no-extension")
    assert media_kind(renamed) is kind
    assert KINDS[kind].sniff(renamed.read_bytes()[:262]) is not None


def test_other_files_have_no_kind(tmp_path):
    (tmp_path / "notes").write_text("not media\n" * 40)
    (tmp_path / "notes.txt").write_text("not media\n")
    (tmp_path / "empty").write_bytes(b"")
    for name in ("notes", "notes.txt", "empty", "missing"):
        assert media_kind(tmp_path / name) is None


def test_spaces_hold_their_kinds():
    # A video has pictures and sound: it is in both spaces.
    assert kinds_in_space(IMAGE_TEXT) == {MediaKind.IMAGE, MediaKind.VIDEO}
    assert kinds_in_space(AUDIO_TEXT) == {MediaKind.AUDIO, MediaKind.VIDEO}
    assert kinds_in_space("no-such-space") == frozenset()
