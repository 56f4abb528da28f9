"""Sounds over HTTP and the CLI: merged text search, queries by sound, seekable audio."""

from __future__ import annotations

import json
import sys

import pytest
from fastapi.testclient import TestClient

from tests.media.audio import place, silence, text_file, tone, write_audio
from xmodal.api import create_app
from xmodal.api.cli import main
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths
from xmodal.search.store import item_id_for

RATE = 16000


@pytest.fixture
def sounds(audio_engine, make_image, tmp_path):
    lib = tmp_path / "lib"
    make_image(lib / "picture.jpg", seed=3)
    write_audio(
        lib / "beep.wav", place(silence(6.0, RATE), tone(880.0, 1.0, RATE), 2.5, RATE), RATE
    )
    write_audio(lib / "hum.flac", tone(150.0, 4.0, RATE, amplitude=0.3), RATE)
    index_paths(audio_engine, [lib])
    return lib


@pytest.fixture
def client(audio_engine, sounds):
    settings = Settings(data=audio_engine.store.path, server={"max_upload_bytes": 400_000})
    with TestClient(create_app(settings, audio_engine)) as test_client:
        yield test_client


def test_text_search_lists_pictures_and_sounds(client, sounds):
    body = client.post("/search", json={"text": "a beep", "k": 10}).json()
    matched = {(h["kind"], h["matched"]) for h in body["hits"]}
    assert matched == {("image", "picture"), ("audio", "sound")}
    assert all(h["calibrated_score"] is not None for h in body["hits"])
    beep = next(h for h in body["hits"] if h["uri"].endswith("beep.wav"))
    assert [(s["start"], s["end"]) for s in beep["segments"]] == [(2.0, 4.0)]

    only = client.post("/search", json={"text": "a beep", "kinds": ["audio"]}).json()
    assert {h["kind"] for h in only["hits"]} == {"audio"}
    none = client.post("/search", json={"text": "a beep", "min_score": 1e9}).json()
    assert none["hits"] == []
    health = client.get("/health").json()
    assert {s["name"] for s in health["spaces"]} == {"image-text", "audio-text"}


def test_search_by_uploaded_sound(client, sounds, tmp_path):
    data = (sounds / "hum.flac").read_bytes()
    response = client.post("/search/audio", files={"file": ("q.flac", data)}, data={"k": "2"})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["uri"] == str(sounds / "hum.flac") and hits[0]["matched"] == "sound"
    assert hits[0]["calibrated_score"] is None
    assert "search;dur=" in response.headers["server-timing"]

    bad = client.post(
        "/search/audio", files={"file": ("x.mp3", text_file(tmp_path / "x.mp3").read_bytes())}
    )
    assert bad.status_code == 415 and "not an audio file" in bad.json()["detail"]
    empty = client.post("/search/audio", files={"file": ("e.wav", b"")})
    assert empty.status_code == 415
    quiet = write_audio(tmp_path / "quiet.wav", silence(2.0, RATE), RATE).read_bytes()
    silent = client.post("/search/audio", files={"file": ("q.wav", quiet)})
    assert silent.status_code == 400 and "silent" in silent.json()["detail"]
    big = client.post("/search/audio", files={"file": ("b.wav", b"\0" * 500_000)})
    assert big.status_code == 413


def test_audio_media_supports_ranges(client, sounds):
    item = item_id_for(str(sounds / "beep.wav"))
    whole = client.get(f"/items/{item}/media")
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("audio/")
    assert whole.content == (sounds / "beep.wav").read_bytes()
    part = client.get(f"/items/{item}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"


def test_cli_prints_audio_moments(
    audio_engine, sounds, tiny_spec, tiny_clap_dir, monkeypatch, capsys
):
    monkeypatch.setenv("XMODAL_DATA", str(audio_engine.store.path))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(sys, "argv", ["xmodal", "search", "a beep", "--kind", "audio"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"{sounds / 'beep.wav'} @ 00:00:02–00:00:04" in out and "sound" in out

    monkeypatch.setattr(
        sys, "argv", ["xmodal", "search", "--audio", str(sounds / "hum.flac"), "-k", "1", "--json"]
    )
    with pytest.raises(SystemExit):
        main()
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["uri"] == str(sounds / "hum.flac")


def test_cli_indexes_sounds_with_the_audio_model_given(
    tmp_path, make_image, tiny_spec, tiny_clap_dir, monkeypatch, capsys
):
    lib = tmp_path / "cli-lib"
    make_image(lib / "picture.jpg", seed=5)
    write_audio(lib / "hum.flac", tone(150.0, 3.0, RATE, amplitude=0.3), RATE)
    monkeypatch.setenv("XMODAL_DATA", str(tmp_path / "cli-data"))

    def xmodal(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["xmodal", *args])
        with pytest.raises(SystemExit) as done:
            main()
        out, err = capsys.readouterr()
        return int(done.value.code or 0), out, err

    audio_model = f"clap:local-dir:{tiny_clap_dir}"
    code, out, _ = xmodal(
        "index", str(lib), "--model", tiny_spec, "--audio-model", audio_model, "--json"
    )
    assert code == 0 and json.loads(out)["indexed"] == 2
    info = json.loads(xmodal("info", "--json")[1])
    assert {s["name"]: s["model_spec"] for s in info["spaces"]}["audio-text"] == audio_model
    # Later runs use the store's audio model without being told.
    code, out, _ = xmodal("search", "a hum", "--kind", "audio", "--json")
    assert code == 0 and json.loads(out)["hits"][0]["uri"] == str(lib / "hum.flac")
    code, _, err = xmodal("index", str(lib), "--audio-model", "xmodal-ref")
    assert code == 2 and "image-text model" in err
