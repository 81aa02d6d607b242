"""Replay a real event log through the push triggers and policy (``shopcast push
simulate``): how many pushes each trigger would send, how many the policy suppressed
(per rule), how many were held out, and how many were followed by a purchase of a
pushed item within ``push.attribution_window`` — for sent pushes and, as the
baseline, for the holdout group (lift with a 95 % interval).

The clock is the log's: each event moves it to the event's time and timers due by
then fire first. What the replay assumes (it cannot know):

- every user opted in to push (``consent["push"] = True``) and none declined
  personalization; quiet hours use ``push.quiet_hours.default_timezone`` (set it to
  the shop's zone, e.g. ``Asia/Shanghai`` for Taobao);
- a push changes nothing: shoppers do what the log says, so "followed by a purchase"
  among sent pushes vs the holdout measures how well triggers pick purchase intent,
  not the causal effect of the message (both groups converge to the same rate);
- items come from ``CatalogItems`` (the catalog and popularity so far), not from a
  trained model; the catalog triggers (price drop, back in stock, new arrivals) need
  catalog updates the log does not hold, so they do not fire.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from shopcast.config import Settings
from shopcast.domain import Event, Item, User
from shopcast.push.attribution import Attribution
from shopcast.push.engine import PushEngine
from shopcast.push.items import CatalogItems
from shopcast.push.outbox import open_outbox
from shopcast.push.state import PushState


class ReplayClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class ReplayReport:
    events: int
    users: int
    first_ts: float
    last_ts: float
    seconds: float
    metrics: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per trigger: pushes, holdout, deferred, suppressed per rule, purchases."""
        out = []
        for name, t in self.metrics["triggers"].items():
            lift = t["lift"]
            out.append(
                {
                    "trigger": name,
                    "decisions": t["decisions"],
                    "pushes": t["sent"],
                    "holdout": t["holdout"],
                    "deferred": t["deferred"],
                    "suppressed": dict(sorted(t["suppressed"].items())),
                    "followed_by_purchase": lift["sent_conversions"],
                    "purchase_rate": lift["sent_rate"],
                    "holdout_purchases": lift["holdout_conversions"],
                    "holdout_rate": lift["holdout_rate"],
                    "lift": lift["lift"],
                    "ci95": lift["ci95"],
                }
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "users": self.users,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "seconds": round(self.seconds, 3),
            "triggers": self.rows(),
            "suppressed": self.metrics["suppressed"],
            "totals": self.metrics["totals"],
            "settings": self.settings,
        }


def events_from_frame(frame: pl.DataFrame) -> list[Event]:
    """Domain events (validated) from a dataset's raw event frame, in time order."""
    cols = [
        c
        for c in ("event_id", "type", "user_id", "session_id", "item_id", "timestamp")
        if c in frame.columns
    ]
    events = [
        Event(**{k: v for k, v in row.items() if v is not None})
        for row in frame.select(cols).iter_rows(named=True)
    ]
    events.sort(key=lambda e: (e.timestamp, e.event_id or ""))
    return events


def replay(
    events: Sequence[Event],
    items: Sequence[Item],
    settings: Settings,
    *,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Run ``events`` (time order) through a push engine on the log's clock."""
    started = time.perf_counter()
    clock = ReplayClock(events[0].timestamp if events else 0.0)
    catalog = CatalogItems(items)
    users: dict[str, User] = {}

    def user(user_id: str) -> User:
        found = users.get(user_id)
        if found is None:
            found = users[user_id] = User(user_id=user_id, consent={"push": True})
        return found

    engine = PushEngine(
        settings,
        outbox=open_outbox("memory://"),
        state=PushState("sqlite://:memory:"),
        journal=Attribution("sqlite://:memory:"),
        items=catalog,
        users=user,
        clock=clock,
    )
    engine.seed_items(list(items))
    try:
        next_due = float("inf")
        batch: list[Event] = []
        done = reported = 0
        for i, event in enumerate(events):
            batch.append(event)
            last = i + 1 == len(events) or events[i + 1].timestamp != event.timestamp
            if not last:
                continue
            clock.now = event.timestamp
            if clock.now >= next_due:
                engine.tick(clock.now)
            catalog.observe(batch)
            engine.observe(batch, clock.now)
            done += len(batch)
            batch = []
            due = engine.state.next_due()
            next_due = float("inf") if due is None else due
            if progress is not None and done - reported >= 5000:
                progress(done)
                reported = done
        if progress is not None:
            progress(len(events))
        metrics = engine.metrics()
    finally:
        engine.close()
    return ReplayReport(
        events=len(events),
        users=len({e.user_id for e in events if e.user_id}),
        first_ts=events[0].timestamp if events else 0.0,
        last_ts=events[-1].timestamp if events else 0.0,
        seconds=time.perf_counter() - started,
        metrics=metrics,
        settings=settings.push.model_dump(mode="json", exclude={"webhooks", "guides"}),
    )
