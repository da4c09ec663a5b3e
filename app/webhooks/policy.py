"""Which URLs a webhook may call: allowed hosts, and the addresses they resolve to."""

from __future__ import annotations

import ipaddress
import socket

import anyio
import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(ValueError):
    """A webhook URL this service will not call."""


class WebhookPolicy:
    """Which receivers may be called: `WEBHOOK_ALLOWED_HOSTS`."""

    def __init__(self, allowed_hosts: str) -> None:
        entries = [entry.strip().lower() for entry in allowed_hosts.split(",") if entry.strip()]
        parsed = {entry: _address(entry) for entry in entries}
        self.addresses = {address for address in parsed.values() if address is not None}
        self.names = [entry for entry, address in parsed.items() if address is None]

    @property
    def enabled(self) -> bool:
        return bool(self.addresses or self.names)

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host is not allowed (at creation: before any DNS lookup)."""
        if not self.enabled:
            raise WebhookRefused("this service calls no webhooks (WEBHOOK_ALLOWED_HOSTS is empty)")
        target = _parse(url)
        host = ascii_host(target)
        if target.scheme not in ("http", "https") or not host:
            raise WebhookRefused("a webhook is an http or https URL with a host")
        if target.userinfo:
            raise WebhookRefused("a webhook URL carries no credentials")
        if not self._host_allowed(host):
            raise WebhookRefused(f"the host {host!r} is not in WEBHOOK_ALLOWED_HOSTS")

    async def resolve(self, url: str) -> IpAddress:
        """The address to call: checked again, now that DNS has answered."""
        self.check_url(url)
        target = _parse(url)
        host = ascii_host(target)
        literal = _address(host)
        if literal is not None:
            addresses = [literal]
        else:
            port = target.port or (443 if target.scheme == "https" else 80)
            try:
                found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise WebhookRefused(f"{host!r} does not resolve: {exc}") from exc
            addresses = [ipaddress.ip_address(info[4][0]) for info in found]
        for address in addresses:
            if address not in self.addresses and not _public(address):
                raise WebhookRefused(
                    f"{host!r} resolves to {address}, a private address; allow that address "
                    "in WEBHOOK_ALLOWED_HOSTS to call it"
                )
        return addresses[0]

    def _host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        address = _address(host)
        if address is not None:
            return address in self.addresses
        return any(
            host == name or (name.startswith("*.") and host.endswith(name[1:]))
            for name in self.names
        )


def _parse(url: str) -> httpx.URL:
    """The URL as the request will be made (httpx's reading, not another parser's)."""
    if any(ord(character) < 0x21 or ord(character) == 0x7F for character in url):
        raise WebhookRefused("a webhook URL has no spaces or control characters")
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from exc
    if target.port is not None and not 0 < target.port < 65536:
        raise WebhookRefused(f"not a valid URL: port {target.port} is out of range")
    return target


def ascii_host(target: httpx.URL) -> str:
    """The host as it goes on the wire (IDNA, `xn--...`): what is allowed, resolved and sent,
    never a Unicode form that another encoder could map to a different name."""
    return target.raw_host.decode("ascii").strip("[]")


def _public(address: IpAddress) -> bool:
    """Global, including the IPv4 address an IPv6 one may carry (mapped, NAT64, 6to4...)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in _NAT64 or address in _IPV4_COMPATIBLE):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return embedded.is_global
    return address.is_global


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
