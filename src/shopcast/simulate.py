"""A simulated shop (SYNTHETIC data) for the demo when no real dataset is at hand,
for unit tests and for load tests. Never use it for quality claims.

Shoppers have a favourite category and a price sensitivity; sessions browse a few
items of one category (mostly the favourite), sometimes cart and buy, and items of
the same "collection" are viewed together, which gives co-visitation real structure.
"""

from __future__ import annotations

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
    price = np.round(rng.lognormal(3.0, 0.6, n_items), 2)
    items = [
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
