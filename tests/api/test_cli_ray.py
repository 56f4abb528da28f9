"""`xmodal index --ray`: the same run as without it, decoded and embedded on Ray."""

from __future__ import annotations

import json

import pytest

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
