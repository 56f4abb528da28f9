"""`xmodal index` with URLs and manifests: catalog items from the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.api.test_catalog_api import jpeg
from tests.media_server import MediaServer, serving


@pytest.fixture
def media() -> Iterator[MediaServer]:
    with serving(MediaServer()) as httpd:
        yield httpd  # type: ignore[misc]


def test_urls_and_a_manifest_then_a_re_run_fetches_only_what_changed(
    xmodal, media, tiny_spec, tmp_path
):
    urls = [media.put(f"/u/{n}.jpg", jpeg(n)) for n in range(3)]
    missing = media.url("/u/gone.jpg")
    code, out, err = xmodal("index", *urls, missing, "--model", tiny_spec, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["created"], summary["failed"], summary["embedded"]) == (3, 1, 3)
    assert summary["failures"] == [{"id": missing, "reason": "HTTP 404 Not Found"}]

    manifest = tmp_path / "shop.jsonl"
    lines = [
        {"sku": f"{n:05d}", "url": media.put(f"/m/{n}.jpg", jpeg(50 + n)), "price": n + 0.5}
        for n in range(4)
    ]
    lines.append({"sku": "00009", "price": 1})  # no url: a problem of that line
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, out, err = xmodal("index", "--manifest", str(manifest), "--model", tiny_spec, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["created"], summary["failed"]) == (4, 1)
    assert "no url" in summary["failures"][0]["reason"]

    # A re-run asks again with the ETags kept: 304s, nothing downloaded nor embedded.
    media.put("/m/2.jpg", jpeg(999))  # except the one that changed
    code, out, err = xmodal("index", "--manifest", str(manifest), "--model", tiny_spec, "--json")
    summary = json.loads(out)
    assert (summary["unchanged"], summary["updated"], summary["embedded"]) == (3, 1, 1)
    assert (summary["not_modified"], summary["fetched"]) == (3, 1)

    code, out, err = xmodal("search", "photo", "--json", "-k", "20")
    hits = json.loads(out)["hits"]
    assert sorted(h["external_id"] for h in hits) == sorted(
        [*urls, *(f"{n:05d}" for n in range(4))]
    )


def test_nothing_to_index_is_a_one_line_error(xmodal):
    code, _, err = xmodal("index")
    assert code == 2 and "nothing to index" in err
