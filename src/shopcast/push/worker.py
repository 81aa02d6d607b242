"""The push triggers inside ``shopcast worker`` (scaled out, ``push.in_process = false``).

With ``push.in_process = false`` the API processes neither observe events for the
triggers nor tick timers (they deliver live pushes to their streams only). The Redis
Streams workers do it instead (``online.worker`` calls ``shopcast.push.worker_handler``):

- every event batch read from the stream goes through ``PushEngine.observe``, so an
  immediate trigger (the session nudge) survives a crash of the API process that took
  the event: the event is in the stream, and a message a dead worker left pending is
  claimed by another (``XAUTOCLAIM``);
- a redelivered event decides nothing new: each event is observed at its own time
  (its timestamp, when it is within the last hour and not in the future; else the
  clock), so its decision ids are the same on every delivery, and the journal and
  outbox ignore known ones; shared view counts (``push.views``) count an event id once;
- a live push decided here wakes the API process holding the user's stream
  (``push.fanout``);
- a scheduler thread ticks the timers and sends the webhooks every
  ``push.tick_interval_s`` (timers and deliveries are leased: several workers, or a
  ``shopcast push run`` beside them, never handle one twice).

With ``push.in_process = true`` (the default) the API processes run the triggers and
the worker adds no handler, so nothing is decided twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shopcast.config import Settings
from shopcast.domain import Event

log = logging.getLogger(__name__)

#: How far back an event's own timestamp is trusted as its decision time.
EVENT_TIME_WINDOW_S = 3600.0


class WorkerPush:
    """The push engine of a worker process over the configured store."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        from shopcast.privacy.crypto import open_private_store
        from shopcast.push.engine import PushEngine
        from shopcast.serving.engine import Engine

        self.settings = settings
        self.clock = clock
        self.store = open_private_store(settings)
        try:
            self.engine = Engine.open(self.store, settings)
            self.push = PushEngine.open(self.store, settings, self.engine, clock=clock)
        except BaseException:
            self.store.close()
            raise
        self.observed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WorkerPush:
        """The scheduler thread: due timers and webhook deliveries."""
        from shopcast.push.scheduler import run_blocking

        self._thread = threading.Thread(
            target=run_blocking,
            args=(self.push, self.settings.push.tick_interval_s, self._stop),
            name="shopcast-push-scheduler",
            daemon=True,
        )
        self._thread.start()
        return self

    def decision_time(self, event: Event) -> float:
        now = self.clock()
        if now - EVENT_TIME_WINDOW_S <= event.timestamp <= now:
            return event.timestamp
        return now

    def __call__(self, events: list[Event]) -> None:
        """Observe a batch read from the stream (at least once per event)."""
        for event in events:
            self.push.observe([event], now=self.decision_time(event))
            self.observed += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.push.close()
        self.engine.close()
        self.store.close()


def handler(settings: Settings) -> WorkerPush | None:
    """The worker's push handler, or None when the API processes run the triggers."""
    if not settings.push.enabled or settings.push.in_process:
        return None
    return WorkerPush(settings).start()
