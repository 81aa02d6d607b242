"""Delivery channels: the live stream hub and signed webhooks.

A ``Channel`` delivers one claimed delivery and says what happened (``Sent``: ack it;
``Retry(at)``: try again then; ``Dead(reason)``: move it to the dead-letter list).

Webhooks (``push.webhooks``): ``POST`` of ``{"delivery_id", "attempt", "message"}``
with headers

- ``X-Shopcast-Delivery``: the delivery id (the same on every retry: receivers drop
  duplicates by it);
- ``X-Shopcast-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
  (``verify_signature`` checks it, with a tolerance against replays).

2xx is delivered; 408, 429, 5xx and network errors are retried after
``retry_base_s · 2^(attempt−1)`` (capped at ``retry_max_s``, ± 10 % jitter derived
from the delivery id, so deterministic) until ``max_attempts``, then dead; other
4xx answers are dead at once (the receiver refused it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from shopcast.config import PushSettings, WebhookEndpointSettings
from shopcast.push.messages import Claim
from shopcast.push.streams import StreamHub

SIGNATURE_HEADER = "X-Shopcast-Signature"
DELIVERY_HEADER = "X-Shopcast-Delivery"
NO_STREAM = "no live stream"  # a live retry: no stream of the user in this process


@dataclass(frozen=True, slots=True)
class Sent:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    at: float
    error: str


@dataclass(frozen=True, slots=True)
class Dead:
    error: str


Outcome = Sent | Retry | Dead


class Channel(Protocol):
    def deliver(self, claim: Claim, now: float) -> Outcome: ...


def sign(secret: str, body: bytes, ts: int) -> str:
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance_s: float = 300.0
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most
    ``tolerance_s`` old (for receivers; constant-time comparison)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, ts), f"t={ts},v1={parts.get('v1', '')}")


def backoff(settings: PushSettings, delivery_id: str, attempt: int) -> float:
    """Seconds before the next attempt after ``attempt`` failed ones."""
    base = min(settings.retry_max_s, settings.retry_base_s * 2 ** max(0, attempt - 1))
    jitter = int(
        hashlib.blake2b(f"{delivery_id}:{attempt}".encode(), digest_size=2).hexdigest(), 16
    )
    return float(base * (0.9 + 0.2 * jitter / 0xFFFF))


class LiveChannel:
    """The user's open streams; no stream yet: retry until ``live_ttl`` after creation."""

    def __init__(self, hub: StreamHub, settings: PushSettings) -> None:
        self.hub = hub
        self.settings = settings

    def deliver(self, claim: Claim, now: float) -> Outcome:
        if self.hub.publish(claim.message):
            return Sent()
        if now >= claim.message.created_at + self.settings.live_ttl:
            return Dead("expired: no live stream of the user within push.live_ttl")
        return Retry(now + self.settings.live_retry_s, NO_STREAM)


class WebhookChannel:
    """Signed POSTs to the endpoint named by the delivery's target."""

    def __init__(
        self,
        settings: PushSettings,
        client: httpx.Client | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.settings = settings
        self.endpoints = {e.name: e for e in settings.webhooks}
        self.client = client or httpx.Client()
        self.wall_clock = wall_clock or time.time  # signatures carry real time

    def deliver(self, claim: Claim, now: float) -> Outcome:
        d = claim.delivery
        endpoint: WebhookEndpointSettings | None = self.endpoints.get(d.target)
        if endpoint is None:
            return Dead(f"no webhook endpoint {d.target!r} in push.webhooks")
        body = json.dumps(
            {
                "delivery_id": d.delivery_id,
                "attempt": d.attempts,
                "message": claim.message.to_json(),
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: d.delivery_id,
            SIGNATURE_HEADER: sign(
                endpoint.secret.get_secret_value(), body, int(self.wall_clock())
            ),
            "User-Agent": "shopcast-push",
        }
        try:
            response = self.client.post(
                endpoint.url, content=body, headers=headers, timeout=endpoint.timeout_s
            )
        except httpx.HTTPError as exc:
            return self._retry(claim, now, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            return Sent()
        if status in (408, 429) or status >= 500:
            return self._retry(claim, now, f"HTTP {status}")
        return Dead(f"HTTP {status}: refused by the receiver")

    def _retry(self, claim: Claim, now: float, error: str) -> Outcome:
        attempt = claim.delivery.attempts
        if attempt >= self.settings.max_attempts:
            return Dead(f"{error} (after {attempt} attempts)")
        return Retry(now + backoff(self.settings, claim.delivery.delivery_id, attempt), error)

    def close(self) -> None:
        self.client.close()
