"""What an API process runs beside its requests when the online state is shared.

Three daemon threads (``OnlineSync``):

- **follow**: reads the event stream (``XREAD``; every process sees every event) and
  lets this process's models and profiles learn the events other processes ingested
  (live sessions are shared already). It starts from ``Engine.stream_start``, the
  stream's position taken before the engine read the log: the events other processes
  committed while this engine (a tenant opened on its first request, or the process
  starting) loaded are learned, not missed. For ``OPEN_WINDOW_S`` it skips the stream's
  events that the log already held when the engine read it (``Engine.opened_seq``:
  they were committed before and published after that position), so none is learned
  twice;
- **models**: listens on the ``models`` pub/sub channel and hot-swaps at once when a
  version is promoted anywhere (``CURRENT`` polling stays as the fallback);
- **recover**: after a Redis outage, drops the live sessions written meanwhile (they
  reload from the log) and republishes the events the log took meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shopcast.errors import StateUnavailableError

if TYPE_CHECKING:
    from shopcast.domain import Event
    from shopcast.serving.engine import Engine

log = logging.getLogger(__name__)

#: After following starts, how long stream events are checked against the log the
#: engine read at open (an event is published right after its commit).
OPEN_WINDOW_S = 10.0


class _OpenWindow:
    """The events of the log after ``seq`` (ids), read as far as the stream needs."""

    def __init__(self, engine: Engine, seq: int) -> None:
        self.store = engine.store
        self.seq = seq
        self.after: set[str] = set()
        self.until = time.monotonic() + OPEN_WINDOW_S

    def fresh(self, events: list[Event]) -> list[Event]:
        """Those of ``events`` the engine did not read at open (every streamed event is
        committed already: the log after ``seq`` holds it unless the engine read it)."""
        import polars as pl

        if not events or time.monotonic() > self.until:
            return events
        if any(e.event_id is not None and e.event_id not in self.after for e in events):
            frame = self.store.events.frame(after_seq=self.seq)
            if frame.height:
                self.after.update(frame["event_id"].drop_nulls().to_list())
                self.seq = int(frame.select(pl.col("seq").max()).item())
        return [e for e in events if e.event_id is None or e.event_id in self.after]


class OnlineSync:
    def __init__(self, engine: Engine, reload: Callable[[], None]) -> None:
        self.engine = engine
        self.reload = reload
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.followed = 0  # remote events learned (for tests and health)

    def start(self) -> OnlineSync:
        online = self.engine.online
        if online.conn is None or online.bus is None:
            return self
        for name, target in (
            ("follow", self._follow),
            ("models", self._listen),
            ("recover", self._recover),
        ):
            thread = threading.Thread(target=target, name=f"shopcast-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=3)

    def _pause(self) -> None:
        conn = self.engine.online.conn
        self._stop.wait(conn.retry_s if conn is not None else 1.0)

    def _follow(self) -> None:
        online = self.engine.online
        assert online.conn is not None and online.bus is not None
        client = online.conn.blocking_client(1.0)
        after: str | None = getattr(self.engine, "stream_start", None)
        window = None
        if after is not None:
            window = _OpenWindow(self.engine, int(getattr(self.engine, "opened_seq", 0)))
        while not self._stop.is_set():
            try:
                if after is None:
                    after = online.bus.last_id()
                messages = online.bus.follow(client, after, block_ms=1000)
            except Exception as exc:  # Redis down: the recover thread takes it from here
                log.debug("event stream unavailable: %s", exc)
                self._pause()
                continue
            if not messages:
                continue
            after = messages[-1].id
            remote = [m.event for m in messages if m.origin != self.engine.origin]
            try:
                if window is not None:
                    remote = window.fresh(remote)
                self.engine.learn_remote(remote)
                self.followed += len(remote)
            except Exception:
                log.exception("learning %d events from other processes failed", len(remote))
        client.close()

    def _listen(self) -> None:
        online = self.engine.online
        assert online.conn is not None and online.bus is not None
        while not self._stop.is_set():
            client = online.conn.blocking_client(1.0)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(online.bus.channel)
                self._safe_reload()  # a promotion missed while (re)subscribing
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._safe_reload()
            except Exception as exc:
                log.debug("model channel unavailable: %s", exc)
                self._pause()
            finally:
                client.close()

    def _safe_reload(self) -> None:
        try:
            self.reload()
        except Exception:
            log.exception("could not load the promoted model; still serving the old one")

    def _recover(self) -> None:
        while not self._stop.wait(0.5):
            if not self.engine.needs_recovery():
                continue
            try:
                replayed = self.engine.recover_online()
                log.warning("online state caught up after an outage: %d events replayed", replayed)
            except StateUnavailableError:
                time.sleep(0)  # still down; the breaker paces the retries
            except Exception:
                log.exception("online state recovery failed; retrying")
