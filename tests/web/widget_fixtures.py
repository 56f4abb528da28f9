"""Fixtures for the widget's browser tests: a keyed API server over a small catalog,
serving web/static/widget.js; a shop's pages served from another origin; a headless
Chromium (Debian's /usr/bin/chromium, never a downloaded browser).

The search page's shared fixtures (tests/web/conftest.py) come later; these stay
the widget's own until then.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import FileResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.api.live import live_server
from tests.conftest import photo
from xmodal.api import create_app
from xmodal.api.keys import KeyRing
from xmodal.api.keys import Scope as KeyScope
from xmodal.api.settings import Settings

REPO = Path(__file__).resolve().parents[2]
WIDGET = REPO / "web" / "static" / "widget.js"
CHROMIUM = Path("/usr/bin/chromium")
OTHER_ORIGIN = "https://elsewhere.example"
XSS_TITLE = '<img src=x onerror="window.__xss = 1">'
# Messages Chromium itself logs for a refused or failed request (the network panel's
# words, not the page's scripts): a 403 or a CORS refusal shows them whatever the
# widget does. Anything else logged as an error is the widget's fault.
BROWSER_NETWORK_MESSAGES = ("Failed to load resource", "Access to fetch at")


def catalog() -> dict[str, dict[str, Any]]:
    """The shop's items: their ids and metadata (a picture each, from its seed)."""
    items: dict[str, dict[str, Any]] = {
        f"SKU-{n}": {
            "title": f"Linen shirt no. {n}",
            "price": round(19.5 + 7.25 * n, 2),
            "in_stock": n % 2 == 0,
            "url": f"https://shop.example/p/{n}",
        }
        for n in range(1, 12)
    }
    items["SKU-XSS"] = {
        "title": XSS_TITLE,
        "price": "<b>free</b>",
        "in_stock": True,
        "url": "javascript:window.__xss = 2",
    }
    return items


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    photo(seed, (120, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def with_widget(api: ASGIApp) -> ASGIApp:
    """`api`, with /widget.js served as the other engineer's static route will (tests
    only: api/app.py is not changed here). Its lifespan passes through."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/widget.js":
            response = FileResponse(
                WIDGET, media_type="text/javascript", headers={"Cache-Control": "no-store"}
            )
            await response(scope, receive, send)
            return
        await api(scope, receive, send)

    return app


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Shop:
    """The API (with its keys) and the shop's page server, on two origins."""

    api: str  # http://127.0.0.1:APIPORT
    origin: str  # the shop's pages: http://127.0.0.1:PAGEPORT
    key: str  # publishable, for `origin`
    other_key: str  # publishable, for another origin only
    write_key: str
    pages: Path
    _names: Iterator[int] = field(default_factory=itertools.count)

    def page(
        self,
        widget: str,
        key: str | None = None,
        head: str = "",
        origin: str | None = None,
        width: str = "100%",
    ) -> str:
        """A product page holding `widget` (the element's HTML) under the script tag;
        returns its URL (on `origin`, the shop's own by default)."""
        name = f"product-{next(self._names)}.html"
        script = (
            f'<script src="{self.api}/widget.js" '
            f'data-key="{html.escape(key or self.key)}" defer></script>'
        )
        (self.pages / name).write_text(
            PRODUCT_PAGE.format(head=head, script=script, widget=widget, width=width),
            encoding="utf-8",
        )
        return f"{origin or self.origin}/{name}"

    def similar(self, item: str, **params: Any) -> list[dict[str, Any]]:
        """The API's own answer, for comparison with what the widget shows."""
        answer = httpx.get(
            f"{self.api}/items/{item}/similar",
            params=params,
            headers={"X-API-Key": self.write_key},
        )
        answer.raise_for_status()
        return answer.json()["hits"]


PRODUCT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Linen shirt no. 1 - Example shop</title>
<style>
  body {{ margin: 0; font: 16px/1.5 Georgia, serif; color: #222; background: #faf8f5; }}
  header {{ padding: 12px 20px; background: #222; color: #fff; font-weight: bold; }}
  main {{ max-width: 1100px; margin: 0 auto; padding: 20px; }}
  .product {{ display: flex; flex-wrap: wrap; gap: 24px; margin-bottom: 32px; }}
  .product .photo {{ width: 320px; max-width: 100%; aspect-ratio: 1; background: #ddd; }}
  .product h1 {{ margin: 0 0 8px; font-size: 28px; }}
  #slot {{ width: {width}; }}
</style>
{head}
{script}
</head><body>
<header>Example shop</header>
<main>
  <div class="product"><div class="photo"></div>
    <div><h1>Linen shirt no. 1</h1><p>EUR 26.75 - in stock</p><button>Add to cart</button></div>
  </div>
  <section id="slot">{widget}</section>
</main>
</body></html>
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Iterator[Shop]:
    from xmodal.search import Engine, Store

    root = tmp_path_factory.mktemp("shop")
    pages = root / "pages"
    pages.mkdir()
    page_server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(pages))
    )
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{page_server.server_address[1]}"

    data = root / "data"
    engine = Engine(Store(data), tiny_encoder)
    ring = KeyRing.of_data(data)
    # Rates well above what the tests ask: a rate limit is not what they are about.
    _, key = ring.create(KeyScope.PUBLISHABLE, "widget", [origin], rate="1000/s")
    _, other_key = ring.create(KeyScope.PUBLISHABLE, "elsewhere", [OTHER_ORIGIN], rate="1000/s")
    _, write_key = ring.create(KeyScope.WRITE, "catalog")
    settings = Settings(data=data, security={"client_rate": None})
    try:
        with live_server(with_widget(create_app(settings, engine))) as api:  # type: ignore[arg-type]
            items = [
                {"id": item, "data": _b64(jpeg(seed)), "metadata": metadata}
                for seed, (item, metadata) in enumerate(catalog().items())
            ]
            written = httpx.post(
                f"{api}/items/batch",
                json={"items": items},
                headers={"X-API-Key": write_key},
                timeout=120,
            )
            assert written.status_code == 200, written.text
            assert all(r["status"] == "created" for r in written.json()["results"]), written.text
            yield Shop(api, origin, key, other_key, write_key, pages)
    finally:
        page_server.shutdown()
        page_server.server_close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def chromium(browser: Any) -> Any:
    """The session's Chromium (tests/web/conftest.py): one Playwright per process, since
    a second sync Playwright cannot start while the first one's loop runs."""
    return browser


@dataclass
class WatchedPage:
    """A browser page and what went wrong on it: uncaught exceptions, console errors."""

    page: Any
    uncaught: list[str]
    console_errors: list[str]

    def script_errors(self) -> list[str]:
        """Uncaught exceptions and console errors other than Chromium's own network
        messages."""
        return self.uncaught + [
            text for text in self.console_errors if not text.startswith(BROWSER_NETWORK_MESSAGES)
        ]


@pytest.fixture
def watched(chromium) -> Iterator[WatchedPage]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    watched = WatchedPage(page, [], [])
    page.on("pageerror", lambda error: watched.uncaught.append(str(error)))
    page.on(
        "console",
        lambda message: (
            watched.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    try:
        yield watched
    finally:
        context.close()


# -- reading the widget ---------------------------------------------------------------------
def wait_for_state(page: Any, state: str, selector: str = "xmodal-similar") -> None:
    page.wait_for_selector(f'{selector}[data-state="{state}"]', state="attached")


CARDS_JS = """(host) => [...host.shadowRoot.querySelectorAll('li.card:not(.skeleton)')].map((card) => {
  const link = card.querySelector('a');
  const img = card.querySelector('img');
  return {
    id: card.dataset.id,
    title: (card.querySelector('.title, [data-field="title"]') || {}).textContent,
    price: (card.querySelector('.price, [data-field="price"]') || {}).textContent,
    href: link ? link.getAttribute('href') : null,
    alt: img ? img.alt : null,
  };
})"""


def cards(page: Any, selector: str = "xmodal-similar") -> list[dict[str, Any]]:
    """The cards the widget shows: id, title, price, link and alt text."""
    return page.locator(selector).evaluate(CARDS_JS)


def shown_text(page: Any, selector: str = "xmodal-similar") -> str:
    return page.locator(selector).evaluate("(host) => host.shadowRoot.textContent")
