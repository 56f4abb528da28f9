"""The search page and the widget's script (web/static), served beside the API.

The files ship inside the package (`xmodal.web`, folder `static`) and are found by the
package's name, never imported: the web layer speaks to the API over HTTP only. They
hold no data, so they are open without a key, and get a content policy that lets the
page run its own scripts and styles and show the API's pictures and sounds, from this
origin only.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request, Response
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_FILES = ("xmodal.web", "static")
STATIC_PREFIX = "/static/"
PAGE_PATHS = frozenset({"/", "/widget.js"})
# The page's own files, the API's media (blob: for a dropped picture's preview), and
# nothing from elsewhere; no inline script or style.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def is_page_path(path: str) -> bool:
    """Whether `path` is one of the page's files (open, with PAGE_POLICY)."""
    return path in PAGE_PATHS or path.startswith(STATIC_PREFIX)


class PageFiles(StaticFiles):
    """web/static, each answer revalidated (ETag, 304): the files change with the
    package, under the same names."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_pages(app: FastAPI) -> None:
    """GET / (the search page), /widget.js (404 until the widget is there) and
    /static/... (the page's scripts and styles)."""
    files = PageFiles(packages=[WEB_FILES])
    app.mount(STATIC_PREFIX.rstrip("/"), files, name="static")

    async def search_page(request: Request) -> Response:
        return await files.get_response("index.html", request.scope)

    async def widget_script(request: Request) -> Response:
        return await files.get_response("widget.js", request.scope)

    for path, endpoint in (("/", search_page), ("/widget.js", widget_script)):
        app.add_api_route(
            path,
            endpoint,
            methods=["GET", "HEAD"],
            include_in_schema=False,
            response_class=FileResponse,
        )


__all__ = ["PAGE_POLICY", "install_pages", "is_page_path"]
