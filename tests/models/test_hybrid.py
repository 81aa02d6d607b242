"""The hybrid deep model beyond the contract: side features, cold start, rating quality.

All data here is SYNTHETIC: small shops whose users' tastes follow a demographic token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopcast.domain import EventType, Item, User
from shopcast.errors import ConfigError
from shopcast.models import Context, Interactions, Vocabulary
from shopcast.models._base import EVENT_CODES
from shopcast.models.hybrid import (
    EpochReport,
    FeatureTable,
    HybridRanker,
    HybridRating,
    SideFeatures,
)

T0 = 1_700_000_000.0
DAY = 86_400.0
N_ITEMS = 20  # items 0-9 are "books", 10-19 "games"
FAST = {"epochs": 30, "hidden": 32, "dim": 8, "batch_size": 256, "patience": 30, "seed": 0}
FAST_RANK = FAST | {"batch_size": 32}


def genre_of(item: int) -> str:
    return "books" if item < N_ITEMS // 2 else "games"


def side(users: dict[str, str], items: range = range(N_ITEMS)) -> SideFeatures:
    """Users with a gender token, items with a genre token (and a price)."""
    return SideFeatures(
        users=FeatureTable(tokens={u: [f"gender:{g}"] for u, g in users.items()}),
        items=FeatureTable(
            tokens={str(i): [f"genre:{genre_of(i)}"] for i in items},
            numeric={str(i): [float(i % 5)] for i in items},
            numeric_names=("price",),
        ),
    )


def taste_ratings(n_users: int, seed: int = 0) -> tuple[Interactions, dict[str, str], np.ndarray]:
    """Women (``F``) rate books 5 and games 1, men the reverse, plus noise; each user
    rates 8 random items. Returns the interactions, the genders and the true means."""
    rng = np.random.default_rng(seed)
    genders = {f"p{u}": ("F" if u % 2 == 0 else "M") for u in range(n_users)}
    users, items = Vocabulary(), Vocabulary(str(i) for i in range(N_ITEMS))
    rows_u, rows_i, values = [], [], []
    for u, g in genders.items():
        for i in rng.choice(N_ITEMS, 8, replace=False).tolist():
            likes = (genre_of(i) == "books") == (g == "F")
            rows_u.append(f"u:{u}")
            rows_i.append(i)
            values.append(4.5 if likes else 1.5)
    value = np.clip(np.array(values) + rng.normal(0, 0.5, len(values)), 1, 5).round()
    n = len(values)
    data = Interactions(
        users=users,
        items=items,
        user=users.indices(rows_u, add=True),
        item=np.array(rows_i, dtype=np.int64),
        type=np.full(n, EVENT_CODES[EventType.RATE], dtype=np.int64),
        ts=T0 + np.arange(n, dtype=np.float64),
        value=value.astype(np.float64),
    )
    return data, genders, np.array(values)


def taste_purchases(n_users: int, seed: int = 0) -> tuple[Interactions, dict[str, str]]:
    """Women buy books, men games: three purchases each, a day apart."""
    rng = np.random.default_rng(seed)
    genders = {f"p{u}": ("F" if u % 2 == 0 else "M") for u in range(n_users)}
    users, items = Vocabulary(), Vocabulary(str(i) for i in range(N_ITEMS))
    rows_u, rows_i, ts = [], [], []
    half = N_ITEMS // 2
    for k, (u, g) in enumerate(genders.items()):
        base = 0 if g == "F" else half
        for j, i in enumerate(rng.choice(half, 3, replace=False).tolist()):
            rows_u.append(f"u:{u}")
            rows_i.append(base + i)
            ts.append(T0 + k * 60 + j * DAY)
    order = np.argsort(ts, kind="stable")
    n = len(ts)
    data = Interactions(
        users=users,
        items=items,
        user=users.indices([rows_u[o] for o in order], add=True),
        item=np.array(rows_i, dtype=np.int64)[order],
        type=np.full(n, EVENT_CODES[EventType.PURCHASE], dtype=np.int64),
        ts=np.array(ts)[order],
        value=np.full(n, np.nan),
    )
    return data, genders


@pytest.fixture(scope="module")
def rating_model() -> tuple[HybridRating, Interactions, dict[str, str]]:
    data, genders, _ = taste_ratings(120)
    genders |= {"newF": "F", "newM": "M"}  # known only by their features
    model = HybridRating(**FAST, holdout=0.0).fit(data, side=side(genders))
    return model, data, genders


def test_rating_head_beats_the_global_mean_on_held_out_ratings() -> None:
    data, genders, _ = taste_ratings(160, seed=1)
    test, _, truth = taste_ratings(40, seed=2)  # other users (p0..p39 exist in both)
    model = HybridRating(**FAST).fit(data, side=side(genders))
    user = data.users.indices([test.users.id(u) for u in test.user.tolist()])
    pred = model.predict(user, test.item)
    rmse = float(np.sqrt(np.mean((pred - test.value) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((data.value.mean() - test.value) ** 2)))
    assert rmse < 0.6 * mean_rmse
    assert np.corrcoef(pred, truth)[0, 1] > 0.8


def test_cold_start_user_is_scored_from_demographics(
    rating_model: tuple[HybridRating, Interactions, dict[str, str]],
) -> None:
    model, data, _ = rating_model
    assert "u:newF" not in data.users  # never seen in training
    books, games = np.arange(N_ITEMS // 2), np.arange(N_ITEMS // 2, N_ITEMS)
    woman = model.score(Context(now=T0, user_id="newF"), np.arange(N_ITEMS))
    man = model.score(Context(now=T0, user_id="newM"), np.arange(N_ITEMS))
    nobody = model.score(Context(now=T0, user_id="stranger"), np.arange(N_ITEMS))
    assert woman[books].mean() > woman[games].mean() + 1.0
    assert man[games].mean() > man[books].mean() + 1.0
    # Without features the user is the unknown row: between the two, and the same for all.
    np.testing.assert_array_equal(nobody, model.score(Context(now=T0), np.arange(N_ITEMS)))
    assert not np.allclose(nobody, woman) and not np.allclose(nobody, man)


def test_rating_save_load_keeps_cold_start_scores(
    rating_model: tuple[HybridRating, Interactions, dict[str, str]], tmp_path: Path
) -> None:
    model, data, _ = rating_model
    model.save(tmp_path / "m")
    loaded = HybridRating.load(tmp_path / "m", data.items)
    for user_id in ("newF", "newM", "p3", None):
        context = Context(now=T0, user_id=user_id)
        np.testing.assert_array_equal(
            model.score(context, np.arange(N_ITEMS)), loaded.score(context, np.arange(N_ITEMS))
        )
    users = np.arange(len(data.users))
    np.testing.assert_array_equal(
        model.predict(users, users % N_ITEMS), loaded.predict(users, users % N_ITEMS)
    )
    assert loaded.history_ == model.history_


def test_ensemble_averages_its_members(tmp_path: Path) -> None:
    data, genders, _ = taste_ratings(60)
    params = FAST | {"epochs": 5, "holdout": 0.0}
    pair = HybridRating(**params, ensemble=2).fit(data, side=side(genders))
    first = HybridRating(**params).fit(data, side=side(genders))
    second = HybridRating(**params | {"seed": 1}).fit(data, side=side(genders))
    everything = np.arange(N_ITEMS)
    for user_id in ("p0", "p1", "p7", None):  # r̂ before clipping
        context = Context(now=T0, user_id=user_id)
        a, b = first.score(context, everything), second.score(context, everything)
        np.testing.assert_allclose(pair.score(context, everything), (a + b) / 2, atol=1e-5)
        assert not np.allclose(a, b)
    users, items = np.arange(len(data.users)), np.arange(len(data.users)) % N_ITEMS
    pair.save(tmp_path / "m")
    loaded = HybridRating.load(tmp_path / "m", data.items)
    np.testing.assert_array_equal(loaded.predict(users, items), pair.predict(users, items))


def test_ranker_new_user_and_new_item_from_features(tmp_path: Path) -> None:
    data, genders = taste_purchases(80)
    genders |= {"newF": "F", "newM": "M"}
    features = side(genders, range(N_ITEMS + 2))  # two items with no purchase yet
    model = HybridRanker(**FAST_RANK, holdout=0.0).fit(data, side=features)
    books, games = np.arange(N_ITEMS // 2), np.arange(N_ITEMS // 2, N_ITEMS)
    woman = model.score(Context(now=T0 + 9 * DAY, user_id="newF"), np.arange(N_ITEMS))
    man = model.score(Context(now=T0 + 9 * DAY, user_id="newM"), np.arange(N_ITEMS))
    assert woman[books].sum() > 2 * woman[games].sum()
    assert man[games].sum() > 2 * man[books].sum()
    # A new game arrives in the catalog (its features were known at fit): it is scorable,
    # and more so for gamers; an item without features stays at 0.
    new_game = data.items.add(str(N_ITEMS))  # genre_of(20) == "games"
    unknown = data.items.add("no-features")
    candidates = np.array([new_game, unknown])
    for_woman = model.score(Context(now=T0, user_id="newF"), candidates)
    for_man = model.score(Context(now=T0, user_id="newM"), candidates)
    assert for_woman[1] == 0.0 and for_man[1] == 0.0
    assert for_man[0] > 0.0 and for_woman[0] > 0.0
    assert for_man[0] > 2 * for_woman[0]
    model.save(tmp_path / "m")
    loaded = HybridRanker.load(tmp_path / "m", data.items)
    np.testing.assert_array_equal(
        loaded.score(Context(now=T0, user_id="newM"), candidates), for_man
    )


def test_ranker_recent_items_shape_an_anonymous_context() -> None:
    data, _ = taste_purchases(80)
    model = HybridRanker(**FAST_RANK, holdout=0.0).fit(data)
    books, games = np.arange(N_ITEMS // 2), np.arange(N_ITEMS // 2, N_ITEMS)
    reader = Context(now=T0, session_id="anon", recent_items=np.array([0, 1, 2]))
    gamer = Context(now=T0, session_id="anon", recent_items=np.array([10, 11, 12]))
    s_reader = model.score(reader, np.arange(N_ITEMS))
    s_gamer = model.score(gamer, np.arange(N_ITEMS))
    assert s_reader[books].sum() > s_gamer[books].sum()
    assert s_gamer[games].sum() > s_reader[games].sum()
    np.testing.assert_allclose(  # float32 towers: a batch of 2 and 1 round differently
        model.score_all([reader, gamer]), np.stack([s_reader, s_gamer]), rtol=1e-5
    )


def test_add_features_makes_later_users_and_items_scorable() -> None:
    data, genders = taste_purchases(60)
    model = HybridRanker(**FAST_RANK, holdout=0.0).fit(data, side=side(genders))
    item = data.items.add("late-game")
    context = Context(now=T0, user_id="lateM")
    before = model.score(context, np.array([item]))
    assert before[0] == 0.0
    model.add_features(
        SideFeatures(
            users=FeatureTable(tokens={"lateM": ["gender:M"]}),
            items=FeatureTable(tokens={"late-game": ["genre:games"]}),
        )
    )
    after = model.score(context, np.arange(N_ITEMS + 1))
    assert after[item] > 0.0
    assert after[N_ITEMS // 2 : N_ITEMS].sum() > after[: N_ITEMS // 2].sum()


def test_holdout_early_stopping_progress_and_timing() -> None:
    data, genders, _ = taste_ratings(60)
    seen: list[EpochReport] = []
    model = HybridRating(**{**FAST, "epochs": 6, "patience": 2}, holdout=0.2, refit=True)
    model.fit(data, side=side(genders), progress=seen.append)
    fitted = [r for r in seen if not r.refit]
    refitted = [r for r in seen if r.refit]
    assert fitted and all(np.isfinite(r.val) for r in fitted)
    assert len(refitted) == model.best_epoch_ and all(np.isnan(r.val) for r in refitted)
    assert model.best_val_ == min(r.val for r in fitted)
    assert seen == model.history_
    assert model.fit_seconds_ > 0 and model.peak_rss_mb_ > 0


def test_side_features_from_catalog_records() -> None:
    items = [
        Item(item_id="m1", title="Heat", category=["Film", "Crime"], price=9.5,
             attributes={"genres": ["Action", "Crime"]}),
        Item(item_id="m2", brand=" Acme ", description="A red kettle"),
    ]  # fmt: skip
    users = [User(user_id="7", age=31, gender="F", occupation="writer", region="85711")]
    sf = SideFeatures.from_records(items, users)
    assert sf.items.tokens["m1"] == ["cat:Film", "cat:Film/Crime", "genre:Action", "genre:Crime"]
    assert sf.items.tokens["m2"] == ["brand:acme"]
    assert sf.items.numeric_names == ("log_price", "year")
    assert sf.items.numeric["m1"][0] == pytest.approx(np.log1p(9.5))
    assert sf.items.text == {"m1": "Heat", "m2": "A red kettle"}
    assert sf.users.tokens["7"] == [
        "age:25-34",
        "gender:f",
        "occupation:writer",
        "region:85711",
        "zip2:85",
    ]
    assert sf.users.numeric["7"] == [31.0]


def test_bad_hyperparameters_and_tables_are_refused() -> None:
    with pytest.raises(ConfigError):
        HybridRating(edge_dropout=1.0)
    with pytest.raises(ConfigError):
        HybridRanker(negatives=-1)
    with pytest.raises(ConfigError):
        HybridRanker(dim=0)
    with pytest.raises(ConfigError, match="numeric_names"):
        FeatureTable(numeric={"a": [1.0, 2.0]}, numeric_names=("x",))
