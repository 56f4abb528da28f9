"""Who may call the HTTP API, from where and how often (docs/security.md).

- Keys (api/keys.py) sent as `Authorization: Bearer KEY` or `X-API-Key: KEY`; each
  route needs a scope (`require_search`, `require_write`, `require_admin`). With no key
  file the server is open, and `xmodal serve` keeps it on loopback.
- Middlewares, outermost first: headers on every response (nosniff, a strict content
  policy), the Host check (DNS rebinding), CORS for the origins publishable keys list,
  the rate limit per client address, and a first key check before any body is read.
  The routes' dependencies check the scope, a publishable key's origin and its rate.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from xmodal.api.settings import SecuritySettings, Settings
from xmodal.search.errors import XmodalError
from xmodal.search.filters import filter_keys

from .keys import (
    AccessRefused,
    ApiKey,
    KeyFileError,
    KeyRing,
    NotAuthenticated,
    Rate,
    RateLimited,
    Scope,
    retry_after_seconds,
)
from .media_links import MediaLinks
from .pages import PAGE_POLICY, is_page_path
from .rate_limit import TokenBuckets
from .schemas import ErrorResponse

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_INTERFACE = frozenset({"", "0.0.0.0", "::"})
# A strict policy for what the API serves (media, thumbnails, heatmaps, JSON): a file
# opened from the server's origin runs no script and loads nothing.
CONTENT_POLICY = "default-src 'none'; sandbox"
CORS_HEADERS = ("Authorization", "X-API-Key", "Content-Type")
CORS_EXPOSED = ("Retry-After", "Server-Timing", "Content-Range", "Accept-Ranges")

# What a route that needs a key may answer besides its own (declared in OpenAPI).
ACCESS_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key, or an unknown or revoked one"},
    403: {"model": ErrorResponse, "description": "A key that may not do this"},
    429: {"model": ErrorResponse, "description": "Over a rate limit: see Retry-After"},
}

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`xmodal keys create`) as `Authorization: Bearer KEY`.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="The same API key in the `X-API-Key` header.",
)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a key's scope, or the server's own user (an open server on
    loopback, or `xmodal search` through the server's local token)."""

    scope: Scope
    key: ApiKey | None = None

    @property
    def sees_paths(self) -> bool:
        """Whether responses may show the server's absolute paths (admin only)."""
        return self.scope is Scope.ADMIN


LOCAL = Caller(Scope.ADMIN)
# Whoever opens a signed media URL (api/media_links.py): search's rights, for that file.
SIGNED_URL = Caller(Scope.SEARCH)


class ExposureRefused(XmodalError):
    """A server asked to listen beyond loopback with no key to guard it."""


def is_loopback_host(host: str) -> bool:
    """Whether an interface name or address is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, ring: KeyRing, insecure_no_auth: bool) -> None:
    """Refuse to listen on `host` beyond loopback unless keys guard the server or the
    operator said `--insecure-no-auth`."""
    if is_loopback_host(host) or ring.keyed or insecure_no_auth:
        return
    raise ExposureRefused(
        f"refusing to listen on {host or 'every interface'} with no API key: anyone who "
        "can reach it could search and download the indexed files; create a key first "
        "(`xmodal keys create --scope search`), or pass --insecure-no-auth to serve open"
    )


def exposure_note(settings: Settings, access: Access) -> str:
    """What `xmodal serve` says when it listens beyond loopback: whether keys guard it,
    and the Host names it answers to."""
    host = settings.server.host
    if is_loopback_host(host):
        return ""
    active = sum(key.active for key in access.ring.all_keys())
    guard = (
        f"{active} active API key(s) guard it"
        if access.ring.keyed
        else "NO API KEY guards it (--insecure-no-auth)"
    )
    check = HostCheck(host, settings.security.allowed_hosts)
    names = (
        "any Host"
        if check.any
        else "Host " + ", ".join(sorted(check.names) + [f"*{suffix}" for suffix in check.suffixes])
    )
    return (
        f"{guard}; it answers to {names} (others get 400: add the names clients use to "
        "security.allowed_hosts)"
    )


class Access:
    """The server's access policy over its data directory's key ring."""

    def __init__(
        self,
        ring: KeyRing,
        security: SecuritySettings,
        hidden_paths: Callable[[], Iterable[str]] = tuple,
        buckets: TokenBuckets | None = None,
    ) -> None:
        """`hidden_paths`: the server's folders (indexed roots, data directory) that
        error messages hide from callers who may not see paths."""
        self.ring = ring
        self.client_rate = (
            None if security.client_rate is None else Rate.parse(security.client_rate)
        )
        self.buckets = buckets or TokenBuckets()
        self._hidden_paths = hidden_paths
        # `xmodal search` on this machine reads it from <data>/server.json (owner-only),
        # as it could read the keys and the store themselves.
        self.local_token = "xl_" + secrets.token_urlsafe(32)

    def authenticate(self, secret: str | None) -> Caller:
        """Who sends `secret`, whatever they ask; raises NotAuthenticated (401)."""
        if not self.ring.keyed:
            return LOCAL
        if not secret:
            raise NotAuthenticated(
                "this server needs an API key: send `Authorization: Bearer KEY` or "
                "`X-API-Key: KEY` (keys are made with `xmodal keys create`)"
            )
        if hmac.compare_digest(secret.encode(), self.local_token.encode()):
            return LOCAL
        key = self.ring.find(secret)
        if key is None:
            raise NotAuthenticated("unknown or revoked API key")
        return Caller(key.scope, key)

    def caller(
        self,
        secret: str | None,
        origin: str | None,
        needed: Scope,
        limit: bool = True,
        authenticated: Caller | None = None,
    ) -> Caller:
        """Who sends `secret` from `origin` (the Origin header), if they may use a route
        that needs `needed`; raises NotAuthenticated (401), AccessRefused (403) or
        RateLimited (429, the key's rate, taken when `limit`). `authenticated`: who
        KeyGate already found the secret to be, this request (not looked up again)."""
        caller = authenticated if authenticated is not None else self.authenticate(secret)
        key = caller.key
        if key is None:
            return caller
        if not key.scope.allows(needed):
            raise AccessRefused(f"key {key.id} has the scope {key.scope}; this needs {needed}")
        if key.scope is Scope.PUBLISHABLE and (origin or "").lower() not in key.origins:
            raise AccessRefused(
                f"publishable key {key.id} is accepted only from the web origins it lists "
                f"({', '.join(key.origins)}); this request's Origin is "
                f"{_shown(origin) if origin else 'missing'}"
            )
        rate = key.parsed_rate
        if limit and rate is not None:
            wait = self.buckets.take(f"key {key.id}", rate)
            if wait:
                raise RateLimited(
                    f"key {key.id} is over its rate of {rate}", retry_after_seconds(wait)
                )
        return caller

    def is_keyed(self) -> bool:
        """Whether the server has keys now (a damaged key file counts as keyed)."""
        try:
            return self.ring.keyed
        except KeyFileError:
            return True

    def redact_paths(self, request: Request, message: str) -> str:
        """`message` as the request's caller may see it: the server's paths (indexed
        roots, data directory) hidden unless they may see paths."""
        caller = getattr(request.state, "caller", None)
        if caller is not None and caller.sees_paths:
            return message
        try:
            if not self.ring.keyed:
                return message
        except KeyFileError:
            pass  # a damaged key file: keyed all the same
        try:
            paths = sorted({p.rstrip("/\\") for p in self._hidden_paths() if p}, key=len)
        except XmodalError:
            paths = []
        for path in reversed(paths):  # the longest first: a root inside the data folder
            message = message.replace(path, "<server path>")
        return message


def _shown(text: str, limit: int = 100) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _secret_of(bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> str | None:
    return bearer.credentials if bearer is not None else api_key


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
ApiKeyDep = Annotated[str | None, Depends(api_key_scheme)]


def require(needed: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency that lets through the callers whose key allows `needed`, and gives
    the Caller (also kept as `request.state.caller`)."""

    async def check_key(request: Request, bearer: BearerDep, api_key: ApiKeyDep) -> Caller:
        access: Access = request.app.state.access
        caller = access.caller(
            _secret_of(bearer, api_key),
            request.headers.get("origin"),
            needed,
            authenticated=getattr(request.state, "authenticated", None),
        )
        request.state.caller = caller
        return caller

    check_key.__name__ = f"require_{needed.value}"
    return check_key


# One callable per scope: FastAPI runs a dependency once per request, so a router's
# dependency and a route's Caller parameter check the key (and take its rate) once.
require_search = require(Scope.SEARCH)
require_write = require(Scope.WRITE)
require_admin = require(Scope.ADMIN)
SearchCaller = Annotated[Caller, Depends(require_search)]
WriteCaller = Annotated[Caller, Depends(require_write)]
AdminCaller = Annotated[Caller, Depends(require_admin)]


async def optional_caller(request: Request, bearer: BearerDep, api_key: ApiKeyDep) -> Caller | None:
    """The caller when their key is good for search, else None (never refuses: /health
    answers everyone, saying more to those with a key)."""
    access: Access = request.app.state.access
    try:
        caller = access.caller(
            _secret_of(bearer, api_key),
            request.headers.get("origin"),
            Scope.SEARCH,
            limit=False,
            authenticated=getattr(request.state, "authenticated", None),
        )
    except (NotAuthenticated, AccessRefused, KeyFileError):
        return None  # a damaged key file: alive all the same, and saying nothing more
    request.state.caller = caller
    return caller


OptionalCaller = Annotated[Caller | None, Depends(optional_caller)]


def refuse_path_filters(caller: Caller, filter_spec: dict[str, object] | None) -> None:
    """A filter on `uri` would let a caller who is not shown paths guess them."""
    # Inside $or, $and and $not too: {"$or": [{"uri": ...}, ...]} guesses as well.
    if filter_spec and "uri" in filter_keys(filter_spec) and not caller.sees_paths:
        raise AccessRefused(
            "filtering on `uri` needs an admin key: this key is not shown the server's paths"
        )


# -- middlewares --------------------------------------------------------------------------
class HostCheck:
    """The Host names the server answers to."""

    def __init__(self, bound_host: str, allowed: Iterable[str]) -> None:
        names = {name.lower().rstrip(".") for name in allowed}
        self.any = "*" in names
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))
        self.names = LOOPBACK_NAMES | {n for n in names if not n.startswith("*")}
        if bound_host not in ANY_INTERFACE:
            self.names |= {bound_host.lower().strip("[]")}

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        name = host_name(host_header)
        return name in self.names or name.endswith(self.suffixes)


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class SecurityHeaders:
    """nosniff on every response; the strict content policy on all but the docs pages
    and the search page's files (api/pages.py), which get the page's own policy."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str]) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        policy = (
            None
            if path in self.docs_paths
            else PAGE_POLICY
            if is_page_path(path)
            else CONTENT_POLICY
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if policy is not None:
                    headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedHosts:
    """400 for a Host header the server does not answer to (DNS rebinding)."""

    def __init__(self, app: ASGIApp, check: HostCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        if self.check.allows(host):
            await self.app(scope, receive, send)
            return
        detail = (
            f"this server does not answer to the Host {_shown(host or '')}; if clients reach "
            "it by that name, add it to the security.allowed_hosts setting"
        )
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


class KeyOriginsCORS(CORSMiddleware):
    """CORS for the web origins that active publishable keys list, read from the key
    file as it is now: a preflight carries no key, so an origin any such key lists is
    let through, and the request itself is then refused unless its key lists it."""

    def __init__(self, app: ASGIApp, ring: KeyRing) -> None:
        super().__init__(
            app,
            allow_methods=("GET", "POST"),
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
        self.ring = ring

    def is_allowed_origin(self, origin: str) -> bool:
        try:
            return self.ring.origin_listed(origin)
        except KeyFileError:
            return False  # the request itself gets the 503 that says why


class KeyGate:
    """On a keyed server, 401 for a request with no valid key before its body is read
    (an upload is not received for nothing); the routes' dependencies then check the
    scope, the origin and the key's rate. `public` paths (/health, the docs, the search
    page's files) pass; so does a GET of a signed media URL (api/media_links.py) sent
    without a key, until it expires."""

    def __init__(
        self, app: ASGIApp, access: Access, public: Iterable[str], links: MediaLinks
    ) -> None:
        self.app = app
        self.access = access
        self.public = frozenset(public)
        self.links = links

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public or is_page_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        secret = credentials.strip() if scheme.lower() == "bearer" else headers.get("x-api-key")
        if not secret:
            signed = self._signed(scope)
            if signed is not None:
                if signed:
                    scope.setdefault("state", {})["authenticated"] = SIGNED_URL
                    await self.app(scope, receive, send)
                    return
                refused = NotAuthenticated("this media URL's signature is expired or invalid")
                response = JSONResponse(
                    {"detail": str(refused)}, status_code=401, headers=refused.headers
                )
                await response(scope, receive, send)
                return
        try:
            # Kept for the route's dependency (request.state): one key lookup a request.
            scope.setdefault("state", {})["authenticated"] = self.access.authenticate(secret)
        except NotAuthenticated as refused:
            response = JSONResponse(
                {"detail": str(refused)}, status_code=401, headers=refused.headers
            )
            await response(scope, receive, send)
            return
        except KeyFileError:
            pass  # the route's dependency answers the 503 that says why
        await self.app(scope, receive, send)

    def _signed(self, scope: AsgiScope) -> bool | None:
        """Whether the request opens a signed URL (None: it carries no signature)."""
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else quote(scope["path"])
        query = scope.get("query_string", b"").decode("latin-1")
        return self.links.allows(scope["method"], path, query)


class ClientRateLimit:
    """429 with Retry-After for a client address over `rate`; loopback clients (this
    machine, or a reverse proxy on it that does not forward the address) are exempt."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        rate = self.access.client_rate
        client = scope.get("client")
        address = client[0] if client else ""
        if scope["type"] != "http" or rate is None or is_loopback_host(address):
            await self.app(scope, receive, send)
            return
        wait = self.access.buckets.take(f"client {address}", rate)
        if not wait:
            await self.app(scope, receive, send)
            return
        seconds = retry_after_seconds(wait)
        response = JSONResponse(
            {"detail": f"too many requests from {address} (over {rate}); retry in {seconds} s"},
            status_code=429,
            headers={"Retry-After": str(seconds)},
        )
        await response(scope, receive, send)


def install_access(app: FastAPI, settings: Settings, access: Access) -> MediaLinks:
    """Keep `access` as the app's policy and add the middlewares (the last added runs
    first); gives the media URLs' signer that the gate checks (app.state.media_links)."""
    app.state.access = access
    links = MediaLinks(settings.data, settings.security.media_url_seconds, access.is_keyed)
    app.state.media_links = links
    pages = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    docs = [path for path in pages if path]
    public = ["/health", *docs, *([app.openapi_url] if app.openapi_url else [])]
    app.add_middleware(KeyGate, access=access, public=public, links=links)
    app.add_middleware(ClientRateLimit, access=access)
    app.add_middleware(KeyOriginsCORS, ring=access.ring)
    app.add_middleware(
        TrustedHosts, check=HostCheck(settings.server.host, settings.security.allowed_hosts)
    )
    app.add_middleware(SecurityHeaders, docs_paths=docs)
    return links


__all__ = [
    "ACCESS_ERRORS",
    "LOCAL",
    "Access",
    "AdminCaller",
    "Caller",
    "ExposureRefused",
    "OptionalCaller",
    "SearchCaller",
    "WriteCaller",
    "check_exposure",
    "exposure_note",
    "install_access",
    "is_loopback_host",
    "refuse_path_filters",
    "require_admin",
    "require_search",
    "require_write",
]
