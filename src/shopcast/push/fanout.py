"""Live pushes across API processes: a wake-up on Redis pub/sub (``state.url = redis://``).

A process's ``StreamHub`` only reaches the streams opened on that process. When the
process that decided a live push (an API process, or ``shopcast worker``) holds no
stream of the user, the delivery stays pending in the outbox (its lease released,
next attempt ``push.live_retry_s`` later) and the decider publishes the user's id on
the tenant's channel ``<prefix>push:live`` (the prefix of ``state.url``, which carries
the tenant's namespace, like every other key in ``shopcast.online``), once per delivery
(on its first attempt; the pollers' retries publish nothing).

Every API process listens on that channel (``FanoutListener``, a daemon thread); one
that holds a stream of the user claims the user's pending live deliveries from the
outbox at once (``PushEngine.wake``) and hands them to its streams. The outbox stays
the durable record and the only path of a message: a claim is leased atomically
(SQLite's write lock, PostgreSQL's ``FOR UPDATE SKIP LOCKED``), so each delivery id
is claimed, sent and acked once, whether the wake-up, the process's own poller or
the decider delivers it. The channel carries user ids only (no message bodies), and
a lost wake-up (Redis down, a process restarting) costs latency, not the push: the
pollers retry every ``push.live_retry_s`` until ``push.live_ttl``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from shopcast.errors import StateUnavailableError
from shopcast.online._redis import RedisConnection

log = logging.getLogger(__name__)


class LiveFanout:
    """Publishes wake-ups on the tenant's live channel."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self.channel = conn.key("push", "live")

    def notify(self, user_ids: Iterable[str]) -> int:
        """Wake the processes holding these users' streams; how many processes heard
        it (0 as well when Redis is down: the pollers deliver later)."""
        users = sorted(set(user_ids))
        if not users:
            return 0

        def run() -> int:
            pipe = self.conn.client.pipeline(transaction=False)
            for user in users:
                pipe.publish(self.channel, user)
            return sum(int(n) for n in pipe.execute())

        try:
            return self.conn.call(run)
        except StateUnavailableError as exc:
            log.debug("live fan-out skipped: %s", exc.message)
            return 0


class FanoutListener:
    """A daemon thread subscribed to one live channel; calls ``on_user(user_id)`` for
    each wake-up (resubscribing after a Redis outage)."""

    def __init__(self, fanout: LiveFanout, on_user: Callable[[str], object]) -> None:
        self.fanout = fanout
        self.on_user = on_user
        self.subscribed = threading.Event()  # set while subscribed (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shopcast-push-fanout", daemon=True)

    def start(self) -> FanoutListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        conn = self.fanout.conn
        while not self._stop.is_set():
            client = conn.blocking_client(1.0)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.fanout.channel)
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        self.on_user(str(message["data"]))
                    except Exception:  # the poller delivers it later; keep listening
                        log.exception("live fan-out delivery failed")
                pubsub.close()
            except Exception as exc:  # Redis down: wait, then resubscribe
                log.debug("live fan-out channel unavailable: %s", exc)
                self.subscribed.clear()
                self._stop.wait(conn.retry_s)
            finally:
                client.close()
