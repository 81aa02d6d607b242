"""Train/validation/test splits of event frames.

Every split works on an *event frame*: a polars frame with ``user_id``, ``item_id``
(strings) and ``ts`` (epoch seconds), plus optional ``type``, ``value`` (ratings) and
``session_id``; ``event_frame`` normalizes one. Rows with equal ``ts`` keep their
input order, so sequences given in order (S3-Rec) stay in order.

- ``movielens_folds``: the official MovieLens folds ``uN.base`` / ``uN.test``;
  ``random_rating_folds`` builds the same kind of disjoint folds for other rating data.
- ``holdout``: a seeded random share of a training set for validation (rating models).
- ``leave_one_out``: per user in time order, last = test, second to last = validation.
- ``temporal_split``: train before a cutoff; test = what each training user bought on
  or after it (new items only, or everything: "buy again").
- ``prequential``: warm-up part, then the rest replayed event by event in time order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from shopcast.errors import DatasetNotFoundError, ValidationError

__all__ = [
    "EVENT_SCHEMA",
    "LeaveOneOut",
    "RatingFold",
    "Replay",
    "TemporalSplit",
    "event_frame",
    "holdout",
    "leave_one_out",
    "movielens_folds",
    "prequential",
    "random_rating_folds",
    "read_movielens_fold",
    "temporal_split",
    "to_epoch",
]

#: Columns (and types) of an event frame.
EVENT_SCHEMA: dict[str, Any] = {
    "user_id": pl.String,
    "item_id": pl.String,
    "ts": pl.Float64,
    "type": pl.String,
    "value": pl.Float64,
    "session_id": pl.String,
}


def event_frame(frame: pl.DataFrame, *, default_type: str = "purchase") -> pl.DataFrame:
    """``frame`` with exactly ``EVENT_SCHEMA``'s columns; rows without user or item dropped.

    Missing ``type`` becomes ``default_type``, missing ``value`` / ``session_id`` null.
    """
    absent = [c for c in ("user_id", "item_id", "ts") if c not in frame.columns]
    if absent:
        raise ValidationError(
            f"event frame lacks column(s) {', '.join(absent)} (found: {', '.join(frame.columns)})"
        )
    defaults = {"type": pl.lit(default_type), "value": pl.lit(None), "session_id": pl.lit(None)}
    return frame.select(
        (pl.col(c) if c in frame.columns else defaults[c]).cast(t).alias(c)
        for c, t in EVENT_SCHEMA.items()
    ).filter(pl.col("user_id").is_not_null() & pl.col("item_id").is_not_null())


def to_epoch(when: float | str | date | datetime) -> float:
    """Epoch seconds of a number, an ISO date/time text or a date (naive = UTC)."""
    if isinstance(when, int | float):
        return float(when)
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            raise ValidationError(f"not an ISO date or time: {when!r}") from None
    if not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _time_order(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_row_index("_row").sort(["ts", "_row"]).drop("_row")


# -- rating folds ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RatingFold:
    """One train/test pair of rating events (``value`` = rating)."""

    name: str
    train: pl.DataFrame
    test: pl.DataFrame


def _read_ml(file: Path) -> pl.DataFrame:
    if not file.is_file():
        raise DatasetNotFoundError(f"{file} not found (MovieLens fold file)")
    raw = pl.read_csv(
        file,
        separator="\t",
        has_header=False,
        schema={"user_id": pl.String, "item_id": pl.String, "value": pl.Float64, "ts": pl.Float64},
    )
    return event_frame(raw, default_type="rate")


def read_movielens_fold(folder: Path, fold: int | str) -> RatingFold:
    """``u<fold>.base`` (train) and ``u<fold>.test`` (test) of a MovieLens folder."""
    name = f"u{fold}"
    folder = Path(folder)
    return RatingFold(name, _read_ml(folder / f"{name}.base"), _read_ml(folder / f"{name}.test"))


def movielens_folds(folder: Path, folds: Sequence[int | str] = (1, 2, 3, 4, 5)) -> list[RatingFold]:
    """The official folds ``u1``…``u5`` (or those named in ``folds``)."""
    return [read_movielens_fold(folder, f) for f in folds]


def random_rating_folds(frame: pl.DataFrame, n_folds: int = 5, seed: int = 0) -> list[RatingFold]:
    """``n_folds`` disjoint test sets of a rating frame (seeded), each with the rest as train."""
    if n_folds < 2:
        raise ValidationError(f"n_folds must be >= 2, got {n_folds}")
    if frame.height < n_folds:
        raise ValidationError(f"{frame.height} ratings cannot make {n_folds} folds")
    rng = np.random.default_rng(seed)
    fold = np.empty(frame.height, dtype=np.int64)
    fold[rng.permutation(frame.height)] = np.arange(frame.height) % n_folds
    tagged = frame.with_columns(pl.Series("_fold", fold))
    return [
        RatingFold(
            f"fold{f + 1}",
            tagged.filter(pl.col("_fold") != f).drop("_fold"),
            tagged.filter(pl.col("_fold") == f).drop("_fold"),
        )
        for f in range(n_folds)
    ]


def holdout(
    frame: pl.DataFrame, fraction: float = 0.1, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(rest, held_out)``: a seeded random ``fraction`` of the rows held out."""
    if not 0 < fraction < 1:
        raise ValidationError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(frame.height, dtype=np.bool_)
    mask[rng.permutation(frame.height)[: round(frame.height * fraction)]] = True
    m = pl.Series(mask)
    return frame.filter(~m), frame.filter(m)


# -- leave one out -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaveOneOut:
    """Per user: ``test`` = last event, ``validation`` = the one before, ``train`` = the rest."""

    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame


def leave_one_out(frame: pl.DataFrame, min_events: int = 3) -> LeaveOneOut:
    """Split each user's events in time order (ties keep input order).

    Users with fewer than ``min_events`` (at least 3) events stay entirely in train.
    """
    if min_events < 3:
        raise ValidationError(f"min_events must be >= 3, got {min_events}")
    ordered = _time_order(frame)
    ranked = ordered.with_columns(
        _back=pl.int_range(pl.len(), 0, -1).over("user_id") - 1,  # 0 = last event
        _n=pl.len().over("user_id"),
    )
    short = pl.col("_n") < min_events
    back = pl.col("_back")
    drop = ["_back", "_n"]
    return LeaveOneOut(
        train=ranked.filter(short | (back >= 2)).drop(drop),
        validation=ranked.filter(~short & (back == 1)).drop(drop),
        test=ranked.filter(~short & (back == 0)).drop(drop),
    )


# -- temporal cutoff -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemporalSplit:
    """``train``: events before ``cutoff``; ``test``: distinct (user_id, item_id) pairs."""

    train: pl.DataFrame
    test: pl.DataFrame
    cutoff: float


def temporal_split(
    frame: pl.DataFrame,
    cutoff: float | str | date | datetime,
    *,
    new_items_only: bool = True,
    end: float | str | date | datetime | None = None,
) -> TemporalSplit:
    """Train = events before ``cutoff``; test = for each user seen in train, the distinct
    items of their events at or after ``cutoff`` (and before ``end`` when given).

    With ``new_items_only`` (the default), items the user already had in train are left
    out of the test; without it every item counts ("buy again").
    """
    start = to_epoch(cutoff)
    ordered = _time_order(frame)
    train = ordered.filter(pl.col("ts") < start)
    later = ordered.filter(pl.col("ts") >= start)
    if end is not None:
        later = later.filter(pl.col("ts") < to_epoch(end))
    seen_users = train.select("user_id").unique()
    test = (
        later.select("user_id", "item_id")
        .unique(maintain_order=True)
        .join(seen_users, on="user_id", how="semi")
    )
    if new_items_only:
        test = test.join(
            train.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="anti"
        )
    return TemporalSplit(train, test, start)


# -- prequential replay ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """``warmup`` events to train on, then ``stream`` to replay in time order."""

    warmup: pl.DataFrame
    stream: pl.DataFrame
    cutoff: float

    def batches(self, size: int = 1) -> Iterator[pl.DataFrame]:
        """The stream in consecutive slices of ``size`` events."""
        if size < 1:
            raise ValidationError(f"size must be >= 1, got {size}")
        for start in range(0, self.stream.height, size):
            yield self.stream.slice(start, size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The stream one event (a row dict) at a time."""
        return self.stream.iter_rows(named=True)

    def __len__(self) -> int:
        return self.stream.height


def prequential(
    frame: pl.DataFrame, warmup: float = 0.7, *, by: Literal["time", "events"] = "time"
) -> Replay:
    """Split for a prequential replay: the first ``warmup`` share of the time span (or of
    the events, ``by="events"``) to train on, the rest as a time-ordered stream."""
    if not 0 <= warmup <= 1:
        raise ValidationError(f"warmup must be in [0, 1], got {warmup}")
    ordered = _time_order(frame)
    if not ordered.height:
        return Replay(ordered, ordered, 0.0)
    ts = ordered["ts"].to_numpy()
    if by == "time":
        cutoff = float(ts[0] + warmup * (ts[-1] - ts[0]))
        n = int(np.searchsorted(ts, cutoff, side="left")) if warmup < 1 else ts.shape[0]
    elif by == "events":
        n = round(warmup * ts.shape[0])
        cutoff = float(ts[n]) if n < ts.shape[0] else float(ts[-1])
    else:
        raise ValidationError(f"by must be 'time' or 'events', got {by!r}")
    return Replay(ordered.slice(0, n), ordered.slice(n), cutoff)
