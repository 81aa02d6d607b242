"""Behavioural user profiles: what each shopper likes, spends and does.

A profile joins the declared demographics of the ``User`` record with behaviour read
from the events that carry a ``user_id`` (anonymous sessions have no profile;
``impression`` events are what Shopcast showed, not behaviour, and are ignored).
A user whose ``consent["personalization"]`` is ``False`` gets no behavioural profile.

The accumulated state of one user is a ``UserState``. Two paths build it:

- incremental: ``UserState.observe`` on every ingested event (a few µs);
- batch: ``shopcast.features._batch.build_states`` from the event-log frame (polars).

Every aggregate is order-independent (sums, counts, sets, maxima, top-N by time), so
both paths give the same profile even when events arrive out of time order; a test
checks they agree to 1e-9. An item's categories, brand and prices are read when the
event is observed (see ``_itemref``); catalog edits apply to later events and to the
next batch recompute.

Fields of ``profile_of`` (times are epoch seconds UTC; ``now`` is given by the caller;
for replayed historical logs use the log's last event time):

- categories / brands: affinity = Σ w(type) · 2^(-(now - t) / half_life) over the
  events whose item has that category key (every level of its path) or brand; w from
  ``RecommendSettings.event_weights``. ``share`` = affinity / the same sum over the
  events whose item has any category (brand): the fraction of recent weighted interest
  that touched it (each level of one path gets the full weight, so top-level shares sum
  to 1 and genres of multi-genre films may sum to more). ``intents``: add-to-cart and
  purchase events in it.
- price: ``median_price`` of carted and purchased items (event price, else catalog
  price); ``price_index`` = median of price / the item's category median price; band
  ``budget`` below 0.8, ``premium`` above 1.25, else ``mid``; ``discount_share`` =
  discounted purchases / purchases, a purchase being discounted when its item has
  ``Item.discount`` > 0 or it was paid below ``Item.original_price``.
- RFM: ``recency_days`` since the last purchase; ``frequency`` = distinct orders (the
  purchase's session id, else its UTC day); ``monetary`` = Σ price × quantity over
  purchases (quantity 1 when absent; no price adds 0); scores 1–5 by quintiles among
  buyers, fitted in batch (``RfmScorer``; 5 = most recent / frequent / spending).
- activity: events with ``t ≥ now − 7`` (``− 30``) days and a lifecycle stage:
  ``churned`` when the last event is more than ``churn_days`` (90) old, else
  ``at_risk`` when more than ``at_risk_days`` (30) old, else ``new`` when the first
  event is at most ``new_days`` (14) old, else ``active`` (``ProfileSettings``).
- hours: 24-bin histogram of event hours in the user's time zone (UTC when unknown);
  ``preferred_hours``: the three busiest hours; devices: counts of
  ``context["device"]`` (string values).
- recent: the last ``recent_items`` distinct items viewed / carted / bought, newest
  first (ties: larger item id first).
- funnel: views, carts, purchases (lines), favorites; ``cart_rate`` = carts / views,
  ``purchase_rate`` = purchases / views, ``cart_to_purchase`` = purchases / carts
  (``None`` when the denominator is 0).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, Field

from shopcast.config import ProfileSettings, RecommendSettings
from shopcast.domain import Event, EventType, User
from shopcast.errors import ModelError, NotFittedError
from shopcast.features._itemref import ItemInfo, level

DAY = 86_400.0
#: Event timestamps kept per user for the activity counts (the longest window).
ACTIVITY_WINDOW_DAYS = 30.0
#: Affinities are rescaled when an event is this many half-lives after their anchor.
RENORMALIZE_HALF_LIVES = 64.0
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (18, "<18"),
    (25, "18-24"),
    (35, "25-34"),
    (45, "35-44"),
    (55, "45-54"),
    (65, "55-64"),
)
OLDEST_BAND = "65+"
Lifecycle = Literal["new", "active", "at_risk", "churned"]
LIFECYCLES: tuple[Lifecycle, ...] = ("new", "active", "at_risk", "churned")
BUDGET_BELOW, PREMIUM_ABOVE = 0.8, 1.25
INTENT_TYPES = frozenset({EventType.ADD_TO_CART.value, EventType.PURCHASE.value})
RECENT_KINDS = {"view": "viewed", "add_to_cart": "carted", "purchase": "bought"}
#: Hours of day (local time) that count as night: 22:00 to 04:59.
NIGHT_HOURS = frozenset({22, 23, 0, 1, 2, 3, 4})


def age_band(age: int | None) -> str | None:
    """``"25-34"`` style band of an age (``None`` when unknown)."""
    if age is None:
        return None
    for upper, band in AGE_BANDS:
        if age < upper:
            return band
    return OLDEST_BAND


def price_band(index: float | None) -> Literal["budget", "mid", "premium"] | None:
    """``budget`` below 0.8, ``premium`` above 1.25, else ``mid``."""
    if index is None:
        return None
    if index < BUDGET_BELOW:
        return "budget"
    return "premium" if index > PREMIUM_ABOVE else "mid"


def order_key(session_id: str | None, ts: float) -> str:
    """What makes two purchases one order: the session, else the UTC day."""
    return session_id if session_id is not None else f"d:{int(ts // DAY)}"


def consents(user: User | None) -> bool:
    """False only when the user declared ``consent["personalization"] = False``."""
    return user is None or user.consent.get("personalization", True) is not False


@dataclass(frozen=True, slots=True)
class ProfileParams:
    """What the profile computation needs from the settings."""

    weights: Mapping[str, float]
    half_life_days: float = 30.0
    recent_items: int = 20
    top_n: int = 10
    new_days: float = 14.0
    at_risk_days: float = 30.0
    churn_days: float = 90.0

    @property
    def half_life_s(self) -> float:
        return self.half_life_days * DAY

    @classmethod
    def from_settings(cls, profiles: ProfileSettings, recommend: RecommendSettings) -> Self:
        return cls(
            weights=dict(recommend.event_weights),
            half_life_days=profiles.half_life_days,
            recent_items=profiles.recent_items,
            top_n=profiles.top_n,
            new_days=profiles.new_days,
            at_risk_days=profiles.at_risk_days,
            churn_days=profiles.churn_days,
        )


def _remember(seen: dict[str, float], item: str, ts: float, limit: int) -> None:
    """Keep the ``limit`` items with the largest (last time, id)."""
    old = seen.get(item)
    if old is None or ts > old:
        seen[item] = ts
    if len(seen) > limit:
        del seen[min(seen, key=lambda k: (seen[k], k))]


def hour_of(ts: float, tz: ZoneInfo | None) -> int:
    """Hour of day of ``ts`` (floored to the second) in ``tz`` (UTC when None)."""
    if tz is None:
        return int(ts // 3600) % 24
    return datetime.fromtimestamp(math.floor(ts), tz).hour


@dataclass(slots=True)
class UserState:
    """What the events of one user add up to (the input of ``profile_of``).

    Affinities are stored as Σ w · 2^((t − anchor) / half_life); ``anchor`` is a time
    of the user's own choosing (the path that built the state picks it).
    """

    first_ts: float = math.inf
    last_ts: float = -math.inf
    events: int = 0
    type_counts: dict[str, int] = field(default_factory=dict)
    anchor: float | None = None
    categories: dict[str, float] = field(default_factory=dict)
    category_total: float = 0.0
    category_events: int = 0
    intents: dict[str, int] = field(default_factory=dict)
    brands: dict[str, float] = field(default_factory=dict)
    brand_total: float = 0.0
    brand_events: int = 0
    prices: list[float] = field(default_factory=list)  # sorted
    ratios: list[float] = field(default_factory=list)  # sorted
    purchases: int = 0
    discounted: int = 0
    monetary: float = 0.0
    orders: set[str] = field(default_factory=set)
    last_purchase_ts: float | None = None
    window: list[float] = field(default_factory=list)  # sorted, >= last_ts - 30 days
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    devices: dict[str, int] = field(default_factory=dict)
    recent: dict[str, dict[str, float]] = field(
        default_factory=lambda: {k: {} for k in RECENT_KINDS}
    )

    def observe(self, event: Event, info: ItemInfo, tz: ZoneInfo | None, p: ProfileParams) -> None:
        """Add one event (``info``: its item, ``UNKNOWN_ITEM`` when none)."""
        ts = event.timestamp
        kind = event.type.value
        self.events += 1
        self.type_counts[kind] = self.type_counts.get(kind, 0) + 1
        if ts < self.first_ts:
            self.first_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts
            cut = ts - ACTIVITY_WINDOW_DAYS * DAY
            if self.window and self.window[0] < cut:
                del self.window[: bisect.bisect_left(self.window, cut)]
        if ts >= self.last_ts - ACTIVITY_WINDOW_DAYS * DAY:
            bisect.insort(self.window, ts)
        self.hours[hour_of(ts, tz)] += 1
        device = event.context.get("device")
        if isinstance(device, str) and device:
            self.devices[device] = self.devices.get(device, 0) + 1
        item = event.item_id
        if item is None:
            return
        if kind in RECENT_KINDS:
            _remember(self.recent[kind], item, ts, p.recent_items)
        weight = p.weights.get(kind, 0.0)
        if weight > 0 and (info.categories or info.brand is not None):
            self._affinity(ts, weight, info, p.half_life_s)
        if kind in INTENT_TYPES:
            for key in info.categories:
                self.intents[key] = self.intents.get(key, 0) + 1
            price = event.price if event.price is not None else info.price
            if price is not None:
                bisect.insort(self.prices, price)
                if info.ref_price is not None:
                    bisect.insort(self.ratios, price / info.ref_price)
            if kind == "purchase":
                self._purchase(event, info, price)

    def _affinity(self, ts: float, weight: float, info: ItemInfo, half_life_s: float) -> None:
        if self.anchor is None:
            self.anchor = ts
        x = (ts - self.anchor) / half_life_s
        if x > RENORMALIZE_HALF_LIVES:
            self._rescale(2.0**-x)
            self.anchor, x = ts, 0.0
        decayed = weight * 2.0**x
        if info.categories:
            self.category_total += decayed
            self.category_events += 1
            for key in info.categories:
                self.categories[key] = self.categories.get(key, 0.0) + decayed
        if info.brand is not None:
            self.brand_total += decayed
            self.brand_events += 1
            self.brands[info.brand] = self.brands.get(info.brand, 0.0) + decayed

    def _rescale(self, factor: float) -> None:
        for table in (self.categories, self.brands):
            for key in table:
                table[key] *= factor
        self.category_total *= factor
        self.brand_total *= factor

    def _purchase(self, event: Event, info: ItemInfo, price: float | None) -> None:
        self.purchases += 1
        if price is not None:
            self.monetary += price * (event.quantity if event.quantity is not None else 1.0)
        paid_less = (
            event.price is not None
            and info.original_price is not None
            and event.price < info.original_price
        )
        if info.discounted or paid_less:
            self.discounted += 1
        self.orders.add(order_key(event.session_id, event.timestamp))
        if self.last_purchase_ts is None or event.timestamp > self.last_purchase_ts:
            self.last_purchase_ts = event.timestamp


# -- the profile as read by the API, the tags and the segments ---------------------------


class Demographics(BaseModel):
    age: int | None = None
    age_band: str | None = None
    gender: str | None = None
    occupation: str | None = None
    region: str | None = None
    timezone: str | None = None


class Affinity(BaseModel):
    key: str = Field(description="Category path ('A > B') or brand")
    level: int = Field(0, description="Depth of a category key (0 = top)")
    weight: float = Field(description="Time-decayed event weight at `now`")
    share: float = Field(description="Fraction of decayed interest with any category/brand")
    intents: int = Field(0, description="Add-to-cart and purchase events")


class PriceProfile(BaseModel):
    median_price: float | None
    price_index: float | None = Field(description="Median of price / category median price")
    band: Literal["budget", "mid", "premium"] | None
    purchases: int
    discounted_purchases: int
    discount_share: float | None


class Rfm(BaseModel):
    recency_days: float | None
    frequency: int
    monetary: float
    r_score: int | None = None
    f_score: int | None = None
    m_score: int | None = None


class Activity(BaseModel):
    first_seen: float
    last_seen: float
    days_since_first_event: float
    days_since_last_event: float
    events: int
    events_7d: int
    events_30d: int
    lifecycle: Lifecycle


class Funnel(BaseModel):
    views: int
    carts: int
    purchases: int
    favorites: int
    cart_rate: float | None
    purchase_rate: float | None
    cart_to_purchase: float | None


class RecentItems(BaseModel):
    viewed: list[str]
    carted: list[str]
    bought: list[str]


class Behaviour(BaseModel):
    categories: list[Affinity] = Field(description="Highest weight first")
    category_events: int
    brands: list[Affinity]
    brand_events: int
    price: PriceProfile
    rfm: Rfm
    activity: Activity
    funnel: Funnel
    hours: list[int] = Field(description="Events per hour of day (0-23) in `timezone`")
    preferred_hours: list[int]
    timezone: str
    devices: dict[str, int]
    recent: RecentItems


class UserProfile(BaseModel):
    user_id: str
    as_of: float = Field(description="The `now` the profile was computed for")
    demographics: Demographics
    personalization: bool = Field(description="False: the user declined; no behaviour")
    behaviour: Behaviour | None = None

    def truncated(self, top_n: int) -> UserProfile:
        """The same profile with at most ``top_n`` categories and brands."""
        if self.behaviour is None:
            return self
        b = self.behaviour.model_copy(
            update={
                "categories": self.behaviour.categories[:top_n],
                "brands": self.behaviour.brands[:top_n],
            }
        )
        return self.model_copy(update={"behaviour": b})


def demographics_of(user: User | None) -> Demographics:
    if user is None:
        return Demographics()
    return Demographics(
        age=user.age,
        age_band=age_band(user.age),
        gender=user.gender,
        occupation=user.occupation,
        region=user.region,
        timezone=user.timezone,
    )


def _median(values: Sequence[float]) -> float | None:
    """Median of an already sorted sequence."""
    n = len(values)
    if n == 0:
        return None
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _affinities(
    weights: Mapping[str, float],
    total: float,
    intents: Mapping[str, int],
    decay: float,
    *,
    with_level: bool,
) -> list[Affinity]:
    keys = set(weights) | set(intents)
    out = [
        Affinity.model_construct(  # trusted values: skip validation (hot for long lists)
            key=k,
            level=level(k) if with_level else 0,
            weight=weights.get(k, 0.0) * decay,
            share=weights.get(k, 0.0) / total if total > 0 else 0.0,
            intents=intents.get(k, 0),
        )
        for k in keys
    ]
    # Shares rounded so that last-bit differences between the two paths keep the order.
    out.sort(key=lambda a: (-round(a.share, 9), -a.intents, a.level, a.key))
    return out


def lifecycle_of(days_since_first: float, days_since_last: float, p: ProfileParams) -> Lifecycle:
    """The lifecycle stage; the thresholds are in the module docstring."""
    if days_since_last > p.churn_days:
        return "churned"
    if days_since_last > p.at_risk_days:
        return "at_risk"
    if days_since_first <= p.new_days:
        return "new"
    return "active"


def behaviour_of(
    state: UserState,
    now: float,
    p: ProfileParams,
    *,
    timezone: str | None = None,
    scorer: RfmScorer | None = None,
) -> Behaviour:
    """The readable profile of ``state`` at time ``now``."""
    anchor = now if state.anchor is None else state.anchor
    decay = 2.0 ** ((anchor - now) / p.half_life_s)
    counts = state.type_counts
    views, carts = counts.get("view", 0), counts.get("add_to_cart", 0)
    purchases = counts.get("purchase", 0)
    price_index = _median(state.ratios)
    recency = None if state.last_purchase_ts is None else (now - state.last_purchase_ts) / DAY
    rfm = Rfm(recency_days=recency, frequency=len(state.orders), monetary=state.monetary)
    if scorer is not None and scorer.fitted and recency is not None:
        rfm.r_score, rfm.f_score, rfm.m_score = scorer.score(
            recency, len(state.orders), state.monetary
        )
    since_first = (now - state.first_ts) / DAY
    since_last = (now - state.last_ts) / DAY
    window = state.window
    busiest = sorted(range(24), key=lambda h: (-state.hours[h], h))
    recent = {
        RECENT_KINDS[kind]: [
            k for k, _ in sorted(seen.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        ]
        for kind, seen in state.recent.items()
    }
    return Behaviour(
        categories=_affinities(
            state.categories, state.category_total, state.intents, decay, with_level=True
        ),
        category_events=state.category_events,
        brands=_affinities(state.brands, state.brand_total, {}, decay, with_level=False),
        brand_events=state.brand_events,
        price=PriceProfile(
            median_price=_median(state.prices),
            price_index=price_index,
            band=price_band(price_index),
            purchases=state.purchases,
            discounted_purchases=state.discounted,
            discount_share=_ratio(state.discounted, state.purchases),
        ),
        rfm=rfm,
        activity=Activity(
            first_seen=state.first_ts,
            last_seen=state.last_ts,
            days_since_first_event=since_first,
            days_since_last_event=since_last,
            events=state.events,
            events_7d=len(window) - bisect.bisect_left(window, now - 7 * DAY),
            events_30d=len(window) - bisect.bisect_left(window, now - 30 * DAY),
            lifecycle=lifecycle_of(since_first, since_last, p),
        ),
        funnel=Funnel(
            views=views,
            carts=carts,
            purchases=purchases,
            favorites=counts.get("favorite", 0),
            cart_rate=_ratio(carts, views),
            purchase_rate=_ratio(purchases, views),
            cart_to_purchase=_ratio(purchases, carts),
        ),
        hours=list(state.hours),
        preferred_hours=[h for h in busiest[:3] if state.hours[h] > 0],
        timezone=timezone or "UTC",
        devices=dict(sorted(state.devices.items(), key=lambda kv: (-kv[1], kv[0]))),
        recent=RecentItems(**recent),
    )


def profile_of(
    user_id: str,
    user: User | None,
    state: UserState | None,
    now: float,
    p: ProfileParams,
    scorer: RfmScorer | None = None,
) -> UserProfile:
    """Demographics plus, with consent and at least one event, behaviour."""
    allowed = consents(user)
    behaviour = None
    if allowed and state is not None and state.events:
        tz = user.timezone if user is not None else None
        behaviour = behaviour_of(state, now, p, timezone=tz, scorer=scorer)
    return UserProfile(
        user_id=user_id,
        as_of=now,
        demographics=demographics_of(user),
        personalization=allowed,
        behaviour=behaviour,
    )


# -- RFM scores --------------------------------------------------------------------------

QUINTILES = (0.2, 0.4, 0.6, 0.8)


class RfmScorer:
    """RFM scores 1–5 by quintiles of recency, frequency and monetary among buyers.

    A value's score is 1 + the number of quintile edges strictly below it (recency:
    5 − that number, so the most recent buyers score 5). ``monetary_p90_`` (the 90th
    percentile of monetary) marks the top decile of spenders.
    """

    def __init__(self) -> None:
        self.edges_: np.ndarray[Any, np.dtype[np.float64]] | None = None
        self.monetary_p90_: float | None = None
        self.n_buyers_: int = 0

    @property
    def fitted(self) -> bool:
        return self.edges_ is not None

    def fit(self, rfm: Sequence[tuple[float, float, float]]) -> Self:
        """Fit on ``(recency_days, frequency, monetary)`` of every buyer."""
        data = np.asarray(rfm, dtype=np.float64).reshape(-1, 3)
        self.n_buyers_ = int(data.shape[0])
        if self.n_buyers_ == 0:
            self.edges_, self.monetary_p90_ = None, None
            return self
        self.edges_ = np.quantile(data, QUINTILES, axis=0).T.copy()
        self.monetary_p90_ = float(np.quantile(data[:, 2], 0.9))
        return self

    def score(self, recency: float, frequency: float, monetary: float) -> tuple[int, int, int]:
        if self.edges_ is None:
            raise NotFittedError("RfmScorer.score called before fit")
        below = [
            int(np.sum(self.edges_[i] < v)) for i, v in enumerate((recency, frequency, monetary))
        ]
        return 5 - below[0], 1 + below[1], 1 + below[2]

    def to_json(self) -> str:
        return json.dumps(
            {
                "edges": None if self.edges_ is None else self.edges_.tolist(),
                "monetary_p90": self.monetary_p90_,
                "n_buyers": self.n_buyers_,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
            out = cls()
            out.edges_ = None if data["edges"] is None else np.asarray(data["edges"], np.float64)
            out.monetary_p90_ = data["monetary_p90"]
            out.n_buyers_ = int(data["n_buyers"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"bad saved RFM scorer: {exc}") from None
        return out
