"""Push test fixtures: a controllable clock, a small catalog and a PushEngine whose
live channel records what it delivers. Data here is SYNTHETIC."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from shopcast.config import Settings
from shopcast.domain import Event, Item, User
from shopcast.push.attribution import Attribution
from shopcast.push.channels import Outcome, Sent
from shopcast.push.engine import PushEngine
from shopcast.push.items import CatalogItems, ItemInfo, TargetQuery
from shopcast.push.messages import LIVE, WEBHOOK, Claim, PushItem
from shopcast.push.outbox import open_outbox
from shopcast.push.state import PushState

# 2026-11-30 12:00:00 UTC (a Monday, midday: outside the default quiet hours)
T0 = 1_796_040_000.0


class Clock:
    """The injectable clock: tests move time."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Recorder:
    """A channel that accepts everything and remembers it."""

    def __init__(self) -> None:
        self.claims: list[Claim] = []

    def deliver(self, claim: Claim, now: float) -> Outcome:
        self.claims.append(claim)
        return Sent()

    @property
    def messages(self) -> list[Any]:
        return [c.message for c in self.claims]


class FakeItems(CatalogItems):
    """The catalog source with fixed targeting scores (tests name who matches)."""

    def __init__(self, items: Sequence[Item]) -> None:
        super().__init__(items)
        self.targets: list[tuple[str, float, str]] = []

    def target(self, query: TargetQuery, *, min_score: float) -> list[tuple[str, float, str]]:
        return [t for t in self.targets if t[1] >= min_score]

    def recommend(self, user_id: str, **kw: Any) -> list[PushItem]:
        out = super().recommend(user_id, **kw)
        if out:
            return out
        skip = {*kw.get("exclude", ()), *kw.get("anchors", ())}
        cat = kw.get("category")
        pool = [
            i
            for i in self.catalog.values()
            if i.item_id not in skip and (cat is None or i.leaf == cat)
        ]
        return [i.push_item("picked for you") for i in sorted(pool, key=lambda i: i.item_id)][
            : kw.get("k", 4)
        ]


def catalog() -> list[Item]:
    items = []
    for c, cat in enumerate(["Shoes", "Tents", "Coffee"]):
        for n in range(6):
            items.append(
                Item(
                    item_id=f"{cat[0].lower()}{n}",
                    title=f"{cat} {n}",
                    category=["Shop", cat],
                    price=10.0 + 10 * c + n,
                    stock=5,
                )
            )
    return items


def ev(kind: str, item: str | None, user: str = "u1", ts: float = T0, **kw: Any) -> Event:
    return Event(type=kind, user_id=user, item_id=item, timestamp=ts, **kw)


def push_settings(**push: Any) -> Settings:
    """Settings with no quiet hours, no holdout and no caps unless a test asks."""
    triggers = push.pop("triggers", {})
    base: dict[str, Any] = {
        "quiet_hours": {"enabled": False},
        "min_gap": 0,
        "daily_cap": 100,
        "weekly_cap": 100,
        "triggers": {
            name: {"holdout": 0.0, "max_per_day": None, **triggers.get(name, {})}
            for name in (
                "cart_abandonment",
                "browse_abandonment",
                "price_drop",
                "back_in_stock",
                "after_sales",
                "complementary",
                "promotion",
                "new_arrivals",
                "replenishment",
                "session_nudge",
            )
        },
    }
    base.update(push)
    return Settings(environment="test", database_url="memory://", push=base)


class Harness:
    def __init__(self, settings: Settings, users: dict[str, User] | None = None) -> None:
        self.clock = Clock()
        self.items = FakeItems(catalog())
        self.users = users if users is not None else {}
        self.live = Recorder()
        self.hook = Recorder()
        self.settings = settings
        self.engine = self._open()

    def _open(self) -> PushEngine:
        engine = PushEngine(
            self.settings,
            outbox=open_outbox("memory://"),
            state=PushState("sqlite://:memory:"),
            journal=Attribution("sqlite://:memory:"),
            items=self.items,
            users=self.users.get,
            clock=self.clock,
            webhook=self.hook,
        )
        engine.channels[LIVE] = self.live
        engine.seed_items(catalog())
        return engine

    def info(self, item_id: str) -> ItemInfo:
        return self.items.catalog[item_id]

    def observe(self, *events: Event) -> list[Any]:
        self.items.observe(events)
        return self.engine.observe(list(events))

    def tick(self, seconds: float = 0.0) -> list[Any]:
        self.clock.advance(seconds)
        verdicts = self.engine.tick()
        self.engine.deliver()
        return verdicts

    def sent(self, trigger: str | None = None) -> list[Any]:
        return [
            m
            for m in [*self.live.messages, *self.hook.messages]
            if trigger is None or m.trigger == trigger
        ]


def consenting(*ids: str, **extra: bool) -> dict[str, User]:
    return {u: User(user_id=u, consent={"push": True, **extra}) for u in ids}


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(users: dict[str, User] | None = None, **push: Any) -> Harness:
        h = Harness(push_settings(**push), consenting("u1", "u2", "u3") if users is None else users)
        made.append(h)
        return h

    yield make
    for h in made:
        h.engine.close()


__all__ = ["T0", "WEBHOOK", "Clock", "Harness", "Recorder", "catalog", "consenting", "ev"]
