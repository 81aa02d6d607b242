"""The in-process outbox (``memory://``): same contract, nothing survives the process.
For tests and the simulator."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from shopcast.push.messages import Claim, Delivery, DeliveryStatus, PushMessage


class MemoryOutbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, PushMessage] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._leases: dict[str, float] = {}
        self._seq: dict[str, int] = {}

    def enqueue(self, messages: Sequence[PushMessage], deliveries: Sequence[Delivery]) -> int:
        with self._lock:
            new = 0
            for m in messages:
                if m.message_id not in self._messages:
                    self._messages[m.message_id] = m
                    new += 1
            for d in deliveries:
                if d.delivery_id not in self._deliveries:
                    self._deliveries[d.delivery_id] = d
                    self._seq[d.delivery_id] = len(self._seq)
            return new

    def claim(
        self,
        now: float,
        *,
        limit: int = 100,
        lease_s: float = 30.0,
        channel: str | None = None,
        user_id: str | None = None,
    ) -> list[Claim]:
        with self._lock:
            due = [
                d
                for d in self._deliveries.values()
                if d.status is DeliveryStatus.PENDING
                and d.next_attempt_at <= now
                and self._leases.get(d.delivery_id, 0.0) <= now
                and (channel is None or d.channel == channel)
                and (user_id is None or d.user_id == user_id)
                and d.message_id in self._messages
            ]
            due.sort(key=lambda d: (d.next_attempt_at, self._seq[d.delivery_id]))
            out = []
            for d in due[:limit]:
                d = replace(d, attempts=d.attempts + 1)
                self._deliveries[d.delivery_id] = d
                self._leases[d.delivery_id] = now + lease_s
                out.append(Claim(d, self._messages[d.message_id], now + lease_s))
            return out

    def ack(self, delivery_id: str, *, now: float) -> bool:
        with self._lock:
            d = self._deliveries.get(delivery_id)
            if d is None or d.status is not DeliveryStatus.PENDING:
                return False
            self._deliveries[delivery_id] = replace(
                d, status=DeliveryStatus.DELIVERED, delivered_at=now
            )
            self._leases.pop(delivery_id, None)
            return True

    def fail(self, delivery_id: str, *, now: float, error: str, retry_at: float | None) -> None:
        with self._lock:
            d = self._deliveries.get(delivery_id)
            if d is None or d.status is not DeliveryStatus.PENDING:
                return
            if retry_at is None:
                d = replace(d, status=DeliveryStatus.DEAD, last_error=error)
            else:
                d = replace(d, next_attempt_at=retry_at, last_error=error)
            self._deliveries[delivery_id] = d
            self._leases.pop(delivery_id, None)

    def requeue(self, delivery_id: str, *, now: float) -> bool:
        with self._lock:
            d = self._deliveries.get(delivery_id)
            if d is None or d.status is not DeliveryStatus.DEAD:
                return False
            self._deliveries[delivery_id] = replace(
                d, status=DeliveryStatus.PENDING, next_attempt_at=now, attempts=0
            )
            return True

    def deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        message_id: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        with self._lock:
            rows = [
                d
                for d in self._deliveries.values()
                if (status is None or d.status is status)
                and (message_id is None or d.message_id == message_id)
            ]
            rows.sort(key=lambda d: self._seq[d.delivery_id], reverse=True)
            return rows[:limit]

    def get(self, message_id: str) -> PushMessage | None:
        with self._lock:
            return self._messages.get(message_id)

    def history(
        self, user_id: str, *, since: float | None = None, limit: int = 100
    ) -> list[PushMessage]:
        with self._lock:
            rows = [
                m
                for m in self._messages.values()
                if m.user_id == user_id and (since is None or m.created_at >= since)
            ]
        rows.sort(key=lambda m: (-m.created_at, m.message_id))
        return rows[:limit]

    def delete_user(self, user_id: str) -> int:
        with self._lock:
            gone = [k for k, d in self._deliveries.items() if d.user_id == user_id]
            for k in gone:
                del self._deliveries[k]
                self._leases.pop(k, None)
            msgs = [k for k, m in self._messages.items() if m.user_id == user_id]
            for k in msgs:
                del self._messages[k]
            return len(gone) + len(msgs)

    def prune(self, before: float) -> int:
        with self._lock:
            pending = {
                d.message_id
                for d in self._deliveries.values()
                if d.status is DeliveryStatus.PENDING
            }
            old = {
                k for k, m in self._messages.items() if m.created_at < before and k not in pending
            }
            gone = [k for k, d in self._deliveries.items() if d.message_id in old]
            for k in gone:
                del self._deliveries[k]
                self._leases.pop(k, None)
            for k in old:
                del self._messages[k]
            return len(gone) + len(old)

    def close(self) -> None:
        pass
