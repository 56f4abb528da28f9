"""API keys, for admin keys: list, create (the secret is shown once), revoke.

`xmodal keys ...` does the same on the server's machine, without a server."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from ..access import require_admin
from ..keys import ApiKey, KeyRing, Scope
from ..schemas import ErrorResponse

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[Depends(require_admin)])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 503)
}
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="The key's id.")]


def ring_of(request: Request) -> KeyRing:
    return request.app.state.access.ring


RingDep = Annotated[KeyRing, Depends(ring_of)]


class KeyOut(BaseModel):
    """A key as listed: never its secret."""

    id: str
    name: str
    scope: Scope
    origins: list[str] = Field(description="Publishable keys: the web origins that may use it.")
    rate: str | None = Field(description="Requests it may make (N/s, N/min, N/h); null: any.")
    created_at: str
    revoked_at: str | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            name=key.name,
            scope=key.scope,
            origins=list(key.origins),
            rate=key.rate,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreate(BaseModel):
    scope: Scope
    name: str = Field("", max_length=200, description="What the key is for.")
    origins: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Publishable keys: the web origins (scheme://host[:port]) that may use it.",
    )
    rate: str | None = Field(
        None,
        max_length=40,
        description="N/s, N/min or N/h (publishable keys: 10/s when not given).",
    )


class KeyCreated(BaseModel):
    key: KeyOut
    secret: str = Field(description="The key itself: shown this once, kept hashed.")


@router.get("", operation_id="list_keys", response_model=list[KeyOut], responses=ERRORS)
def list_keys(ring: RingDep) -> list[KeyOut]:
    return [KeyOut.of(key) for key in ring.all_keys()]


@router.post(
    "", operation_id="create_key", response_model=KeyCreated, status_code=201, responses=ERRORS
)
def create_key(body: KeyCreate, ring: RingDep) -> KeyCreated:
    key, secret = ring.create(body.scope, body.name, body.origins, body.rate)
    return KeyCreated(key=KeyOut.of(key), secret=secret)


@router.delete("/{key_id}", operation_id="revoke_key", response_model=KeyOut, responses=ERRORS)
def revoke_key(key_id: KeyId, ring: RingDep) -> KeyOut:
    """Revoke a key: refused from the next request on (kept in the list as revoked)."""
    return KeyOut.of(ring.revoke(key_id))
