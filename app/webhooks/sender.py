"""The sender: due deliveries claimed, signed, sent to the checked address, and recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import structlog

from app.observability import metrics
from app.store.database import Database
from app.store.models import WebhookDelivery
from app.store.wakeups import Wakeups
from app.store.webhooks import WebhookRepository
from app.webhooks.policy import WebhookPolicy, WebhookRefused, ascii_host

log = structlog.get_logger("app.webhooks")

CLAIM_SECONDS = 60  # a sender's hold on a delivery it tries; past it, another may try
MAX_RETRY_WAIT_SECONDS = 600


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
        policy: WebhookPolicy,
        *,
        secret: bytes,
        max_attempts: int,
        retry_seconds: float,
        timeout_seconds: float,
        poll_interval: float,
        concurrency: int = 8,
    ) -> None:
        self.db = db
        self.wakeups = wakeups
        self.policy = policy
        self.secret = secret
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.timeout = timeout_seconds
        self.poll_interval = poll_interval
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
            extensions={"sni_hostname": ascii_host(url)},
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
