"""The event bus: a Redis stream of ingested events, read by consumer groups.

API processes ``publish`` each batch after its durable commit (``events`` under the
prefix; approximately trimmed to ``state.stream_maxlen``). ``shopcast worker``
processes share a consumer group: each message goes to one worker, which
acknowledges it after processing; messages a dead worker left pending are claimed by
another with ``XAUTOCLAIM`` once idle long enough. API processes also ``follow`` the
stream (plain ``XREAD``, every process sees every event) to let their in-process
models learn the events ingested by the others. Model promotions are announced on
the ``models`` pub/sub channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shopcast.domain import Event
from shopcast.online._redis import RedisConnection

DEFAULT_GROUP = "shopcast-workers"


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    event: Event
    origin: str


class RedisBus:
    def __init__(self, conn: RedisConnection, *, maxlen: int = 1_000_000) -> None:
        self.conn = conn
        self.stream = conn.key("events")
        self.channel = conn.key("models")
        self.maxlen = maxlen

    def publish(self, events: Sequence[Event], origin: str) -> list[str]:
        """Append the events (one pipelined round trip); their stream ids."""
        if not events:
            return []

        def run() -> list[str]:
            pipe = self.conn.client.pipeline(transaction=False)
            for event in events:
                fields = {"id": event.event_id or "", "o": origin, "e": event.model_dump_json()}
                pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            return [str(x) for x in pipe.execute()]

        return self.conn.call(run)

    def ensure_group(self, group: str = DEFAULT_GROUP) -> None:
        """Create the consumer group (from the start of the stream) unless it exists."""
        import redis

        def run() -> None:
            try:
                self.conn.client.xgroup_create(self.stream, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        self.conn.call(run)

    def read(
        self, client: Any, group: str, consumer: str, *, count: int = 100, block_ms: int = 1000
    ) -> list[Message]:
        """New messages for ``consumer`` (``client``: a blocking client of this bus)."""
        reply = client.xreadgroup(group, consumer, {self.stream: ">"}, count=count, block=block_ms)
        return [m for _, rows in reply or [] for m in _messages(rows)]

    def claim(
        self, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Message]:
        """Take over messages pending for longer than ``min_idle_ms`` (a dead consumer's)."""

        def run() -> list[Message]:
            out: list[Message] = []
            start = "0-0"
            while len(out) < count:
                reply = self.conn.client.xautoclaim(
                    self.stream, group, consumer, min_idle_ms, start, count=count - len(out)
                )
                start, rows = reply[0], reply[1]
                out.extend(_messages(rows))
                if start == "0-0":
                    break
            return out

        return self.conn.call(run)

    def ack(self, group: str, ids: Sequence[str]) -> None:
        if ids:
            self.conn.call(lambda: self.conn.client.xack(self.stream, group, *ids))

    def backlog(self, group: str = DEFAULT_GROUP) -> dict[str, int]:
        """``pending`` (delivered, not acknowledged) and ``lag`` (not yet delivered)."""
        groups = self.conn.call(lambda: self.conn.client.xinfo_groups(self.stream))
        for info in groups:
            if info["name"] == group:
                return {"pending": int(info["pending"]), "lag": int(info.get("lag") or 0)}
        return {
            "pending": 0,
            "lag": int(self.conn.call(lambda: self.conn.client.xlen(self.stream))),
        }

    def consumers(self, group: str = DEFAULT_GROUP) -> dict[str, int]:
        """Pending messages per consumer of the group."""
        rows = self.conn.call(lambda: self.conn.client.xinfo_consumers(self.stream, group))
        return {r["name"]: int(r["pending"]) for r in rows}

    def follow(
        self, client: Any, after: str, *, count: int = 500, block_ms: int = 1000
    ) -> list[Message]:
        """Messages after stream id ``after`` (every reader sees every message)."""
        reply = client.xread({self.stream: after}, count=count, block=block_ms)
        return [m for _, rows in reply or [] for m in _messages(rows)]

    def last_id(self) -> str:
        """The id of the newest message ("0-0" when empty): follow from here."""
        rows = self.conn.call(lambda: self.conn.client.xrevrange(self.stream, count=1))
        return str(rows[0][0]) if rows else "0-0"

    def announce_model(self, model_dir: str, version: str) -> int:
        """Tell every API process that ``version`` was promoted; how many listen."""
        message = f"{version}\t{model_dir}"
        return int(self.conn.call(lambda: self.conn.client.publish(self.channel, message)))


def _messages(rows: Any) -> list[Message]:
    out = []
    for msg_id, fields in rows:
        if not fields:  # deleted by a trim while pending
            continue
        out.append(
            Message(str(msg_id), Event.model_validate_json(fields["e"]), fields.get("o", ""))
        )
    return out
