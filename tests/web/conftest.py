"""Browser fixtures for the search page and the widget: a live server over a small demo
library, Debian's Chromium driven by Playwright, screenshots and axe-core.

- `demo_library` / `demo_server`: generated shapes pictures, sounds and one video of
  three shots, with metadata, indexed with the project's offline reference models and
  served by uvicorn on 127.0.0.1 (open; `keyed_server` is the same store with a key).
- `browser`: headless Chromium at CHROMIUM (`make test` installs it), never a
  downloaded one; `page`: a new page per test whose console errors fail the test
  (`page.expect_console_errors(...)` declares the ones a test causes on purpose).
- `screenshot(page, name)`: a PNG in build/screenshots/.
- `axe(page)`: axe-core (build/axe/axe.min.js, fetched by `make test`) on the page;
  returns its serious and critical violations.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.api.live import live_server

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
AXE = REPO / "build" / "axe" / "axe.min.js"
SCREENSHOTS = REPO / "build" / "screenshots"
# The video's three shots, 2 s each: (colour, shape) of the one large object in each.
VIDEO_SHOTS = (("red", "square"), ("green", "circle"), ("blue", "triangle"))
SHOT_SECONDS = 2.0

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class DemoLibrary:
    folder: Path
    store: Path
    video: Path
    sound: Path
    picture: Path
    ids: dict[str, str] = field(default_factory=dict)  # file name -> item id


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory: pytest.TempPathFactory) -> DemoLibrary:
    """The demo's generated pictures and sounds (a few dozen), a video of three shots,
    indexed with the reference models (seconds on a CPU)."""
    from tests.media import videos
    from xmodal.indexer import index_paths
    from xmodal.indexer.metadata_file import read_metadata_file
    from xmodal.search import Engine, Store
    from xmodal.search.encoders.builtin import REFERENCE_AUDIO_MODEL, REFERENCE_MODEL
    from xmodal.search.store import item_id_for
    from xmodal.synthetic.demo_library import write_demo_library

    root = tmp_path_factory.mktemp("web-demo")
    folder = root / "library"
    metadata_file = write_demo_library(folder, count=36, sound_count=6)
    shots = [
        (SHOT_SECONDS, videos.scene_image(videos.shape_scene(colour, shape), seed=i))
        for i, (colour, shape) in enumerate(VIDEO_SHOTS)
    ]
    video = videos.write_video(
        folder / "shapes-clip.mp4", shots, fps=10, size=(192, 144), faststart=True
    )
    with metadata_file.open("a", encoding="utf-8") as lines:
        record = {
            "file": video.name,
            "caption": "a red square, then a green circle, then a blue triangle",
            "colours": ["blue", "green", "red"],
            "shapes": ["circle", "square", "triangle"],
            "objects": 1,
        }
        lines.write(json.dumps(record) + "\n")
    engine = Engine(
        Store(root / "store"),
        _encoder(REFERENCE_MODEL),
        _audio_encoder(REFERENCE_AUDIO_MODEL),
    )
    report = index_paths(engine, [folder], metadata=read_metadata_file(metadata_file))
    assert not report.failed, report.summary()
    files = sorted(p for p in folder.iterdir() if p.suffix in {".jpg", ".wav", ".mp4"})
    return DemoLibrary(
        folder=folder,
        store=root / "store",
        video=video,
        sound=next(p for p in files if p.suffix == ".wav"),
        picture=next(p for p in files if p.suffix == ".jpg"),
        ids={p.name: item_id_for(str(p)) for p in files},
    )


def _encoder(spec: str) -> Any:
    from xmodal.search import create_encoder

    return create_encoder(spec, device="cpu")


def _audio_encoder(spec: str) -> Any:
    from xmodal.search.encoders import create_audio_encoder

    return create_audio_encoder(spec, device="cpu")


def _serve(store: Path) -> Any:
    from xmodal.api import create_app
    from xmodal.api.settings import Settings
    from xmodal.search.encoders.builtin import (
        REFERENCE_AUDIO_MODEL,
        REFERENCE_MODEL,
        REFERENCE_RERANKER,
    )

    settings = Settings(
        data=store,
        model=REFERENCE_MODEL,
        audio_model=REFERENCE_AUDIO_MODEL,
        device="cpu",
        server={"thumbnail_size": 192},
        rerank={"model": REFERENCE_RERANKER},
    )
    return live_server(create_app(settings))


@pytest.fixture(scope="session")
def demo_server(demo_library: DemoLibrary) -> Iterator[str]:
    """The base URL of an open server over the demo library."""
    with _serve(demo_library.store) as url:
        yield url


@pytest.fixture(scope="session")
def keyed_store(demo_library: DemoLibrary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo store with a search key (the secret in `keyed_store / "key"`)."""
    from xmodal.api.keys import KeyRing, Scope

    store = tmp_path_factory.mktemp("keyed") / "store"
    shutil.copytree(demo_library.store, store)
    secret = KeyRing.of_data(store).create(Scope.SEARCH, name="browser test")[1]
    (store.parent / "key").write_text(secret)
    return store


@pytest.fixture(scope="session")
def keyed_server(keyed_store: Path) -> Iterator[tuple[str, str]]:
    """(base URL, search key) of a keyed server over the demo library."""
    with _serve(keyed_store) as url:
        yield url, (keyed_store.parent / "key").read_text()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's (apt-get install "
            "chromium), or set CHROMIUM_PATH to one"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # Media plays without a gesture in a test; no sandbox when run as root.
            args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
        )
        yield launched
        launched.close()


class ConsoleErrors:
    """A page's console errors and uncaught exceptions; a test that causes some on
    purpose declares them (`expect(substring)`), the rest fail it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.expected: list[str] = []

    def expect(self, fragment: str) -> None:
        self.expected.append(fragment)

    def unexpected(self) -> list[str]:
        return [e for e in self.seen if not any(f in e for f in self.expected)]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    new_page = context.new_page()
    errors = ConsoleErrors()
    new_page.on(
        "console",
        lambda message: (
            errors.seen.append(f"{message.text} ({message.location.get('url')})")
            if message.type == "error"
            else None
        ),
    )
    new_page.on("pageerror", lambda error: errors.seen.append(f"uncaught: {error}"))
    new_page.console_errors = errors  # type: ignore[attr-defined]
    new_page.set_default_timeout(20_000)
    yield new_page
    context.close()
    assert not errors.unexpected(), "console errors:\n" + "\n".join(errors.unexpected())


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    def take(page: Any, name: str, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@pytest.fixture
def axe() -> Callable[[Any], list[dict[str, Any]]]:
    if not AXE.exists():
        pytest.fail(f"no axe-core at {AXE}: `make test` fetches it (make {AXE.relative_to(REPO)})")
    source = AXE.read_text(encoding="utf-8")

    def run(page: Any) -> list[dict[str, Any]]:
        # Evaluated, not added as a <script>: the page's policy allows no inline script.
        page.evaluate(source)
        result = page.evaluate("async () => await axe.run(document)")
        return [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]

    return run
