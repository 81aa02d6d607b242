"""The harness end to end on tiny SYNTHETIC datasets (popularity, co-visitation, spies)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import polars as pl
import pytest

from shopcast.errors import NotFoundError
from shopcast.evaluation import benchmarks as B
from shopcast.evaluation import harness as H
from shopcast.evaluation import splits as S
from shopcast.models import MODELS
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary

# -- a synthetic shop with a known answer -------------------------------------------------


def day(d: str, offset_h: int = 0) -> float:
    return (datetime.fromisoformat(d).replace(tzinfo=UTC) + timedelta(hours=offset_h)).timestamp()


def retail_events() -> pl.DataFrame:
    """Five product chains p_k -> q_k -> r_k. Group B customers buy whole chains (and the
    popular item POP) before 2020-01-01; group A buys p_k in November, q_k in January and
    r_k in February. With the cutoff 2020-02-01 the test of A is r_k, reachable from q_k
    by co-visitation; popularity keeps offering POP (a miss)."""
    rows: list[tuple[str, str, float]] = []
    rng = np.random.default_rng(0)
    for k in range(5):
        for j in range(6):
            b = f"B{k}{j}"
            rows += [(b, f"p{k}", day("2019-11-05", j)), (b, f"q{k}", day("2019-11-06", j))]
            rows += [(b, f"r{k}", day("2019-11-07", j))]
            rows += [(b, "POP", day("2019-12-01", h)) for h in range(3)]
            rows += [(b, f"n{rng.integers(30)}", day("2019-12-10", j))]
            a = f"A{k}{j}"
            rows += [(a, f"p{k}", day("2019-11-20", j)), (a, f"q{k}", day("2020-01-10", j))]
            rows += [(a, f"r{k}", day("2020-02-10", j))]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


@pytest.fixture
def retail_csv(tmp_path: Path) -> Path:
    path = tmp_path / "shop.csv"
    retail_events().write_csv(path)
    return path


@pytest.fixture
def s3rec_dir(tmp_path: Path) -> Path:
    """S3-Rec layout: 'user item item …' lines; every user follows one of three chains
    x1 x2 x3 x4; odd users then buy an item of their own (never seen in training)."""
    folder = tmp_path / "toy"
    folder.mkdir()
    lines = []
    for u in range(30):
        k = u % 3
        chain = [10 * k + 1, 10 * k + 2, 10 * k + 3, 10 * k + 4]
        noise = [50 + (u * 7) % 20]
        tail = [100 + u] if u % 2 else []
        lines.append(" ".join(map(str, [u + 1, *noise, *chain, *tail])))
    (folder / "Beauty.txt").write_text("\n".join(lines) + "\n")
    attrs = {str(10 * k + i): [k] for k in range(3) for i in range(1, 5)}
    (folder / "Beauty_item2attributes.json").write_text(json.dumps(attrs))
    return folder


# -- ranking primitives ---------------------------------------------------------------------


def test_top_k_ties_exclusion_and_padding() -> None:
    s = np.array([[0.5, 0.9, 0.9, 0.1], [1.0, 1.0, 1.0, 1.0]])
    assert H.top_k(s, 2).tolist() == [[1, 2], [0, 1]]  # ties: lower index first
    ex = np.array([[False, True, False, False], [True, True, True, True]])
    assert H.top_k(s, 2, ex).tolist() == [[2, 0], [-1, -1]]
    assert H.top_k(s, 6)[0].tolist() == [1, 2, 0, 3, -1, -1]
    nan = H.score_rows(
        type("M", (), {"score": lambda self, c, i: np.array([np.nan, 1.0])})(),
        [Context(now=0.0)],
        2,
    )
    assert nan.tolist() == [[-np.inf, 1.0]]


class OnlyScore:
    """Scores item i as (i * 7 + len(history)) % 5: ties everywhere."""

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return np.asarray((candidates * 7 + len(context.recent_items)) % 5, dtype=np.float64)


class WithScoreAll(OnlyScore):
    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        return np.stack([self.score(c, np.arange(9)) for c in contexts])


def test_score_all_and_score_fallback_rank_alike() -> None:
    train = S.event_frame(
        pl.DataFrame(
            {
                "user_id": ["a", "a", "b", "c", "c", "c"],
                "item_id": [str(i) for i in (0, 1, 2, 3, 4, 8)],
                "ts": [1, 2, 3, 4, 5, 6],
            }
        )
    )
    held = pl.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["5", "6", "7"]})
    task = H.ranking_task(train, held)
    a = H.rank(OnlyScore(), task, 5, chunk=2)
    b = H.rank(WithScoreAll(), task, 5, chunk=2)
    assert a.tolist() == b.tolist()
    for row, ctx in zip(a.tolist(), task.contexts, strict=True):
        assert not set(row) & set(ctx.recent_items.tolist())  # history excluded


def test_ranking_task_contexts_exclusion_and_unknown_items() -> None:
    train = S.event_frame(
        pl.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["x", "y", "x"], "ts": [2, 1, 3]})
    )
    held = pl.DataFrame({"user_id": ["u", "u", "ghost"], "item_id": ["z", "x", "x"]})
    task = H.ranking_task(train, held, now=9.0)
    assert len(task.contexts) == 1  # "ghost" is not in training
    ctx = task.contexts[0]
    assert ctx.user_id == "u" and ctx.now == 9.0
    items = task.train.items
    assert [items.id(i) for i in ctx.recent_items.tolist()] == ["y", "x"]  # time order
    assert task.n_items == 2 and task.relevant.shape == (1, 3)  # z: unknown, a 3rd column
    assert task.relevant.nnz == 2
    assert sorted(task.exclude.toarray()[0].nonzero()[0].tolist()) == [0, 1]
    assert task.item_counts[items.index("x")] == 2.0  # u and v
    assert task.item_counts[items.index("y")] == 1.0
    no_ex = H.ranking_task(task.train, held, exclude_history=False)
    assert no_ex.exclude is None and no_ex.train is task.train


class FixedRatings:
    """Predicts 7 for every pair (clipped by the harness to the training range)."""

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        return np.full(len(user), 7.0)


def test_evaluate_rating_clips_to_training_range() -> None:
    train = S.event_frame(
        pl.DataFrame(
            {"user_id": ["a", "b"], "item_id": ["x", "y"], "ts": [1, 2], "value": [1.0, 4.0]}
        ),
        default_type="rate",
    )
    test = S.event_frame(
        pl.DataFrame(
            {"user_id": ["a", "c"], "item_id": ["y", "x"], "ts": [3, 4], "value": [2.0, 4.0]}
        ),
        default_type="rate",
    )
    task = H.rating_task(train, test)
    assert task.user.tolist() == [0, -1] and task.item.tolist() == [1, 0]
    out = H.evaluate_rating(FixedRatings(), task)  # 7 -> 4: errors 2 and 0
    assert out["RMSE"] == pytest.approx(2**0.5) and out["MAE"] == pytest.approx(1.0)


def test_fit_measured_and_tune() -> None:
    data = Interactions.from_frame(
        pl.DataFrame(
            {
                "type": ["purchase"] * 3,
                "user_id": ["a", "b", "b"],
                "session_id": [None] * 3,
                "item_id": ["x", "y", "x"],
                "ts": [1.0, 2.0, 3.0],
                "value": [None] * 3,
            }
        )
    )
    model, stats = H.fit_measured(MODELS["popularity"](), data)
    assert stats.train_s >= 0 and stats.peak_mem_mb >= 0
    assert model.scores_.shape == (2,)
    entry = H.Entry(
        "popularity", "model", MODELS["popularity"], {"half_life_days": [1.0, 2.0, 3.0]}
    )
    # objective: the half-life itself (read back from the fitted model) -> 3 is best
    res = H.tune(entry, lambda m: {"obj": m.half_life_days}, data, "obj")
    assert res.chosen == {"half_life_days": 3.0}
    assert [t["obj"] for t in res.trials] == [1.0, 2.0, 3.0]
    res = H.tune(entry, lambda m: {"obj": 1.0}, data, "obj", minimize=True)
    assert res.chosen == {"half_life_days": 1.0}  # ties keep the first
    assert H.grid_points({}) == [{}]


# -- benchmarks end to end -----------------------------------------------------------------------


def test_q3_end_to_end_on_a_synthetic_shop(retail_csv: Path) -> None:
    opts = B.RunOptions(
        data=retail_csv, models=["popularity", "covisit"], peers=[], cutoff="2020-02-01"
    )
    r = B.run_benchmark("q3", opts)
    assert set(r) == {
        "benchmark", "dataset", "protocol", "models", "peers", "hyperparameters", "hardware",
    }  # fmt: skip
    assert r["benchmark"] == "q3" and r["peers"] == {}
    pop, cov = r["models"]["popularity"], r["models"]["covisit"]
    for row in (pop, cov):
        assert row["users"] == 30  # group A
        for key in ("Recall@10", "Recall@20", "NDCG@10", "buy_again.NDCG@10", "coverage@10"):
            assert 0.0 <= row[key] <= 1.0
        assert row["train_s"] >= 0
    # co-visitation follows q_k -> r_k; popularity offers POP first (a miss)
    assert cov["HR@5"] == 1.0 and cov["Recall@10"] == 1.0
    assert pop["NDCG@10"] < cov["NDCG@10"]
    # buy again: history allowed, so the test set also holds nothing bought before here
    assert cov["buy_again.Recall@10"] == 1.0
    hp = r["hyperparameters"]["covisit"]
    assert hp["selected_by"] == "NDCG@10 on validation" and len(hp["trials"]) == 12
    assert set(hp["chosen"]) == {"window", "half_life_days", "session_decay"}


class Spy:
    """Records the newest event time of every ``fit``; scores nothing."""

    name: ClassVar[str] = "spy"
    fits: ClassVar[list[tuple[float, int]]] = []

    def __init__(self, knob: int = 0) -> None:
        self.knob = knob

    def fit(self, data: Interactions) -> Self:
        Spy.fits.append((float(data.ts.max()), self.knob))
        return self

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return np.zeros(len(candidates))

    def save(self, path: Path) -> None:  # pragma: no cover - never saved
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:  # pragma: no cover
        raise NotImplementedError


def test_tuning_sees_validation_data_only(
    retail_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(MODELS, "spy", Spy)  # type: ignore[arg-type]
    monkeypatch.setitem(B.GRIDS["q3"], "spy", {"knob": [1, 2]})
    Spy.fits.clear()
    B.run_benchmark(
        "q3", B.RunOptions(data=retail_csv, models=["spy"], peers=[], cutoff="2020-02-01")
    )
    val_cutoff, cutoff = day("2020-01-01"), day("2020-02-01")
    *tuning, final = Spy.fits
    assert [k for _, k in tuning] == [1, 2]
    assert all(t < val_cutoff for t, _ in tuning)  # nothing from January or later
    assert val_cutoff <= final[0] < cutoff  # the final fit: everything before the test


def test_q2_end_to_end_on_s3rec_files(s3rec_dir: Path) -> None:
    r = B.run_benchmark(
        "q2", B.RunOptions(data=s3rec_dir, models=["covisit", "popularity"], peers=[])
    )
    cov = r["models"]["covisit"]
    assert cov["users"] == 30
    # even users: x3 -> x4 learnt from the odd users; odd users' last item is unseen
    assert cov["HR@1"] == 0.5 and cov["HR@50"] == 0.5
    assert "ILD@10" in cov  # attribute ids are item features
    assert r["hyperparameters"]["covisit"]["selected_by"] == "NDCG@10 on validation"


def test_q1_with_a_rating_model_on_a_rating_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 6)), 1000 + u * 50 + i)
        for u in range(30)
        for i in range(12)
    ]
    path = tmp_path / "ratings.csv"
    pl.DataFrame(
        rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row"
    ).write_csv(path)
    r = B.run_benchmark("q1", B.RunOptions(data=path, models=["mf_als"], peers=[], quick=True))
    row = r["models"]["mf_als"]
    assert set(row) == {"RMSE_fold1", "MAE_fold1", "RMSE", "MAE", "train_s", "peak_mem_mb"}
    assert 0 < row["MAE"] <= row["RMSE"] < 4
    r = B.run_benchmark("q1", B.RunOptions(data=path, models=["popularity"], peers=[], quick=True))
    assert r["models"]["popularity"] == {"skipped": "not a rating model (no predict)"}


def test_unknown_names_and_missing_peers(retail_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotFoundError, match="unknown benchmark"):
        B.run_benchmark("q7", B.RunOptions(data=retail_csv))
    with pytest.raises(NotFoundError, match="unknown model"):
        B.run_benchmark("q3", B.RunOptions(data=Path("/nowhere"), models=["nope"]))
    with pytest.raises(NotFoundError, match="unknown peer"):
        B.run_benchmark("q3", B.RunOptions(data=retail_csv, peers=["nope"]))
    import shopcast.evaluation.peers as P

    real = P.importlib.util.find_spec
    monkeypatch.setattr(
        P.importlib.util, "find_spec", lambda n, *a: None if n == "implicit" else real(n, *a)
    )
    r = B.run_benchmark(
        "q3",
        B.RunOptions(
            data=retail_csv, models=["popularity"], peers=["implicit-als", "surprise-svd"],
            cutoff="2020-02-01", tune=False,
        ),
    )  # fmt: skip
    assert "shopcast[bench]" in r["peers"]["implicit-als"]["skipped"]
    assert "rating peer" in r["peers"]["surprise-svd"]["skipped"]


def test_a_peer_that_is_also_a_model_runs_once(
    retail_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(B.GRIDS["q3"], "ease", {"reg": [10.0]})
    r = B.run_benchmark(
        "q3", B.RunOptions(data=retail_csv, models=["ease"], peers=["ease"], cutoff="2020-02-01")
    )
    assert r["models"]["ease"] == r["peers"]["ease"]
    assert r["models"]["ease"]["Recall@10"] == 1.0
