"""The learned ranker: candidate features, LambdaRank model, training data, pipeline stage.

All data here is SYNTHETIC.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from shopcast.config import MerchandisingSettings, Settings
from shopcast.domain import Event, Item
from shopcast.errors import ModelError
from shopcast.features.profiles import ProfileParams, UserState
from shopcast.models import CoVisitation, Interactions, Popularity, Vocabulary
from shopcast.models._base import Context
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.pipeline import SCENES, RecommendPipeline
from shopcast.serving.ranker import (
    SCENE_CODES,
    FeatureBuilder,
    LearnedRanker,
    feature_columns,
)
from shopcast.serving.sources import Candidates, RecommendRequest, Shopper
from shopcast.serving.state import MemorySessions
from shopcast.storage import open_store
from shopcast.training import ranker_data as RD
from shopcast.training.bundle import ModelBundle, load_bundle, save_bundle, train_bundle

DAY = 86_400.0
T0 = 1_767_225_600.0


# -- feature builder on a hand-checked pool -----------------------------------------


class _Profiles:
    def __init__(self, states: dict[str, UserState]) -> None:
        self.states = states
        self.params = ProfileParams(weights={"view": 1.0})


def _tiny() -> tuple[ModelBundle, CatalogIndex]:
    items = [
        Item(item_id="A", category=["Shoes", "Running"], brand="Acme", price=10.0),
        Item(
            item_id="B",
            category=["Shoes", "Running"],
            brand="Acme",
            price=40.0,
            stock=3,
        ),
        Item(item_id="C", category=["Shoes", "Trail"], brand="Bolt", price=20.0, stock=0),
        Item(item_id="D", category=["Hats"], price=5.0, created_at=T0 - 2 * DAY),
    ]
    vocab = Vocabulary(i.item_id for i in items)
    data = Interactions(
        users=Vocabulary(["u:1"]),
        items=vocab,
        user=np.zeros(3, np.int64),
        item=np.array([0, 1, 1]),
        type=np.zeros(3, np.int64),  # views
        ts=np.full(3, T0 - DAY),
        value=np.full(3, np.nan),
    )
    models: dict[str, Any] = {
        "popularity": Popularity().fit(data),
        "covisit": CoVisitation().fit(data),
    }
    catalog = CatalogIndex(vocab)
    catalog.upsert(items)
    return ModelBundle("t", vocab, models), catalog


def test_feature_columns_and_hand_checked_values() -> None:
    bundle, catalog = _tiny()
    state = UserState(
        first_ts=T0 - 100 * DAY,
        last_ts=T0 - 3 * DAY,
        events=7,
        categories={"Shoes": 3.0, "Shoes > Running": 2.0, "Hats": 1.0},
        category_total=4.0,
        brands={"Acme": 1.0},
        brand_total=2.0,
        prices=[10.0, 30.0],
        purchases=2,
        window=[T0 - 40 * DAY, T0 - 5 * DAY, T0 - 3 * DAY],
    )
    builder = FeatureBuilder(bundle, catalog, _Profiles({"1": state}), ["covisit", "popular"])
    assert builder.columns == feature_columns(["covisit", "popular"])
    assert builder.columns[:5] == [
        "score_covisit",
        "score_popular",
        "rank_covisit",
        "rank_popular",
        "blend",
    ]
    candidates = {
        "covisit": Candidates(np.array([0, 1]), np.array([0.5, 1.0])),
        "popular": Candidates(np.array([1, 2, 3]), np.array([4.0, 2.0, 2.0])),
    }
    ctx = Context(
        now=T0,
        user_id="1",
        recent_items=np.array([0, 3]),  # ... then D (Hats), the latest
        recent_types=np.zeros(2, np.int64),
        recent_ts=np.array([T0 - 600.0, T0 - 60.0]),
    )
    request = RecommendRequest(user_id="1", scene="product_page")
    pool, x = builder.build(candidates, Shopper(ctx), request, {"covisit": 1.0, "popular": 0.1})
    assert pool.tolist() == [0, 1, 2, 3]
    f = {name: x[:, j] for j, name in enumerate(builder.columns)}
    np.testing.assert_allclose(f["score_covisit"], [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(f["rank_covisit"], [2, 1, 0, 0])
    np.testing.assert_allclose(f["score_popular"], [0.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(f["rank_popular"], [0, 1, 2, 3])  # ties: list order
    np.testing.assert_allclose(f["blend"], [0.5, 1.1, 0.05, 0.05])
    np.testing.assert_allclose(f["n_sources"], [1, 2, 1, 1])
    pop = bundle.popularity.scores_
    np.testing.assert_allclose(f["pop_log"], np.log1p([pop[0], pop[1], 0.0, 0.0]))
    np.testing.assert_allclose(f["price_log"], np.log1p([10.0, 40.0, 20.0, 5.0]))
    np.testing.assert_allclose(f["stock"][1:3], [1.0, 0.0])  # low stock, out of stock
    assert math.isnan(f["stock"][0])  # untracked
    assert math.isnan(f["days_since_created"][0])
    assert f["days_since_created"][3] == pytest.approx(2.0)
    np.testing.assert_allclose(f["aff_category"], [0.5, 0.5, 0.0, 0.25])
    np.testing.assert_allclose(f["aff_category_top"], [0.75, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(f["aff_brand"], [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(f["price_vs_user"], np.log(np.array([10, 40, 20, 5]) / 20.0))
    np.testing.assert_allclose(f["user_events_30d"], 2)
    np.testing.assert_allclose(f["lifecycle"], 1)  # active
    np.testing.assert_allclose(f["user_purchases"], 2)
    np.testing.assert_allclose(f["scene"], SCENE_CODES["product_page"])
    np.testing.assert_allclose(f["session_items"], 2)
    np.testing.assert_allclose(f["same_category"], [0, 0, 0, 1])  # the latest item is a hat
    np.testing.assert_allclose(f["since_last_event_s"], 60.0)


def test_features_of_an_anonymous_shopper_and_an_empty_pool() -> None:
    bundle, catalog = _tiny()
    builder = FeatureBuilder(bundle, catalog, _Profiles({}), ["covisit"])
    request = RecommendRequest(session_id="s")
    cands = {"covisit": Candidates(np.array([2]), np.array([3.0]))}
    _, x = builder.build(cands, Shopper(Context(now=T0)), request, {"covisit": 1.0})
    f = dict(zip(builder.columns, x[0].tolist(), strict=True))
    assert f["aff_category"] == 0.0 and math.isnan(f["lifecycle"])
    assert math.isnan(f["since_last_event_s"]) and f["session_items"] == 0
    pool, empty = builder.build({}, Shopper(Context(now=T0)), request, {})
    assert pool.size == 0 and empty.shape == (0, len(builder.columns))


def test_new_catalog_items_read_as_unknown_until_the_arrays_are_rebuilt() -> None:
    bundle, catalog = _tiny()
    builder = FeatureBuilder(bundle, catalog, None, ["popular"], refresh_s=3600.0)
    catalog.upsert([Item(item_id="E", category=["Hats"], price=7.0, stock=9)])
    e = bundle.items.index("E")
    request = RecommendRequest(session_id="s")
    cands = {"popular": Candidates(np.array([e]), np.array([1.0]))}
    price = builder.columns.index("price_log")
    stock = builder.columns.index("stock")
    _, before = builder.build(cands, Shopper(Context(now=T0)), request, {})
    assert math.isnan(before[0, price]) and math.isnan(before[0, stock])
    builder.refresh()
    _, after = builder.build(cands, Shopper(Context(now=T0)), request, {})
    assert after[0, price] == pytest.approx(math.log1p(7.0)) and after[0, stock] == 2.0


# -- the model --------------------------------------------------------------------


def _synthetic_groups(
    n_groups: int, rng: np.random.Generator, size: int = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random candidate features where only ``aff_brand`` decides relevance."""
    cols = feature_columns()
    x = rng.uniform(size=(n_groups * size, len(cols)))
    brand = cols.index("aff_brand")
    y = (x[:, brand] > 0.85).astype(np.int64) * rng.integers(1, 4, x.shape[0])
    return x, y, np.full(n_groups, size, np.int64)


def _fitted(rng: np.random.Generator) -> LearnedRanker:
    x, y, g = _synthetic_groups(100, rng)
    vx, vy, vg = _synthetic_groups(40, rng)
    ranker = LearnedRanker(n_estimators=40, min_child_samples=10)
    return ranker.fit_groups(x, y, g, columns=feature_columns(), valid=(vx, vy, vg))


def test_ranker_learns_the_deciding_feature_and_beats_the_blend() -> None:
    rng = np.random.default_rng(0)
    ranker = _fitted(rng)
    x, y, g = _synthetic_groups(100, rng)
    test = RD.RankingGroups(x, y, g, (y.reshape(100, -1) > 0).sum(axis=1), ["home"] * 100)
    keep = test.n_relevant > 0
    test = RD.RankingGroups(
        x.reshape(100, 30, -1)[keep].reshape(-1, x.shape[1]),
        y.reshape(100, 30)[keep].ravel(),
        g[keep],
        test.n_relevant[keep],
        ["home"] * int(keep.sum()),
    )
    metrics = RD.evaluate(test, feature_columns(), ["covisit", "popular"], ranker)
    assert metrics["ranker"]["ndcg@10"] > 0.95
    assert metrics["ranker"]["ndcg@10"] > metrics["blend"]["ndcg@10"] + 0.4
    assert next(iter(ranker.importance())) == "aff_brand"
    assert RD.summary(metrics)["gain_vs_blend"] > 1.0


def test_save_load_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ranker = _fitted(rng)
    x, _, _ = _synthetic_groups(5, rng)
    ranker.save(tmp_path / "ranker")
    assert sorted(p.name for p in (tmp_path / "ranker").iterdir()) == [
        "meta.json",
        "model.txt",
    ]
    loaded = LearnedRanker.load(tmp_path / "ranker")
    np.testing.assert_array_equal(loaded.predict(x), ranker.predict(x))
    assert loaded.columns_ == ranker.columns_ and loaded.scenes_ == ["home"]
    (tmp_path / "ranker" / "model.txt").write_text("not a model")
    with pytest.raises(ModelError):
        LearnedRanker.load(tmp_path / "ranker")


def test_wrong_columns_are_refused() -> None:
    x, y, g = _synthetic_groups(3, np.random.default_rng(2))
    with pytest.raises(ModelError):
        LearnedRanker().fit_groups(x, y, g, columns=feature_columns()[::-1])


# -- training data from a log: shoppers come back to their favourite brand -----------


def _brand_shop(users: int = 64, visits: int = 6) -> tuple[list[Event], list[Item]]:
    """Items of 8 brands (categories unrelated to brand); each visit of a shopper is
    three random views then one view of an item of the shopper's favourite brand."""
    rng = np.random.default_rng(7)
    items = [
        Item(item_id=f"i{b}-{j}", brand=f"b{b}", category=[f"c{j % 3}"], price=10.0 + j)
        for b in range(8)
        for j in range(8)
    ]
    events: list[Event] = []
    for u in range(users):
        fav = u % 8
        for v in range(visits):
            t = T0 + v * 2 * DAY + u * 600
            picks = [items[int(rng.integers(64))].item_id for _ in range(3)]
            picks.append(f"i{fav}-{int(rng.integers(8))}")
            events += [
                Event(type="view", user_id=f"u{u}", item_id=item, timestamp=t + 60 * k)
                for k, item in enumerate(picks)
            ]
    return events, items


def _frame(events: list[Event]) -> pl.DataFrame:
    store = open_store("memory://")
    store.events.append(events)
    return store.events.frame()


def test_dataset_protocol_and_learning_the_favourite_brand() -> None:
    events, items = _brand_shop(users=40)
    split = RD.SplitConfig(fractions=(0.4, 0.65, 0.8), cuts_per_subject=3)
    data = RD.build_dataset(_frame(events), items, [], Settings(), split)
    assert data.columns == feature_columns()
    train, valid, test = (data.windows[w] for w in RD.WINDOWS)
    assert len(train) > 50 and len(valid) > 10 and len(test) > 10
    b0, b1, b2 = data.stats["bounds_ts"]
    assert b0 < b1 < b2
    for g in (train, valid, test):
        assert g.x.shape == (int(g.sizes.sum()), len(data.columns))
        assert set(g.y.tolist()) <= {0, 1}  # views only
        assert (g.n_relevant >= 1).all() and set(g.scenes) <= {"home", "product_page"}
    ranker = RD.train_ranker(data)
    metrics = RD.evaluate(test, data.columns, data.sources, ranker)
    assert metrics["ranker"]["ndcg@10"] > 2 * metrics["blend"]["ndcg@10"]
    assert metrics["ranker"]["ndcg@10"] > max(metrics[s]["ndcg@10"] for s in data.sources)


# -- the pipeline stage ---------------------------------------------------------------


def _pipeline(ranker: LearnedRanker | None) -> tuple[RecommendPipeline, Any]:
    events, items = _brand_shop(users=16, visits=3)
    store = open_store("memory://")
    store.items.upsert(items)
    store.events.append(events)
    bundle = train_bundle(store, Settings().recommend, ranker=False)
    assert "ranker" not in bundle.models
    if ranker is not None:
        bundle.models["ranker"] = ranker
    catalog = CatalogIndex(bundle.items)
    catalog.upsert(items)

    def history(subject: str, limit: int) -> list[Event]:
        rows = store.events.scan(subject=subject, limit=limit, newest_first=True)
        return [e for _, e in reversed(rows)]

    sessions = MemorySessions(history)
    merch = MerchandisingSettings(diversity=0.0)
    return RecommendPipeline(bundle, catalog, sessions, merch, profiles=None), bundle


class _Reversed(LearnedRanker):
    """Scores = minus the blend: the reverse of the hand-tuned order."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(-x[:, self.columns_.index("blend")], dtype=np.float64)


class _Broken(LearnedRanker):
    def predict(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


def _as(cls: type[LearnedRanker]) -> LearnedRanker:
    model = cls()
    model.columns_, model.sources_ = feature_columns(), list(RD.SOURCES)
    model.scenes_ = ["home"]
    return model


def test_pipeline_uses_the_ranker_and_degrades_to_the_blend() -> None:
    request = RecommendRequest(user_id="u3", k=5)
    blend_pipe, _ = _pipeline(None)
    assert blend_pipe.ranker is None
    plain = blend_pipe.run(request, T0 + 10 * DAY)
    ranked_pipe, _ = _pipeline(_as(_Reversed))
    assert ranked_pipe.ranker is not None
    rec = ranked_pipe.run(request, T0 + 10 * DAY)
    assert rec.degraded == [] and plain.degraded == []
    scores = [i.score for i in rec.items]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 0.5 for s in scores)
    assert [i.item_id for i in rec.items] != [i.item_id for i in plain.items]
    # the scene it was not trained on keeps the blend
    other = ranked_pipe.run(RecommendRequest(user_id="u3", k=5, scene="search"), T0 + 10 * DAY)
    assert other.degraded == [] and max(i.score for i in other.items) > 0.5

    broken_pipe, _ = _pipeline(_as(_Broken))
    fallen = broken_pipe.run(request, T0 + 10 * DAY)
    assert fallen.degraded == ["ranker"]
    assert [(i.item_id, i.source) for i in fallen.items] == [
        (i.item_id, i.source) for i in plain.items
    ]


def test_bundle_round_trip_with_a_ranker(tmp_path: Path) -> None:
    ranker = _fitted(np.random.default_rng(3))
    pipe, bundle = _pipeline(ranker)
    path = save_bundle(bundle, tmp_path)
    loaded = load_bundle(path)
    again = loaded.models["ranker"]
    assert isinstance(again, LearnedRanker)
    x, _, _ = _synthetic_groups(2, np.random.default_rng(4))
    np.testing.assert_array_equal(again.predict(x), ranker.predict(x))
    assert SCENES["home"]  # the scene the synthetic ranker serves
    request = RecommendRequest(user_id="u1", k=4)
    assert pipe.run(request, T0 + 10 * DAY).degraded == []


def test_train_bundle_trains_a_ranker_only_when_asked_or_the_log_is_large() -> None:
    events, items = _brand_shop(users=24, visits=4)
    store = open_store("memory://")
    store.items.upsert(items)
    store.events.append(events)
    auto = train_bundle(store, Settings().recommend)
    assert "ranker" not in auto.models
    assert "fewer than" in auto.stats["ranker"]["skipped"]
    frame = store.events.frame()
    split = RD.SplitConfig(max_groups=(60, 20, 20), cuts_per_subject=3)
    info = RD.attach_ranker(auto, frame, items, [], Settings(), required=True, split=split)
    assert info["kept"] is True and isinstance(auto.models["ranker"], LearnedRanker)
    assert set(info["test_ndcg@10"]) >= {"blend", "ranker", "covisit"}


def test_cli_train_with_the_ranker_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from shopcast.cli import app

    events, items = _brand_shop(users=24, visits=4)
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(db)
    store.items.upsert(items)
    store.events.append(events)
    store.close()
    monkeypatch.setenv("SHOPCAST_MODEL_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("SHOPCAST_AUTH__ENABLED", "false")
    result = CliRunner().invoke(app, ["train", "--db", db, "--ranker"])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(next((tmp_path / "m").glob("v*")))
    assert isinstance(bundle.models["ranker"], LearnedRanker)
