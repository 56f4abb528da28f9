"""The search page at / in a real Chromium, over a live server and the demo library."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def ask(base: str, body: dict[str, Any], key: str | None = None) -> list[dict[str, Any]]:
    """The API's own answer, to compare the page with."""
    headers = {"X-API-Key": key} if key else {}
    response = httpx.post(f"{base}/search", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["hits"]


def open_page(page: Any, url: str) -> None:
    """The page at `url`, once its filters are built (they are folded on a phone)."""
    page.goto(url)
    page.wait_for_selector("#facet-list .facet", state="attached")


def search(page: Any, text: str) -> None:
    page.fill("#query", text)
    page.press("#query", "Enter")
    wait_for_results(page)


def wait_for_results(page: Any) -> None:
    page.wait_for_function(
        "() => !document.querySelector('#grid').hasAttribute('aria-busy')"
        " && !document.querySelector('#status').textContent.startsWith('Searching')"
    )


def shown_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#grid > li", "cards => cards.map(c => c.dataset.id)")


def test_a_text_search_shows_the_apis_hits_in_order(page, demo_server, demo_library):
    open_page(page, demo_server)
    search(page, "a red circle")
    expected = ask(demo_server, {"text": "a red circle", "k": 24})
    assert shown_ids(page) == [hit["id"] for hit in expected]
    top = page.locator("#grid > li").first
    assert "red" in top.locator(".hit-title").inner_text()
    assert top.locator(".badge").inner_text() in {"Image", "Video", "Sound"}
    # The query is in the address: it can be shared.
    assert "q=a+red+circle" in page.url
    # Every thumbnail loads lazily, in a box whose size does not wait for it.
    lazy = page.eval_on_selector_all("#grid img", "imgs => imgs.every(i => i.loading === 'lazy')")
    assert lazy
    page.wait_for_function(
        "() => { const i = document.querySelector('#grid img'); return i && i.naturalWidth > 0 }"
    )


def test_enter_to_first_result_is_measured(page, demo_server):
    open_page(page, demo_server)
    times = []
    for text in ("a blue square", "a yellow star", "a green triangle"):
        search(page, text)
        page.wait_for_function(
            "() => performance.getEntriesByName('xmodal:enter-to-first-result').length > 0"
        )
        times.append(
            page.evaluate(
                "() => { const m = performance.getEntriesByName('xmodal:enter-to-first-result');"
                " const d = m[m.length - 1].duration; performance.clearMeasures(); return d }"
            )
        )
    assert all(t > 0 for t in times)
    print(f"\nEnter to first painted result: {', '.join(f'{t:.0f} ms' for t in times)}")


def test_a_dropped_image_finds_itself_first(page, demo_server, demo_library):
    open_page(page, demo_server)
    data = base64.b64encode(demo_library.picture.read_bytes()).decode()
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
        }""",
        [data, demo_library.picture.name],
    )
    wait_for_results(page)
    assert shown_ids(page)[0] == demo_library.ids[demo_library.picture.name]
    assert "Searching by image" in page.inner_text("#query-view")


def test_a_sound_chosen_with_the_file_input_finds_sounds(page, demo_server, demo_library):
    open_page(page, demo_server)
    page.set_input_files("#file-input", str(demo_library.sound))
    wait_for_results(page)
    ids = shown_ids(page)
    assert ids[0] == demo_library.ids[demo_library.sound.name]


def test_a_filter_narrows_the_grid(page, demo_server, demo_library):
    open_page(page, demo_server)
    search(page, "a shape")
    before = shown_ids(page)
    colours = page.locator('.facet[data-key="colours"]')
    colours.get_by_label("yellow").check()
    page.wait_for_function("() => location.search.includes('filter')")
    wait_for_results(page)
    after = shown_ids(page)
    assert after and after != before
    expected = ask(
        demo_server, {"text": "a shape", "k": 24, "filter": {"colours": {"$in": ["yellow"]}}}
    )
    assert after == [hit["id"] for hit in expected]
    assert all("yellow" in hit["metadata"]["colours"] for hit in expected)
    assert json.loads(page.evaluate("new URLSearchParams(location.search).get('filter')")) == {
        "colours": {"$in": ["yellow"]}
    }


def test_a_video_hit_plays_from_its_moment(page, demo_server, demo_library):
    open_page(page, demo_server)
    page.check('input[name="kind"][value="video"]')
    search(page, "a green circle")
    card = page.locator("#grid > li").first
    assert card.get_attribute("data-id") == demo_library.ids[demo_library.video.name]
    start = float(card.get_attribute("data-start") or "nan")
    assert card.locator(".play-mark").inner_text().startswith("▶")
    card.locator("button.media").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('#grid video'); return v && !v.paused"
        " && v.readyState >= 2 }"
    )
    now = page.evaluate("document.querySelector('#grid video').currentTime")
    assert abs(now - start) < 0.5, (now, start)


def test_a_sound_hit_plays(page, demo_server):
    open_page(page, demo_server)
    page.check('input[name="kind"][value="audio"]')
    search(page, "a high beep")
    card = page.locator("#grid > li").first
    assert card.get_attribute("data-kind") == "audio"
    card.locator("button.media").focus()
    page.keyboard.press("Enter")  # keyboard works as a click
    page.wait_for_function(
        "() => { const a = document.querySelector('#grid audio'); return a && !a.paused }"
    )
    first = page.evaluate("document.querySelector('#grid audio').currentTime")
    page.wait_for_function(
        f"() => document.querySelector('#grid audio').currentTime > {first} + 0.1"
    )


def test_the_back_button_restores_the_previous_query(page, demo_server):
    open_page(page, demo_server)
    search(page, "a red square")
    first = shown_ids(page)
    search(page, "a blue triangle")
    assert shown_ids(page) != first
    page.go_back()
    page.wait_for_function("() => document.querySelector('#query').value === 'a red square'")
    wait_for_results(page)
    assert shown_ids(page) == first
    page.go_forward()
    page.wait_for_function("() => document.querySelector('#query').value === 'a blue triangle'")


def test_more_like_this_searches_by_the_item(page, demo_server):
    open_page(page, demo_server)
    search(page, "a purple star")
    card = page.locator("#grid > li").first
    item_id = card.get_attribute("data-id")
    card.get_by_role("button", name="More like").click()
    page.wait_for_function(f"() => location.search.includes('like={item_id}')")
    wait_for_results(page)
    assert item_id not in shown_ids(page)
    assert shown_ids(page) == [h["id"] for h in ask(demo_server, {"item_id": item_id, "k": 24})]


@pytest.mark.parametrize("width", [1280, 360])
def test_the_page_is_accessible_and_fits(page, demo_server, screenshot, axe, width):
    page.set_viewport_size({"width": width, "height": 900})
    open_page(page, demo_server)
    search(page, "a red circle")
    page.wait_for_function(
        "width => [...document.querySelectorAll('#grid img')].slice(0, width >= 760 ? 4 : 1)"
        ".every(i => i.complete && i.naturalWidth > 0)",
        arg=width,
    )
    path = screenshot(page, f"search-page-{width}")
    screenshot(page, f"search-page-{width}-first-screen", full_page=False)
    assert path.stat().st_size > 10_000
    # Nothing wider than the viewport: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    violations = axe(page)
    assert not violations, json.dumps(
        [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]]) for v in violations],
        indent=1,
    )


def test_a_keyed_server_asks_for_a_key_then_thumbnails_load(page, keyed_server, screenshot):
    base, key = keyed_server
    page.goto(base)
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "key-input"
    screenshot(page, "search-page-key-form")
    page.fill("#key-input", "xk_wrong_key")
    page.press("#key-input", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#key-reason').textContent.includes('refused')"
    )
    page.fill("#key-input", key)
    page.press("#key-input", "Enter")
    page.wait_for_selector("#key-form[hidden]", state="attached")
    page.wait_for_selector("#facet-list .facet", state="attached")
    search(page, "a red circle")
    page.wait_for_function(
        "() => { const i = document.querySelector('#grid img');"
        " return i && i.complete && i.naturalWidth > 0 }"
    )
    src = page.get_attribute("#grid img", "src") or ""
    assert "sig=" in src and "exp=" in src
    # The key stays in the tab: a reload searches again without asking.
    page.reload()
    page.wait_for_selector("#grid > li")
    assert page.is_hidden("#key-form") and shown_ids(page)
