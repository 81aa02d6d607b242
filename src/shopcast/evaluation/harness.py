"""Fit, score and measure models on evaluation tasks; tune them on validation.

- ``build_interactions``: an event frame as ``Interactions`` over given vocabularies
  (subjects are ``u:<user_id>``, as in serving).
- ``RankingTask`` / ``RatingTask``: what to predict, with the training data.
- ``fit_measured``: ``fit`` with wall time and peak memory.
- ``rank``: full ranking over every item of the training vocabulary, in user chunks,
  excluded items removed; ``BatchScorer.score_all`` when the model has it, else
  ``score(context, all_items)`` per user. Ties go to the lower item index.
- ``evaluate_ranking`` / ``evaluate_rating``: metrics of a fitted model on a task.
- ``tune``: a grid over hyperparameters, each point fitted on the validation task's
  training data and scored on its held-out part. Test data never enters it.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from rich.progress import Progress

from shopcast.errors import ModelError, ValidationError
from shopcast.evaluation import metrics as M
from shopcast.models._base import (
    BatchScorer,
    BoolArray,
    Context,
    FloatArray,
    IntArray,
    Interactions,
    RatingPredictor,
    TimedRatingPredictor,
    Vocabulary,
)

__all__ = [
    "Entry",
    "FitStats",
    "RankingTask",
    "RatingTask",
    "Tracker",
    "build_interactions",
    "evaluate_ranking",
    "evaluate_rating",
    "fit_measured",
    "grid_points",
    "rank",
    "ranking_task",
    "rating_task",
    "sample_users",
    "score_rows",
    "top_k",
    "tune",
]

USER_PREFIX = "u:"
#: Training events per evaluation context (serving keeps ``recommend.session_length``,
#: 20 by default); the whole history still counts for exclusion.
MAX_CONTEXT = 100


# -- progress --------------------------------------------------------------------------


class Tracker:
    """Optional rich progress bars (no-ops without a ``Progress``)."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress

    @contextlib.contextmanager
    def task(self, description: str, total: float) -> Iterator[Callable[[float], None]]:
        """A bar for one step; yields ``advance(n)``; the bar is removed afterwards."""
        p = self.progress
        if p is None:
            yield lambda n: None
            return
        tid = p.add_task(description, total=total)
        try:
            yield lambda n: p.advance(tid, n)
        finally:
            p.remove_task(tid)

    def log(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.log(message)


# -- data ------------------------------------------------------------------------------


def subject_key(user_id: str) -> str:
    return USER_PREFIX + user_id


def build_interactions(
    frame: pl.DataFrame, users: Vocabulary | None = None, items: Vocabulary | None = None
) -> Interactions:
    """``Interactions`` of an event frame (``splits.event_frame``); vocabularies grow."""
    return Interactions.from_frame(frame, users=users, items=items)


@dataclass
class RankingTask:
    """Rank every item of ``train.items`` for some users.

    Row ``r`` of ``relevant`` / ``exclude`` belongs to ``contexts[r]``; ``relevant`` may
    have more columns than ``train.items`` (held-out items unknown to training, which
    count in the denominator but can never be hit).
    """

    train: Interactions
    contexts: list[Context]
    relevant: Any  # scipy CSR, users x (n_items + unknown)
    exclude: Any | None  # scipy CSR, users x n_items, or None
    item_counts: FloatArray  # training users per item (novelty)

    @property
    def n_items(self) -> int:
        return len(self.train.items)


@dataclass
class RatingTask:
    """Predict ``rating`` for (``user``, ``item``) indices of ``train``'s vocabularies."""

    train: Interactions
    user: IntArray
    item: IntArray
    rating: FloatArray
    ts: FloatArray | None = None  # when each rating was given (``TimedRatingPredictor``)


def _histories(data: Interactions) -> tuple[IntArray, IntArray]:
    """``(order, starts)``: events grouped by user in time order; user u's events are
    ``order[starts[u]:starts[u + 1]]``."""
    order = np.argsort(data.user, kind="stable").astype(np.int64)
    counts = np.bincount(data.user, minlength=len(data.users))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, starts


def ranking_task(
    train_frame: pl.DataFrame | Interactions,
    held_out: pl.DataFrame,
    *,
    exclude_history: bool = True,
    now: float | None = None,
    max_context: int | None = MAX_CONTEXT,
) -> RankingTask:
    """A task over the users of ``held_out`` (``user_id``, ``item_id``) seen in training.

    Each context holds the user's last ``max_context`` training events in time order
    (models with a fitted row per user read the rest from it). With ``exclude_history``
    every training item of the user is excluded from the ranking.
    ``train_frame`` may be the ``Interactions`` of another task (same fitted model).
    """
    train = (
        train_frame if isinstance(train_frame, Interactions) else build_interactions(train_frame)
    )
    n_items = len(train.items)
    if not n_items:
        raise ValidationError("the training data has no events")
    keys = held_out.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    uidx = train.users.indices([subject_key(u) for u in keys["user_id"].to_list()])
    keep = uidx >= 0
    uidx = uidx[keep]
    item_ids = [i for i, k in zip(keys["item_id"].to_list(), keep.tolist(), strict=True) if k]
    extended = Vocabulary(train.items.ids)  # held-out items unknown to training go beyond
    iidx = extended.indices(item_ids, add=True)
    eval_users, row = np.unique(uidx, return_inverse=True)
    relevant = sp.csr_array(
        (np.ones(row.shape[0]), (row.reshape(-1), iidx)), shape=(eval_users.shape[0], len(extended))
    )
    relevant.sum_duplicates()
    relevant.data[:] = 1.0

    order, starts = _histories(train)
    stamp = float(train.ts.max()) if now is None else now
    contexts: list[Context] = []
    ex_rows: list[IntArray] = []
    ex_cols: list[IntArray] = []
    for r, u in enumerate(eval_users.tolist()):
        ev = order[starts[u] : starts[u + 1]]
        recent = ev if max_context is None else ev[-max_context:]
        key = train.users.id(u)
        contexts.append(
            Context(
                now=stamp,
                user_id=key[len(USER_PREFIX) :] if key.startswith(USER_PREFIX) else None,
                session_id=key[2:] if key.startswith("s:") else None,
                recent_items=train.item[recent],
                recent_types=train.type[recent],
                recent_ts=train.ts[recent],
            )
        )
        if exclude_history:
            ex_cols.append(np.unique(train.item[ev]))
            ex_rows.append(np.full(ex_cols[-1].shape[0], r, dtype=np.int64))
    exclude = None
    if exclude_history:
        rows = np.concatenate(ex_rows) if ex_rows else np.empty(0, np.int64)
        cols = np.concatenate(ex_cols) if ex_cols else np.empty(0, np.int64)
        exclude = sp.csr_array(
            (np.ones(rows.shape[0], dtype=np.bool_), (rows, cols)),
            shape=(eval_users.shape[0], n_items),
        )
    pairs = np.unique(train.user * n_items + train.item)
    item_counts = np.bincount(pairs % n_items, minlength=n_items).astype(np.float64)
    return RankingTask(train, contexts, relevant, exclude, item_counts)


def sample_users(task: RankingTask, n: int, seed: int = 0) -> RankingTask:
    """The task restricted to a seeded random ``n`` of its users (all when fewer)."""
    if len(task.contexts) <= n:
        return task
    rows = np.sort(np.random.default_rng(seed).choice(len(task.contexts), n, replace=False))
    return RankingTask(
        task.train,
        [task.contexts[r] for r in rows.tolist()],
        task.relevant[rows],
        None if task.exclude is None else task.exclude[rows],
        task.item_counts,
    )


def rating_task(train_frame: pl.DataFrame, test_frame: pl.DataFrame) -> RatingTask:
    """Ratings of ``test_frame`` (``value``) as indices of the training vocabularies
    (-1 for users or items unknown to training)."""
    train = build_interactions(train_frame)
    test = test_frame.filter(pl.col("value").is_not_null())
    user = train.users.indices([subject_key(u) for u in test["user_id"].to_list()])
    item = train.items.indices(test["item_id"].to_list())
    ts = test["ts"].to_numpy().astype(np.float64) if "ts" in test.columns else None
    return RatingTask(train, user, item, test["value"].to_numpy().astype(np.float64), ts)


# -- fitting -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FitStats:
    train_s: float
    peak_mem_mb: float
    train_cpu_s: float = 0.0  # CPU seconds of the process (all threads) during fit


def _status_kb(field_name: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _peak_memory() -> Iterator[list[float]]:
    """Yields a list that receives the peak extra memory (MiB) of the block.

    On Linux the process's peak RSS is reset (``/proc/self/clear_refs``) and read back
    (``VmHWM``), which sees native allocations (BLAS, Cython); elsewhere the peak of
    Python allocations from ``tracemalloc``.
    """
    out: list[float] = []
    base = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        linux = base is not None
    except OSError:
        linux = False
    if linux and base is not None:
        yield out
        peak = _status_kb("VmHWM") or base
        out.append(max(peak - base, 0.0) / 1024.0)
        return
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield out
        out.append(tracemalloc.get_traced_memory()[1] / 2**20)
    finally:
        if started:
            tracemalloc.stop()


def fit_measured(model: Any, data: Interactions) -> tuple[Any, FitStats]:
    """``model.fit(data)`` with its wall time, CPU time and peak extra memory."""
    with _peak_memory() as peak:
        t0 = time.perf_counter()
        c0 = time.process_time()
        fitted = model.fit(data)
        cpu = time.process_time() - c0
        seconds = time.perf_counter() - t0
    stats = FitStats(seconds, peak[0] if peak else 0.0, cpu)
    return (fitted if fitted is not None else model), stats


# -- scoring and ranking -------------------------------------------------------------------


def score_rows(model: Any, contexts: Sequence[Context], n_items: int) -> FloatArray:
    """Scores of every item for each context (rows), NaN as -inf, width ``n_items``."""
    if isinstance(model, BatchScorer):
        scores = np.asarray(model.score_all(contexts), dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] != len(contexts):
            raise ModelError(
                f"{type(model).__name__}.score_all returned shape {scores.shape} "
                f"for {len(contexts)} contexts"
            )
    else:
        everything = np.arange(n_items, dtype=np.int64)
        scores = (
            np.stack([np.asarray(model.score(c, everything), dtype=np.float64) for c in contexts])
            if contexts
            else np.empty((0, n_items))
        )
    if scores.shape[1] < n_items:
        scores = np.pad(scores, ((0, 0), (0, n_items - scores.shape[1])))
    scores = scores[:, :n_items]
    return np.where(np.isnan(scores), -np.inf, scores)


def top_k(scores: FloatArray, k: int, exclude: BoolArray | None = None) -> IntArray:
    """The ``k`` best columns of each row, best first; ties go to the lower column.

    Excluded (and -inf) entries are never chosen: short rows are padded with -1.
    """
    s = np.array(scores, dtype=np.float64)
    n, m = s.shape
    if exclude is not None:
        s[exclude] = -np.inf
    k_eff = min(k, m)
    if k_eff <= 0 or n == 0:
        return np.full((n, k), -1, dtype=np.int64)
    kth = np.partition(s, m - k_eff, axis=1)[:, m - k_eff][:, None]  # k-th largest per row
    above = s > kth
    tied = s == kth
    room = k_eff - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    cols = np.nonzero(chosen)[1].reshape(n, k_eff)  # exactly k_eff per row, row-major
    vals = np.take_along_axis(s, cols, axis=1)
    order = np.lexsort((cols, -vals), axis=1)
    best = np.take_along_axis(cols, order, axis=1)
    best = np.where(np.take_along_axis(vals, order, axis=1) == -np.inf, -1, best)
    if k_eff < k:
        best = np.pad(best, ((0, 0), (0, k - k_eff)), constant_values=-1)
    return best.astype(np.int64)


def rank(
    model: Any,
    task: RankingTask,
    k: int,
    *,
    chunk: int = 512,
    tracker: Tracker | None = None,
    label: str = "ranking",
) -> IntArray:
    """Top ``k`` of every task context over all ``task.n_items`` items, history excluded."""
    n = len(task.contexts)
    out = np.full((n, k), -1, dtype=np.int64)
    tracker = tracker or Tracker()
    with tracker.task(label, n) as advance:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            scores = score_rows(model, task.contexts[start:stop], task.n_items)
            mask = None
            if task.exclude is not None:
                mask = task.exclude[start:stop].toarray().astype(np.bool_)
            out[start:stop] = top_k(scores, k, mask)
            advance(stop - start)
    return out


def evaluate_ranking(
    model: Any,
    task: RankingTask,
    ks: Sequence[int],
    *,
    capped_recall: bool = False,
    metrics: Sequence[str] = ("HR", "NDCG", "Recall", "Precision", "F1", "MRR", "MAP"),
    item_features: Any | None = None,
    beyond_k: int = 10,
    tracker: Tracker | None = None,
    label: str = "ranking",
) -> dict[str, float]:
    """Ranking metrics at each K, with ``coverage@K``, ``novelty@K`` and (given item
    features) ``ILD@K`` at ``beyond_k``, and ``score_s`` (time to rank everyone)."""
    k_max = max([*ks, beyond_k])
    t0 = time.perf_counter()
    top = rank(model, task, k_max, tracker=tracker, label=label)
    score_s = time.perf_counter() - t0
    out = M.ranking_metrics(top, task.relevant, ks, capped_recall=capped_recall, metrics=metrics)
    head = top[:, :beyond_k]
    out[f"coverage@{beyond_k}"] = M.catalog_coverage(head, task.n_items)
    out[f"novelty@{beyond_k}"] = M.novelty(head, task.item_counts, max(len(task.train.users), 1))
    if item_features is not None:
        out[f"ILD@{beyond_k}"] = M.intra_list_diversity(head, item_features)
    out["score_s"] = score_s
    return out


def evaluate_rating(model: Any, task: RatingTask, *, clip: bool = True) -> dict[str, float]:
    """RMSE and MAE of ``model.predict`` (``predict_at`` the ratings' times when the
    model takes them and the task has them); predictions are clipped to the training
    ratings' range when ``clip`` (the same rule for every model)."""
    if not isinstance(model, RatingPredictor):
        raise ModelError(f"{type(model).__name__} does not predict ratings")
    t0 = time.perf_counter()
    if task.ts is not None and isinstance(model, TimedRatingPredictor):
        raw = model.predict_at(task.user, task.item, task.ts)
    else:
        raw = model.predict(task.user, task.item)
    pred = np.asarray(raw, dtype=np.float64).reshape(-1)
    score_s = time.perf_counter() - t0
    if pred.shape != task.rating.shape:
        raise ModelError(
            f"{type(model).__name__}.predict returned {pred.shape[0]} values "
            f"for {task.rating.shape[0]} pairs"
        )
    if clip:
        values = task.train.value[~np.isnan(task.train.value)]
        if values.size:
            pred = np.clip(pred, values.min(), values.max())
    return {"RMSE": M.rmse(task.rating, pred), "MAE": M.mae(task.rating, pred), "score_s": score_s}


# -- models and tuning ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A model to evaluate: ``build(**params)`` makes an unfitted instance.

    ``grid`` lists the values tried on validation; ``fixed`` is passed every time.
    """

    name: str
    kind: str  # "model" (Shopcast) or "peer"
    build: Callable[..., Any]
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def make(self, params: Mapping[str, Any] | None = None) -> Any:
        return self.build(**{**self.fixed, **(params or {})})


def accepted_params(build: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``params`` that ``build`` takes (all of them for ``**kwargs``)."""
    try:
        sig = inspect.signature(build)
    except (TypeError, ValueError):
        return dict(params)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return dict(params)
    return {k: v for k, v in params.items() if k in sig.parameters}


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (one empty point for an empty grid)."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


@dataclass
class TuneResult:
    chosen: dict[str, Any]
    trials: list[dict[str, Any]]
    objective: str


def tune(
    entry: Entry,
    evaluate: Callable[[Any], Mapping[str, float]],
    fit_data: Interactions,
    objective: str,
    *,
    minimize: bool = False,
    tracker: Tracker | None = None,
) -> TuneResult:
    """Fit ``entry`` at every grid point on ``fit_data`` and keep the best ``objective``
    of ``evaluate(fitted_model)`` (validation). Ties keep the earlier point."""
    points = grid_points(entry.grid)
    tracker = tracker or Tracker()
    trials: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    with tracker.task(f"tuning {entry.name}", len(points)) as advance:
        for params in points:
            model, stats = fit_measured(entry.make(params), fit_data)
            value = float(evaluate(model)[objective])
            trials.append({"params": params, objective: value, "train_s": stats.train_s})
            tracker.log(f"{entry.name} {params}: {objective} {value:.4f} ({stats.train_s:.0f} s)")
            key = value if minimize else -value
            if not math.isnan(value) and (best is None or key < best[0]):
                best = (key, params)
            advance(1)
    chosen = best[1] if best is not None else points[0]
    return TuneResult(chosen, trials, objective)
