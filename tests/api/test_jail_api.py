"""What the server reads for an item stays inside the indexed roots, also for items a
store written by an older version holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from xmodal.api import create_app
from xmodal.indexer import index_paths
from xmodal.search.store import INDEXED, ItemRecord, item_id_for, location_of

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX links and names")


def old_item(engine, path: Path, root: Path, **fields) -> str:
    """A row as an older version wrote it for `path` (it indexed links out of the root)."""
    location = location_of(path)
    item_id = item_id_for(location)
    engine.store.upsert_items(
        [ItemRecord(item_id, location, "image", str(root), status=INDEXED, **fields)]
    )
    return item_id


def test_links_out_of_the_roots_are_never_served(client, engine, indexed, make_image, tmp_path):
    lib = tmp_path / "lib"
    outside = make_image(tmp_path / "elsewhere" / "private.jpg", seed=40)
    (lib / "out.jpg").symlink_to(outside)
    (lib / "passwd.jpg").symlink_to("/etc/passwd")
    (lib / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(lib / "pipe.jpg")
    ids = {
        name: old_item(engine, lib / name, lib, content_hash="ab" * 32, bytes=2345)
        for name in ("out.jpg", "passwd.jpg", "zero.jpg", "pipe.jpg")
    }
    for name, item_id in ids.items():
        for route in ("", "/thumbnail", "/thumbnail?t=1", "/media"):
            response = client.get(f"/items/{item_id}{route}")
            assert response.status_code == 404, (name, route)
            assert "private" not in response.text and str(tmp_path) not in response.text
    assert not list((engine.store.path / "thumbnails").rglob("*.jpg"))


def test_a_thumbnail_cached_before_a_link_was_redirected_is_not_served(
    client, engine, indexed, make_image, tmp_path
):
    lib = tmp_path / "lib"
    target = make_image(lib / "sub" / "inside.jpg", seed=41)
    link = lib / "moving.jpg"
    link.symlink_to(target)  # inside: fine
    item_id = old_item(engine, link, lib, content_hash="cd" * 32)
    assert client.get(f"/items/{item_id}/thumbnail").status_code == 200
    assert client.get(f"/items/{item_id}/media").content == target.read_bytes()
    link.unlink()
    link.symlink_to(make_image(tmp_path / "elsewhere" / "private.jpg", seed=42))
    for route in ("", "/thumbnail", "/media"):
        assert client.get(f"/items/{item_id}{route}").status_code == 404, route


def test_a_root_that_is_a_link_still_serves_its_files(engine, settings, make_image, tmp_path):
    real = tmp_path / "real-lib"
    picture = make_image(real / "a.jpg", seed=43)
    linked = tmp_path / "linked-lib"
    linked.symlink_to(real)
    index_paths(engine, [linked])
    (item,) = engine.store.items_table(["id"]).to_pylist()
    with TestClient(create_app(settings, engine)) as client:
        assert client.get(f"/items/{item['id']}/media").content == picture.read_bytes()


def test_names_that_are_not_utf8_are_served(engine, settings, make_image, tmp_path):
    lib = tmp_path / "lib"
    odd = Path(os.fsdecode(os.fsencode(lib) + b"/caf\xe9.jpg"))
    make_image(odd, seed=44)
    report = index_paths(engine, [lib])
    assert report.indexed == 1
    item_id = item_id_for(location_of(odd))
    with TestClient(create_app(settings, engine)) as client:
        item = client.get(f"/items/{item_id}")
        assert item.status_code == 200 and item.json()["uri"] == location_of(odd)
        media = client.get(f"/items/{item_id}/media")
        assert media.status_code == 200 and media.content == odd.read_bytes()
        assert "caf" in media.headers["content-disposition"]
        assert client.get(f"/items/{item_id}/thumbnail").status_code == 200
        hits = client.post("/search", json={"text": "a photo", "k": 1}).json()["hits"]
        assert hits[0]["id"] == item_id


def test_path_traversal_through_ids_finds_nothing(client):
    for item_id in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "....//....//etc"):
        assert client.get(f"/items/{item_id}/media").status_code == 404
