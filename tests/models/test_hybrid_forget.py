"""``forget``: the hybrid model drops an erased user's row at once (both heads), and
erasure (``unlearn_bundle``) reaches it.

All data here is SYNTHETIC (the taste shops of ``test_hybrid``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.models.test_hybrid import (
    DAY,
    FAST,
    FAST_RANK,
    N_ITEMS,
    T0,
    side,
    taste_purchases,
    taste_ratings,
)

from shopcast.domain import Event
from shopcast.models import Context, CoVisitation, Popularity, Vocabulary
from shopcast.models.hybrid import HybridRanker, HybridRating
from shopcast.privacy.unlearn import Forgetter, unlearn_bundle
from shopcast.training.bundle import ModelBundle

ALL = np.arange(N_ITEMS)


@pytest.fixture(scope="module")
def ranker() -> tuple[HybridRanker, dict[str, str]]:
    data, genders = taste_purchases(80)
    model = HybridRanker(**FAST_RANK, holdout=0.0).fit(data, side=side(genders))
    return model, genders


def _ctx(user: str) -> Context:
    return Context(now=T0 + 9 * DAY, user_id=user)


def test_ranker_forgets_a_user_at_once_and_keeps_the_others(
    ranker: tuple[HybridRanker, dict[str, str]], tmp_path: Path
) -> None:
    model, _ = ranker
    assert isinstance(model, Forgetter)
    books, games = ALL[: N_ITEMS // 2], ALL[N_ITEMS // 2 :]
    before = model.score(_ctx("p0"), ALL)  # p0 buys books (id, gender, history)
    assert before[books].sum() > 2 * before[games].sum()
    other = model.score(_ctx("p1"), ALL)
    row = model.user_keys_.index("u:p0")
    assert model.user_trained_[row]
    assert model.forget(["u:p0", "u:nobody-here"]) == 1
    assert "u:p0" not in model.user_keys_
    assert not model.user_trained_[row]
    lo, hi = model.hist_offsets_[row], model.hist_offsets_[row + 1]
    assert hi == lo  # no behaviour left
    after = model.score(_ctx("p0"), ALL)
    np.testing.assert_allclose(after, model.score(_ctx("never-seen"), ALL))
    assert not np.allclose(after, before)
    np.testing.assert_allclose(model.score(_ctx("p1"), ALL), other)  # others unchanged
    vectors = model.query_vectors([_ctx("p0")])
    np.testing.assert_allclose(vectors, model.query_vectors([_ctx("never-seen")]))
    assert model.forget(["u:p0"]) == 0  # already gone

    model.save(tmp_path / "m")
    keys = np.load(tmp_path / "m" / "arrays.npz")["user_keys"].tolist()
    assert "u:p0" not in keys and "u:p1" in keys
    loaded = HybridRanker.load(tmp_path / "m", model._items)
    np.testing.assert_allclose(loaded.score(_ctx("p0"), ALL), after)


def test_rating_head_forgets_the_users_ratings_on_both_sides() -> None:
    data, genders, _ = taste_ratings(60)
    model = HybridRating(**FAST, holdout=0.0).fit(data, side=side(genders))
    p0 = data.users.index("u:p0")
    before = model.score(_ctx("p0"), ALL)
    assert model.user_hist_.offsets[p0 + 1] > model.user_hist_.offsets[p0]
    assert (model.item_hist_.other == p0).any()
    assert model.forget(["u:p0"]) == 1
    assert model.user_hist_.offsets[p0 + 1] == model.user_hist_.offsets[p0]
    assert not (model.item_hist_.other == p0).any()  # items no longer carry p0's ratings
    after = model.score(_ctx("p0"), ALL)
    np.testing.assert_allclose(after, model.score(_ctx("never-seen"), ALL))
    assert not np.allclose(after, before)


def test_erasure_reports_the_hybrid_model_as_forgotten(
    ranker: tuple[HybridRanker, dict[str, str]],
) -> None:
    data, genders = taste_purchases(40, seed=3)
    model = HybridRanker(**FAST_RANK | {"epochs": 5}, holdout=0.0).fit(data, side=side(genders))
    bundle = ModelBundle(
        "v1",
        data.items,
        {
            "popularity": Popularity().fit(data),
            "covisit": CoVisitation().fit(data),
            "embedding": model,
        },
    )
    mine = data.user == data.users.index("u:p2")
    rows = [
        (s + 1, Event(type="purchase", user_id="p2", item_id=data.items.id(int(i)), timestamp=t))
        for s, (i, t) in enumerate(zip(data.item[mine], data.ts[mine], strict=True))
    ]
    assert rows
    out = unlearn_bundle(bundle, rows, Vocabulary(), fitted_until=len(data), online=False)
    assert out["embedding"] == "forgotten"
    assert out["popularity"] == "unlearned"
    assert "u:p2" not in model.user_keys_
    np.testing.assert_allclose(model.score(_ctx("p2"), ALL), model.score(_ctx("never-seen"), ALL))
