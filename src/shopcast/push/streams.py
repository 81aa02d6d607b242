"""Live per-user streams: the hub that SSE and WebSocket connections subscribe to.

``publish`` may be called from any thread (the decision runs in a worker thread); it
hands the message to each subscriber's event loop and returns how many subscribers
there were, so the live channel acks only what someone received. The hub is per
process: with several API processes a push reaches the streams of the process that
delivers it (a message nobody received stays pending in the outbox until
``push.live_ttl``, and is retried by every process's scheduler).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from shopcast.push.messages import PushMessage


@dataclass(eq=False)
class Subscription:
    user_id: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[PushMessage] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))


class StreamHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, user_id: str) -> Subscription:
        """A new subscription on the running event loop."""
        sub = Subscription(user_id, asyncio.get_running_loop())
        with self._lock:
            self._subs.setdefault(user_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.user_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.user_id]

    def subscribers(self, user_id: str) -> int:
        with self._lock:
            return len(self._subs.get(user_id, ()))

    def publish(self, message: PushMessage) -> int:
        """Queue ``message`` for each subscriber of its user; returns how many."""
        with self._lock:
            subs = list(self._subs.get(message.user_id, ()))
        sent = 0
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(_put, sub.queue, message)
            except RuntimeError:  # the loop is closed: the connection is gone
                self.unsubscribe(sub)
                continue
            sent += 1
        return sent

    def close(self) -> None:
        with self._lock:
            self._subs.clear()


def _put(queue: asyncio.Queue[PushMessage], message: PushMessage) -> None:
    if queue.full():  # a stalled client: drop the oldest rather than grow without bound
        queue.get_nowait()
    queue.put_nowait(message)
