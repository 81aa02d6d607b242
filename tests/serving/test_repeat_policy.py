"""Re-view aware serving (Q4 on a view-heavy shop): items still in the cart on the home
scene, long live sessions at the cost of a short co-visitation context, and ranker
training data whose candidate models learn online as serving does.

All data here is SYNTHETIC, built so that each expected answer can be read off.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from shopcast.config import MerchandisingSettings, RecommendSettings, Settings
from shopcast.domain import Event, Item
from shopcast.models import CoVisitation, Interactions, Popularity, Vocabulary
from shopcast.models._base import Context
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.pipeline import RecommendPipeline
from shopcast.serving.sources import RecommendRequest
from shopcast.serving.state import MemorySessions
from shopcast.storage import open_store
from shopcast.training import ranker_data as RD
from shopcast.training.bundle import ModelBundle

T0 = 1_767_225_600.0
HOUR = 3600.0
ITEMS = [f"i{j}" for j in range(12)]


def _frame(events: list[Event]) -> pl.DataFrame:
    store = open_store("memory://")
    store.events.append(events)
    return store.events.frame()


def _pipeline(history: list[Event], merch: MerchandisingSettings) -> RecommendPipeline:
    vocab = Vocabulary(ITEMS)
    others = [  # co-visitation chain i0 -> i1 -> ... -> i10
        Event(type="view", user_id=f"o{u}", item_id=ITEMS[j], timestamp=T0 - 50 * HOUR + j)
        for u in range(3)
        for j in range(11)
    ]
    data = Interactions.from_frame(_frame(others), users=Vocabulary(), items=vocab)
    bundle = ModelBundle(
        "v1", vocab, {"popularity": Popularity().fit(data), "covisit": CoVisitation().fit(data)}
    )
    catalog = CatalogIndex(vocab)
    catalog.upsert([Item(item_id=i, title=i.upper(), category=[i]) for i in ITEMS])
    sessions = MemorySessions(lambda subject, n: [e for e in history if e.subject == subject])
    return RecommendPipeline(bundle, catalog, sessions, merch)


CART = [
    Event(type="view", user_id="me", item_id="i5", timestamp=T0 - 3 * HOUR),
    Event(type="add_to_cart", user_id="me", item_id="i5", timestamp=T0 - 2 * HOUR),
    Event(type="view", user_id="me", item_id="i2", timestamp=T0 - HOUR),
]


def test_home_keeps_items_still_in_the_cart_other_scenes_leave_them_out() -> None:
    pipe = _pipeline(CART, MerchandisingSettings())
    home = {i.item_id: i for i in pipe.run(RecommendRequest(user_id="me", k=8), T0).items}
    assert "i5" in home and home["i5"].reason == "still in your cart"
    assert home["i2"].reason == "you viewed this recently"  # also a co-visited item
    assert home["i2"].source == "recently_viewed"
    for scene in ("product_page", "search", "cart"):
        items = ("i2",) if scene == "product_page" else ()
        rec = pipe.run(RecommendRequest(user_id="me", k=8, scene=scene, items=items), T0)
        assert "i5" not in [i.item_id for i in rec.items], scene
    strict = _pipeline(CART, MerchandisingSettings(cart_scenes=[]))
    rec = strict.run(RecommendRequest(user_id="me", k=8), T0)
    assert "i5" not in [i.item_id for i in rec.items]
    assert "i2" in [i.item_id for i in rec.items]


def test_cart_scenes_are_validated_and_default_to_home() -> None:
    assert MerchandisingSettings().cart_scenes == ["home"]
    with pytest.raises(ValidationError, match="cart_scenes"):
        MerchandisingSettings(cart_scenes=["home", "checkout"])


def test_ranker_targets_follow_the_cart_policy() -> None:
    history = [*CART, Event(type="view", user_id="me", item_id="i5", timestamp=T0 + 1)]
    log = RD._Log(_frame(history))
    pipe = _pipeline(CART, MerchandisingSettings())
    shopper = pipe.context(RecommendRequest(user_id="me"), T0)
    rows, vocab, split = log.rows_of["u:me"][3:], pipe.bundle.items, RD.SplitConfig()
    again = {"reshows_session": True}
    assert RD._targets(log, rows, T0, shopper, vocab, split, **again) == {}
    shown = RD._targets(log, rows, T0, shopper, vocab, split, **again, shows_cart=True)
    assert shown == {vocab.index("i5"): 1}


def test_sessions_are_long_but_covisitation_reads_the_latest_twenty() -> None:
    assert RecommendSettings().session_length == 50
    vocab = Vocabulary(ITEMS)
    chain = [Event(type="view", user_id="o", item_id=ITEMS[j], timestamp=T0 + j) for j in range(4)]
    data = Interactions.from_frame(_frame(chain), users=Vocabulary(), items=vocab)
    model = CoVisitation(window=1).fit(data)  # pairs i0-i1, i1-i2, i2-i3

    def ctx(items: list[int]) -> Context:
        n = len(items)
        return Context(
            now=T0,
            recent_items=np.asarray(items, np.int64),
            recent_types=np.zeros(n, np.int64),
            recent_ts=np.full(n, T0),
        )

    cands = np.arange(4)
    # i0 (neighbour i1) is older than the latest 20 items (all i3, neighbour i2).
    long = ctx([0] + [3] * 20)
    assert model.score(long, cands).tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert model.score(ctx([0] + [3] * 19), cands)[1] == pytest.approx(0.7**19 / 3.33, rel=0.01)
    assert CoVisitation(window=1, context_items=21).fit(data).score(long, cands)[1] > 0
    short = CoVisitation(window=1, context_items=1).fit(data)
    assert short.score(ctx([0, 3]), cands).tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert model.score(ctx([0, 3]), cands)[1] == pytest.approx(0.7 / 1.7)
    with pytest.raises(Exception, match="context_items"):
        CoVisitation(context_items=0)


def test_save_load_keeps_the_context_length(tmp_path: object) -> None:
    from pathlib import Path

    vocab = Vocabulary(ITEMS)
    chain = [Event(type="view", user_id="o", item_id=ITEMS[j], timestamp=T0 + j) for j in range(4)]
    data = Interactions.from_frame(_frame(chain), users=Vocabulary(), items=vocab)
    path = Path(str(tmp_path)) / "cv"
    CoVisitation(context_items=3).fit(data).save(path)
    assert CoVisitation.load(path, vocab).context_items == 3


def _pair_shop() -> tuple[list[Event], list[Item]]:
    """History: 80 filler items viewed in runs (the popular ones). Then pairs: shoppers
    view A_j and, a second later, B_j; each pair has its own 40 shoppers in a block of
    time. Only co-visitation learned from earlier shoppers of the same block can
    propose B_j at the cut before it (every item has its own category)."""
    events: list[Event] = []
    t = T0
    for u in range(100):
        for j in range(8):
            events.append(
                Event(type="view", user_id=f"h{u}", item_id=f"f{(u + j) % 80}", timestamp=t)
            )
            t += 1
    for j in range(10):
        for u in range(40):
            for item in (f"a{j}", f"b{j}"):
                events.append(Event(type="view", user_id=f"p{j}-{u}", item_id=item, timestamp=t))
                t += 1
    names = sorted({e.item_id for e in events if e.item_id is not None})
    return events, [Item(item_id=i, category=[i]) for i in names]


@pytest.mark.parametrize("online", [True, False])
def test_ranker_candidates_learn_online_up_to_each_cut(online: bool) -> None:
    events, items = _pair_shop()
    settings = Settings(recommend=RecommendSettings(online_learning=online))
    split = RD.SplitConfig(fractions=(0.5, 0.7, 0.85), scenes=("home",))
    data = RD.build_dataset(_frame(events), items, [], settings, split)
    train = data.stats["train"]
    assert train["groups"] > 50  # every pair shopper's B view is a cut with target B
    if online:  # B_j proposed by co-visitation learned from the block's earlier shoppers
        assert train["groups_with_target_in_pool"] > 0.8 * train["groups"]
    else:  # the train window's bundle knows the history's fillers only
        assert train["groups_with_target_in_pool"] == 0


def test_diversity_does_not_hide_the_shoppers_own_items() -> None:
    from shopcast.serving.rerank import MMR
    from shopcast.serving.rules import Ranked

    vocab = Vocabulary(ITEMS)
    catalog = CatalogIndex(vocab)
    catalog.upsert([Item(item_id=i, category=["same"]) for i in ITEMS[:6]])
    catalog.upsert([Item(item_id=i, category=[i]) for i in ITEMS[6:]])
    scores = np.asarray([1.0, 0.9, 0.8, 0.75, 0.7, 0.65, 0.5, 0.45, 0.4])
    items = np.arange(9, dtype=np.int64)
    mmr = MMR(catalog, 0.5)
    own = ["recently_viewed"] * 3 + ["covisit"] * 6
    order = mmr(Ranked(items, scores, own), 5).tolist()
    assert order[:3] == [0, 1, 2]  # re-shown items keep their order despite one category
    assert 3 not in order  # a suggestion of the same category is still spread out
    plain = mmr(Ranked(items, scores, ["covisit"] * 9), 5).tolist()
    assert plain[:2] == [0, 6] and 1 not in plain[:3]  # without the exemption: spread
