"""The "recently viewed" candidate source, its scene weight and the pagination rule.

All data here is SYNTHETIC, built so that each expected answer can be read off.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from shopcast.config import RecommendSettings
from shopcast.domain import Event, EventType, Item
from shopcast.models import CoVisitation, Interactions, Popularity, Vocabulary
from shopcast.models._base import EVENT_CODES, Context
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.pipeline import SCENES, RecommendPipeline, scene_weights
from shopcast.serving.sources import (
    RecentlyViewedSource,
    RecommendRequest,
    Shopper,
)
from shopcast.serving.state import MemorySessions
from shopcast.storage import open_store
from shopcast.training import ranker_data as RD
from shopcast.training.bundle import ModelBundle

T0 = 1_767_225_600.0
HOUR = 3600.0
V, P, C = (EVENT_CODES[t] for t in (EventType.VIEW, EventType.PURCHASE, EventType.ADD_TO_CART))


def _shopper(items: Sequence[int], types: Sequence[int], ts: Sequence[float]) -> Shopper:
    ctx = Context(
        now=T0,
        user_id="u",
        recent_items=np.asarray(items, np.int64),
        recent_types=np.asarray(types, np.int64),
        recent_ts=np.asarray(ts, np.float64),
    )
    bought = {i: [t] for i, k, t in zip(items, types, ts, strict=True) if k == P}
    return Shopper(context=ctx, purchases=bought)


def test_scores_by_recency_and_frequency_without_bought_items() -> None:
    # oldest first: 1, 2, 1, 3 (bought), 4, 3
    shopper = _shopper(
        [1, 2, 1, 3, 4, 3], [V, V, V, P, V, V], [T0 - 60 * k for k in range(6)][::-1]
    )
    source = RecentlyViewedSource(half_life_events=5.0, half_life_hours=1e6)
    found = source(shopper, RecommendRequest(), 10)
    assert found.items.tolist() == [1, 4, 2]  # 3 was bought; 1 twice beats 4 once
    h = 2.0 ** (-1 / 5)
    expected = {1: h**3 + h**5, 4: h**1, 2: h**4}
    for item, score in zip(found.items.tolist(), found.scores.tolist(), strict=True):
        assert score == pytest.approx(expected[item])
    assert source(shopper, RecommendRequest(), 1).items.tolist() == [1]


def test_old_looks_fade_and_empty_sessions_give_nothing() -> None:
    source = RecentlyViewedSource(half_life_events=1e6, half_life_hours=24.0)
    shopper = _shopper([7, 8], [V, C], [T0 - 48 * HOUR, T0 - HOUR])  # 8 put in the cart
    found = source(shopper, RecommendRequest(), 10)
    assert found.items.tolist() == [8, 7]
    assert found.scores[1] == pytest.approx(0.25, rel=1e-6)  # two half lives ago
    assert source(_shopper([], [], []), RecommendRequest(), 10).items.size == 0
    only_bought = _shopper([5], [P], [T0])
    assert source(only_bought, RecommendRequest(), 10).items.size == 0


def test_scene_weights_are_scaled_or_dropped() -> None:
    assert scene_weights(1.0) == SCENES
    half = scene_weights(0.5)
    assert half["home"]["recently_viewed"] == 0.5 * SCENES["home"]["recently_viewed"]
    assert all("recently_viewed" not in w for w in scene_weights(0.0).values())
    with pytest.raises(ValueError, match="recently_viewed_weight"):
        scene_weights(-1.0)
    with pytest.raises(ValueError):
        RecommendSettings(recently_viewed_weight=-0.1)


# -- in the pipeline ------------------------------------------------------------------

ITEMS = [f"i{j}" for j in range(12)]


def _pipeline(weight: float, history: list[Event]) -> RecommendPipeline:
    vocab = Vocabulary(ITEMS)
    users = Vocabulary()
    others = [  # co-visitation: i0 -> i1 -> i2 ...; i11 is the most popular item
        Event(type="view", user_id=f"o{u}", item_id=ITEMS[j], timestamp=T0 - 50 * HOUR + j)
        for u in range(3)
        for j in range(11)
    ] + [
        Event(type="purchase", user_id=f"b{u}", item_id="i11", timestamp=T0 - 40 * HOUR)
        for u in range(9)
    ]
    data = Interactions.from_frame(_frame(others), users=users, items=vocab)
    bundle = ModelBundle(
        "v1",
        vocab,
        {"popularity": Popularity().fit(data), "covisit": CoVisitation().fit(data)},
    )
    catalog = CatalogIndex(vocab)
    catalog.upsert([Item(item_id=i, title=i.upper(), category=["c"]) for i in ITEMS])
    sessions = MemorySessions(lambda subject, n: [e for e in history if e.subject == subject])
    return RecommendPipeline(bundle, catalog, sessions, recently_viewed_weight=weight)


HISTORY = [
    Event(type="view", user_id="me", item_id="i5", timestamp=T0 - 3 * HOUR),
    Event(type="view", user_id="me", item_id="i8", timestamp=T0 - 2 * HOUR),
    Event(type="purchase", user_id="me", item_id="i9", timestamp=T0 - 1.5 * HOUR),
    Event(type="view", user_id="me", item_id="i8", timestamp=T0 - HOUR),
]


def test_home_shows_recently_viewed_items_with_a_reason() -> None:
    rec = _pipeline(1.0, HISTORY).run(RecommendRequest(user_id="me", k=6), T0)
    by_id = {i.item_id: i for i in rec.items}
    assert "i8" in by_id and by_id["i8"].source == "recently_viewed"
    assert by_id["i8"].reason == "you viewed this recently"
    assert "i9" not in by_id  # bought: neither re-shown nor recommended
    off = _pipeline(0.0, HISTORY).run(RecommendRequest(user_id="me", k=6), T0)
    assert "recently_viewed" not in off.sources
    assert "i8" not in {i.item_id for i in off.items}  # nothing else proposes it


def test_pages_never_repeat_items_with_recently_viewed_on() -> None:
    pipe = _pipeline(5.0, HISTORY)  # heavy weight: viewed items lead page 1
    seen: list[str] = []
    for page in (1, 2, 3):
        rec = pipe.run(RecommendRequest(user_id="me", k=3, page=page), T0)
        ids = [i.item_id for i in rec.items]
        assert ids and not set(ids) & set(seen), (page, ids, seen)
        seen += ids
    assert {"i5", "i8"} <= set(seen[:3])
    again = pipe.run(RecommendRequest(user_id="me", k=3, page=1), T0)
    assert [i.item_id for i in again.items] == seen[:3]  # page 1 starts a new listing


def test_product_page_never_proposes_the_page_item_itself() -> None:
    pipe = _pipeline(5.0, HISTORY)
    rec = pipe.run(RecommendRequest(user_id="me", k=6, scene="product_page", items=("i8",)), T0)
    assert "i8" not in [i.item_id for i in rec.items]
    assert "i5" in [i.item_id for i in rec.items]


def test_ranker_targets_include_going_back_when_the_scene_reshows_the_session() -> None:
    history = [
        Event(type="view", user_id="s", item_id=item, timestamp=T0 + k)
        for k, item in enumerate(["i1", "i2", "i1", "i3", "i2"])
    ]
    log = RD._Log(_frame(history))
    pipe = _pipeline(1.0, history[:3])
    shopper = pipe.context(RecommendRequest(user_id="s"), T0 + 2.5)
    rows = log.rows_of["u:s"][3:]
    split = RD.SplitConfig()
    vocab = pipe.bundle.items
    plain = RD._targets(log, rows, T0 + 2.5, shopper, vocab, split)
    again = RD._targets(log, rows, T0 + 2.5, shopper, vocab, split, reshows_session=True)
    assert plain == {vocab.index("i3"): 1}
    assert again == {vocab.index("i3"): 1, vocab.index("i2"): 1}


def _frame(events: list[Event]) -> pl.DataFrame:
    store = open_store("memory://")
    store.events.append(events)
    return store.events.frame()
