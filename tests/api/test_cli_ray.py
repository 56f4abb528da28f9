"""`xmodal index --ray`, and a server's catalog jobs on Ray: the same runs as without
it, decoded and embedded on Ray."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from xmodal.search.store import catalog_item_id

pytestmark = pytest.mark.slow


def test_index_on_ray_reports_as_a_local_run(xmodal, make_image, tiny_spec, tmp_path, ray_cluster):
    lib = tmp_path / "lib"
    for seed in range(3):
        make_image(lib / f"{seed}.jpg", seed=seed)
    (lib / "broken.jpg").write_bytes(b"not a picture")
    index = ["index", str(lib), "--model", tiny_spec, "--json"]

    # `local` with a cluster already joined (the fixture's): the run uses it.
    code, out, err = xmodal(*index, "--ray", "local", "--ray-actors", "1", "--ray-batch-size", "2")
    assert code == 0, err
    report = json.loads(out)
    assert report["indexed"] == 3 and [f["path"] for f in report["failed"]] == [
        str(lib / "broken.jpg")
    ]
    assert ray_cluster.is_initialized()  # not shut down: this process had joined it

    code, out, _ = xmodal(*index)  # the local run finds nothing new
    assert code == 0 and json.loads(out)["unchanged"] == 3


def test_a_manifest_on_ray_writes_its_items(xmodal, make_image, tiny_spec, tmp_path, ray_cluster):
    paths = [make_image(tmp_path / "media" / f"{seed}.jpg", seed=seed) for seed in range(3)]
    manifest = tmp_path / "products.csv"
    manifest.write_text(
        "sku,url,colour\n" + "".join(f"p{i},{p},red\n" for i, p in enumerate(paths))
    )
    index = ["index", "--manifest", str(manifest), "--model", tiny_spec, "--json"]

    code, out, err = xmodal(*index, "--ray", "local", "--ray-batch-size", "2")
    assert code == 0, err
    assert json.loads(out)["created"] == 3

    code, out, _ = xmodal("search", "--image", str(paths[1]), "-k", "1", "--json")
    assert code == 0 and json.loads(out)["hits"][0]["id"] == catalog_item_id("p1")


def test_a_server_runs_its_catalog_jobs_on_ray(engine, ray_cluster, monkeypatch):
    from fastapi.testclient import TestClient

    from tests.api.test_catalog_api import b64, jpeg
    from tests.api.test_catalog_jobs import settings_for, wait_for
    from xmodal.api import create_app
    from xmodal.search import Store
    from xmodal.search.encoders import IMAGE_TEXT

    def refuse(self, space, segments):
        raise AssertionError("the server wrote segment rows: the job did not run on Ray")

    monkeypatch.setattr(Store, "upsert_segments", refuse)  # the workers write them
    # `auto`: the cluster this process joined (the fixture's).
    settings = settings_for(engine, ray_address="auto", ray_chunk_items=8)
    items = [{"id": f"R{i}", "data": b64(jpeg(400 + i)), "metadata": {"n": i}} for i in range(12)]
    with TestClient(create_app(settings, engine)) as client:
        job_id = client.post("/items/batch", json={"items": items}).json()["id"]
        job = wait_for(client, job_id)
        assert job["state"] == "done" and job["counts"] == {"created": 12}, job
        similar = client.post("/search", json={"item_id": "R5", "k": 11}).json()["hits"]
        assert len(similar) == 11  # every other item, each searchable by its vector
    picture = Image.open(io.BytesIO(jpeg(405))).convert("RGB")
    assert engine.search_image(picture, k=1).hits[0].item.id == catalog_item_id("R5")
    assert engine.store.count_items() == 12 == engine.store.count_segments(IMAGE_TEXT)
    assert ray_cluster.is_initialized()  # the server did not start it: it leaves it
