"""The scheduler of time-based triggers and deliveries.

In the API process by default (``push.in_process``): ``run_async`` every
``push.tick_interval_s`` calls ``PushEngine.tick`` (due timers) and
``PushEngine.deliver`` (due deliveries: webhook retries, live pushes waiting for a
stream) on a worker thread. A separate worker process runs the same loop with
``run_blocking`` (``shopcast push run``); several may share one outbox and state: timers
and deliveries are leased, decision ids are derived, so nothing goes out twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable

from fastapi.concurrency import run_in_threadpool

from shopcast.push.engine import PushEngine

log = logging.getLogger(__name__)


PRUNE_EVERY_S = 3600.0
_pruned: dict[int, float] = {}  # id(engine) -> when it was last pruned (clock time)


def step(engine: PushEngine, *, ticks: bool = True, channel: str | None = None) -> dict[str, int]:
    """One pass: due timers (unless ``ticks`` is False), due deliveries, and once an
    hour the retention of old push data."""
    decided = len(engine.tick()) if ticks else 0
    report = engine.deliver(channel=channel)
    now = engine.clock()
    if ticks and now - _pruned.get(id(engine), -PRUNE_EVERY_S) >= PRUNE_EVERY_S:
        _pruned[id(engine)] = now
        engine.prune(now)
    return {
        "decided": decided,
        "delivered": report.delivered,
        "retried": report.retried,
        "dead": report.dead,
    }


async def run_async(
    engines: Callable[[], Iterable[PushEngine]],
    interval_s: float,
    *,
    ticks: bool = True,
    channel: str | None = None,
) -> None:
    """Forever (until cancelled): ``step`` every engine every ``interval_s``."""
    while True:
        await asyncio.sleep(interval_s)
        for engine in list(engines()):
            try:
                await run_in_threadpool(step, engine, ticks=ticks, channel=channel)
            except Exception:  # keep scheduling; the outbox keeps what failed
                log.exception("push scheduler step failed")


def run_blocking(
    engine: PushEngine,
    interval_s: float,
    stop: threading.Event,
    *,
    on_step: Callable[[dict[str, int]], None] | None = None,
) -> None:
    """The worker's loop: ``step`` every ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        try:
            done = step(engine)
        except Exception:
            log.exception("push scheduler step failed")
        else:
            if on_step is not None:
                on_step(done)
        stop.wait(interval_s)
