"""The durable outbox: a decided push is committed here before anyone delivers it.

Delivery is at-least-once with a stable ``delivery_id`` (receivers drop duplicates),
so the effect is exactly once per delivery id:

1. the decider ``enqueue``s the messages and their deliveries in one transaction;
2. a deliverer ``claim``s due deliveries: each is leased (``lease_until``) so two
   deliverers (threads, processes, a worker) never send the same one at once, and a
   deliverer that dies mid-way loses its lease, not the message;
3. after the channel accepted it, the deliverer ``ack``s (delivered, never claimed
   again); on an error it calls ``fail`` with the time of the next attempt, or with
   ``None`` to move it to the dead-letter list (``deliveries(status=DEAD)``, replayed
   by ``requeue``).

Backends by URL (``open_outbox``): ``sqlite:///path.db`` (default: the store's file,
tables ``push_*``), ``memory://`` and ``postgresql://…`` (the store's database; tables
from its Alembic migrations). Every backend passes
``tests/push/outbox_contract.py`` (``OutboxContract``): a new one (PostgreSQL, …) gets
the whole suite from a fixture that opens it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shopcast.errors import UnknownBackendError
from shopcast.push.messages import Claim, Delivery, DeliveryStatus, PushMessage


class Outbox(Protocol):
    """Messages and their deliveries; every time is an argument (injectable clock)."""

    def enqueue(self, messages: Sequence[PushMessage], deliveries: Sequence[Delivery]) -> int:
        """Commit messages and deliveries atomically; ids already stored are ignored
        (a replayed decision is a no-op). Returns how many messages were new."""
        ...

    def claim(
        self,
        now: float,
        *,
        limit: int = 100,
        lease_s: float = 30.0,
        channel: str | None = None,
        user_id: str | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` pending deliveries due at ``now`` (oldest due first)
        whose lease is free or expired; each claim counts one attempt."""
        ...

    def ack(self, delivery_id: str, *, now: float) -> bool:
        """Mark delivered; False when it was not pending (already acked, dead, unknown)."""
        ...

    def fail(self, delivery_id: str, *, now: float, error: str, retry_at: float | None) -> None:
        """An attempt failed: retry at ``retry_at`` (lease released) or, with None,
        dead-letter it."""
        ...

    def requeue(self, delivery_id: str, *, now: float) -> bool:
        """A dead delivery goes back to pending, due now; False when it was not dead."""
        ...

    def deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        message_id: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """Deliveries, newest first (``status=DEAD``: the dead-letter list)."""
        ...

    def get(self, message_id: str) -> PushMessage | None: ...

    def history(
        self, user_id: str, *, since: float | None = None, limit: int = 100
    ) -> list[PushMessage]:
        """A user's messages, newest first."""
        ...

    def delete_user(self, user_id: str) -> int:
        """Erase a user's messages and deliveries; returns how many rows went."""
        ...

    def prune(self, before: float) -> int:
        """Retention: delete messages created before ``before`` whose deliveries are
        all finished (delivered or dead), with those deliveries; returns how many rows
        went. Pending deliveries and their messages are kept."""
        ...

    def close(self) -> None: ...


def open_outbox(url: str) -> Outbox:
    """The outbox backend named by the URL's scheme (imported only when used)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from shopcast.push._outbox_sql import SqliteOutbox

        return SqliteOutbox(url)
    if scheme == "memory":
        from shopcast.push._outbox_memory import MemoryOutbox

        return MemoryOutbox()
    if scheme in ("postgresql", "postgres"):
        from shopcast.push._outbox_sql import PostgresOutbox

        return PostgresOutbox(url)
    raise UnknownBackendError(
        f"no push outbox backend for {url!r}; use sqlite:///path.db, memory:// or postgresql://"
    )
