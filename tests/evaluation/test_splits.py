"""Splits on tiny SYNTHETIC frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shopcast.errors import DatasetNotFoundError, ValidationError
from shopcast.evaluation import splits as S


def frame(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return S.event_frame(pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row"))


def pairs(df: pl.DataFrame) -> list[tuple[str, str]]:
    return sorted(zip(df["user_id"].to_list(), df["item_id"].to_list(), strict=True))


def test_event_frame_normalizes_columns() -> None:
    df = S.event_frame(pl.DataFrame({"user_id": ["u", None], "item_id": ["i", "j"], "ts": [1, 2]}))
    assert df.columns == list(S.EVENT_SCHEMA)
    assert df.height == 1 and df["type"][0] == "purchase" and df["ts"].dtype == pl.Float64
    with pytest.raises(ValidationError, match="ts"):
        S.event_frame(pl.DataFrame({"user_id": ["u"], "item_id": ["i"]}))


def test_leave_one_out_by_time_with_ties_in_input_order() -> None:
    df = frame(
        [
            ("a", "a3", 3.0),
            ("a", "a1", 1.0),
            ("a", "a4", 4.0),
            ("a", "a2", 2.0),
            ("b", "b1", 1.0),  # two events only: all in train
            ("b", "b2", 2.0),
            ("c", "c1", 5.0),  # equal times: input order decides
            ("c", "c2", 5.0),
            ("c", "c3", 5.0),
        ]
    )
    loo = S.leave_one_out(df)
    assert pairs(loo.test) == [("a", "a4"), ("c", "c3")]
    assert pairs(loo.validation) == [("a", "a3"), ("c", "c2")]
    assert pairs(loo.train) == [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("c", "c1")]
    with pytest.raises(ValidationError):
        S.leave_one_out(df, min_events=2)


def test_temporal_split_new_items_and_buy_again() -> None:
    df = frame(
        [
            ("u1", "x", 1.0),
            ("u1", "y", 2.0),
            ("u1", "x", 6.0),  # bought before: not new
            ("u1", "z", 7.0),
            ("u1", "z", 8.0),  # distinct pairs only
            ("u2", "y", 3.0),
            ("u2", "w", 9.0),
            ("u3", "x", 6.0),  # not seen in training: no test
        ]
    )
    new = S.temporal_split(df, 5.0)
    assert new.cutoff == 5.0
    assert pairs(new.train) == [("u1", "x"), ("u1", "y"), ("u2", "y")]
    assert pairs(new.test) == [("u1", "z"), ("u2", "w")]
    again = S.temporal_split(df, 5.0, new_items_only=False)
    assert pairs(again.test) == [("u1", "x"), ("u1", "z"), ("u2", "w")]
    bounded = S.temporal_split(df, 5.0, end=8.5)
    assert pairs(bounded.test) == [("u1", "z")]


def test_to_epoch() -> None:
    assert S.to_epoch("2011-11-01") == 1_320_105_600.0
    assert S.to_epoch("2011-11-01T01:00:00+01:00") == 1_320_105_600.0
    assert S.to_epoch(12) == 12.0
    with pytest.raises(ValidationError):
        S.to_epoch("first of November")


def test_movielens_folds_read_base_and_test(tmp_path: Path) -> None:
    (tmp_path / "u1.base").write_text("1\t10\t5\t100\n1\t11\t3\t101\n2\t10\t4\t102\n")
    (tmp_path / "u1.test").write_text("2\t11\t2\t103\n")
    (fold,) = S.movielens_folds(tmp_path, (1,))
    assert fold.name == "u1"
    assert fold.train.height == 3 and fold.test.height == 1
    assert fold.test.row(0, named=True) | {"session_id": None} == {
        "user_id": "2",
        "item_id": "11",
        "ts": 103.0,
        "type": "rate",
        "value": 2.0,
        "session_id": None,
    }
    with pytest.raises(DatasetNotFoundError):
        S.movielens_folds(tmp_path, (2,))


def test_random_rating_folds_are_disjoint_and_cover_everything() -> None:
    df = frame([(f"u{i % 7}", f"i{i}", float(i)) for i in range(23)])
    folds = S.random_rating_folds(df, 5, seed=1)
    tests = [set(pairs(f.test)) for f in folds]
    assert sum(len(t) for t in tests) == 23
    assert set().union(*tests) == set(pairs(df))
    for f, t in zip(folds, tests, strict=True):
        assert set(pairs(f.train)).isdisjoint(t)
        assert f.train.height + f.test.height == 23
    assert [pairs(f.test) for f in S.random_rating_folds(df, 5, seed=1)] == [
        pairs(f.test) for f in folds
    ]


def test_holdout() -> None:
    df = frame([("u", f"i{i}", float(i)) for i in range(50)])
    rest, held = S.holdout(df, 0.1, seed=0)
    assert held.height == 5 and rest.height == 45
    assert set(pairs(rest)).isdisjoint(pairs(held))
    with pytest.raises(ValidationError):
        S.holdout(df, 1.5)


def test_prequential_by_time_and_by_events() -> None:
    df = frame([(f"u{i % 3}", f"i{i}", float(t)) for i, t in enumerate([3, 0, 1, 2, 10, 9, 8])])
    rep = S.prequential(df, 0.5)  # time span 0..10: cutoff 5
    assert rep.cutoff == 5.0
    assert rep.warmup["ts"].to_list() == [0.0, 1.0, 2.0, 3.0]
    assert [e["ts"] for e in rep] == [8.0, 9.0, 10.0]
    assert len(rep) == 3
    assert [b.height for b in rep.batches(2)] == [2, 1]
    by_events = S.prequential(df, 0.5, by="events")  # round(3.5) = 4 events first
    assert by_events.warmup.height == 4 and by_events.cutoff == 8.0
    assert S.prequential(df, 1.0).stream.height == 0
    with pytest.raises(ValidationError):
        S.prequential(df, 0.5, by="weeks")  # type: ignore[arg-type]
