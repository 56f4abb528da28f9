"""The embeddable "find similar" widget (web/static/widget.js) in a headless Chromium,
on a shop's product page served from another origin than the API."""

from __future__ import annotations

import pytest

from tests.web import widget_fixtures
from tests.web.widget_fixtures import REPO, XSS_TITLE, cards, catalog, shown_text, wait_for_state

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
    # The pictures are fetched with the key (not signed yet) and shown.
    first = page.locator("xmodal-similar li.card img").first
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=first.element_handle()
    )
    assert first.get_attribute("src").startswith("blob:")
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
    assert hostile_picture == plain_picture
    assert watched.script_errors() == []
