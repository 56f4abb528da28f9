"""`xmodal index --ray`: the same run as without it, decoded and embedded on Ray."""

from __future__ import annotations

import json

import pytest

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
