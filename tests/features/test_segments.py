"""Feature vectors and k-means segments on SYNTHETIC profiles."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from shopcast.config import Settings
from shopcast.domain import Event, Item, User
from shopcast.errors import NotFoundError
from shopcast.features.profile_index import ProfileIndex
from shopcast.features.profiles import UserProfile
from shopcast.features.segments import FeatureSpace, Segmenter

DAY = 86_400.0
NOW = 1_767_225_600.0 + 60 * DAY
ITEMS = [
    Item(item_id="cheap", category="Home > Kitchen", price=5),
    Item(item_id="luxe", category="Fashion > Bags", price=900, brand="Maison"),
]


def shop(n_big: int = 12, n_browsers: int = 12) -> ProfileIndex:
    """SYNTHETIC: big spenders buy bags weekly; browsers view the kitchen once."""
    users = [User(user_id=f"big{i:02d}", age=45, gender="f") for i in range(n_big)]
    users += [User(user_id=f"look{i:02d}", age=22, gender="m") for i in range(n_browsers)]
    events = [
        Event(type="purchase", user_id=f"big{i:02d}", item_id="luxe", timestamp=NOW - k * 7 * DAY)
        for i in range(n_big)
        for k in range(1, 6)
    ]
    events += [
        Event(type="view", user_id=f"look{i:02d}", item_id="cheap", timestamp=NOW - 50 * DAY)
        for i in range(n_browsers)
    ]
    index = ProfileIndex(Settings(profiles={"segments": 2}), clock=lambda: NOW)
    index.upsert_items(ITEMS)
    index.upsert_users(users)
    index.observe(events)
    index.refit()
    return index


def profiles(index: ProfileIndex, prefix: str = "") -> list[UserProfile]:
    return [index.profile(u) for u in index.user_ids() if u.startswith(prefix)]


def test_columns_are_documented_and_one_hot() -> None:
    index = shop()
    space = FeatureSpace(n_top=3, n_categories=2).fit(profiles(index))
    cols = space.columns
    bands = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")
    assert cols[:8] == [f"age_band={b}" for b in bands]
    assert "gender=f" in cols and "occupation=unknown" in cols and "region=other" in cols
    assert cols[-2:] == ["cat=Fashion", "cat=Home"]
    raw = space.raw([index.profile("big00")])[0]
    at = {c: raw[i] for i, c in enumerate(cols)}
    assert at["age_band=45-54"] == 1 and at["age_band=18-24"] == 0 and at["gender=f"] == 1
    assert at["log_frequency"] == pytest.approx(np.log1p(5))
    assert at["log_monetary"] == pytest.approx(np.log1p(4500))
    assert at["log_recency"] == pytest.approx(np.log1p(7))
    assert at["cat=Fashion"] == 1 and at["cat=Home"] == 0
    browser = space.raw([index.profile("look00")])[0]
    assert np.isnan(browser[cols.index("log_recency")])  # no purchase: missing, not 0


def test_normalization_is_fitted_on_training_profiles_only(tmp_path: Path) -> None:
    index = shop()
    train, test = profiles(index, "big"), profiles(index, "look")
    space = FeatureSpace().fit(train)
    raw_train = space.raw(train)
    assert space.mean_ is not None and space.std_ is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        train_mean = np.nan_to_num(np.nanmean(raw_train, axis=0))
    np.testing.assert_allclose(space.mean_, train_mean)
    scaled = space.transform(test)
    raw_test = space.raw(test)
    expected = (np.where(np.isnan(raw_test), space.mean_, raw_test) - space.mean_) / space.std_
    np.testing.assert_allclose(scaled, expected)
    refit_on_test = FeatureSpace().fit(test)
    assert not np.allclose(refit_on_test.mean_, space.mean_)  # the test set was not used
    # persisted as npz + json, loaded without pickle
    space.save(tmp_path)
    assert json.loads((tmp_path / "features.json").read_text())["columns"] == space.columns
    with np.load(tmp_path / "features.npz", allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["mean", "std"]
    again = FeatureSpace.load(tmp_path)
    np.testing.assert_array_equal(again.transform(test), scaled)


def test_segments_separate_the_two_groups_and_are_named_from_centroids() -> None:
    index = shop()
    summaries = index.segments()
    assert [s.size for s in summaries] == [12, 12]
    by_name = {s.name: s for s in summaries}
    members = {s.name: index.segment_users(s.id, limit=100)[1] for s in summaries}
    spenders = next(n for n in by_name if "big spenders" in by_name[n].description)
    assert all(u.startswith("big") for u in members[spenders])
    assert "buyers" in spenders.lower() or "spenders" in spenders.lower()
    total, page = index.segment_users(0, limit=5, offset=10)
    assert total == 12 and len(page) == 2
    with pytest.raises(NotFoundError, match="segment 7"):
        index.segment_users(7, limit=1)


def test_segmenter_is_deterministic_with_a_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = np.vstack([rng.normal(c, 0.3, size=(30, 3)) for c in (-2.0, 0.0, 2.0)])
    cols = ["log_monetary", "log_events", "night_share"]
    one = Segmenter(k=3, seed=5).fit(rows, cols)
    two = Segmenter(k=3, seed=5).fit(rows, cols)
    np.testing.assert_array_equal(one.assign(rows), two.assign(rows))
    assert one.names_ == two.names_ and one.sizes_ == [30, 30, 30]
    assert set(one.assign(rows[:30]).tolist()) == {one.assign(rows[:1])[0]}
    assert any(n.startswith("Big spenders") for n in one.names_)
    assert any(n.startswith("Small spenders") for n in one.names_)
    one.save(tmp_path)
    again = Segmenter.load(tmp_path)
    np.testing.assert_array_equal(again.assign(rows), one.assign(rows))
    assert again.descriptions_ == one.descriptions_


def test_a_new_user_joins_the_nearest_segment() -> None:
    index = shop()
    spenders = index.card("big00").segment
    assert spenders is not None
    index.observe(
        [
            Event(type="purchase", user_id="newbie", item_id="luxe", timestamp=NOW - k * DAY)
            for k in range(1, 6)
        ]
    )
    card = index.card("newbie")
    assert card.segment == spenders
    assert "newbie" in index.segment_users(spenders.id, limit=100)[1]
