"""The scheduler of time-based triggers and deliveries.

In the API process by default (``push.in_process``): ``run_async`` every
``push.tick_interval_s`` calls ``PushEngine.tick`` (due timers) and
``PushEngine.deliver`` (due deliveries: webhook retries, live pushes waiting for a
stream) on a worker thread. A separate worker process runs the same loop with
``run_blocking`` (``shopcast push run``); several may share one outbox and state: timers
and deliveries are leased, decision ids are derived, so nothing goes out twice. The
webhooks go out from a loop of their own (sent concurrently, ``push.dispatch``), so a
slow receiver never delays the timers or the live pushes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable

from fastapi.concurrency import run_in_threadpool

from shopcast.push.engine import PushEngine
from shopcast.push.messages import LIVE, WEBHOOK

log = logging.getLogger(__name__)


PRUNE_EVERY_S = 3600.0
_pruned: dict[int, float] = {}  # id(engine) -> when it was last pruned (clock time)


def step(
    engine: PushEngine,
    *,
    ticks: bool = True,
    channel: str | None = None,
    webhooks: bool = True,
) -> dict[str, int]:
    """One pass: due timers (unless ``ticks`` is False), due deliveries (of ``channel``,
    or of every channel; without webhooks when ``webhooks`` is False: the loops below
    send them from a loop of their own), and once an hour the retention of old data."""
    decided = len(engine.tick()) if ticks else 0
    report = engine.deliver(channel=LIVE if channel is None and not webhooks else channel)
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


async def _every(
    engines: Callable[[], Iterable[PushEngine]],
    interval_s: float,
    call: Callable[[PushEngine], object],
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        for engine in list(engines()):
            try:
                await run_in_threadpool(call, engine)
            except Exception:  # keep scheduling; the outbox keeps what failed
                log.exception("push scheduler step failed")


async def run_async(
    engines: Callable[[], Iterable[PushEngine]],
    interval_s: float,
    *,
    ticks: bool = True,
    channel: str | None = None,
) -> None:
    """Forever (until cancelled): ``step`` every engine every ``interval_s``; with every
    channel (``channel`` None) the webhooks go out from a second loop, so a slow
    receiver never holds up the timers or the live pushes."""
    if channel is not None:
        await _every(engines, interval_s, lambda e: step(e, ticks=ticks, channel=channel))
        return
    hooks = asyncio.create_task(_every(engines, interval_s, _webhooks))
    try:
        await _every(engines, interval_s, lambda e: step(e, ticks=ticks, webhooks=False))
    finally:
        hooks.cancel()


def _webhooks(engine: PushEngine) -> None:
    if WEBHOOK in engine.channels:
        engine.deliver(channel=WEBHOOK)


def run_blocking(
    engine: PushEngine,
    interval_s: float,
    stop: threading.Event,
    *,
    on_step: Callable[[dict[str, int]], None] | None = None,
) -> None:
    """The worker's loop: ``step`` every ``interval_s`` until ``stop`` is set; webhooks
    from a thread of their own (a slow receiver never holds up the timers)."""

    def hooks() -> None:
        while not stop.is_set():
            try:
                _webhooks(engine)
            except Exception:
                log.exception("push webhook delivery failed")
            stop.wait(interval_s)

    sender = None
    if WEBHOOK in engine.channels:
        sender = threading.Thread(target=hooks, name="shopcast-push-webhooks", daemon=True)
        sender.start()
    while not stop.is_set():
        try:
            done = step(engine, webhooks=sender is None)
        except Exception:
            log.exception("push scheduler step failed")
        else:
            if on_step is not None:
                on_step(done)
        stop.wait(interval_s)
    if sender is not None:
        sender.join(timeout=60)
