"""A simulated shop (SYNTHETIC data) for the demo when no real dataset is at hand,
for unit tests and for load tests. Never use it for quality claims.

Shoppers have a favourite category and a price sensitivity; sessions browse a few
items of one category (mostly the favourite), sometimes cart and buy, and items of
the same "collection" are viewed together, which gives co-visitation real structure.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from shopcast.domain import Item, User

CATEGORIES = (
    ("Home", "Kitchen"),
    ("Home", "Lighting"),
    ("Garden", "Tools"),
    ("Fashion", "Bags"),
    ("Fashion", "Shoes"),
    ("Toys", "Games"),
    ("Beauty", "Skin care"),
    ("Sports", "Running"),
)
BRANDS = ("Acme", "Northwind", "Contoso", "Globex", "Initech", "Umbrella")
START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class SimulatedShop:
    items: list[Item]
    users: list[User]
    events: pl.DataFrame  # raw event columns, ready for shopcast.ingest.bulk.clean_events
    #: Hidden preferences: each user's favourite category (index into ``CATEGORIES``).
    favourite: dict[str, int] = field(default_factory=dict)

    def click_probability(self, user_id: str, item_id: str, position: int) -> float:
        """The SIMULATED shopper's chance to click ``item_id`` shown at ``position``
        (1-based): 0.35 for the favourite category, 0.08 for its sibling (same top
        level), 0.03 otherwise, times the position bias 1 / (1 + 0.1 (position - 1)).
        The truth that experiment and off-policy evaluation tests check against."""
        fav = self.favourite.get(user_id)
        cat = _item_category(item_id, len(self.items))
        if fav is None or cat is None:
            base = 0.03
        elif cat == fav:
            base = 0.35
        elif CATEGORIES[cat][0] == CATEGORIES[fav][0]:
            base = 0.08
        else:
            base = 0.03
        return base / (1.0 + 0.1 * (position - 1))


def _item_category(item_id: str, n_items: int) -> int | None:
    """Category index of a simulated item id (``sim-00042``), None for another id."""
    if not item_id.startswith("sim-") or not item_id[4:].isdigit():
        return None
    i = int(item_id[4:])
    return i % len(CATEGORIES) if i < n_items else None


def simulate_shop(
    *, n_users: int = 300, n_items: int = 240, sessions_per_user: int = 4, seed: int = 7
) -> SimulatedShop:
    """A reproducible synthetic shop (same seed, same shop)."""
    rng = np.random.default_rng(seed)
    n_cat = len(CATEGORIES)
    item_cat = np.arange(n_items) % n_cat
    collection = np.arange(n_items) // (2 * n_cat)  # ~2 items per category per collection
    items = _items(rng, n_items)
    users = [
        User(
            user_id=f"sim-user-{u:05d}",
            age=int(rng.integers(18, 75)),
            gender=str(rng.choice(["f", "m", "x"])),
            region=str(rng.choice(["UK", "France", "Germany", "Spain"])),
            attributes={"synthetic": True},
        )
        for u in range(n_users)
    ]
    rows: dict[str, list[object]] = {
        "user_id": [], "session_id": [], "item_id": [], "type": [], "timestamp": [],
        "quantity": [], "price": [],
    }  # fmt: skip
    favourite = rng.integers(0, n_cat, n_users)
    for u in range(n_users):
        t = START_TS + float(rng.uniform(0, 86400 * 30))
        for s in range(sessions_per_user):
            cat = favourite[u] if rng.random() < 0.7 else int(rng.integers(0, n_cat))
            pool = np.flatnonzero(item_cat == cat)
            anchor = int(rng.choice(pool))
            same = np.flatnonzero(collection == collection[anchor])
            browse = np.concatenate(
                [[anchor], rng.choice(same, 2), rng.choice(pool, int(rng.integers(1, 4)))]
            )
            session = f"sim-session-{u:05d}-{s}"
            for i in browse:
                t += float(rng.uniform(5, 120))
                _row(rows, users[u].user_id, session, items[i], "view", t)
            if rng.random() < 0.5:
                chosen = items[int(rng.choice(browse))]
                t += float(rng.uniform(5, 60))
                _row(rows, users[u].user_id, session, chosen, "add_to_cart", t)
                if rng.random() < 0.6:
                    t += float(rng.uniform(30, 600))
                    _row(rows, users[u].user_id, session, chosen, "purchase", t)
            t += float(rng.uniform(3600, 86400 * 3))
    events = pl.DataFrame(rows, schema_overrides={"timestamp": pl.Float64})
    preferences = {users[u].user_id: int(favourite[u]) for u in range(n_users)}
    return SimulatedShop(items, users, events, preferences)


def _items(rng: np.random.Generator, n_items: int) -> list[Item]:
    """The catalog of a simulated shop (draws from ``rng``: prices, stock, dates)."""
    n_cat = len(CATEGORIES)
    item_cat = np.arange(n_items) % n_cat
    collection = np.arange(n_items) // (2 * n_cat)
    price = np.round(rng.lognormal(3.0, 0.6, n_items), 2)
    return [
        Item(
            item_id=f"sim-{i:05d}",
            title=f"{CATEGORIES[item_cat[i]][1]} item {i} (simulated)",
            category=list(CATEGORIES[item_cat[i]]),
            brand=BRANDS[i % len(BRANDS)],
            price=float(price[i]),
            original_price=float(round(price[i] * 1.2, 2)) if i % 5 == 0 else None,
            stock=int(rng.integers(0, 50)),
            created_at=START_TS - 86400 * float(rng.integers(1, 365)),
            attributes={"collection": int(collection[i]), "synthetic": True},
        )
        for i in range(n_items)
    ]


def simulated_items(n_items: int, seed: int = 7) -> list[Item]:
    """The catalog ``simulate_shop(n_items=n_items, seed=seed)`` has (SYNTHETIC)."""
    return _items(np.random.default_rng(seed), n_items)


def _row(
    rows: dict[str, list[object]], user: str, session: str, item: Item, kind: str, ts: float
) -> None:
    rows["user_id"].append(user)
    rows["session_id"].append(session)
    rows["item_id"].append(item.item_id)
    rows["type"].append(kind)
    rows["timestamp"].append(ts)
    rows["quantity"].append(1.0 if kind == "purchase" else None)
    rows["price"].append(item.price if kind == "purchase" else None)


#: Mean events of one simulated session: 5 views (anchor, 2 of its collection, 1-3 of
#: its category), a cart half the time and then an order 60 % of the time.
EVENTS_PER_SESSION = 5.0 + 0.5 + 0.5 * 0.6


def simulate_event_chunks(
    *,
    n_users: int,
    n_items: int,
    n_events: int,
    seed: int = 7,
    chunk_sessions: int = 250_000,
) -> Iterator[pl.DataFrame]:
    """The events of a large simulated shop (SYNTHETIC), vectorized, chunk by chunk.

    The same shopper model as ``simulate_shop`` (favourite category 70 % of sessions,
    an anchor item, two items of its collection, 1-3 of its category, a cart half the
    time, an order 60 % of carts; the same gaps between events and sessions) without
    its per-event Python loop, so millions of events take seconds and one chunk's memory.
    Not the same random stream: the events differ from ``simulate_shop``'s for a seed.
    About ``n_events`` events: ``n_events / EVENTS_PER_SESSION`` sessions, every user
    has one, the rest go to users drawn uniformly. User ``u`` is ``sim-user-{u:05d}``
    and item ``i`` ``sim-{i:05d}``, as ``simulate_shop``'s (``simulated_items`` /
    ``simulated_users`` give their records). Chunks hold whole users, in user order.
    """
    if min(n_users, n_items, n_events) < 1:
        raise ValueError("n_users, n_items and n_events must be >= 1")
    rng = np.random.default_rng(seed)
    n_cat = len(CATEGORIES)
    n_sessions = max(n_users, round(n_events / EVENTS_PER_SESSION))
    owner = np.sort(
        np.concatenate([np.arange(n_users), rng.integers(0, n_users, n_sessions - n_users)])
    )
    favourite = rng.integers(0, n_cat, n_users)
    price = np.asarray([item.price for item in simulated_items(n_items, seed)])
    cat_size = np.array([len(range(c, n_items, n_cat)) for c in range(n_cat)])
    coll_size = 2 * n_cat
    # cut between users so a user's sessions stay in one chunk (time order per user)
    bounds = [*list(range(0, n_sessions, chunk_sessions)), n_sessions]
    starts = [int(np.searchsorted(owner, owner[b], "left")) for b in bounds[:-1]] + [n_sessions]
    for lo, hi in itertools.pairwise(starts):
        if lo >= hi:
            continue
        u = owner[lo:hi]
        n = hi - lo
        own = rng.random(n) < 0.7
        cat = np.where(own, favourite[u], rng.integers(0, n_cat, n))
        size = cat_size[cat]
        anchor = cat + n_cat * (rng.random(n) * size).astype(np.int64)
        first = (anchor // coll_size) * coll_size
        span = np.minimum(coll_size, n_items - first)
        same = first[:, None] + (rng.random((n, 2)) * span[:, None]).astype(np.int64)
        extra = cat[:, None] + n_cat * (rng.random((n, 3)) * size[:, None]).astype(np.int64)
        n_extra = rng.integers(1, 4, n)
        browse = np.concatenate([anchor[:, None], same, extra], axis=1)  # (n, 6)
        shown = np.arange(6)[None, :] < (3 + n_extra)[:, None]
        cart = rng.random(n) < 0.5
        buy = cart & (rng.random(n) < 0.6)
        pick = browse[np.arange(n), (rng.random(n) * (3 + n_extra)).astype(np.int64)]
        # per-event gaps; sessions of one user follow each other
        gaps = rng.uniform(5, 120, (n, 6)) * shown
        cart_gap = rng.uniform(5, 60, n)
        buy_gap = rng.uniform(30, 600, n)
        length = gaps.sum(1) + cart * cart_gap + buy * buy_gap
        pause = rng.uniform(3600, 86400 * 3, n)
        new_user = np.r_[True, u[1:] != u[:-1]]
        begin = START_TS + rng.uniform(0, 86400 * 30, n)
        step = length + pause
        total = np.cumsum(step)
        group_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
        before = total - step - (total - step)[group_start]  # time used earlier by the user
        t0 = begin[group_start] + before
        view_ts = t0[:, None] + np.cumsum(gaps, axis=1)
        last_view = view_ts[np.arange(n), 2 + n_extra]
        cart_ts = last_view + cart_gap
        buy_ts = cart_ts + buy_gap
        rows, cols = np.nonzero(shown)
        sess = np.concatenate([rows, np.flatnonzero(cart), np.flatnonzero(buy)])
        item = np.concatenate([browse[rows, cols], pick[cart], pick[buy]])
        kind = np.concatenate(
            [np.zeros(rows.size, np.int8), np.ones(int(cart.sum()), np.int8),
             np.full(int(buy.sum()), 2, np.int8)]
        )  # fmt: skip
        ts = np.concatenate([view_ts[rows, cols], cart_ts[cart], buy_ts[buy]])
        order = np.lexsort((ts, u[sess]))
        sess, item, kind, ts = sess[order], item[order], kind[order], ts[order]
        nth = lo + sess - np.searchsorted(owner, owner[lo + sess], "left")  # session of user
        user_col = pl.Series(u[sess]).cast(pl.String).str.zfill(5)
        purchase = kind == 2
        yield pl.DataFrame(
            {
                "user_id": "sim-user-" + user_col,
                "session_id": "sim-session-"
                + user_col
                + "-"
                + pl.Series(nth, dtype=pl.Int64).cast(pl.String),
                "item_id": "sim-" + pl.Series(item).cast(pl.String).str.zfill(5),
                "type": pl.Series(kind).replace_strict(
                    {0: "view", 1: "add_to_cart", 2: "purchase"}, return_dtype=pl.String
                ),
                "timestamp": ts,
                "quantity": np.where(purchase, 1.0, np.nan),
                "price": np.where(purchase, price[item], np.nan),
            }
        ).with_columns(pl.col("quantity", "price").fill_nan(None))
