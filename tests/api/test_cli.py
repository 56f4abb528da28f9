from __future__ import annotations

import json

import pytest


@pytest.fixture
def library(make_image, corrupt_files, tmp_path):
    lib = tmp_path / "lib"
    for i in range(4):
        make_image(lib / f"{i}.jpg", seed=i)
    return lib


def test_index_search_info_round_trip(xmodal, library, tiny_spec, corrupt_files):
    corrupt_files(library / "bad")
    code, out, _ = xmodal("index", str(library), "--model", tiny_spec, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["indexed"] == 4 and len(report["failed"]) == 6

    code, out, _ = xmodal("search", "a photo", "-k", "2", "--json")
    assert code == 0 and len(json.loads(out)["hits"]) == 2

    code, out, _ = xmodal("search", "--image", str(library / "1.jpg"), "-k", "1", "--json")
    assert json.loads(out)["hits"][0]["uri"] == str(library / "1.jpg")

    code, out, _ = xmodal("search", "a photo", "-k", "3")
    assert code == 0 and "1 " in out and "result(s)" in out

    code, out, _ = xmodal("info", "--json")
    info = json.loads(out)
    assert info["items"] == {"image/indexed": 4, "image/failed": 6}
    assert info["spaces"][0]["model_spec"] == tiny_spec

    code, out, _ = xmodal("index", str(library))
    assert code == 0 and "unchanged 4" in out and "not indexed" in out


def test_user_errors_exit_2_with_one_line(xmodal, library, tiny_spec, tmp_path):
    xmodal("index", str(library), "--model", tiny_spec, "--json")
    cases = [
        ("search",),
        ("search", "text", "--image", str(library / "0.jpg")),
        ("search", "--image", str(tmp_path / "absent.jpg")),
        ("search", "x", "--filter", "{not json"),
        ("search", "--similar", "0000000000000000"),
        ("index", str(tmp_path / "absent")),
        ("index", str(library), "--model", "nonsense"),
        ("index", str(library), "--model", "open_clip:ViT-B-32"),
    ]
    for args in cases:
        code, _, err = xmodal(*args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)


def test_other_model_for_existing_store_is_refused(xmodal, library, tiny_spec, tmp_path):
    import open_clip
    import torch

    torch.manual_seed(7)
    other = tmp_path / "other.pt"
    torch.save(open_clip.create_model("xmodal-tiny").state_dict(), other)
    assert xmodal("index", str(library), "--model", tiny_spec, "--json")[0] == 0
    code, _, err = xmodal("index", str(library), "--model", f"open_clip:xmodal-tiny/{other}")
    assert code == 2 and "was built with" in err


def test_missing_weights_exit_3(xmodal, library, tmp_path):
    code, _, err = xmodal(
        "index", str(library), "--model", f"open_clip:xmodal-tiny/{tmp_path / 'no.pt'}"
    )
    assert code == 3 and "not found" in err


def test_fail_fast_exits_1(xmodal, library, tiny_spec):
    (library / "zz-empty.jpg").write_bytes(b"")
    code, _, err = xmodal("index", str(library), "--model", tiny_spec, "--fail-fast", "--json")
    assert code == 1 and "zz-empty.jpg" in err


def test_usage_errors_exit_2(xmodal):
    code, _, _ = xmodal("index", "--no-such-option")
    assert code == 2


def test_index_saves_the_ann_index_and_reindex_rebuilds_it(
    xmodal, library, tiny_spec, make_image, monkeypatch
):
    # Past `ann_min_segments` the indexer leaves a saved index behind for servers to load.
    monkeypatch.setenv("XMODAL_ANN__MIN_SEGMENTS", "2")
    code, out, _ = xmodal("index", str(library), "--model", tiny_spec, "--json")
    assert code == 0 and json.loads(out)["index_kind"] == "hnsw"
    state = json.loads(xmodal("info", "--json")[1])["indexes"]["image-text"]
    assert state["kind"] == "hnsw" and state["count"] == 4 and state["up_to_date"]

    make_image(library / "new.jpg", seed=40)
    xmodal("index", str(library))
    state = json.loads(xmodal("info", "--json")[1])["indexes"]["image-text"]
    assert state["count"] == 5 and state["up_to_date"]
    code, out, _ = xmodal("search", "--image", str(library / "new.jpg"), "-k", "1", "--json")
    assert json.loads(out)["hits"][0]["uri"] == str(library / "new.jpg")

    code, out, _ = xmodal("reindex", "--kind", "flat", "--json")
    rebuilt = json.loads(out)["image-text"]
    assert code == 0 and rebuilt["kind"] == "flat" and rebuilt["built"]
    code, out, _ = xmodal("reindex", "--kind", "bogus")
    assert code == 2 and "ann.kind" in out + _ and "hnsw" in out + _

    monkeypatch.setenv("XMODAL_ANN__MIN_SEGMENTS", "50000")
    code, out, _ = xmodal("reindex")
    assert code == 0 and "searched exactly" in out
