"""CoVisitation with hand-computed values on SYNTHETIC events."""

from __future__ import annotations

from math import sqrt
from pathlib import Path

import numpy as np
import pytest

from shopcast.errors import ConfigError
from shopcast.models import Context, CoVisitation, Vocabulary
from shopcast.models import covisit as covisit_module

from .synthetic import DAY, T0, ev, interactions

A, B, C, D = 0, 1, 2, 3


def ctx(*recent: int) -> Context:
    return Context(now=T0, recent_items=np.array(recent, dtype=np.int64))


def three_events(window: int = 2) -> CoVisitation:
    """u1: view A, add B to cart 10 days later, buy C 10 days after that; half-life 10 days."""
    data = interactions(
        [
            ev("u1", "A", "view", ts=T0 - 20 * DAY),
            ev("u1", "B", "add_to_cart", ts=T0 - 10 * DAY),
            ev("u1", "C", "purchase", ts=T0),
            ev("u2", "D", "view", ts=T0),
        ]
    )
    return CoVisitation(window=window, half_life_days=10).fit(data)


def test_pair_weights_are_exact() -> None:
    m = three_events().matrix_.toarray()
    ab, bc, ac = sqrt(1 * 3) * 0.5, sqrt(3 * 5), sqrt(1 * 5)
    expected = [[0.0, ab, ac, 0.0], [ab, 0.0, bc, 0.0], [ac, bc, 0.0, 0.0], [0.0] * 4]
    np.testing.assert_allclose(m, expected, rtol=1e-6)
    assert m.dtype == np.float32
    assert three_events(window=1).matrix_[A, C] == 0


def test_zero_weight_events_self_pairs_and_other_subjects_are_skipped() -> None:
    rows = [
        ev("u1", "A"),
        ev("u1", "X", "impression"),
        ev("u2", "C"),
        ev("u1", "A"),
        ev("u1", "B"),
    ]
    m = CoVisitation(window=1).fit(interactions(rows)).matrix_
    assert m.nnz == 2 and m[A, 3] == m[3, A] == 1.0  # only A-B (B has index 3)
    # Window 2 pairs B with both A views.
    assert CoVisitation(window=2).fit(interactions(rows)).matrix_[A, 3] == 2.0


def test_rows_keep_max_neighbors_ties_to_lower_index() -> None:
    rows = [ev("u1", "A"), ev("u1", "B"), ev("u2", "A"), ev("u2", "B")]
    rows += [ev("u3", "A"), ev("u3", "C"), ev("u4", "A"), ev("u4", "D")]
    m = CoVisitation(max_neighbors=2).fit(interactions(rows)).matrix_.toarray()
    np.testing.assert_array_equal(m[A], [0, 2, 1, 0])
    assert m[D, A] == 1  # D's own row is short enough to keep A


def test_score_is_decayed_mean_of_row_normalized_weights() -> None:
    model = three_events()
    model.session_decay = 0.5
    candidates = np.array([A, B, C, D])
    expected = [sqrt(3) / 2 / sqrt(15) / 1.5, 0.5 * (sqrt(3) / 2) / sqrt(5) / 1.5, 1.0, 0.0]
    np.testing.assert_allclose(model.score(ctx(A, B), candidates), expected)
    # Unknown context items keep their rank but neither contribute nor dilute the mean.
    a, b = sqrt(3) / 2 / sqrt(15), 0.25 * (sqrt(3) / 2) / sqrt(5)
    np.testing.assert_allclose(
        model.score(ctx(99, A, -1, B), candidates), [a / 1.25, b / 1.25, 1.0, 0.0]
    )
    np.testing.assert_allclose(model.score(ctx(A), candidates), [0, sqrt(3) / 2 / sqrt(5), 1, 0])
    assert model.score(ctx(), candidates).tolist() == [0.0] * 4


def test_contributors_pick_the_strongest_recent_item() -> None:
    model = three_events()
    candidates = np.array([C, A, B, D, C])
    assert model.contributors(ctx(A, B), candidates).tolist() == [B, B, A, -1, B]
    assert model.contributors(ctx(), candidates).tolist() == [-1] * 5


def test_neighbors_best_first_and_consistent_with_score() -> None:
    model = three_events()
    items, weights = model.neighbors(C, 5)
    assert items.tolist() == [B, A]
    np.testing.assert_allclose(weights, [1.0, sqrt(5) / sqrt(15)], rtol=1e-6)
    np.testing.assert_allclose(model.score(ctx(C), items), weights)
    assert model.neighbors(C, 1)[0].tolist() == [B]
    assert model.neighbors(D, 5)[0].tolist() == []
    assert model.neighbors(42, 5)[0].tolist() == []


def test_neighbor_ties_go_to_lower_index() -> None:
    rows = [ev("u1", "A"), ev("u1", "B"), ev("u2", "A"), ev("u2", "C")]
    assert CoVisitation().fit(interactions(rows)).neighbors(A, 2)[0].tolist() == [B, C]


def test_learn_pairs_within_window_and_subject() -> None:
    items, users = Vocabulary(), Vocabulary()
    model = CoVisitation(window=1).fit(interactions([ev("u1", "A", ts=T0)], users, items))
    new = [ev("u2", "C"), ev("u3", "Z"), ev("u2", "X", "impression"), ev("u2", "D"), ev("u2", "D")]
    model.learn(interactions([*new, ev("u2", "B")], users, items))
    c, z, d, b = items.indices(["C", "Z", "D", "B"])
    assert model.delta_ == {c: {d: 1.0}, d: {c: 1.0, b: 1.0}, b: {d: 1.0}}
    # The ring carries over to the next batch; u1's training events are not in it.
    model.learn(interactions([ev("u2", "Z", ts=T0), ev("u1", "B", ts=T0)], users, items))
    assert model.delta_[z] == {b: 1.0} and model.delta_[b] == {d: 1.0, z: 1.0}
    assert model.neighbors(z, 5)[0].tolist() == [b]


def test_learn_forgets_the_least_recent_subject() -> None:
    items, users = Vocabulary(), Vocabulary()
    model = CoVisitation(max_live_subjects=1).fit(interactions([], users, items))
    model.learn(interactions([ev("u1", "A"), ev("u2", "B"), ev("u1", "C")], users, items))
    assert model.delta_ == {} and list(model.recent_) == [users.index("u:u1")]


def test_merge_keeps_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    items, users = Vocabulary(), Vocabulary()
    fitted = interactions([ev("u1", "A"), ev("u1", "B"), ev("u1", "C")], users, items)
    online = interactions([ev("u2", "A"), ev("u2", "C"), ev("u2", "D")], users, items)
    kept = CoVisitation().fit(fitted)
    kept.learn(online)
    monkeypatch.setattr(covisit_module, "MERGE_MIN_ENTRIES", 0)
    merged = CoVisitation().fit(fitted)
    merged.learn(online)
    assert kept.delta_ and not merged.delta_
    assert merged.matrix_.shape == (4, 4)
    candidates = np.arange(5)
    for context in (ctx(A), ctx(D), ctx(A, D)):
        np.testing.assert_allclose(
            merged.score(context, candidates), kept.score(context, candidates), rtol=1e-6
        )


def test_far_future_events_rebase_t_ref() -> None:
    items, users = Vocabulary(), Vocabulary()
    model = CoVisitation(half_life_days=1).fit(
        interactions([ev("u1", "A"), ev("u1", "B")], users, items)
    )
    later = T0 + 20 * DAY
    model.learn(interactions([ev("u1", "C", ts=later), ev("u1", "A", ts=later)], users, items))
    assert model.t_ref_ == later
    assert model.matrix_[A, B] == pytest.approx(2.0**-20)
    assert model.neighbors(A, 5)[0].tolist() == [2, B]


def test_save_merges_online_pairs(tmp_path: Path) -> None:
    items, users = Vocabulary(), Vocabulary()
    model = CoVisitation().fit(interactions([ev("u1", "A"), ev("u1", "B")], users, items))
    model.learn(interactions([ev("u2", "A"), ev("u2", "C")], users, items))
    model.save(tmp_path)
    assert model.delta_ == {}
    loaded = CoVisitation.load(tmp_path, items)
    assert loaded.matrix_[A, 2] == 1.0 and loaded.matrix_.shape == (3, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"max_neighbors": 0},
        {"max_live_subjects": 0},
        {"session_decay": 0.0},
        {"session_decay": 1.5},
        {"half_life_days": -1.0},
    ],
)
def test_bad_hyperparameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        CoVisitation(**kwargs)  # type: ignore[arg-type]


def test_pairs_decayed_to_nothing_are_not_stored() -> None:
    rows = [ev("u1", "A", ts=0.0), ev("u1", "B", ts=0.0), ev("u2", "A"), ev("u2", "C")]
    m = CoVisitation(half_life_days=1).fit(interactions(rows)).matrix_
    assert m.nnz == 2 and m[A, C] == 1.0
