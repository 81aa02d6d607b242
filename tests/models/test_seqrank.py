"""The sequence-aware two-stage ranker on a SYNTHETIC shop (generated here, seeded).

The shop: three product lines of 14 items each, sold in a fixed order (item k of a line,
then k + 1, …). Each shopper buys a run of 4-7 consecutive items of one line, starting
anywhere, with an occasional stray item of another line. The next item is the one after
the last: an order-blind item-item model (EASE) sees the item before the run as much as
the one after it; the transition scores see the direction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shopcast.errors import ConfigError
from shopcast.evaluation import splits as S
from shopcast.evaluation.harness import RankingTask, evaluate_ranking, ranking_task
from shopcast.models import EASE, SequenceRanker, Vocabulary
from shopcast.models.sasrec import ItemAttributes
from shopcast.models.seqrank import FEATURES, _candidates, _fit_stage, _Params, _Seqs, _sequences

from .synthetic import T0, ev, interactions

LINES, PER_LINE = 3, 14


def item(line: int, k: int) -> str:
    return f"l{line}_{k:02d}"


def sequential_shop(seed: int = 0, users: int = 300) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, float]] = []
    for u in range(users):
        line = u % LINES
        length = int(rng.integers(4, 8))
        start = int(rng.integers(0, PER_LINE - length + 1))
        for pos, k in enumerate(range(start, start + length)):
            name = item(line, k)
            if pos < length - 2 and rng.random() < 0.1:  # a stray item, never the held-out ones
                name = item((line + 1) % LINES, int(rng.integers(0, PER_LINE)))
            rows.append((f"u{u}", name, T0 + pos * 86_400.0))
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    return S.event_frame(frame)


def attributes() -> ItemAttributes:
    return ItemAttributes(
        {item(c, k): [f"line{c}", f"brand{k % 2}"] for c in range(LINES) for k in range(PER_LINE)}
    )


@pytest.fixture(scope="module")
def task() -> RankingTask:
    loo = S.leave_one_out(sequential_shop())
    return ranking_task(pl.concat([loo.train, loo.validation]), loo.test)


def small(**params: object) -> SequenceRanker:
    base: dict[str, object] = {
        "reg": 5.0, "n_candidates": 10, "n_trees": 40, "min_child_samples": 5,
        "n_windows": 2, "attributes": attributes(),
    }  # fmt: skip
    return SequenceRanker(**(base | params))  # type: ignore[arg-type]


def hr1(model: object, task: RankingTask) -> float:
    return float(evaluate_ranking(model, task, (1,), metrics=("HR",))["HR@1"])


def test_order_aware_model_finds_the_next_item(task: RankingTask) -> None:
    model = small().fit(task.train)
    assert model.booster_ is not None  # enough shoppers in the windows to learn from
    ease = hr1(EASE(reg=5.0).fit(task.train), task)
    seq = hr1(model, task)
    assert seq > 0.8  # 0.85 when written (plain transitions 0.87)
    assert seq > ease + 0.2  # EASE about 0.5: the item before the run is as likely


def test_without_reranker_candidates_keep_the_transition_order(task: RankingTask) -> None:
    plain = small(min_groups=10**6).fit(task.train)
    assert plain.booster_ is None
    assert hr1(plain, task) > 0.8


def test_sequences_are_in_time_order_with_repeats_collapsed() -> None:
    rows = [
        ev("u1", "B", ts=T0 + 2),
        ev("u1", "A", ts=T0),
        ev("u1", "A", "add_to_cart", ts=T0 + 1),
        ev("u1", "C", "impression", ts=T0 + 3),  # weight 0: not in the sequence
        ev("u2", "C", ts=T0),
        ev("u1", "A", ts=T0 + 4),
    ]
    data = interactions(rows, Vocabulary(), Vocabulary(["A", "B", "C"]))
    seqs = _sequences(data, SequenceRanker().event_weights)
    u1, u2 = data.users.index("u:u1"), data.users.index("u:u2")
    assert seqs.get(u1).tolist() == [0, 1, 0]
    assert seqs.get(u2).tolist() == [2]
    cut = seqs.cut(1)
    assert cut.get(u1).tolist() == [0, 1] and cut.get(u2).tolist() == []


def test_transitions_have_a_direction_and_cooccurrence_has_none() -> None:
    seqs = _Seqs(np.array([0, 3, 5]), np.array([0, 1, 2, 0, 1]))
    stage = _fit_stage(
        seqs, 4, _no_attributes(4), reg=1.0, window=2, decay=0.5, norm=0.0, slit_reg=1.0
    )
    t = stage.T.toarray()
    assert t[0, 1] == 2.0 and t[1, 0] == 0.0  # 0 -> 1 twice, never 1 -> 0
    assert t[0, 2] == 0.5  # two steps apart: decayed
    assert stage.T1.toarray()[0, 2] == 0.0  # not right after
    c = stage.C.toarray()
    np.testing.assert_allclose(c, c.T)
    assert stage.pop[3, 0] == 0.0  # item 3 never seen
    assert stage.L[0, 1] > 0.1 > abs(stage.L[1, 0])  # SLIT learns 0 -> 1, not 1 -> 0


def _no_attributes(n: int) -> object:
    import scipy.sparse as sp

    return sp.csr_array((n, 1), dtype=np.float32)


def test_attribute_features_match_the_last_item() -> None:
    items = Vocabulary([item(0, 0), item(0, 2), item(1, 1), item(0, 1)])
    from shopcast.models.seqrank import _attribute_matrix

    a = _attribute_matrix(attributes(), items, 4)
    seqs = _Seqs(np.array([0, 2, 4]), np.array([0, 1, 1, 2]))
    stage = _fit_stage(seqs, 4, a, reg=1.0, window=1, decay=1.0, norm=0.0, slit_reg=1.0)
    batch = _candidates(stage, [np.array([0])], None, _Params(3.0, 3, 0.5, 3))
    col = FEATURES.index("attr_last")
    got = dict(zip(batch.item.tolist(), batch.features[:, col].tolist(), strict=True))
    assert 0 not in got  # the shopper's own item is never a candidate
    assert got[1] == pytest.approx(1.0)  # same line, same brand as item 0
    assert got[2] == pytest.approx(0.0)  # other line, other brand
    assert FEATURES.index("item_attrs") < batch.features.shape[1]


def test_save_load_keeps_the_booster_and_scores(task: RankingTask, tmp_path: Path) -> None:
    model = small(n_trees=10, n_windows=1).fit(task.train)
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "booster.txt").is_file()
    loaded = SequenceRanker.load(tmp_path / "m", task.train.items)
    assert loaded.booster_ is not None
    contexts = task.contexts[:30]
    np.testing.assert_array_equal(model.score_all(contexts), loaded.score_all(contexts))


def test_context_sequence_drives_the_scores(task: RankingTask) -> None:
    model = small(n_trees=10, n_windows=1).fit(task.train)
    a, b = task.train.items.index(item(0, 5)), task.train.items.index(item(0, 6))
    nxt = task.train.items.index(item(0, 7))
    from shopcast.models import Context

    s = model.score_all([Context(now=T0, recent_items=np.array([a, b]))])[0]
    s[[a, b]] = -np.inf
    assert int(np.argmax(s)) == nxt


@pytest.mark.parametrize(
    ("param", "value"),
    [("n_candidates", 0), ("n_windows", 0), ("reg", 0.0), ("trans_norm", 2.0), ("user_last", 1.5)],
)
def test_bad_hyperparameters_name_the_field(param: str, value: float) -> None:
    with pytest.raises(ConfigError, match=param):
        SequenceRanker(**{param: value})  # type: ignore[arg-type]


def test_evaluate_runs_it_by_default_on_q2_only(tmp_path: Path) -> None:
    from shopcast.evaluation import benchmarks as B

    def default(name: str) -> set[str]:
        entries, _ = B._model_entries(B.BENCHMARKS[name], B.RunOptions(data=tmp_path), B.Side())
        return {e.name for e in entries}

    assert "seqrank" in default("q2")
    assert "seqrank" not in default("q3")
