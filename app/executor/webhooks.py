"""Webhooks: each time a run rests, its receiver is told, signed, retried, and never trusted.

A delivery is stored in the same transaction as the rest it reports (an outbox), so none is
lost or invented; the executor side sends it afterwards, so a slow or failing receiver never
holds a run. Only allowed hosts are called, checked when the run is created and again before
each try, after DNS resolution: the request goes to the address that was checked, and a host
name that resolves to a private address is refused unless that address itself is allowed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.executor import metrics
from app.executor.resources import RunOut
from app.executor.wakeups import Wakeups
from app.settings import Settings
from app.store.database import Database
from app.store.models import Run, WebhookDelivery
from app.store.webhooks import WebhookRepository

log = structlog.get_logger("app.executor")

RESTING_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled", "run.pending_approval"})
CLAIM_SECONDS = 60  # a sender's hold on a delivery it tries; past it, another may try
MAX_RETRY_WAIT_SECONDS = 600
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
        host = _ascii_host(target)
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
        host = _ascii_host(target)
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


def _ascii_host(target: httpx.URL) -> str:
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


async def enqueue(session: AsyncSession, run: Run, stamp: datetime) -> None:
    """Store the delivery of the rest the run has just come to, when it has a webhook; the
    caller's transaction stores it with the rest itself."""
    event = f"run.{run.status}"
    if run.webhook is None or event not in RESTING_EVENTS:
        return
    # The run as it rested; its deliveries are the receiver's own business, not in the body.
    shown = RunOut.of(run).model_dump(mode="json", exclude={"webhook_deliveries"})
    body = {"event": event, "run": shown}
    await WebhookRepository(session).add(run.id, run.webhook, event, body, stamp)


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """`Webhook-Signature`: the contract's `t=<unix seconds>,v1=<hex HMAC-SHA256>`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True, slots=True)
class Attempt:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Sends due deliveries, a few at a time, until cancelled; any process with an executor
    runs one, and deliveries are claimed with SKIP LOCKED so each try is made once."""

    def __init__(
        self,
        db: Database,
        wakeups: Wakeups,
        settings: Settings,
        *,
        concurrency: int = 8,
    ) -> None:
        secret = settings.webhook_secret
        self.db = db
        self.wakeups = wakeups
        self.policy = WebhookPolicy(settings.webhook_allowed_hosts)
        self.secret = secret.get_secret_value().encode() if secret is not None else b""
        self.max_attempts = settings.webhook_max_attempts
        self.retry_seconds = settings.webhook_retry_seconds
        self.timeout = settings.webhook_timeout_seconds
        self.poll_interval = settings.poll_interval_seconds
        self.concurrency = concurrency

    async def run(self) -> None:
        if not self.policy.enabled:
            return
        slots = anyio.Semaphore(self.concurrency)
        client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
        async with client, anyio.create_task_group() as group:
            while True:
                await slots.acquire()  # a free slot first: claim only what can be sent now
                free = slots.value + 1
                due = await self._claim(free)
                for index, delivery in enumerate(due):
                    if index:
                        await slots.acquire()
                    group.start_soon(self._send_then_release, client, delivery, slots)
                if not due:
                    slots.release()
                if len(due) < free:  # caught up: wait for this process's next, or poll
                    with anyio.move_on_after(self.poll_interval):
                        await self.wakeups.wait_for_deliveries()

    async def _claim(self, limit: int) -> Sequence[WebhookDelivery]:
        stamp = datetime.now(UTC)
        try:
            # A cancel (the process stops) waits for the transaction instead of cutting it.
            with anyio.CancelScope(shield=True):
                async with self.db.session_scope() as session:
                    due = await WebhookRepository(session).claim_due(
                        stamp, limit=limit, hold_until=stamp + timedelta(seconds=CLAIM_SECONDS)
                    )
        except Exception:
            log.warning("webhook.claim_failed", exc_info=True)
            return []
        return due

    async def _send_then_release(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, slots: anyio.Semaphore
    ) -> None:
        try:
            attempt = await self._send(client, delivery)
            await self._record(delivery, attempt)
        except Exception:
            # The delivery stays claimed until CLAIM_SECONDS pass, then is tried again.
            log.warning("webhook.not_recorded", delivery=delivery.id, exc_info=True)
        finally:
            slots.release()

    async def _send(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> Attempt:
        # One deadline for the whole try (DNS included), well within the claim's hold.
        try:
            with anyio.fail_after(self.timeout):
                return await self._try(client, delivery)
        except TimeoutError:
            return Attempt(None, f"no answer within {self.timeout:g} s")

    async def _try(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> Attempt:
        try:
            address = await self.policy.resolve(delivery.url)
        except WebhookRefused as exc:
            log.warning("webhook.refused", run_id=delivery.run_id, reason=str(exc))
            return Attempt(
                None, "refused: the host is not allowed, or resolves to an address that is not"
            )  # the details (internal addresses) stay in the log
        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
        url = httpx.URL(delivery.url)
        headers = {
            "Content-Type": "application/json",
            "Webhook-Id": delivery.id,
            "Webhook-Signature": signature(self.secret, int(time.time()), body),
            # The request goes to the address checked above; the receiver sees its own name.
            "Host": url.netloc.decode(),
        }
        request = client.build_request(
            "POST",
            url.copy_with(host=str(address)),
            content=body,
            headers=headers,
            extensions={"sni_hostname": _ascii_host(url)},
        )
        try:
            # The status is all that counts: the body is never read.
            response = await client.send(request, stream=True)
            await response.aclose()
        except Exception as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500])
        return Attempt(response.status_code, None if response.is_success else "not a 2xx answer")

    async def _record(self, delivery: WebhookDelivery, attempt: Attempt) -> None:
        stamp = datetime.now(UTC)
        tries = [
            *delivery.attempts,
            {"at": stamp.isoformat(), "status_code": attempt.status_code, "error": attempt.error},
        ]
        if attempt.delivered:
            outcome, next_at = "delivered", None
        elif len(tries) >= self.max_attempts:
            outcome, next_at = "failed", None
        else:
            wait = min(self.retry_seconds * 2 ** (len(tries) - 1), MAX_RETRY_WAIT_SECONDS)
            outcome, next_at = "pending", stamp + timedelta(seconds=wait)
        with anyio.CancelScope(shield=True):
            async with self.db.session_scope() as session:
                recorded = await WebhookRepository(session).record(
                    delivery,
                    tries,
                    status=outcome,
                    next_attempt_at=next_at,
                    delivered_at=stamp if outcome == "delivered" else None,
                )
        if not recorded:
            log.warning("webhook.claim_lapsed", run_id=delivery.run_id, delivery=delivery.id)
            return
        metrics.WEBHOOK_DELIVERIES.labels("delivered" if attempt.delivered else "failed").inc()
        log.info(
            "webhook.attempt",
            run_id=delivery.run_id,
            delivery=delivery.id,
            webhook_event=delivery.event,
            status_code=attempt.status_code,
            error=attempt.error,
            outcome=outcome,
        )
