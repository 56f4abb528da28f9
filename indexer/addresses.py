"""Which network addresses a download named by a server's caller may reach (SSRF).

A caller of the HTTP API names URLs that the server then downloads; without a check,
`http://169.254.169.254/` (a cloud's metadata service, with its credentials) or
`http://localhost:6379/` would be fetched from inside the operator's network. The
check is on the addresses actually connected to: literal IPs in every URL (the first
and each redirect's), and every address a host name resolves to, at connection time
(GuardedResolver), so that a name resolving to 10.0.0.5, or changing its answer
between a check and the connection, is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SETTING = "fetch.allow_private_addresses"


class AddressRefused(OSError):
    """A connection to an address that sources from a server's caller may not reach."""


def address_category(address: IPAddress) -> str | None:
    """What makes `address` non-public ("loopback", "private", ...), or None when public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    checks = (
        ("unspecified", address.is_unspecified),  # 0.0.0.0 and :: reach this machine
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),  # 169.254.169.254: cloud metadata
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),  # 100.64.0.0/10 (carrier NAT) and the like
    )
    return next((name for name, matches in checks if matches), None)


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses only, unless private ones are allowed (all, or some networks)."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def create(cls, allow_private: bool, networks: Iterable[str] = ()) -> AddressPolicy:
        return cls(allow_private, tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def refusal(self, host: str, name: str | None = None) -> str | None:
        """Why a connection to `host` is refused; None when it is allowed or `host` is a
        name (names are checked on what they resolve to: `name` resolved to `host`)."""
        try:
            address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return None
        if self.allow_private or any(address in network for network in self.allowed_networks):
            return None
        category = address_category(address)
        if category is None:
            return None
        what = f"{name} resolves to {address}, a" if name else f"{address} is a"
        return f"refused: {what} {category} address (setting {SETTING})"


class GuardedResolver(AbstractResolver):
    """The system resolver, keeping only the addresses the policy allows; when none is
    left, AddressRefused (aiohttp then connects to nothing)."""

    def __init__(self, policy: AddressPolicy):
        self._policy = policy
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        allowed = [r for r in results if self._policy.refusal(r["host"]) is None]
        if not allowed:
            reason = self._policy.refusal(results[0]["host"], host) if results else None
            raise AddressRefused(reason or f"refused: {host} resolves to no address")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()
