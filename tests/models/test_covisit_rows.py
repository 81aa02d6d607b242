"""CoVisitation keeps the rows it reads (``_row``) and drops them whenever they change:
every read equals a fresh read of the matrix and delta (SYNTHETIC events)."""

from __future__ import annotations

import numpy as np

from shopcast.models import Context, CoVisitation, Vocabulary

from .synthetic import DAY, T0, ev, interactions


def _same_as_fresh(model: CoVisitation) -> None:
    for r in range(model.n_items_ + 1):
        cols, vals = model._row(r)
        fresh = model._read_row(r) if 0 <= r < model.n_items_ else (cols[:0], vals[:0])
        np.testing.assert_array_equal(cols, fresh[0])
        np.testing.assert_array_equal(vals, fresh[1])


def test_kept_rows_follow_learn_merge_rebase_and_unlearn() -> None:
    items, users = Vocabulary(), Vocabulary()
    base = [ev("u1", "A", ts=T0), ev("u1", "B", ts=T0 + 1), ev("u2", "A", ts=T0 + 2)]
    base.append(ev("u2", "C", ts=T0 + 3))
    model = CoVisitation(window=2).fit(interactions(base, users, items))
    a, b, c = items.indices(["A", "B", "C"])
    before = model.neighbors(a, 5)
    _same_as_fresh(model)  # every row read (and kept) once
    assert len(model._rows) == model.n_items_
    # learn: a new pair A-D and more A-B weight reach A's and B's rows at once
    new = [ev("u3", "A", ts=T0 + 5), ev("u3", "D", ts=T0 + 6), ev("u3", "B", ts=T0 + 7)]
    model.learn(interactions(new, users, items))
    d = items.index("D")
    assert d in model.neighbors(a, 5)[0].tolist()
    assert model.neighbors(a, 5)[1].tolist() != before[1].tolist()
    _same_as_fresh(model)
    score = model.score(Context(now=T0, recent_items=np.array([a])), np.array([b, c, d]))
    model._merge()  # delta folded into the matrix: rows re-read, same values
    np.testing.assert_allclose(
        model.score(Context(now=T0, recent_items=np.array([a])), np.array([b, c, d])),
        score,
        rtol=1e-6,
    )
    _same_as_fresh(model)
    model._rebase(T0 + 400 * DAY)  # weights rescaled in place
    _same_as_fresh(model)
    model.unlearn(interactions(new, users, items))
    assert d not in model.neighbors(a, 5)[0].tolist()
    _same_as_fresh(model)


def test_the_kept_rows_are_bounded() -> None:
    import shopcast.models.covisit as covisit

    items, users = Vocabulary(), Vocabulary()
    rows = [ev("u1", f"i{j}", ts=T0 + j) for j in range(30)]
    model = CoVisitation(window=3).fit(interactions(rows, users, items))
    covisit.ROW_CACHE, old = 8, covisit.ROW_CACHE
    try:
        for r in range(30):
            model._row(r)
            assert len(model._rows) <= 8
    finally:
        covisit.ROW_CACHE = old
