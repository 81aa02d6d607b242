"""Concurrent webhook sends: a slow receiver must not hold up the others.

``Dispatcher.run(claims, send, key)`` groups a pass's claimed deliveries by endpoint
(``key``) and splits each endpoint's into at most ``push.webhook_per_endpoint``
*lanes*; the lanes run on a pool of ``push.webhook_concurrency`` threads, submitted
round-robin over the endpoints so every endpoint gets a thread early. A lane sends its
deliveries one after the other (each request bounded by its endpoint's
``timeout_s``). Outcomes come back as they finish, so the caller acks or reschedules
a fast endpoint's deliveries while a slow one is still waiting: a slow receiver
occupies at most its lanes, and delays nothing else.

The outbox is written by the caller's thread only (``PushEngine.deliver``); the pool's
threads only send.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")
O = TypeVar("O")  # noqa: E741


def lanes(items: Sequence[C], key: Callable[[C], str], per_key: int) -> list[list[C]]:
    """Each key's items split into at most ``per_key`` lanes (its items in order,
    dealt round-robin), the lanes ordered round-robin over the keys."""
    by_key: dict[str, list[C]] = {}
    for item in items:
        by_key.setdefault(key(item), []).append(item)
    split = [
        [mine[i :: min(per_key, len(mine))] for i in range(min(per_key, len(mine)))]
        for mine in by_key.values()
    ]
    out: list[list[C]] = []
    for rank in range(max((len(s) for s in split), default=0)):
        out += [s[rank] for s in split if rank < len(s)]
    return out


class Dispatcher:
    def __init__(self, concurrency: int, per_key: int) -> None:
        self.concurrency = concurrency
        self.per_key = per_key
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="shopcast-webhook"
            )
        return self._pool

    def run(
        self, items: Sequence[C], send: Callable[[C], O], key: Callable[[C], str]
    ) -> Iterator[tuple[C, O]]:
        """``(item, send(item))`` in the order the sends finish. ``send`` must not
        raise (the caller turns its errors into outcomes)."""
        if not items:
            return
        parts = lanes(items, key, self.per_key)
        done: queue.SimpleQueue[tuple[C, O] | None] = queue.SimpleQueue()

        def lane(part: list[C]) -> None:
            try:
                for item in part:
                    done.put((item, send(item)))
            finally:
                done.put(None)  # this lane is finished

        pool = self._executor()
        for part in parts:
            pool.submit(lane, part)
        running = len(parts)
        while running:
            result = done.get()
            if result is None:
                running -= 1
            else:
                yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
