"""Closed-form fold-in and content embeddings of ``OnlineALS`` (SIMULATED shop)."""

from __future__ import annotations

import numpy as np
import pytest

from shopcast.domain import Item
from shopcast.ingest.bulk import clean_events
from shopcast.models import Interactions, Vocabulary
from shopcast.models._base import EVENT_CODES, Context
from shopcast.simulate import CATEGORIES, SimulatedShop, simulate_shop
from shopcast.training.foldin import OnlineALS


@pytest.fixture(scope="module")
def shop() -> SimulatedShop:
    return simulate_shop(n_users=300, n_items=160, sessions_per_user=5, seed=2)


@pytest.fixture(scope="module")
def fitted(shop: SimulatedShop) -> tuple[OnlineALS, Vocabulary, Vocabulary]:
    items = Vocabulary(i.item_id for i in shop.items)
    frame = clean_events(shop.events).frame
    data = Interactions.from_frame(frame, items=items)
    model = OnlineALS(n_factors=16, iterations=8, seed=0).fit(data)
    model.fit_content(shop.items, items)
    return model, data.users, items


def _batch(users: Vocabulary, items: Vocabulary, rows: list[tuple[str, str, str]]) -> Interactions:
    return Interactions(
        users=users,
        items=items,
        user=users.indices([r[0] for r in rows], add=True),
        item=items.indices([r[1] for r in rows], add=True),
        type=np.array([EVENT_CODES[r[2]] for r in rows], dtype=np.int64),
        ts=np.zeros(len(rows)),
        value=np.full(len(rows), np.nan),
    )


def test_new_user_is_folded_in_closed_form(
    fitted: tuple[OnlineALS, Vocabulary, Vocabulary], shop: SimulatedShop
) -> None:
    model, users, items = fitted
    cat = 3
    liked = [i.item_id for k, i in enumerate(shop.items) if k % len(CATEGORIES) == cat][:4]
    model.learn(_batch(users, items, [("u:newcomer", i, "view") for i in liked]))
    row = model.subjects_.of(Context(now=0.0, user_id="newcomer"))
    assert row >= 0
    # the stored factors are the exact ridge solution for that row (its events wait in
    # the buffer; merging moves them into the history without touching the factors)
    before = model.P_[row].copy()
    model.merge()
    np.testing.assert_array_equal(model.P_[row], before)
    sub = model.history_[[row]].tocoo()
    exact = model._solve(
        sub.row.astype(np.int64), 1, model.Q_, sub.col.astype(np.int64), 1 + model.alpha * sub.data
    )
    np.testing.assert_allclose(model.P_[row], exact[0], atol=1e-10)
    scores = model.P_[row] @ model.Q_.T
    top = np.argsort(-scores)[:10]
    share = np.mean([int(items.id(int(t))[4:]) % len(CATEGORIES) == cat for t in top])
    assert share >= 0.7  # the newcomer's taste, from four views


def test_new_item_is_recommendable_before_any_interaction(
    fitted: tuple[OnlineALS, Vocabulary, Vocabulary], shop: SimulatedShop
) -> None:
    model, _users, items = fitted
    cat = 5
    new = Item(
        item_id="brand-new",
        title=f"{CATEGORIES[cat][1]} item new (simulated)",
        category=list(CATEGORIES[cat]),
        brand="Acme",
        price=20.0,
    )
    assert model.add_items([new], items) == 1
    idx = items.index("brand-new")
    assert np.abs(model.Q_[idx]).sum() > 0
    ranks_fans, ranks_others = [], []
    for user, fav in shop.favourite.items():
        row = model.subjects_.of(Context(now=0.0, user_id=user))
        scores = model.P_[row] @ model.Q_.T
        rank = int((scores > scores[idx]).sum())
        (ranks_fans if fav == cat else ranks_others).append(rank)
    # fans of its category rank it in the top fifth of the catalog, others far lower
    assert np.median(ranks_fans) < 0.2 * len(items)
    assert np.median(ranks_others) > 3 * np.median(ranks_fans)
    # and interactions move it to collaborative factors once there are enough
    before = model.Q_[idx].copy()
    fans = [u for u, f in shop.favourite.items() if f == cat][:6]
    model.learn(_batch(_users, items, [(f"u:{u}", "brand-new", "purchase") for u in fans]))
    assert not np.allclose(before, model.Q_[idx])


def test_warm_start_matches_a_cold_fit(
    fitted: tuple[OnlineALS, Vocabulary, Vocabulary], shop: SimulatedShop
) -> None:
    model, _users, items = fitted
    frame = clean_events(shop.events).frame
    data = Interactions.from_frame(frame, items=Vocabulary(items.ids))
    cold = OnlineALS(n_factors=16, iterations=8, seed=0).fit(data)
    warm = OnlineALS(n_factors=16, seed=0).warm_start(model, data, iterations=2)
    ctx = [Context(now=0.0, user_id=u.user_id) for u in shop.users[:50]]
    a, b = cold.score_all(ctx), warm.score_all(ctx)
    overlap = np.mean(
        [
            len(set(np.argsort(-x)[:10]) & set(np.argsort(-y)[:10])) / 10
            for x, y in zip(a, b, strict=True)
        ]
    )
    assert overlap > 0.6


def test_a_copy_learns_on_its_own(fitted: tuple[OnlineALS, Vocabulary, Vocabulary]) -> None:
    import copy

    model, users, items = fitted
    clone = copy.deepcopy(model)
    assert clone._lock is not model._lock
    clone.learn(_batch(users, items, [("u:copy-only", items.id(0), "view")]))
    assert clone.subjects_.of(Context(now=0.0, user_id="copy-only")) >= 0
    assert model.subjects_.of(Context(now=0.0, user_id="copy-only")) < 0
