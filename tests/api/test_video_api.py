"""Video over HTTP and the CLI: moments in hits, thumbnails at a time, seekable media."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.media import videos
from xmodal.api import create_app
from xmodal.api.settings import Settings
from xmodal.indexer import index_paths
from xmodal.search.store import item_id_for

RED, GREEN, BLUE = (220, 30, 30), (30, 180, 40), (30, 60, 220)


@pytest.fixture
def video_library(engine, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    path = videos.write_video(
        lib / "clip.mp4",
        [(3.0, videos.solid(RED)), (3.0, videos.solid(GREEN)), (3.0, videos.solid(BLUE))],
        fps=10,
        size=(160, 120),
    )
    index_paths(engine, [lib])
    return path


@pytest.fixture
def client(engine, video_library, tmp_path):
    settings = Settings(data=engine.store.path, server={"thumbnail_size": 64})
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client


def test_video_hit_carries_moments_with_times(client, video_library):
    hits = client.post("/search", json={"text": "anything", "kinds": ["video"]}).json()["hits"]
    assert len(hits) == 1
    hit = hits[0]
    assert hit["kind"] == "video" and hit["duration"] == pytest.approx(9.0, abs=0.15)
    for moment in hit["segments"]:
        assert 0.0 <= moment["start"] < moment["end"] <= hit["duration"] + 1e-6
    assert client.post("/search", json={"text": "x", "kinds": ["image"]}).json()["hits"] == []
    assert client.post("/search", json={"text": "x", "kinds": ["hologram"]}).status_code == 422


@pytest.mark.parametrize(("seconds", "colour"), [(1.0, RED), (4.5, GREEN), (8.0, BLUE)])
def test_thumbnail_at_a_time_shows_that_moment(client, video_library, seconds, colour):
    item_id = item_id_for(str(video_library))
    response = client.get(f"/items/{item_id}/thumbnail", params={"t": seconds})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    pixel = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))[10, 10].astype(int)
    assert np.abs(pixel - np.asarray(colour)).max() < 40


def test_video_media_is_seekable(client, video_library):
    item_id = item_id_for(str(video_library))
    original = video_library.read_bytes()
    response = client.get(f"/items/{item_id}/media", headers={"Range": "bytes=100-299"})
    assert response.status_code == 206 and response.content == original[100:300]
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-range"] == f"bytes 100-299/{len(original)}"
    assert client.get(f"/items/{item_id}/thumbnail", params={"t": -1}).status_code == 422


def test_cli_prints_moments(engine, video_library, monkeypatch, capsys):
    from xmodal.api.cli import main

    monkeypatch.setenv("XMODAL_DATA", str(engine.store.path))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["xmodal", "search", "anything", "--kind", "video"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"{video_library} @ 00:00:0" in out and "–00:00:0" in out

    monkeypatch.setattr(sys, "argv", ["xmodal", "search", "anything", "--json"])
    with pytest.raises(SystemExit):
        main()
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert hit["segments"] and hit["segments"][0]["end"] > hit["segments"][0]["start"]
