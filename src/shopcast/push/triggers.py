"""The triggers: when a shopper should hear from the shop, and about what.

Each trigger reacts to committed events (``on_events``), to catalog changes
(``on_items``) and to its own timers coming due (``on_timer``), and returns candidate
pushes for the policy. Settings per trigger: ``push.triggers.<name>``.

- ``cart_abandonment``: items carted and not bought (nor removed) within ``delay``; the
  timer restarts at every cart change. Items: what is still in the cart, then the
  pipeline's ``cart`` scene.
- ``browse_abandonment``: ``views`` views of one item (or of one category) within
  ``window`` and no cart within ``delay``. Items: that item, then ``product_page``.
- ``price_drop``: an item's price fell by ``min_drop`` or more, or a discount of at least
  ``min_drop`` appeared, and the user viewed, carted or favourited it within ``window``.
- ``back_in_stock``: an item's stock went from 0 to more, same interest rule.
- ``after_sales``: ``delay`` after a purchase of an item with guides, care tips or
  warranty reminders attached (``push.guides``, by item or any category level).
- ``complementary``: ``delay`` after the latest purchase: the ``post_purchase`` scene.
- ``promotion``: a coupon or campaign (``push.promotions``) to the users the targeting
  API ranks highest (score ≥ ``min_score``); run by ``PushEngine.run_promotion`` or at
  its ``starts_at``.
- ``new_arrivals``: a newly created item (``created_at`` within ``window``) to the users
  whose affinity the targeting API scores ≥ ``min_score``.
- ``replenishment``: an item bought twice or more comes due again: the median gap
  between the user's purchases of it after the last one, ``lead`` earlier.
- ``session_nudge``: the live session shows intent — ``views`` views in one category
  within ``window`` — and at once "you may like" items of that category go out on the
  live channel (fires once per category and window).
"""

from __future__ import annotations

import itertools
import statistics
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from shopcast.config import PushGuide, PushPromotion, PushSettings, PushTriggerSettings
from shopcast.domain import Event, EventType
from shopcast.push.items import ItemInfo, ItemSource, TargetQuery
from shopcast.push.messages import PushItem
from shopcast.push.policy import Candidate
from shopcast.push.state import ItemSnapshot, PushState, Timer

HOUR = 3600.0
DAY = 86_400.0


class ViewTracker:
    """Recent views per user in memory (``(ts, item, leaf category)``), bounded."""

    def __init__(self, per_user: int = 64, capacity: int = 200_000) -> None:
        self.per_user = per_user
        self.capacity = capacity
        self._views: OrderedDict[str, deque[tuple[float, str, str | None]]] = OrderedDict()

    def add(
        self,
        user_id: str,
        ts: float,
        item_id: str,
        category: str | None,
        event_id: str | None = None,  # used by the shared tracker (push.views)
    ) -> None:
        views = self._views.get(user_id)
        if views is None:
            views = self._views[user_id] = deque(maxlen=self.per_user)
            while len(self._views) > self.capacity:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(user_id)
        views.append((ts, item_id, category))

    def since(self, user_id: str, since: float) -> list[tuple[float, str, str | None]]:
        return [v for v in self._views.get(user_id, ()) if v[0] >= since]

    def forget(self, user_id: str) -> None:
        self._views.pop(user_id, None)


@dataclass
class TriggerContext:
    settings: PushSettings
    state: PushState
    items: ItemSource
    views: ViewTracker
    now: float

    def cfg(self, name: str) -> PushTriggerSettings:
        return self.settings.triggers[name]

    def describe(self, ids: Sequence[str]) -> dict[str, ItemInfo]:
        return self.items.describe(ids) if ids else {}


@dataclass(frozen=True, slots=True)
class ItemChange:
    """A catalog upsert: the item now and its snapshot before (None: first seen)."""

    item: ItemInfo
    before: ItemSnapshot | None


def _fmt(template: str, subject: Sequence[PushItem], extra: Sequence[PushItem], **kw: Any) -> str:
    first = (subject or extra or [PushItem("")])[0]
    values = {"item": first.title or first.item_id, "n": len(subject) or len(extra), **kw}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template


class Trigger:
    name: ClassVar[str]
    title: ClassVar[str] = "{item}"
    body: ClassVar[str] = ""

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        return []

    def on_timer(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        return []

    def on_items(self, ctx: TriggerContext, changes: Sequence[ItemChange]) -> list[Candidate]:
        return []

    def candidate(
        self,
        ctx: TriggerContext,
        user_id: str,
        key: str,
        subject: Sequence[PushItem],
        extra: Sequence[PushItem] = (),
        data: dict[str, Any] | None = None,
        **fmt: Any,
    ) -> Candidate:
        cfg = ctx.cfg(self.name)
        return Candidate(
            user_id=user_id,
            trigger=self.name,
            key=key,
            fire_at=ctx.now,
            title=_fmt(cfg.title or self.title, subject, extra, **fmt),
            body=_fmt(cfg.body or self.body, subject, extra, **fmt),
            subject=tuple(subject),
            extra=tuple(extra),
            priority=cfg.priority,
            data=data or {},
        )

    def fill(
        self,
        ctx: TriggerContext,
        user_id: str,
        scene: str,
        subject: Sequence[PushItem],
        *,
        anchors: Sequence[str] = (),
        category: str | None = None,
        exclude: Sequence[str] = (),
    ) -> list[PushItem]:
        """Pipeline items to fill the message after the subject items."""
        k = ctx.cfg(self.name).items - len(subject)
        if k <= 0:
            return []
        skip = [*exclude, *(i.item_id for i in subject)]
        return ctx.items.recommend(
            user_id,
            scene=scene,
            now=ctx.now,
            anchors=anchors,
            category=category,
            exclude=skip,
            k=k,
        )


def _push_item(info: ItemInfo | None, item_id: str, reason: str) -> PushItem:
    """The item as a message line: described from the catalog when it is known."""
    return info.push_item(reason) if info is not None else PushItem(item_id, reason=reason)


def _user_item_events(events: Sequence[Event], *types: EventType) -> list[Event]:
    return [
        e for e in events if e.user_id is not None and e.item_id is not None and e.type in types
    ]


class CartAbandonment(Trigger):
    name = "cart_abandonment"
    title = "Still thinking about {item}?"
    body = "Your cart is waiting for you ({n} item(s))."

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        touched = _user_item_events(
            events, EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART, EventType.PURCHASE
        )
        arm: list[Timer] = []
        for user in dict.fromkeys(e.user_id for e in touched if e.user_id):
            timer = ctx.state.timer(user, self.name, "cart")
            cart: dict[str, float] = dict(timer.payload.get("items", {})) if timer else {}
            changed = False
            for e in touched:
                if e.user_id != user or e.item_id is None:
                    continue
                if e.type is EventType.ADD_TO_CART:
                    cart[e.item_id] = e.timestamp
                    changed = True
                elif e.item_id in cart:
                    del cart[e.item_id]
            if not cart:
                ctx.state.disarm(user, self.name, "cart")
            elif changed or (timer and cart != timer.payload.get("items")):
                arm.append(Timer(user, self.name, "cart", ctx.now + cfg.delay, {"items": cart}))
        if arm:
            ctx.state.arm(arm)
        return []

    def on_timer(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        cart = list(timer.payload.get("items", {}))
        info = ctx.describe(cart)
        subject = [
            _push_item(info.get(i), i, "still in your cart")
            for i in cart
            if i not in info or info[i].stock != 0
        ]
        if not subject:
            return []
        extra = self.fill(ctx, timer.user_id, "cart", subject, anchors=cart)
        return [self.candidate(ctx, timer.user_id, f"cart:{timer.due_at:.3f}", subject, extra)]


class BrowseAbandonment(Trigger):
    name = "browse_abandonment"
    title = "Take another look at {item}"
    body = "You looked at it a few times. It is still here."

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        arm = []
        for e in _user_item_events(events, EventType.ADD_TO_CART, EventType.PURCHASE):
            ctx.state.disarm(e.user_id or "", self.name)
        for e in _user_item_events(events, EventType.VIEW):
            user = e.user_id or ""
            if any(
                x.user_id == user and x.type in (EventType.ADD_TO_CART, EventType.PURCHASE)
                for x in events
            ):
                continue
            views = ctx.views.since(user, ctx.now - cfg.window)
            same_item = sum(v[1] == e.item_id for v in views)
            cat = views[-1][2] if views and views[-1][1] == e.item_id else None
            same_cat = sum(v[2] == cat for v in views) if cat else 0
            if same_item == cfg.views:
                arm.append(
                    Timer(user, self.name, "browse", ctx.now + cfg.delay, {"item_id": e.item_id})
                )
            elif same_cat == cfg.views and same_item == 1:
                arm.append(
                    Timer(
                        user,
                        self.name,
                        "browse",
                        ctx.now + cfg.delay,
                        {"category": cat, "item_id": e.item_id},
                    )
                )
        if arm:
            ctx.state.arm(arm)
        return []

    def on_timer(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        item_id = str(timer.payload.get("item_id"))
        category = timer.payload.get("category")
        info = ctx.describe([item_id]).get(item_id)
        if info is not None and info.stock == 0:
            return []
        if category:
            subject: list[PushItem] = []
            extra = self.fill(ctx, timer.user_id, "home", subject, category=category)
            key = f"cat:{category}:{timer.due_at:.3f}"
            return [
                self.candidate(ctx, timer.user_id, key, subject, extra, data={"category": category})
            ]
        item = _push_item(info, item_id, "you looked at it")
        extra = self.fill(ctx, timer.user_id, "product_page", [item], anchors=[item_id])
        return [
            self.candidate(ctx, timer.user_id, f"item:{item_id}:{timer.due_at:.3f}", [item], extra)
        ]


_INTEREST = {
    EventType.VIEW: "view",
    EventType.ADD_TO_CART: "cart",
    EventType.FAVORITE: "favorite",
}


class _CatalogTrigger(Trigger):
    """Shared by price drop and back in stock: interest is remembered per item."""

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        rows = [
            (e.item_id, e.user_id, _INTEREST[e.type], ctx.now)
            for e in events
            if e.type in _INTEREST and e.user_id is not None and e.item_id is not None
        ]
        if rows and self.name == "price_drop":  # one table for both; written once
            ctx.state.add_interest(rows)
        return []

    def fire(
        self, ctx: TriggerContext, item: ItemInfo, key: str, reason: str, data: dict[str, Any]
    ) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        users = ctx.state.interested(item.item_id, since=ctx.now - cfg.window)
        out = []
        subject = [item.push_item(reason)]
        for user in sorted(users):
            extra = self.fill(ctx, user, "product_page", subject, anchors=[item.item_id])
            out.append(
                self.candidate(
                    ctx, user, key, subject, extra, data={**data, "interest": sorted(users[user])}
                )
            )
        return out


class PriceDrop(_CatalogTrigger):
    name = "price_drop"
    title = "Price drop: {item}"
    body = "{reason}"

    def on_items(self, ctx: TriggerContext, changes: Sequence[ItemChange]) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        out = []
        for ch in changes:
            new, old = ch.item, ch.before
            if old is None or new.price is None:
                continue
            reason = None
            if old.price is not None and new.price <= old.price * (1 - cfg.min_drop):
                reason = f"now {new.price:g} (was {old.price:g})"
            else:
                before = _discount(old.price, old.original_price)
                after = _discount(new.price, new.original_price)
                if after >= cfg.min_drop and after >= before + cfg.min_drop:
                    reason = f"{after:.0%} off: now {new.price:g}"
            if reason is None:
                continue
            data = {"item_id": new.item_id, "price": new.price, "previous_price": old.price}
            for c in self.fire(ctx, new, f"{new.item_id}:{new.price:g}", reason, data):
                out.append(
                    Candidate(
                        **{
                            **_as_dict(c),
                            "body": _fmt(cfg.body or self.body, c.subject, c.extra, reason=reason),
                        }
                    )
                )
        return out


def _as_dict(c: Candidate) -> dict[str, Any]:
    return {f: getattr(c, f) for f in Candidate.__dataclass_fields__}


def _discount(price: float | None, original: float | None) -> float:
    if price is None or not original:
        return 0.0
    return max(0.0, 1.0 - price / original)


class BackInStock(_CatalogTrigger):
    name = "back_in_stock"
    title = "Back in stock: {item}"
    body = "It is available again. Get it before it is gone."

    def on_items(self, ctx: TriggerContext, changes: Sequence[ItemChange]) -> list[Candidate]:
        out = []
        for ch in changes:
            if ch.before is None or ch.before.stock != 0 or not ch.item.stock:
                continue
            key = f"{ch.item.item_id}:restock:{ctx.now:.0f}"
            out += self.fire(ctx, ch.item, key, "back in stock", {"stock": ch.item.stock})
        return out


def guides_for(guides: Sequence[PushGuide], info: ItemInfo | None, item_id: str) -> list[PushGuide]:
    path = info.category if info is not None else ()
    keys = {" > ".join(path[: i + 1]) for i in range(len(path))} | set(path)
    return [g for g in guides if g.item_id == item_id or (g.category and g.category in keys)]


class AfterSales(Trigger):
    name = "after_sales"
    title = "Getting the most out of {item}"
    body = "Guides and tips for your purchase."

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        if not ctx.settings.guides:
            return []
        bought = _user_item_events(events, EventType.PURCHASE)
        info = ctx.describe([e.item_id for e in bought if e.item_id])
        cfg = ctx.cfg(self.name)
        arm = [
            Timer(
                e.user_id or "",
                self.name,
                e.item_id or "",
                ctx.now + cfg.delay,
                {"item_id": e.item_id},
            )
            for e in bought
            if guides_for(ctx.settings.guides, info.get(e.item_id or ""), e.item_id or "")
        ]
        if arm:
            ctx.state.arm(arm)
        return []

    def on_timer(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        item_id = str(timer.payload["item_id"])
        info = ctx.describe([item_id]).get(item_id)
        guides = guides_for(ctx.settings.guides, info, item_id)
        if not guides:
            return []
        item = _push_item(info, item_id, "you bought it")
        data = {"guides": [g.model_dump(exclude_none=True) for g in guides]}
        return [
            self.candidate(ctx, timer.user_id, f"{item_id}:{timer.due_at:.3f}", [item], [], data)
        ]


class Complementary(Trigger):
    name = "complementary"
    title = "Goes well with your {bought}"
    body = "Picked for you after your purchase."

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        arm = []
        for user in dict.fromkeys(e.user_id for e in _user_item_events(events, EventType.PURCHASE)):
            items = [
                e.item_id
                for e in events
                if e.user_id == user and e.type is EventType.PURCHASE and e.item_id
            ]
            earlier = ctx.state.timer(user or "", self.name, "order")
            if earlier is not None:  # the same order, or another before the first fired
                items = list(dict.fromkeys([*earlier.payload.get("items", []), *items]))[-10:]
            arm.append(Timer(user or "", self.name, "order", ctx.now + cfg.delay, {"items": items}))
        if arm:
            ctx.state.arm(arm)
        return []

    def on_timer(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        bought = [str(i) for i in timer.payload.get("items", [])]
        extra = self.fill(ctx, timer.user_id, "post_purchase", [], anchors=bought, exclude=bought)
        info = ctx.describe(bought[:1])
        name = info[bought[0]].title if bought and bought[0] in info else "purchase"
        return [
            self.candidate(
                ctx,
                timer.user_id,
                f"order:{timer.due_at:.3f}",
                [],
                extra,
                {"bought": bought},
                bought=name or "purchase",
            )
        ]


class Replenishment(Trigger):
    name = "replenishment"
    title = "Time to restock {item}?"
    body = "You buy it about every {days} days."
    min_gap = HOUR  # purchases closer than this are one order

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        bought = _user_item_events(events, EventType.PURCHASE)
        if not bought:
            return []
        ctx.state.add_purchases([(e.user_id or "", e.item_id or "", e.timestamp) for e in bought])
        cfg = ctx.cfg(self.name)
        arm = []
        for user, item in dict.fromkeys((e.user_id or "", e.item_id or "") for e in bought):
            times = ctx.state.purchases(user, item)
            orders = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] >= self.min_gap]
            if len(orders) < 2:
                continue
            cycle = statistics.median(b - a for a, b in itertools.pairwise(orders))
            due = ctx.now + max(0.0, cycle - cfg.lead)  # the last purchase is now
            arm.append(Timer(user, self.name, item, due, {"item_id": item, "cycle_s": cycle}))
        if arm:
            ctx.state.arm(arm)
        return []

    def on_timer(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        item_id = str(timer.payload["item_id"])
        info = ctx.describe([item_id]).get(item_id)
        if info is not None and info.stock == 0:
            return []
        days = max(1, round(float(timer.payload.get("cycle_s", DAY)) / DAY))
        item = _push_item(info, item_id, "time to buy it again")
        extra = self.fill(ctx, timer.user_id, "post_purchase", [item], anchors=[item_id])
        return [
            self.candidate(
                ctx,
                timer.user_id,
                f"{item_id}:{timer.due_at:.3f}",
                [item],
                extra,
                {"cycle_days": days},
                days=days,
            )
        ]


class SessionNudge(Trigger):
    name = "session_nudge"
    title = "You may like these {category} picks"
    body = "Based on what you are looking at right now."

    def on_events(self, ctx: TriggerContext, events: Sequence[Event]) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        out = []
        for e in _user_item_events(events, EventType.VIEW):
            user = e.user_id or ""
            views = ctx.views.since(user, ctx.now - cfg.window)
            if not views or views[-1][1] != e.item_id or views[-1][2] is None:
                continue
            cat = views[-1][2]
            in_cat = [v for v in views if v[2] == cat]
            if len(in_cat) != cfg.views:
                continue
            seen = list(dict.fromkeys(v[1] for v in in_cat))
            extra = self.fill(ctx, user, "home", [], category=cat, exclude=seen)
            window = int(ctx.now // cfg.window)
            out.append(
                self.candidate(
                    ctx,
                    user,
                    f"{cat}:{window}",
                    [],
                    extra,
                    {"category": cat, "viewed": seen},
                    category=cat,
                )
            )
        return out


class Promotion(Trigger):
    name = "promotion"
    title = "{title}"
    body = "{body}"

    def on_timer(self, ctx: TriggerContext, timer: Timer) -> list[Candidate]:
        promo = next((p for p in ctx.settings.promotions if p.promotion_id == timer.key), None)
        return [] if promo is None else self.run(ctx, promo)

    def run(self, ctx: TriggerContext, promo: PushPromotion) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        query = TargetQuery(
            item_id=promo.item_id,
            category=promo.category,
            brand=promo.brand,
            text=promo.text,
            limit=promo.limit,
        )
        out = []
        for user, score, reason in ctx.items.target(query, min_score=cfg.min_score):
            subject: list[PushItem] = []
            if promo.item_id:
                info = ctx.describe([promo.item_id]).get(promo.item_id)
                subject = [_push_item(info, promo.item_id, reason)]
            extra = self.fill(ctx, user, "home", subject, category=promo.category)
            data = {
                "promotion_id": promo.promotion_id,
                "coupon": promo.coupon,
                "score": round(score, 6),
                "reason": reason,
            }
            out.append(
                self.candidate(
                    ctx,
                    user,
                    promo.promotion_id,
                    subject,
                    extra,
                    data,
                    title=_fmt(promo.title, subject, extra, coupon=promo.coupon or ""),
                    body=_fmt(promo.body, subject, extra, coupon=promo.coupon or ""),
                )
            )
        return out


class NewArrivals(Trigger):
    name = "new_arrivals"
    title = "New in: {item}"
    body = "Just arrived, picked for your taste."

    def on_items(self, ctx: TriggerContext, changes: Sequence[ItemChange]) -> list[Candidate]:
        cfg = ctx.cfg(self.name)
        out = []
        for ch in changes:
            item = ch.item
            if ch.before is not None or item.created_at is None:
                continue
            if not ctx.now - max(cfg.window, DAY) <= item.created_at <= ctx.now + HOUR:
                continue
            query = TargetQuery(item_id=item.item_id, limit=1000)
            for user, score, reason in ctx.items.target(query, min_score=cfg.min_score):
                subject = [item.push_item(reason or "new arrival")]
                extra = self.fill(ctx, user, "home", subject, category=item.leaf)
                out.append(
                    self.candidate(
                        ctx, user, item.item_id, subject, extra, {"score": round(score, 6)}
                    )
                )
        return out


TRIGGERS: dict[str, Trigger] = {
    t.name: t
    for t in (
        CartAbandonment(),
        BrowseAbandonment(),
        PriceDrop(),
        BackInStock(),
        AfterSales(),
        Complementary(),
        Promotion(),
        NewArrivals(),
        Replenishment(),
        SessionNudge(),
    )
}
