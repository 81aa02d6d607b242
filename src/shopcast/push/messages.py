"""The records the push engine decides, stores and delivers.

- ``PushItem``: one item of a message (from the serving pipeline), with the reason.
- ``PushMessage``: what one shopper gets on one channel. ``decision_id`` groups the
  messages of one decision (the same push on the live stream and a webhook); policy
  counts decisions, attribution counts messages (per channel).
- ``Delivery``: one attempt target of a message (the user's live streams, or one
  webhook endpoint). ``delivery_id`` is stable across retries and restarts, so a
  receiver drops duplicates by it (at-least-once transport, exactly-once effect).

``PushMessage.to_json`` is the wire contract of the live stream (SSE ``event: push``)
and of the webhook body; keep its keys stable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

#: Channels a message can go out on.
LIVE = "live"
WEBHOOK = "webhook"
CHANNELS = (LIVE, WEBHOOK)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for (the next) attempt
    DELIVERED = "delivered"  # acknowledged by the channel
    DEAD = "dead"  # out of attempts or expired: on the dead-letter list


def iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds (``2026-11-28T15:04:05.123Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stable_id(*parts: object, prefix: str = "") -> str:
    """A deterministic 128-bit id from its parts (same decision -> same id after a restart)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return prefix + hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class PushItem:
    item_id: str
    title: str | None = None
    price: float | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "price": self.price,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PushItem:
        return cls(
            item_id=str(raw["item_id"]),
            title=raw.get("title"),
            price=raw.get("price"),
            reason=str(raw.get("reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class PushMessage:
    message_id: str
    decision_id: str
    user_id: str
    trigger: str
    channel: str
    title: str
    body: str
    items: tuple[PushItem, ...]
    created_at: float
    priority: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # trigger details (guides, coupon, …)

    def to_json(self) -> dict[str, Any]:
        """The wire form (SSE ``data:`` of ``event: push``; webhook body ``message``)."""
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "user_id": self.user_id,
            "trigger": self.trigger,
            "channel": self.channel,
            "title": self.title,
            "body": self.body,
            "items": [i.to_json() for i in self.items],
            "created_at": iso(self.created_at),
        }
        if self.data:
            out["data"] = self.data
        return out

    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    message_id: str
    channel: str
    target: str = ""  # webhook endpoint name; "" for the live stream
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    delivered_at: float | None = None
    user_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "message_id": self.message_id,
            "channel": self.channel,
            "target": self.target,
            "status": self.status.value,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at),
            "last_error": self.last_error,
            "delivered_at": None if self.delivered_at is None else iso(self.delivered_at),
        }


def delivery_for(message: PushMessage, target: str = "") -> Delivery:
    """The delivery of ``message`` to ``target``; its id is derived, so stable."""
    return Delivery(
        delivery_id=stable_id(message.message_id, target, prefix="d_"),
        message_id=message.message_id,
        channel=message.channel,
        target=target,
        next_attempt_at=message.created_at,
        user_id=message.user_id,
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery leased to one deliverer until ``lease_until``, with its message."""

    delivery: Delivery
    message: PushMessage
    lease_until: float
