"""Two-stage ranking: candidates from item-item models, a LightGBM LambdaRank reranker.

Stage one scores every item for a shopper with EASE on the binary history, EASE on a
recency-decayed history (``half_life_days``), cosine item-kNN and user-kNN (the
``USER_NEIGHBOURS`` most similar shoppers); the union of each one's top
``n_candidates`` (plus the ``n_popular`` items with most buyers in the last 30 days)
are the candidates. Stage two orders the candidates with a gradient-boosted LambdaRank
model over features of the pair: the stage-one scores, their ranks and their ratio to
the shopper's best score, the item's sales momentum (distinct buyers in the last
7/14/30/90 days and ever, first-time buyers in the last 14/30 days, growth of the last
14 days over the 14 before, days since its first and last sale), the shopper's recency
and frequency, and (given ``item_tokens``) the cosine between the item's words and the
shopper's decayed history.

The reranker learns from the fitted data itself: for each of ``n_windows`` windows of
``label_days`` days at the end of the data, stage one is fitted on the events before the
window and the labels are the items each shopper bought *for the first time* inside it.
Stage one is then refitted on everything; features are computed as of the newest event.

Score layout (higher is better): with ``repeat_first`` the items the shopper already
has come first, by recency-weighted frequency (a "buy again" policy), then the
candidates by the reranker, then every other item by EASE.

Learned state: the stage-one arrays (``B``, kNN similarities, the fitted history with
days since the last event and counts, item momentum, word vectors) in ``arrays.npz`` and
the booster as LightGBM's text format (``booster.txt``); never pickle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shopcast.errors import ModelError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    SECONDS_PER_DAY,
    check_ints,
    check_positive,
    gather,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
    weight_array,
)
from shopcast.models._data import SubjectIndex, n_items_of, n_users_of, subset_rows
from shopcast.models._lambdarank import (
    lambdarank_params,
    load_booster,
    save_booster,
    train_lambdarank,
)
from shopcast.models.ease import FLOAT64_MAX_ITEMS, _spd_inverse

log = logging.getLogger(__name__)

#: Called after each step of ``fit``: ``(step, n_steps, description)``.
Progress = Callable[[int, int, str], None]

#: Neighbours of a shopper in the user-based scores.
USER_NEIGHBOURS = 50
MAX_ITEMS = 40_000

#: Item momentum windows (days): distinct buyers in the last ``d`` days.
MOMENTUM_DAYS = (7.0, 14.0, 30.0, 90.0)

FEATURES = (
    "ease",
    "ease_rank",
    "ease_recent",
    "ease_recent_rank",
    "knn",
    "knn_rank",
    "uknn",
    "uknn_rank",
    "text",
    *(f"buyers_{int(d)}d" for d in MOMENTUM_DAYS),
    "buyers_all",
    "growth_14d",
    "item_age_days",
    "item_idle_days",
    "adopters_14d",
    "adopters_30d",
    "user_items",
    "user_days",
    "user_idle_days",
    "user_tenure_days",
    "ease_vs_best",
    "ease_recent_vs_best",
    "knn_vs_best",
    "uknn_vs_best",
)
_BUYERS_30 = 2  # column of ``_Stage.item``: buyers in the last 30 days
_BUYERS_ALL = 4


# -- stage one -------------------------------------------------------------------------


@dataclass
class _Stage:
    """Stage one fitted on some events, as of ``t_ref`` (their newest event time)."""

    t_ref: float
    B: npt.NDArray[np.float32]  # EASE weights (n x n)
    S: npt.NDArray[np.float32]  # cosine item-item similarities (n x n, zero diagonal)
    item: FloatArray  # item momentum features (n x 10), see ``_item_features``
    idle: Any  # CSR subjects x n: days from the last event with the item to t_ref
    count: Any  # CSR subjects x n: weighted events with the item (same pattern as idle)
    subjects: SubjectIndex
    user: FloatArray  # subjects x 3: distinct event days, oldest and newest event (days)

    @property
    def n_items(self) -> int:
        return int(self.B.shape[0])


def _weights(data: Interactions, event_weights: Mapping[str, float]) -> FloatArray:
    return np.asarray(weight_array(event_weights)[data.type], dtype=np.float64)


def _fit_stage(
    data: Interactions, n: int, reg: float, event_weights: Mapping[str, float]
) -> _Stage:
    w = _weights(data, event_weights)
    keep = w > 0
    user, item, ts, w = data.user[keep], data.item[keep], data.ts[keep], w[keep]
    t_ref = float(ts.max()) if ts.size else 0.0
    n_users = n_users_of(data)
    days = (t_ref - ts) / SECONDS_PER_DAY
    idle = _min_by_pair(user, item, days, n_users, n)
    count = sp.csr_array((w, (user, item)), shape=(n_users, n))
    count.sum_duplicates()
    count.sort_indices()
    xb = idle.copy()
    xb.data = np.ones_like(xb.data)
    dtype = np.float64 if n <= FLOAT64_MAX_ITEMS else np.float32
    xt = xb.T.tocsr().astype(dtype)
    g: npt.NDArray[np.floating[Any]] = np.asarray((xt @ xt.T).toarray(), dtype=dtype)
    norm = np.sqrt(np.maximum(np.diag(g), 1.0))
    s = (g / norm[:, None] / norm[None, :]).astype(np.float32)
    s[np.diag_indices(n)] = 0.0
    g[np.diag_indices(n)] += reg
    b = _spd_inverse(g)
    b /= -np.diag(b).copy()
    b[np.diag_indices(n)] = 0.0
    users = np.zeros((n_users, 3), dtype=np.float64)
    if user.size:
        day = np.floor(ts / SECONDS_PER_DAY).astype(np.int64)
        span = int(day.max()) + 1
        pairs = np.unique(user.astype(np.int64) * span + day)
        users[:, 0] = np.bincount(pairs // span, minlength=n_users)
        np.maximum.at(users[:, 1], user, days)
        newest = np.full(n_users, np.inf)
        np.minimum.at(newest, user, days)
        users[:, 2] = np.where(np.isfinite(newest), newest, 0.0)
    return _Stage(
        t_ref=t_ref,
        B=b.astype(np.float32, copy=False),
        S=s,
        item=_item_features(item, user, days, n),
        idle=idle,
        count=count,
        subjects=SubjectIndex(data.users.ids[:n_users]),
        user=users,
    )


def _min_by_pair(user: IntArray, item: IntArray, value: FloatArray, n_rows: int, n: int) -> Any:
    """CSR ``n_rows x n`` holding the smallest ``value`` of each (user, item) pair."""
    if not user.size:
        return sp.csr_array((n_rows, n), dtype=np.float64)
    key = user.astype(np.int64) * n + item
    order = np.lexsort((value, key))
    ks = key[order]
    first = np.concatenate([[True], ks[1:] != ks[:-1]])
    pick = order[first]
    m = sp.csr_array((value[pick].astype(np.float64), (user[pick], item[pick])), shape=(n_rows, n))
    m.sort_indices()
    return m


def _item_features(item: IntArray, user: IntArray, days: FloatArray, n: int) -> FloatArray:
    """Per item: log1p distinct buyers in the last 7/14/30/90 days and ever, log growth
    of the last 14 days' buyers over the 14 before, days since the first and last sale
    (-1 for items never sold), log1p first-time buyers in the last 14 and 30 days."""
    span = int(user.max()) + 1 if user.size else 1

    def buyers(mask: Any) -> FloatArray:
        if not np.any(mask):
            return np.zeros(n)
        pairs = np.unique(item[mask].astype(np.int64) * span + user[mask])
        return np.bincount(pairs // span, minlength=n).astype(np.float64)

    cols = [np.log1p(buyers(days < d)) for d in MOMENTUM_DAYS]
    cols.append(np.log1p(buyers(np.ones(days.shape, dtype=np.bool_))))
    recent, before = buyers(days < 14.0), buyers((days >= 14.0) & (days < 28.0))
    cols.append(np.log((recent + 1.0) / (before + 1.0)))
    age = np.full(n, -np.inf)
    np.maximum.at(age, item, days)
    last = np.full(n, np.inf)
    np.minimum.at(last, item, days)
    cols.append(np.where(np.isfinite(age), age, -1.0))
    cols.append(np.where(np.isfinite(last), last, -1.0))
    # adopters: shoppers whose first event with the item is in the last 14 / 30 days
    first = np.zeros(0)
    first_item = np.zeros(0, dtype=np.int64)
    if item.size:
        key = item.astype(np.int64) * span + user
        order = np.lexsort((-days, key))
        ks = key[order]
        head = np.concatenate([[True], ks[1:] != ks[:-1]])
        first, first_item = days[order][head], item[order][head]
    for d in (14.0, 30.0):
        adopters = np.bincount(first_item[first < d], minlength=n).astype(np.float64)
        cols.append(np.log1p(adopters))
    return np.column_stack(cols)


@dataclass
class _Rows:
    """Stage-one inputs of a batch of shoppers (rows)."""

    binary: Any  # CSR rows x n: 1 where the shopper has the item
    decayed: Any  # CSR rows x n: 2^(-idle days / half-life)
    weight: Any  # CSR rows x n: count x decay (the repeat tier's order)
    user: FloatArray  # rows x 4: log1p items, log1p event days, idle days, tenure days
    subject: IntArray  # fitted subject of each row, -1 for none


def _finish_rows(
    idle: Any, count: Any, users: FloatArray, half_life: float, subject: IntArray
) -> _Rows:
    idle = sp.csr_array(idle)
    binary = idle.copy()
    binary.data = np.ones_like(binary.data)
    decayed = idle.copy()
    decayed.data = np.exp2(-decayed.data / half_life)
    weight = sp.csr_array(sp.csr_array(count).multiply(decayed))
    n_items = np.diff(binary.indptr).astype(np.float64)
    feats = np.column_stack([np.log1p(n_items), np.log1p(users[:, 0]), users[:, 2], users[:, 1]])
    return _Rows(binary, decayed, weight, feats, subject)


def _rows_of_subjects(stage: _Stage, subjects: IntArray, half_life: float) -> _Rows:
    return _finish_rows(
        stage.idle[subjects], stage.count[subjects], stage.user[subjects], half_life, subjects
    )


def _rows_of_contexts(stage: _Stage, contexts: Sequence[Context], half_life: float) -> _Rows:
    """Fitted rows of the contexts' subjects merged with their recent items.

    A recent item's idle time is the smaller one; its count the larger one (recent
    events of a known subject are usually among its fitted ones).
    """
    n = stage.n_items
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    idle: list[FloatArray] = []
    cnt: list[FloatArray] = []
    users = np.zeros((len(contexts), 3), dtype=np.float64)
    subject = np.full(len(contexts), -1, dtype=np.int64)
    for r, c in enumerate(contexts):
        u = stage.subjects.of(c)
        fitted = 0 <= u < stage.idle.shape[0]
        subject[r] = u if fitted else -1
        if fitted:
            lo, hi = stage.idle.indptr[u], stage.idle.indptr[u + 1]
            cols.append(stage.idle.indices[lo:hi].astype(np.int64))
            idle.append(stage.idle.data[lo:hi].astype(np.float64))
            cnt.append(stage.count.data[lo:hi].astype(np.float64))
            rows.append(np.full(hi - lo, r, np.int64))
            users[r] = stage.user[u]
        items = np.asarray(c.recent_items, dtype=np.int64)
        ts = np.asarray(c.recent_ts, dtype=np.float64)
        if ts.shape != items.shape:
            ts = np.full(items.shape, stage.t_ref)
        ok = (items >= 0) & (items < n)
        days = np.maximum((stage.t_ref - ts[ok]) / SECONDS_PER_DAY, 0.0)
        cols.append(items[ok])
        idle.append(days)
        cnt.append(np.ones(days.shape[0]))
        rows.append(np.full(days.shape[0], r, np.int64))
        if not fitted and days.size:
            n_days = np.unique(np.floor(ts[ok] / SECONDS_PER_DAY)).shape[0]
            users[r] = [n_days, days.max(), days.min()]
    row = np.concatenate(rows)
    col = np.concatenate(cols)
    idle_v = np.concatenate(idle)
    cnt_v = np.concatenate(cnt)
    m_idle = _min_by_pair(row, col, idle_v, len(contexts), n)
    m_cnt = _min_by_pair(row, col, -cnt_v, len(contexts), n)
    m_cnt.data = -m_cnt.data
    return _finish_rows(m_idle, m_cnt, users, half_life, subject)


def _order(scores: FloatArray) -> IntArray:
    """Columns of each row, best first; ties go to the lower column."""
    cols = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.asarray(np.lexsort((cols, -scores), axis=1), dtype=np.int64)


@dataclass
class _Batch:
    """Candidates of a batch of shoppers: flat (row, item) pairs and their features."""

    row: IntArray
    item: IntArray
    features: FloatArray
    ease: FloatArray  # rows x n: EASE scores (the order of the last tier)
    repeat: Any  # CSR rows x n: recency-weighted frequency of history items


def _user_knn(stage: _Stage, query: Any, subject: IntArray) -> FloatArray:
    """User-based scores: the items of the ``USER_NEIGHBOURS`` fitted subjects most
    similar (cosine) to each query row, weighted by similarity; the row's own subject
    is not its neighbour."""
    fitted = sp.csr_array(stage.idle, dtype=np.float32)
    fitted.data = np.ones_like(fitted.data)
    norm = np.sqrt(np.maximum(np.diff(fitted.indptr), 1)).astype(np.float32)
    fitted = sp.csr_array(sp.diags_array(1.0 / norm) @ fitted)
    qn = np.sqrt(np.asarray(query.multiply(query).sum(axis=1)).reshape(-1))
    q = sp.csr_array(sp.diags_array(1.0 / np.maximum(qn, 1e-12)) @ query)
    sim = np.asarray(sp.csr_array(q @ fitted.T).toarray(), dtype=np.float64)
    own = subject >= 0
    sim[np.flatnonzero(own), subject[own]] = 0.0
    k = min(USER_NEIGHBOURS, sim.shape[1])
    if k < sim.shape[1]:
        cut = np.partition(sim, sim.shape[1] - k, axis=1)[:, sim.shape[1] - k][:, None]
        sim = np.where(sim >= cut, sim, 0.0)
    binary = sp.csr_array(stage.idle, dtype=np.float64)
    binary.data = np.ones_like(binary.data)
    return np.asarray((sp.csr_array(sim) @ binary).toarray(), dtype=np.float64)


def _candidates(
    stage: _Stage, rows: _Rows, text: Any | None, n_candidates: int, n_popular: int
) -> _Batch:
    n = stage.n_items
    xb = sp.csr_array(rows.binary, dtype=np.float32)
    xd = sp.csr_array(rows.decayed, dtype=np.float32)
    ease = np.asarray(xb @ stage.B, dtype=np.float64)
    ease_recent = np.asarray(xd @ stage.B, dtype=np.float64)
    knn = np.asarray(xd @ stage.S, dtype=np.float64)
    uknn = _user_knn(stage, xd, rows.subject)
    seen = rows.binary.toarray() > 0
    pick = np.zeros(seen.shape, dtype=np.bool_)
    ranks: list[FloatArray] = []
    k = min(n_candidates, n)
    for s in (ease, ease_recent, knn, uknn):
        order = _order(np.where(seen, -np.inf, s))
        rank = np.empty(order.shape, dtype=np.float64)
        np.put_along_axis(rank, order, np.arange(n, dtype=np.float64)[None, :], axis=1)
        ranks.append(rank)
        np.put_along_axis(pick, order[:, :k], True, axis=1)
    if n_popular > 0:
        popular = np.argsort(-stage.item[:, _BUYERS_30], kind="stable")[:n_popular]
        pick[:, popular] = True
    pick &= ~seen
    pick[:, stage.item[:, _BUYERS_ALL] <= 0] = False  # never sold in the fitted data
    row, item = np.nonzero(pick)
    best = [
        np.maximum(np.where(seen, -np.inf, s).max(axis=1), 1e-9)
        for s in (ease, ease_recent, knn, uknn)
    ]
    text_col = np.zeros(row.shape[0])
    if text is not None and rows.decayed.nnz and row.size:
        profile = sp.csr_array(rows.decayed @ text)  # rows x words
        norm = np.sqrt(np.asarray(profile.multiply(profile).sum(axis=1)).reshape(-1))
        profile = sp.csr_array(sp.diags_array(1.0 / np.maximum(norm, 1e-12)) @ profile)
        sim = sp.csr_array(profile @ sp.csr_array(text).T).toarray()
        text_col = sim[row, item]
    feats = np.column_stack(
        [
            ease[row, item],
            ranks[0][row, item],
            ease_recent[row, item],
            ranks[1][row, item],
            knn[row, item],
            ranks[2][row, item],
            uknn[row, item],
            ranks[3][row, item],
            text_col,
            stage.item[item],
            rows.user[row],
            ease[row, item] / best[0][row],
            ease_recent[row, item] / best[1][row],
            knn[row, item] / best[2][row],
            uknn[row, item] / best[3][row],
        ]
    )
    return _Batch(row.astype(np.int64), item.astype(np.int64), feats, ease, rows.weight)


def _text_matrix(
    tokens: Mapping[str, Sequence[str]] | None, items: Vocabulary, n: int
) -> Any | None:
    """Items x words, TF-IDF rows of unit length (None without tokens)."""
    if not tokens:
        return None
    vocab: dict[str, int] = {}
    r: list[int] = []
    c: list[int] = []
    for i in range(min(n, len(items))):
        for t in sorted(set(tokens.get(items.id(i), ()))):
            r.append(i)
            c.append(vocab.setdefault(t, len(vocab)))
    if not vocab:
        return None
    m = sp.csr_array((np.ones(len(r)), (r, c)), shape=(n, len(vocab)))
    df = np.bincount(np.asarray(c, dtype=np.int64), minlength=len(vocab))
    m = sp.csr_array(m @ sp.diags_array(np.log((1.0 + n) / (1.0 + df)) + 1.0))
    norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).reshape(-1))
    return sp.csr_array(sp.diags_array(1.0 / np.maximum(norm, 1e-12)) @ m)


class TwoStageRanker:
    """EASE / recency-EASE / item-kNN / user-kNN candidates reranked by LightGBM LambdaRank.

    ``label_days`` and ``n_windows`` set the windows the reranker learns from (see the
    module docstring). With fewer than ``min_groups`` shoppers whose first purchase of
    an item in a window is among their candidates (tiny data) there is no reranker and
    candidates keep their recency-EASE order.
    """

    name: ClassVar[str] = "rerank"
    #: ``shopcast evaluate`` runs it without being named only on these: its dense
    #: item-by-item matrices (2 × 8 bytes × items²) are built for purchase logs like Q3's.
    default_benchmarks: ClassVar[tuple[str, ...]] = ("q3",)

    stage_: _Stage
    booster_: Any | None
    text_: Any | None

    def __init__(
        self,
        reg: float = 500.0,
        half_life_days: float = 30.0,
        n_candidates: int = 200,
        n_popular: int = 200,
        label_days: float = 31.0,
        n_windows: int = 4,
        n_trees: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        min_groups: int = 20,
        repeat_first: bool = True,
        item_tokens: Mapping[str, Sequence[str]] | None = None,
        event_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        self.reg = check_positive("reg", reg)
        self.half_life_days = check_positive("half_life_days", half_life_days)
        self.label_days = check_positive("label_days", label_days)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        check_ints(
            ("n_candidates", n_candidates, 1),
            ("n_popular", n_popular, 0),
            ("n_windows", n_windows, 1),
            ("n_trees", n_trees, 1),
            ("num_leaves", num_leaves, 2),
            ("min_child_samples", min_child_samples, 1),
            ("min_groups", min_groups, 1),
        )
        self.n_candidates = n_candidates
        self.n_popular = n_popular
        self.n_windows = n_windows
        self.n_trees = n_trees
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.min_groups = min_groups
        self.repeat_first = bool(repeat_first)
        self.item_tokens = dict(item_tokens) if item_tokens else None
        self.event_weights = resolve_event_weights(event_weights)
        self.seed = seed
        self.progress = progress

    # -- fitting ---------------------------------------------------------------------------

    def _step(self, k: int, total: int, what: str) -> None:
        log.info("rerank %d/%d: %s", k, total, what)
        if self.progress is not None:
            self.progress(k, total, what)

    def fit(self, data: Interactions) -> Self:
        n = n_items_of(data)
        if n > MAX_ITEMS:
            raise ModelError(
                f"rerank keeps dense {n}x{n} item matrices; at most {MAX_ITEMS:,} items"
            )
        w = _weights(data, self.event_weights)
        if not (w > 0).any():
            raise ModelError("no events with a positive event weight to fit on")
        self.text_ = _text_matrix(self.item_tokens, data.items, n)
        total = self.n_windows + 2
        t_end = float(data.ts[w > 0].max())
        parts: list[tuple[FloatArray, FloatArray, IntArray]] = []
        for k in range(self.n_windows):
            start = t_end - (k + 1) * self.label_days * SECONDS_PER_DAY
            stop = start + self.label_days * SECONDS_PER_DAY
            self._step(k + 1, total, f"window {k + 1}: stage one before it, labels in it")
            found = self._window(data, w, n, start, stop)
            if found is not None:
                parts.append(found)
        n_groups = sum(int(g.shape[0]) for _, _, g in parts)
        self._step(self.n_windows + 1, total, f"reranker on {n_groups} shoppers")
        self.booster_ = None
        if n_groups >= self.min_groups:
            self.booster_ = self._train(
                np.concatenate([x for x, _, _ in parts]),
                np.concatenate([y for _, y, _ in parts]),
                np.concatenate([g for _, _, g in parts]),
            )
        else:
            log.info("rerank: %d shoppers with labels < min_groups: no reranker", n_groups)
        self._step(total, total, "stage one on every event")
        self.stage_ = _fit_stage(data, n, self.reg, self.event_weights)
        return self

    def _window(
        self, data: Interactions, w: FloatArray, n: int, start: float, stop: float
    ) -> tuple[FloatArray, FloatArray, IntArray] | None:
        """Features, labels and group sizes of one window (None when it teaches nothing)."""
        before = (data.ts < start) & (w > 0)
        inside = (data.ts >= start) & (data.ts < stop) & (w > 0)
        if not before.any() or not inside.any():
            return None
        stage = _fit_stage(subset_rows(data, before), n, self.reg, self.event_weights)
        n_users = stage.idle.shape[0]
        u_in, i_in = data.user[inside], data.item[inside]
        known = u_in < n_users
        u_in, i_in = u_in[known], i_in[known]
        has_row = np.diff(stage.idle.indptr)[u_in] > 0
        new = np.asarray(stage.count[u_in, i_in]).reshape(-1) == 0  # idle may be 0
        ok = has_row & new
        pos = np.unique(u_in[ok].astype(np.int64) * n + i_in[ok])
        subjects = np.unique(pos // n)
        if not subjects.size:
            return None
        rows = _rows_of_subjects(stage, subjects, self.half_life_days)
        batch = _candidates(stage, rows, self.text_, self.n_candidates, self.n_popular)
        y = np.isin(subjects[batch.row] * n + batch.item, pos).astype(np.float64)
        hit = np.bincount(batch.row, weights=y, minlength=subjects.shape[0]) > 0
        keep = hit[batch.row]  # shoppers without a positive candidate teach no order
        log.info(
            "rerank window: %d shoppers, %d with a hit, %d candidates, recall %.3f",
            subjects.shape[0],
            int(hit.sum()),
            int(keep.sum()),
            float(y.sum() / max(pos.shape[0], 1)),
        )
        if not keep.any():
            return None
        sizes = np.bincount(batch.row[keep], minlength=subjects.shape[0])
        return batch.features[keep], y[keep], sizes[sizes > 0].astype(np.int64)

    def _train(self, x: FloatArray, y: FloatArray, group: IntArray) -> Any:
        params = lambdarank_params(
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            seed=self.seed,
        )
        return train_lambdarank(x, y, group, FEATURES, params, self.n_trees)

    # -- scoring ---------------------------------------------------------------------------

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        require_fitted(self, "stage_")
        stage = self.stage_
        if not contexts:
            return np.empty((0, stage.n_items), dtype=np.float64)
        rows = _rows_of_contexts(stage, contexts, self.half_life_days)
        batch = _candidates(stage, rows, self.text_, self.n_candidates, self.n_popular)
        # tiers: other items in (0, 1) by EASE, candidates in (1, 2), history in (2, 3)
        out = 1.0 / (1.0 + np.exp(-np.clip(batch.ease, -30.0, 30.0)))
        if batch.row.size:
            if self.booster_ is not None:
                s = np.asarray(
                    self.booster_.predict(batch.features, num_threads=1), dtype=np.float64
                )
            else:
                s = batch.features[:, FEATURES.index("ease_recent")]
            out[batch.row, batch.item] = 1.0 + 1.0 / (1.0 + np.exp(-np.clip(s, -30.0, 30.0)))
        if self.repeat_first:
            rep = sp.coo_array(batch.repeat)
            out[rep.row, rep.col] = 2.0 + rep.data / (1.0 + rep.data)
        return out

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: Path) -> None:
        require_fitted(self, "stage_")
        st = self.stage_
        arrays: dict[str, Any] = {
            "B": st.B,
            "S": st.S,
            "item": st.item,
            "user": st.user,
            "subjects": st.subjects.keys,
            "idle_data": st.idle.data,
            "count_data": st.count.data,
            "indices": st.idle.indices,
            "indptr": st.idle.indptr,
        }
        if self.text_ is not None:
            t = sp.csr_array(self.text_)
            arrays |= {"text_data": t.data, "text_indices": t.indices, "text_indptr": t.indptr}
            arrays["text_shape"] = np.asarray(t.shape, dtype=np.int64)
        params = {
            "reg": self.reg,
            "half_life_days": self.half_life_days,
            "n_candidates": self.n_candidates,
            "n_popular": self.n_popular,
            "label_days": self.label_days,
            "n_windows": self.n_windows,
            "n_trees": self.n_trees,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "min_groups": self.min_groups,
            "repeat_first": self.repeat_first,
            "event_weights": self.event_weights,
            "seed": self.seed,
        }
        state = {
            "n_items": st.n_items,
            "t_ref": st.t_ref,
            "booster": self.booster_ is not None,
            "text": self.text_ is not None,
        }
        save_model(path, self, params=params, state=state, arrays=arrays)
        save_booster(path, self.booster_)

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        names = ("B", "S", "item", "user", "subjects", "idle_data", "count_data")
        model, state, a = load_model(path, cls, items, (*names, "indices", "indptr"))
        n = int(state["n_items"])
        shape = (a["indptr"].shape[0] - 1, n)
        model.stage_ = _Stage(
            t_ref=float(state["t_ref"]),
            B=a["B"],
            S=a["S"],
            item=a["item"],
            idle=sp.csr_array((a["idle_data"], a["indices"], a["indptr"]), shape=shape),
            count=sp.csr_array((a["count_data"], a["indices"], a["indptr"]), shape=shape),
            subjects=SubjectIndex(a["subjects"].tolist()),
            user=a["user"],
        )
        if not math.isfinite(model.stage_.t_ref) or a["B"].shape != (n, n):
            raise ModelError(f"{path} has bad stage-one arrays")
        model.text_ = None
        if state.get("text"):
            try:
                with np.load(Path(path) / "arrays.npz", allow_pickle=False) as npz:
                    model.text_ = sp.csr_array(
                        (npz["text_data"], npz["text_indices"], npz["text_indptr"]),
                        shape=tuple(int(v) for v in npz["text_shape"]),
                    )
            except (OSError, KeyError, ValueError) as exc:
                raise ModelError(f"cannot read the word vectors at {path}: {exc}") from None
        model.booster_ = None
        if state.get("booster"):
            model.booster_ = load_booster(path)
        return model
