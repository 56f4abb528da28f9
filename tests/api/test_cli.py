from __future__ import annotations

import contextlib
import json
import threading
import time

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


def table_header(out: str) -> list[str]:
    line = next(line for line in out.splitlines() if " rank " in line and " matched " in line)
    return [cell.strip() for cell in line.strip("┃│ ").replace("│", "┃").split("┃")]


def test_search_reranks_and_explains_in_process(xmodal, library, tiny_spec, tiny_vlm, monkeypatch):
    assert xmodal("index", str(library), "--model", tiny_spec, "--json")[0] == 0
    monkeypatch.setenv("XMODAL_RERANK__MODEL", tiny_vlm)
    query = ("search", "a red square", "-k", "3", "--no-server")

    code, out, err = xmodal(*query, "--rerank", "--explain", "1")
    assert code == 0, err
    assert table_header(out) == ["rank", "score", "calibrated", "rerank", "matched", "file", "id"]
    # All four pictures are reranked (rerank.top_n is 20), then the page of three shown.
    assert f"reranked the first 4 hit(s) with {tiny_vlm} (vqa) in " in out
    assert "4 picture(s) scored, 0 from the cache" in out
    explained = [line for line in out.splitlines() if line.startswith("1. ")]
    assert len(explained) == 1 and ": The picture shows" in explained[0]
    assert "heatmap:" not in out  # a relative URL means nothing without a server

    code, out, err = xmodal(*query, "--rerank-top", "2", "--explain", "2", "--json")
    body = json.loads(out)
    assert code == 0 and body["rerank"]["applied"] and body["rerank"]["candidates"] == 2
    assert [h["rerank_score"] is not None for h in body["hits"]] == [True, True, False]
    assert [h["explanation"] is not None for h in body["hits"]] == [True, True, False]
    assert body["hits"][0]["explanation"]["heatmap_url"].startswith("/items/")

    code, out, err = xmodal(*query, "--rerank-model", f"llava:{library / 'absent'}")
    assert code == 0 and "not reranked (model unavailable: " in out
    assert table_header(out) == ["rank", "score", "calibrated", "matched", "file", "id"]

    code, out, err = xmodal(*query)
    assert code == 0 and "rerank" not in table_header(out) and " reranked " not in out

    code, _, err = xmodal("search", "--similar", "0000000000000000", "--rerank")
    assert code == 2 and "text queries only" in err
    code, _, err = xmodal(*query, "--explain", "9")
    assert code == 2 and "explain must be between 0 and 5" in err


def test_explain_command_writes_the_heatmap(xmodal, library, tiny_spec, tiny_vlm, tmp_path):
    assert xmodal("index", str(library), "--model", tiny_spec, "--json")[0] == 0
    item_id = json.loads(xmodal("search", "a photo", "-k", "1", "--json")[1])["hits"][0]["id"]
    png = tmp_path / "heat.png"
    code, out, err = xmodal(
        "explain", "a red square", item_id, "--rerank-model", tiny_vlm, "--heatmap", str(png)
    )
    assert code == 0, err
    assert out.startswith("The picture shows") and f"explained by {tiny_vlm}" in out
    assert f"heatmap written to {png}" in out and "answered in-process" in out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    code, out, _ = xmodal("explain", "a red square", item_id, "--rerank-model", tiny_vlm, "--json")
    assert code == 0 and [w["word"] for w in json.loads(out)["words"]] == ["a", "red", "square"]
    code, _, err = xmodal("explain", "a red square", "0000000000000000")
    assert code == 2 and err == "error: no item with id '0000000000000000'\n"
    code, _, err = xmodal("explain", "x", item_id, "--rerank-model", "llava:nobody/absent-vlm")
    assert code == 3 and "not in the local Hugging Face cache" in err


@contextlib.contextmanager
def serving(data):
    """`xmodal serve` of `data` (settings from the environment) in a thread on a free
    port; yields its URL."""
    from xmodal.api.app import create_app
    from xmodal.api.server_link import announced_server
    from xmodal.api.settings import load_settings

    urls: list[str] = []
    server = announced_server(
        create_app(load_settings(data=data)), data, "127.0.0.1", 0, urls.append
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not urls and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert urls
    try:
        yield urls[0]
    finally:
        server.should_exit = True
        thread.join(30)


def test_rerank_and_explain_through_the_server(
    xmodal, library, tiny_spec, tiny_vlm, monkeypatch, tmp_path
):
    assert xmodal("index", str(library), "--model", tiny_spec, "--json")[0] == 0
    monkeypatch.setenv("XMODAL_RERANK__MODEL", tiny_vlm)
    query = ("search", "a red square", "-k", "3", "--rerank-top", "3", "--explain", "1")
    local = json.loads(xmodal(*query, "--json", "--no-server")[1])
    with serving(tmp_path / "data") as url:
        code, out, err = xmodal(*query, "--json")
        assert code == 0 and err.startswith(f"answered by the server at {url} in "), err
        served = json.loads(out)
        assert [h["id"] for h in served["hits"]] == [h["id"] for h in local["hits"]]
        assert served["rerank"]["applied"] and served["rerank"]["candidates"] == 3
        for mine, theirs in zip(local["hits"], served["hits"], strict=True):
            assert mine["rerank_score"] == pytest.approx(theirs["rerank_score"], abs=1e-4)
        heatmap_url = served["hits"][0]["explanation"]["heatmap_url"]
        assert heatmap_url == local["hits"][0]["explanation"]["heatmap_url"]

        code, out, err = xmodal(*query)
        assert code == 0 and f"   heatmap: {url}{heatmap_url}" in out

        png = tmp_path / "heat.png"
        item_id = served["hits"][0]["id"]
        code, out, err = xmodal("explain", "a red square", item_id, "--heatmap", str(png))
        assert code == 0 and f"answered by the server at {url} in " in out, err
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        code, _, err = xmodal("search", "--image", str(library / "0.jpg"), "--explain", "1")
        assert code == 2 and "text queries only" in err


def test_models_says_what_each_model_is_for(xmodal):
    code, out, err = xmodal("models")
    assert code == 0, err
    roles = dict(line.split(None, 1) for line in out.splitlines())
    assert roles["open_clip:"] == roles["xmodal-ref"] == "image-text encoder"
    assert roles["clap:"] == roles["xmodal-ref-audio"] == "audio-text encoder"
    assert roles["llava:"] == roles["xmodal-ref-vlm"] == "reranker"


def test_index_schema_types_the_metadata_columns(xmodal, library, tiny_spec, tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("file,zip,size\n" + "".join(f"lib/{i}.jpg,0123{i},4{i}\n" for i in range(4)))
    for args, message in [
        (("--metadata", str(meta), "--schema", "size=string"), "unknown type 'string'"),
        (("--schema", "size=text"), "of --metadata or --manifest"),
        (("--metadata", str(meta), "--schema", "colour=text"), "'colour', not a column"),
    ]:
        code, _, err = xmodal("index", str(library), "--model", tiny_spec, *args)
        assert code == 2 and message in err, err
    code, _, err = xmodal(
        "index",
        str(library),
        "--model",
        tiny_spec,
        "--metadata",
        str(meta),
        "--schema",
        "size=text",
    )
    assert code == 0, err
    code, out, _ = xmodal("search", "a photo", "-k", "4", "--json")
    metadata = {hit["uri"]: hit["metadata"] for hit in json.loads(out)["hits"]}
    # zip is text as inferred (leading zeros); size would be int but the schema says text.
    assert metadata[str(library / "1.jpg")] == {"zip": "01231", "size": "41"}
