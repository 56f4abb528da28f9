"""`xmodal keys`: create, list and revoke the API keys of a data directory.

Registered on the `xmodal` command line (api/cli.py). Keys are kept hashed in
`<data>/keys.json` (api/keys.py); a running server sees a change at its next request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from xmodal.api.keys import ApiKey, KeyRing, Scope
from xmodal.api.settings import load_settings

keys_app = typer.Typer(
    name="keys",
    help="API keys: once one exists, `xmodal serve` asks every request for one.",
    no_args_is_help=True,
)
console = Console()

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory (env XMODAL_DATA).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
# `xmodal serve --insecure-no-auth`
InsecureNoAuthOpt = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="Listen beyond loopback with no API key: anyone who reaches the port may "
        "search and download the indexed files.",
    ),
]


def ring_for(data: Path | None) -> KeyRing:
    settings = load_settings(**({"data": data} if data is not None else {}))
    return KeyRing.of_data(settings.data)


def key_json(key: ApiKey) -> dict[str, object]:
    record = key.to_json()
    record.pop("secret_sha256")
    return record


@keys_app.command("create")
def create(
    scope: Annotated[
        Scope,
        typer.Option(
            "--scope",
            case_sensitive=False,
            help="admin (everything), write (catalog changes and search), search, or "
            "publishable (search from the --origin web pages only: safe in a page).",
        ),
    ],
    origin: Annotated[
        list[str] | None,
        typer.Option(
            "--origin",
            help="Publishable keys: a web origin that may use it, e.g. https://shop.example "
            "(repeatable).",
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Requests it may make: N/s, N/min or N/h (publishable: 10/s)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "",
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print its secret, this once: only its hash is kept."""
    ring = ring_for(data)
    key, secret = ring.create(scope, name, origin or [], rate)
    if as_json:
        console.print_json(json.dumps({**key_json(key), "secret": secret}))
        return
    limits = [f"rate {key.rate}"] if key.rate else []
    if key.origins:
        limits.append(f"origins {', '.join(key.origins)}")
    console.print(
        f"created {key.scope} key {key.id}"
        + (f" ({'; '.join(limits)})" if limits else "")
        + f" in {ring.path}",
        markup=False,
        highlight=False,
    )
    console.print(secret, markup=False, highlight=False, soft_wrap=True)
    console.print("keep it now: it is not shown again", style="bold")


@keys_app.command("list")
def list_keys(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """List the keys (never their secrets), revoked ones too."""
    keys = ring_for(data).all_keys()
    if as_json:
        console.print_json(json.dumps([key_json(key) for key in keys]))
        return
    if not keys:
        console.print("no keys: `xmodal serve` stays on loopback and asks for none")
        return
    table = Table("id", "scope", "name", "origins", "rate", "created", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.scope.value,
            key.name,
            " ".join(key.origins),
            key.rate or "",
            key.created_at,
            key.revoked_at or "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (`xmodal keys list`).")],
    data: DataOpt = None,
) -> None:
    """Revoke a key: a running server refuses it from its next request on."""
    key = ring_for(data).revoke(key_id)
    console.print(f"revoked {key.scope} key {key.id} ({key.revoked_at})", markup=False)


__all__ = ["InsecureNoAuthOpt", "keys_app"]
