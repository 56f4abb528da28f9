"""The embeddable "find similar" widget (web/static/widget.js) in a headless Chromium,
on a shop's product page served from another origin than the API."""

from __future__ import annotations

import pytest

from tests.web import widget_fixtures
from tests.web.widget_fixtures import (
    REPO,
    XSS_TITLE,
    cards,
    catalog,
    jpeg,
    shown_text,
    wait_for_state,
)

# The widget's own fixtures until tests/web/conftest.py holds the shared ones.
shop, chromium, watched = widget_fixtures.shop, widget_fixtures.chromium, widget_fixtures.watched
pytestmark = pytest.mark.browser

SCREENSHOTS = REPO / "build" / "screenshots"
HOSTILE_CSS = """<style>
  * { color: red !important; font-family: serif !important; font-size: 31px !important;
      letter-spacing: 3px !important; text-transform: uppercase !important;
      line-height: 3 !important; visibility: visible !important; }
  div { display: none !important; }
  ul, li { margin: 40px !important; padding: 40px !important; list-style: square !important; }
  img { border: 5px solid lime !important; }
</style>"""


def test_shows_the_items_similar_to_the_sku_with_titles_prices_and_links(shop, watched):
    page = watched.page
    page.goto(
        shop.page(
            '<xmodal-similar item="SKU-1" limit="5" title-field="title" price-field="price" '
            'link-field="url" currency="EUR" locale="de-DE"></xmodal-similar>'
        )
    )
    wait_for_state(page, "ready")
    shown = cards(page)
    expected = shop.similar("SKU-1", k=5)
    assert [card["id"] for card in shown] == [hit["external_id"] for hit in expected]
    assert len(shown) == 5 and "SKU-1" not in [card["id"] for card in shown]
    items = catalog()
    for card in shown:
        metadata = items[card["id"]]
        assert card["title"] == metadata["title"] == card["alt"]
        if isinstance(metadata["price"], float):
            figure = f"{metadata['price']:.2f}".replace(".", ",")
            assert card["price"].replace("\xa0", " ") == f"{figure} €"
        if metadata["url"].startswith("https:"):
            assert card["href"] == metadata["url"]
    # The pictures come from the signed URLs the hits carry: shown without the key.
    first = page.locator("xmodal-similar li.card img").first
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=first.element_handle()
    )
    assert "sig=" in first.get_attribute("src")
    assert watched.script_errors() == []


def test_the_filter_and_the_limit_are_what_the_api_is_asked(shop, watched):
    page = watched.page
    page.goto(
        shop.page(
            """<xmodal-similar item="SKU-1" limit="50" filter='{"in_stock": true}'></xmodal-similar>"""
        )
    )
    wait_for_state(page, "ready")
    in_stock = {item for item, metadata in catalog().items() if metadata["in_stock"]}
    assert {card["id"] for card in cards(page)} == in_stock - {"SKU-1"}
    assert watched.script_errors() == []


def test_a_key_for_another_origin_shows_the_error_state_and_throws_nothing(shop, watched):
    page = watched.page
    page.goto(shop.page('<xmodal-similar item="SKU-1"></xmodal-similar>', key=shop.other_key))
    wait_for_state(page, "error")
    assert "Similar items are unavailable right now" in shown_text(page)
    assert "403" in page.locator("xmodal-similar").get_attribute("data-error")
    assert page.locator("xmodal-similar").bounding_box()["height"] > 100  # not a blank line
    assert watched.script_errors() == []


def test_a_page_on_an_origin_no_key_lists_is_refused_by_cors_and_shows_the_error_state(
    shop, watched
):
    page = watched.page
    # The same page server under another name: another origin, which no key lists, so
    # the browser's preflight is refused and fetch() itself fails.
    elsewhere = shop.origin.replace("127.0.0.1", "localhost")
    page.goto(shop.page('<xmodal-similar item="SKU-1"></xmodal-similar>', origin=elsewhere))
    wait_for_state(page, "error")
    assert "Similar items are unavailable right now" in shown_text(page)
    assert "request failed" in page.locator("xmodal-similar").get_attribute("data-error")
    assert watched.script_errors() == []


def test_invalid_filter_json_shows_the_error_state(shop, watched):
    page = watched.page
    page.goto(
        shop.page("""<xmodal-similar item="SKU-1" filter='{"in_stock": tru'></xmodal-similar>""")
    )
    wait_for_state(page, "error")
    assert "Similar items are unavailable right now" in shown_text(page)
    assert "not valid JSON" in page.locator("xmodal-similar").get_attribute("data-error")
    assert watched.script_errors() == []


def test_an_item_not_indexed_yet_shows_the_empty_state(shop, watched):
    # A product added to the shop before the index has it: the shopper is told there
    # is nothing similar yet, not that something is broken.
    page = watched.page
    page.goto(shop.page('<xmodal-similar item="SKU-NEW-TODAY"></xmodal-similar>'))
    wait_for_state(page, "empty")
    assert "No similar items yet" in shown_text(page)
    assert "404" in page.locator("xmodal-similar").get_attribute("data-error")
    assert watched.script_errors() == []


def test_markup_and_script_urls_in_metadata_are_shown_as_text_never_run(shop, watched):
    page = watched.page
    page.goto(
        shop.page('<xmodal-similar item="SKU-1" limit="50" link-field="url"></xmodal-similar>')
    )
    wait_for_state(page, "ready")
    (hostile,) = [card for card in cards(page) if card["id"] == "SKU-XSS"]
    assert hostile["title"] == XSS_TITLE == hostile["alt"]
    assert hostile["price"] == "<b>free</b>"
    assert hostile["href"] is None  # a javascript: link is not made a link
    widget = page.locator("xmodal-similar")
    assert (
        widget.evaluate("(host) => host.shadowRoot.querySelectorAll('b, img[src=x]').length") == 0
    )
    assert page.evaluate("window.__xss") is None
    assert watched.script_errors() == []


def test_changing_the_item_attribute_shows_that_items_similar_items(shop, watched):
    page = watched.page
    page.goto(shop.page('<xmodal-similar item="SKU-1" limit="50"></xmodal-similar>'))
    wait_for_state(page, "ready")
    before = [card["id"] for card in cards(page)]
    assert "SKU-2" in before and "SKU-1" not in before
    page.locator("xmodal-similar").evaluate("(host) => host.setAttribute('item', 'SKU-2')")
    page.wait_for_function(
        """() => {
          const host = document.querySelector('xmodal-similar');
          const ids = [...host.shadowRoot.querySelectorAll('li.card')].map((c) => c.dataset.id);
          return host.dataset.state === 'ready' && ids.includes('SKU-1') && !ids.includes('SKU-2');
        }"""
    )
    assert [card["id"] for card in cards(page)] == [
        hit["external_id"] for hit in shop.similar("SKU-2", k=50)
    ]
    assert watched.script_errors() == []


STYLE_PROBE = """(host) => {
  const names = ['color', 'font-family', 'font-size', 'letter-spacing', 'text-transform',
    'line-height', 'display', 'visibility', 'margin-top', 'padding-left', 'border-top-width',
    'list-style-type', 'width', 'height'];
  const root = host.shadowRoot;
  const probe = {};
  for (const selector of ['.root', 'h2', '.list', 'li.card', '.box', '.img img', '.title', '.price']) {
    const node = root.querySelector(selector);
    const style = getComputedStyle(node);
    probe[selector] = Object.fromEntries(names.map((name) => [name, style.getPropertyValue(name)]));
  }
  return probe;
}"""
ALL_PICTURES_SHOWN = """(host) => [...host.shadowRoot.querySelectorAll('li.card img')]
  .every((img) => img.complete && img.naturalWidth > 0)"""


def test_the_host_pages_css_does_not_change_the_widget(shop, watched):
    page = watched.page
    widget = '<xmodal-similar item="SKU-1" limit="4" link-field="url"></xmodal-similar>'
    looks = []
    for head in ("", HOSTILE_CSS):
        page.goto(shop.page(widget, head=head, width="800px"))
        wait_for_state(page, "ready")
        host = page.locator("xmodal-similar")
        page.wait_for_function(ALL_PICTURES_SHOWN, arg=host.element_handle())
        looks.append((host.evaluate(STYLE_PROBE), host.screenshot()))
        heading_color = page.locator("h1").evaluate("(h1) => getComputedStyle(h1).color")
        assert (heading_color == "rgb(255, 0, 0)") == bool(head)  # the page did change
    (plain_styles, plain_picture), (hostile_styles, hostile_picture) = looks
    assert hostile_styles == plain_styles
    assert plain_styles[".title"]["color"] != "rgb(255, 0, 0)"
    changed = changed_pixels(plain_picture, hostile_picture)
    assert changed < 0.002, f"{changed:.2%} of the widget's pixels changed"
    assert watched.script_errors() == []


def changed_pixels(before: bytes, after: bytes) -> float:
    """The share of pixels that differ visibly between two PNG screenshots (1 when their
    sizes differ). Not the bytes: the encoder's output may differ for equal pictures."""
    import io

    import numpy as np
    from PIL import Image

    a, b = (
        np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16) for png in (before, after)
    )
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b).max(axis=2) > 16).mean())


def test_loading_empty_and_error_states_keep_the_size_of_the_cards(shop, watched):
    page = watched.page
    held = []
    # The first answer waits until the test has seen the loading state.
    page.route("**/items/SKU-1/similar?*", lambda route: held.append(route))
    page.goto(
        shop.page(
            '<xmodal-similar id="ready" item="SKU-1" limit="3"></xmodal-similar>'
            '<xmodal-similar id="empty" item="SKU-NEW-TODAY"></xmodal-similar>'
            """<xmodal-similar id="error" item="SKU-1" filter="{oops"></xmodal-similar>"""
        )
    )
    wait_for_state(page, "loading", "#ready")
    ready = page.locator("#ready")
    skeletons = ready.evaluate("(host) => host.shadowRoot.querySelectorAll('li.skeleton').length")
    assert skeletons == 3
    loading_box = ready.bounding_box()
    for _ in range(500):  # until the route handler has the request (it runs on page events)
        if held:
            break
        page.wait_for_timeout(20)
    assert held, "the similar request was not held"
    held[0].continue_()
    wait_for_state(page, "ready", "#ready")
    wait_for_state(page, "empty", "#empty")
    wait_for_state(page, "error", "#error")
    # Within a pixel: line heights are laid out in 1/64 px.
    for state in ("#ready", "#empty", "#error"):
        assert page.locator(state).bounding_box()["height"] == pytest.approx(
            loading_box["height"], abs=0.5
        )
    assert watched.script_errors() == []


def test_the_cards_are_reached_with_the_keyboard_and_show_their_focus(shop, watched):
    page = watched.page
    page.goto(
        shop.page('<xmodal-similar item="SKU-1" limit="4" link-field="url"></xmodal-similar>')
    )
    wait_for_state(page, "ready")
    page.get_by_role(
        "button", name="Add to cart"
    ).focus()  # the product's "Add to cart", just before the widget
    page.keyboard.press("Tab")
    focused = "(host) => host.shadowRoot.activeElement && host.shadowRoot.activeElement.className"
    host = page.locator("xmodal-similar")
    assert host.evaluate(focused) == "list"  # the scrollable list first
    page.keyboard.press("Tab")
    first = host.evaluate("(host) => host.shadowRoot.activeElement.getAttribute('href')")
    page.keyboard.press("ArrowRight")
    second = host.evaluate("(host) => host.shadowRoot.activeElement.getAttribute('href')")
    links = [card["href"] for card in cards(page)]
    assert [first, second] == links[:2]
    ring = host.evaluate("(host) => getComputedStyle(host.shadowRoot.activeElement).boxShadow")
    assert ring != "none"


def test_a_template_of_the_sites_own_fills_its_fields_as_text(shop, watched):
    page = watched.page
    page.goto(
        shop.page(
            """<xmodal-similar item="SKU-1" limit="50" link-field="url" currency="USD" locale="en-US">
              <template>
                <style>.mine { display: block; border: 2px solid rgb(0, 128, 0); }</style>
                <a class="mine" data-field="link"><img data-field="image">
                  <b data-field="title"></b> <i data-field="price"></i>
                  <small data-field="in_stock"></small></a>
              </template>
            </xmodal-similar>"""
        )
    )
    wait_for_state(page, "ready")
    host = page.locator("xmodal-similar")
    filled = host.evaluate(
        """(host) => [...host.shadowRoot.querySelectorAll('li.card')].map((card) => ({
          id: card.dataset.id,
          title: card.querySelector('b').textContent,
          price: card.querySelector('i').textContent,
          stock: card.querySelector('small').textContent,
          href: card.querySelector('a').getAttribute('href'),
          alt: card.querySelector('img').alt,
          border: getComputedStyle(card.querySelector('.mine')).borderTopColor,
        }))"""
    )
    items = catalog()
    assert len(filled) == len(items) - 1
    for card in filled:
        metadata = items[card["id"]]
        assert card["title"] == card["alt"] == metadata["title"]
        assert card["stock"] == str(metadata["in_stock"]).lower()
        assert card["border"] == "rgb(0, 128, 0)"
        if card["id"] == "SKU-XSS":
            assert card["price"] == "<b>free</b>" and card["href"] is None
        else:
            assert card["price"] == f"${metadata['price']:,.2f}"
            assert card["href"] == metadata["url"]
    assert page.evaluate("window.__xss") is None
    assert watched.script_errors() == []


VISIBLE_PICTURES_SHOWN = """(host) => {
  const width = document.documentElement.clientWidth;
  const visible = [...host.shadowRoot.querySelectorAll('li.card img')].filter((img) => {
    const box = img.getBoundingClientRect();
    return box.right > 0 && box.left < width;
  });
  return visible.length > 0 && visible.every((img) => img.complete && img.naturalWidth > 0);
}"""


@pytest.mark.parametrize("width", [1280, 360])
def test_screenshots_of_a_product_page(shop, watched, width):
    page = watched.page
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(
        shop.page(
            '<xmodal-similar item="SKU-1" limit="8" title-field="title" price-field="price" '
            'link-field="url" currency="EUR" heading="You may also like"></xmodal-similar>'
        )
    )
    wait_for_state(page, "ready")
    host = page.locator("xmodal-similar")
    page.wait_for_function(VISIBLE_PICTURES_SHOWN, arg=host.element_handle())
    box = host.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width  # scrolls inside, not the page
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"widget-{width}.png"
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 10_000
    assert watched.script_errors() == []


def test_the_next_button_scrolls_the_list_and_brings_the_previous_one(shop, watched):
    page = watched.page
    page.goto(shop.page('<xmodal-similar item="SKU-1" limit="8"></xmodal-similar>'))
    wait_for_state(page, "ready")
    prev, step_next = page.locator("xmodal-similar .prev"), page.locator("xmodal-similar .next")
    step_next.wait_for(state="visible")
    assert prev.is_hidden()
    step_next.click()
    prev.wait_for(state="visible")
    assert page.locator("xmodal-similar .list").evaluate("(list) => list.scrollLeft") > 0


def test_signed_thumbnail_urls_are_shown_as_they_are_and_sounds_keep_the_placeholder(shop, watched):
    # The server's answer as it will be once it signs thumbnail URLs (another branch).
    hits = [
        {
            "id": "a1",
            "external_id": "SKU-A",
            "kind": "image",
            "metadata": {"title": "A"},
            "thumbnail_url": "/items/a1/thumbnail?exp=1900000000&sig=c2lnbmVk",
        },
        {"id": "b2", "external_id": "SKU-B", "kind": "audio", "metadata": {"title": "B"}},
    ]
    page = watched.page
    page.route(
        "**/items/SKU-1/similar?*",
        lambda route: route.fulfill(
            json={"hits": hits, "took_ms": 1.0},
            headers={"Access-Control-Allow-Origin": shop.origin},
        ),
    )
    thumbnail_requests = []
    page.route(
        "**/items/a1/thumbnail?*",
        lambda route: (
            thumbnail_requests.append(route.request.headers),
            route.fulfill(body=jpeg(3), content_type="image/jpeg"),
        ),
    )
    page.goto(shop.page('<xmodal-similar item="SKU-1"></xmodal-similar>'))
    wait_for_state(page, "ready")
    pictures = page.locator("xmodal-similar li.card img")
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=pictures.first.element_handle()
    )
    assert len(thumbnail_requests) == 1 and "x-api-key" not in thumbnail_requests[0]
    assert pictures.first.get_attribute("src") == (
        f"{shop.api}/items/a1/thumbnail?exp=1900000000&sig=c2lnbmVk"
    )
    assert pictures.nth(1).get_attribute("src") is None
    assert [card["title"] for card in cards(page)] == ["A", "B"]
