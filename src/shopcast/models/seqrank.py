"""Sequence-aware two-stage ranking: order-aware item-item candidates, LightGBM LambdaRank.

Each subject's events (weight > 0 under ``event_weights``, in time order, consecutive
repeats of one item collapsed) form a sequence. Stage one, fitted on the sequences:

- EASE (Steck 2019) on the binary history, scored from the whole history and from a
  position-decayed one (weight ``2^(-k / half_life)`` for the item ``k`` steps back);
- a transition model: ``T[i, j]`` counts ``j`` following ``i`` within ``trans_window``
  steps, ``trans_decay^(d-1)`` for distance ``d``, rows divided by their sum to the power
  ``trans_norm``; a shopper's scores are ``Σ_k user_decay^(k-1) T[item k back]`` over the
  last ``user_last`` items (the next-item analogue of co-visitation, with direction);
- co-occurrence within the window in both directions, cosine-normalized, from the
  same last items;
- SLIT (Choi et al. 2021, the transition part of SLIST): the ridge regression
  ``(SᵀS + slit_reg·I)⁻¹ SᵀY`` of each item on the decayed ``trans_window`` items before
  it, scored from the same last items;
- attribute matches (given ``attributes``: category / brand ids) between the candidate
  and the last item, the last few (decayed) and the whole history;
- popularity over all positions and at the last positions of the sequences.

The union of the top ``n_candidates`` of EASE, recency-EASE, transitions,
co-occurrence and SLIT (items the shopper already has left out) are the candidates;
stage two orders them with a LambdaRank model over the scores, their ranks and ratios
to the shopper's best, attribute matches, popularity and the sequence length
(``FEATURES``).

The reranker learns without leakage from the fitted data itself: for ``w`` in
``1..n_windows`` stage one is fitted on every sequence minus its last ``w`` items and
the label is the ``w``-th item from the end (at most ``max_train_users`` shoppers a
window, a seeded sample). Stage one is then refitted on every sequence.

Scoring reads the sequence from ``context.recent_items`` (in time order; the fitted
sequence of the context's subject when there are none) and the history for EASE from
the subject's fitted items plus the recent ones. Score layout (higher is better):
candidates by the reranker in (1, 2), every other item by EASE in (0, 1); items not
fitted score 0.

Learned state: the stage-one arrays (``B``, the sparse transition / co-occurrence and
attribute matrices, popularity, the fitted sequences) in ``arrays.npz`` and the booster
as LightGBM's text format (``booster.txt``); never pickle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

from shopcast.errors import ConfigError, ModelError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    check_ints,
    check_positive,
    gather,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
    weight_array,
)
from shopcast.models._data import SubjectIndex, n_items_of, n_users_of
from shopcast.models._lambdarank import (
    lambdarank_params,
    load_booster,
    save_booster,
    train_lambdarank,
)
from shopcast.models.sasrec import ItemAttributes

log = logging.getLogger(__name__)

MAX_ITEMS = 40_000
#: Shoppers scored at once (dense rows x items float32 matrices, several of them).
CHUNK = 512
#: Sequence positions counted as "the end" for tail popularity.
TAIL = 3

F32 = npt.NDArray[np.float32]

GENERATORS = ("ease", "ease_recent", "trans", "cooc", "slit")
FEATURES = (
    "ease",
    "ease_rank",
    "ease_vs_best",
    "ease_recent",
    "ease_recent_rank",
    "ease_recent_vs_best",
    "trans",
    "trans_rank",
    "trans_vs_best",
    "cooc",
    "cooc_rank",
    "cooc_vs_best",
    "slit",
    "slit_rank",
    "slit_vs_best",
    "trans_last",
    "trans_second",
    "trans_back",
    "p_last",
    "ease_last",
    "attr_last",
    "attr_recent",
    "attr_history",
    "item_attrs",
    "pop",
    "pop_tail",
    "pop_last_item",
    "seq_len",
    "n_generators",
)


# -- sequences -------------------------------------------------------------------------


@dataclass
class _Seqs:
    """Ragged sequences: subject ``u``'s items are ``items[indptr[u]:indptr[u + 1]]``."""

    indptr: IntArray
    items: IntArray

    def __len__(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def get(self, u: int) -> IntArray:
        return self.items[self.indptr[u] : self.indptr[u + 1]]

    @property
    def lengths(self) -> IntArray:
        return np.diff(self.indptr)

    def cut(self, w: int) -> _Seqs:
        """Every sequence without its last ``w`` items (empty when shorter)."""
        lens = np.maximum(self.lengths - w, 0)
        keep = np.zeros(self.items.shape[0], dtype=np.bool_)
        starts = self.indptr[:-1]
        idx = np.repeat(starts, lens) + _ranges(lens)
        keep[idx] = True
        return _Seqs(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), self.items[keep])


def _ranges(lens: IntArray) -> IntArray:
    """``[0..lens[0]), [0..lens[1]), …`` concatenated."""
    total = int(lens.sum())
    if not total:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lens)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - lens, lens)


def _sequences(data: Interactions, event_weights: Mapping[str, float]) -> _Seqs:
    """Each subject's items in time order (ties keep input order), weight > 0, with
    consecutive repeats of one item collapsed."""
    w = weight_array(event_weights)[data.type]
    keep = np.flatnonzero(w > 0)
    user, item, ts = data.user[keep], data.item[keep], data.ts[keep]
    order = np.lexsort((np.arange(user.shape[0]), ts, user))
    user, item = user[order], item[order]
    first = np.ones(user.shape[0], dtype=np.bool_)
    first[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    user, item = user[first], item[first]
    counts = np.bincount(user, minlength=n_users_of(data))
    return _Seqs(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), item.astype(np.int64))


# -- stage one -------------------------------------------------------------------------


@dataclass
class _Stage:
    """Stage one fitted on some sequences."""

    B: F32  # EASE weights (n x n), zero diagonal
    L: F32  # SLIT weights (n x n): ridge regression of the next item on the decayed last items
    T: Any  # CSR n x n: decayed, row-normalized transitions i -> j
    T1: Any  # CSR n x n: raw counts of j right after i
    C: Any  # CSR n x n: cosine co-occurrence within the window, both directions
    A: Any  # CSR n x attributes, rows of unit length (zero rows without attributes)
    pop: FloatArray  # n x 3: log1p count, log1p count at the tail, number of attributes

    @property
    def n_items(self) -> int:
        return int(self.B.shape[0])


def _spd_inverse32(g: F32) -> F32:
    """Inverse of a symmetric positive definite float32 matrix (overwrites ``g``)."""
    c, info = lapack.spotrf(g, lower=1, overwrite_a=1, clean=1)
    if info != 0:
        raise ModelError(f"EASE: the Gram matrix is not positive definite (info {info})")
    inv, info = lapack.spotri(c, lower=1, overwrite_c=1)
    if info != 0:
        raise ModelError(f"EASE: inversion failed (info {info})")
    inv = np.tril(inv)
    inv += np.tril(inv, -1).T
    return np.asarray(inv, dtype=np.float32)


def _pairs(seqs: _Seqs, window: int) -> tuple[IntArray, IntArray, IntArray]:
    """``(src, dst, distance)`` of every ordered pair at most ``window`` steps apart."""
    src: list[IntArray] = []
    dst: list[IntArray] = []
    dist: list[IntArray] = []
    owner = np.repeat(np.arange(len(seqs)), seqs.lengths)
    for d in range(1, window + 1):
        same = owner[d:] == owner[:-d] if owner.shape[0] > d else np.zeros(0, np.bool_)
        src.append(seqs.items[:-d][same] if same.size else np.empty(0, np.int64))
        dst.append(seqs.items[d:][same] if same.size else np.empty(0, np.int64))
        dist.append(np.full(int(same.sum()), d, dtype=np.int64))
    return np.concatenate(src), np.concatenate(dst), np.concatenate(dist)


def _fit_stage(
    seqs: _Seqs,
    n: int,
    attrs: Any,
    *,
    reg: float,
    window: int,
    decay: float,
    norm: float,
    slit_reg: float,
) -> _Stage:
    n_rows = len(seqs)
    rows = np.repeat(np.arange(n_rows), seqs.lengths)
    x = sp.csr_array((np.ones(rows.shape[0], np.float32), (rows, seqs.items)), shape=(n_rows, n))
    x.sum_duplicates()
    count = np.asarray(x.sum(axis=0)).reshape(-1).astype(np.float64)
    x.data[:] = 1.0
    g = np.asarray((x.T @ x).toarray(), dtype=np.float32)
    g[np.diag_indices(n)] += np.float32(reg)
    b = _spd_inverse32(g)
    del g
    b /= -np.diag(b)[None, :]
    b[np.diag_indices(n)] = 0.0
    src, dst, dist = _pairs(seqs, window)
    w = np.power(decay, dist - 1).astype(np.float64)
    t = sp.csr_array((w, (src, dst)), shape=(n, n))
    t.sum_duplicates()
    t.setdiag(0)
    t.eliminate_zeros()
    rs = np.asarray(t.sum(axis=1)).reshape(-1)
    tn = sp.csr_array(sp.diags_array(1.0 / np.maximum(rs, 1.0) ** norm) @ t)
    one = dist == 1
    t1 = sp.csr_array((np.ones(int(one.sum())), (src[one], dst[one])), shape=(n, n))
    t1.sum_duplicates()
    both = sp.csr_array(t + t.T)
    deg = np.sqrt(np.maximum(np.asarray(both.sum(axis=1)).reshape(-1), 1.0))
    c = sp.csr_array(sp.diags_array(1.0 / deg) @ both @ sp.diags_array(1.0 / deg))
    tail = seqs.items[_tail_mask(seqs, TAIL)]
    n_attr = np.diff(sp.csr_array(attrs).indptr).astype(np.float64)
    pop = np.column_stack(
        [np.log1p(count), np.log1p(np.bincount(tail, minlength=n)[:n]), n_attr]
    ).astype(np.float64)
    return _Stage(
        B=b,
        L=_slit(seqs, n, t, reg=slit_reg, window=window, decay=decay),
        T=sp.csr_array(tn, dtype=np.float32),
        T1=sp.csr_array(t1, dtype=np.float32),
        C=sp.csr_array(c, dtype=np.float32),
        A=attrs,
        pop=pop,
    )


def _slit(seqs: _Seqs, n: int, t: Any, *, reg: float, window: int, decay: float) -> F32:
    """SLIT (Choi et al. 2021): ``(SᵀS + reg·I)⁻¹ SᵀY`` where each row of ``S`` holds the
    ``window`` items before a position (``decay^(d-1)`` for ``d`` steps back) and ``Y``
    the item at that position; ``SᵀY`` is the raw decayed transition matrix ``t``."""
    pos = np.arange(seqs.items.shape[0])
    owner = np.repeat(np.arange(len(seqs)), seqs.lengths)
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    for d in range(1, window + 1):
        if owner.shape[0] <= d:
            break
        same = owner[d:] == owner[:-d]
        rows.append(pos[d:][same])
        cols.append(seqs.items[:-d][same])
        vals.append(np.full(int(same.sum()), decay ** (d - 1)))
    if rows:
        st = sp.csr_array(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(pos.shape[0], n),
        )
    else:
        st = sp.csr_array((pos.shape[0], n), dtype=np.float32)
    g = np.asarray((st.T @ st).toarray(), dtype=np.float32)
    g[np.diag_indices(n)] += np.float32(reg)
    p = _spd_inverse32(g)
    del g
    return np.asarray(sp.csr_array(t, dtype=np.float32).T @ p.T, dtype=np.float32).T.copy()


def _tail_mask(seqs: _Seqs, k: int) -> npt.NDArray[np.bool_]:
    """Items among the last ``k`` of their sequence."""
    back = np.repeat(seqs.indptr[1:], seqs.lengths) - np.arange(seqs.items.shape[0]) - 1
    return np.asarray(back < k)


def _attribute_matrix(attributes: ItemAttributes | None, items: Vocabulary, n: int) -> Any:
    """Items x attribute keys, rows of unit length (zero rows for items without any)."""
    if attributes is None:
        return sp.csr_array((n, 1), dtype=np.float32)
    keys: dict[str, int] = {}
    r: list[int] = []
    c: list[int] = []
    for i in range(min(n, len(items))):
        for a in sorted({str(v) for v in attributes.of.get(items.id(i), ())}):
            r.append(i)
            c.append(keys.setdefault(a, len(keys)))
    m = sp.csr_array(
        (np.ones(len(r), np.float32), (np.asarray(r, np.int64), np.asarray(c, np.int64))),
        shape=(n, max(len(keys), 1)),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    norm = np.sqrt(np.maximum(np.diff(m.indptr), 1)).astype(np.float32)
    return sp.csr_array(sp.diags_array(1.0 / norm) @ m, dtype=np.float32)


# -- candidates ------------------------------------------------------------------------


@dataclass
class _Params:
    half_life: float
    user_last: int
    user_decay: float
    n_candidates: int


def _top(scores: F32, k: int) -> IntArray:
    """The ``k`` best columns of each row, unordered (``-inf`` entries may be among them)."""
    n = scores.shape[1]
    if k >= n:
        return np.broadcast_to(np.arange(n), scores.shape).copy()
    return np.asarray(np.argpartition(-scores, k - 1, axis=1)[:, :k], dtype=np.int64)


def _rank_of(scores: F32, k: int) -> F32:
    """``rank[r, j]``: 0-based rank of ``j`` in row ``r`` when among the top ``k``, else ``k``."""
    top = _top(scores, k)
    vals = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    ranked = np.take_along_axis(top, order, axis=1)
    out = np.full(scores.shape, float(k), dtype=np.float32)
    np.put_along_axis(out, ranked, np.arange(top.shape[1], dtype=np.float32)[None, :], axis=1)
    return out


@dataclass
class _Batch:
    row: IntArray
    item: IntArray
    features: F32
    fallback: F32  # rows x n: the order of items that are not candidates


def _query_matrices(
    seqs: Sequence[IntArray], history: Any, n: int, p: _Params
) -> tuple[Any, Any, Any, IntArray, IntArray]:
    """Binary history, position-decayed history and the decayed last items of each row;
    the last and second-to-last item (-1 when missing)."""
    rows_d: list[IntArray] = []
    cols_d: list[IntArray] = []
    vals_d: list[FloatArray] = []
    rows_q: list[IntArray] = []
    cols_q: list[IntArray] = []
    vals_q: list[FloatArray] = []
    last = np.full(len(seqs), -1, dtype=np.int64)
    second = np.full(len(seqs), -1, dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[(s >= 0) & (s < n)]
        if not s.size:
            continue
        back = np.arange(s.shape[0] - 1, -1, -1, dtype=np.float64)
        rows_d.append(np.full(s.shape[0], r, np.int64))
        cols_d.append(s)
        vals_d.append(np.exp2(-back / p.half_life))
        k = min(p.user_last, s.shape[0])
        rows_q.append(np.full(k, r, np.int64))
        cols_q.append(s[::-1][:k])
        vals_q.append(np.power(p.user_decay, np.arange(k, dtype=np.float64)))
        last[r] = s[-1]
        if s.shape[0] > 1:
            second[r] = s[-2]

    def build(rows: list[IntArray], cols: list[IntArray], vals: list[FloatArray], op: str) -> Any:
        if not rows:
            return sp.csr_array((len(seqs), n), dtype=np.float32)
        rr, cc, vv = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        if op == "max":  # keep the largest value of each (row, col)
            order = np.lexsort((-vv, rr * n + cc))
            key = (rr * n + cc)[order]
            head = np.ones(key.shape[0], dtype=np.bool_)
            head[1:] = key[1:] != key[:-1]
            rr, cc, vv = rr[order][head], cc[order][head], vv[order][head]
        m = sp.csr_array((vv.astype(np.float32), (rr, cc)), shape=(len(seqs), n))
        m.sum_duplicates()
        return m

    decayed = build(rows_d, cols_d, vals_d, "max")
    binary = sp.csr_array(decayed, copy=True)
    binary.data[:] = 1.0
    if history is not None:
        binary = sp.csr_array(binary + history)
        binary.data[:] = 1.0
        # fitted items absent from the recent sequence: the smallest recency weight
        extra = sp.csr_array(history - history.multiply(decayed > 0))
        extra.eliminate_zeros()
        extra.data[:] = np.float32(np.exp2(-float(TAIL * 10) / p.half_life))
        decayed = sp.csr_array(decayed + extra)
    query = build(rows_q, cols_q, vals_q, "sum")
    return binary, decayed, query, last, second


def _dense(m: Any) -> F32:
    return np.asarray(sp.csr_array(m).toarray(), dtype=np.float32)


def _candidates(stage: _Stage, seqs: Sequence[IntArray], history: Any, p: _Params) -> _Batch:
    """Candidates and features of one chunk of shoppers (rows)."""
    n = stage.n_items
    binary, decayed, query, last, second = _query_matrices(seqs, history, n, p)
    seen = _dense(binary) > 0
    scores = {
        "ease": np.asarray(binary @ stage.B, dtype=np.float32),
        "ease_recent": np.asarray(decayed @ stage.B, dtype=np.float32),
        "trans": _dense(query @ stage.T),
        "cooc": _dense(query @ stage.C),
        "slit": np.asarray(query @ stage.L, dtype=np.float32),
    }
    k = min(p.n_candidates, n)
    pick = np.zeros(seen.shape, dtype=np.bool_)
    ranks: dict[str, F32] = {}
    best: dict[str, F32] = {}
    for name, s in scores.items():
        masked = np.where(seen, -np.inf, s).astype(np.float32)
        ranks[name] = _rank_of(masked, k)
        chosen = ranks[name] < k
        if name in ("trans", "cooc"):
            chosen &= masked > 0  # no arbitrary picks among zeros
        pick |= chosen
        best[name] = np.maximum(masked.max(axis=1, initial=-np.inf), 1e-9).astype(np.float32)
    pick &= ~seen
    pick[:, stage.pop[:, 0] <= 0] = False  # never seen in the fitted sequences
    row, item = np.nonzero(pick)
    has_last = last >= 0
    lastc = np.where(has_last, last, 0)
    t1_last = _dense(stage.T1[lastc]) * has_last[:, None]
    has_second = second >= 0
    t1_second = _dense(stage.T1[np.where(has_second, second, 0)]) * has_second[:, None]
    back = _dense(stage.T1[:, lastc].T) * has_last[:, None]
    a = sp.csr_array(stage.A)
    prof_last = sp.csr_array(a[lastc].multiply(has_last[:, None].astype(np.float32)))
    prof_recent = _unit_rows(query @ a)
    prof_hist = _unit_rows(binary @ a)
    a_t = sp.csr_array(a.T)
    attr_last = _dense(prof_last @ a_t)
    attr_recent = _dense(prof_recent @ a_t)
    attr_hist = _dense(prof_hist @ a_t)
    seq_len = np.log1p(np.asarray(binary.sum(axis=1)).reshape(-1)).astype(np.float32)
    pop_last = stage.pop[lastc, 0] * has_last
    n_gen = np.zeros(row.shape[0], dtype=np.float32)
    cols: list[Any] = []
    for name in GENERATORS:
        v = scores[name][row, item]
        rk = ranks[name][row, item]
        n_gen += rk < k
        cols += [v, rk, v / best[name][row]]
    cols += [
        t1_last[row, item],
        t1_second[row, item],
        back[row, item],
        t1_last[row, item] / np.maximum(t1_last.sum(axis=1), 1.0)[row],
        stage.B[lastc[row], item] * has_last[row],
        attr_last[row, item],
        attr_recent[row, item],
        attr_hist[row, item],
        stage.pop[item, 2],
        stage.pop[item, 0],
        stage.pop[item, 1],
        pop_last[row],
        seq_len[row],
        n_gen,
    ]
    feats = np.column_stack(cols).astype(np.float32)
    fallback = (1.0 / (1.0 + np.exp(-np.clip(scores["ease_recent"], -30.0, 30.0)))).astype(
        np.float32
    )
    return _Batch(row.astype(np.int64), item.astype(np.int64), feats, fallback)


def _unit_rows(m: Any) -> Any:
    m = sp.csr_array(m, dtype=np.float32)
    norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).reshape(-1))
    return sp.csr_array(sp.diags_array(1.0 / np.maximum(norm, 1e-12)) @ m, dtype=np.float32)


# -- the model -------------------------------------------------------------------------


class SequenceRanker:
    """EASE / recency-EASE / transition / co-occurrence candidates of a shopper's
    sequence, reordered by LightGBM LambdaRank (see the module docstring).

    With fewer than ``min_groups`` shoppers whose label is among their candidates (tiny
    data) there is no reranker and candidates keep the order of the transition scores
    plus recency-EASE.
    """

    name: ClassVar[str] = "seqrank"
    #: ``shopcast evaluate`` runs it without being named only on these (dense n x n EASE).
    default_benchmarks: ClassVar[tuple[str, ...]] = ("q2",)

    stage_: _Stage
    booster_: Any | None
    seqs_: _Seqs
    history_: Any
    subjects_: SubjectIndex

    def __init__(
        self,
        reg: float = 250.0,
        slit_reg: float = 10.0,
        half_life: float = 3.0,
        trans_window: int = 5,
        trans_decay: float = 0.6,
        trans_norm: float = 0.5,
        user_last: int = 5,
        user_decay: float = 0.5,
        n_candidates: int = 100,
        n_windows: int = 2,
        max_train_users: int = 30_000,
        n_trees: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        min_groups: int = 20,
        attributes: ItemAttributes | None = None,
        event_weights: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.reg = check_positive("reg", reg)
        self.slit_reg = check_positive("slit_reg", slit_reg)
        self.half_life = check_positive("half_life", half_life)
        self.trans_decay = check_positive("trans_decay", trans_decay)
        self.user_decay = check_positive("user_decay", user_decay)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        if not 0.0 <= trans_norm <= 1.0:
            raise ConfigError(f"trans_norm must be within [0, 1], got {trans_norm}")
        self.trans_norm = float(trans_norm)
        check_ints(
            ("trans_window", trans_window, 1),
            ("user_last", user_last, 1),
            ("n_candidates", n_candidates, 1),
            ("n_windows", n_windows, 1),
            ("max_train_users", max_train_users, 1),
            ("n_trees", n_trees, 1),
            ("num_leaves", num_leaves, 2),
            ("min_child_samples", min_child_samples, 1),
            ("min_groups", min_groups, 1),
        )
        self.trans_window = trans_window
        self.user_last = user_last
        self.n_candidates = n_candidates
        self.n_windows = n_windows
        self.max_train_users = max_train_users
        self.n_trees = n_trees
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.min_groups = min_groups
        self.attributes = attributes
        self.event_weights = resolve_event_weights(event_weights)
        self.seed = seed

    @property
    def _p(self) -> _Params:
        return _Params(self.half_life, self.user_last, self.user_decay, self.n_candidates)

    def _stage(self, seqs: _Seqs, n: int, attrs: Any) -> _Stage:
        return _fit_stage(
            seqs,
            n,
            attrs,
            reg=self.reg,
            window=self.trans_window,
            decay=self.trans_decay,
            norm=self.trans_norm,
            slit_reg=self.slit_reg,
        )

    # -- fitting -----------------------------------------------------------------------

    def fit(self, data: Interactions) -> Self:
        n = n_items_of(data)
        if n > MAX_ITEMS:
            raise ModelError(f"seqrank keeps a dense {n}x{n} EASE matrix; at most {MAX_ITEMS:,}")
        seqs = _sequences(data, self.event_weights)
        if not seqs.items.size:
            raise ModelError("no events with a positive event weight to fit on")
        attrs = _attribute_matrix(self.attributes, data.items, n)
        parts: list[tuple[F32, FloatArray, IntArray]] = []
        rng = np.random.default_rng(self.seed)
        for w in range(1, self.n_windows + 1):
            found = self._window(seqs, n, attrs, w, rng)
            if found is not None:
                parts.append(found)
        n_groups = sum(int(g.shape[0]) for _, _, g in parts)
        self.booster_ = None
        if n_groups >= self.min_groups:
            self.booster_ = self._train(
                np.concatenate([x for x, _, _ in parts]),
                np.concatenate([y for _, y, _ in parts]),
                np.concatenate([g for _, _, g in parts]),
            )
        else:
            log.info("seqrank: %d shoppers with labels < min_groups: no reranker", n_groups)
        self.stage_ = self._stage(seqs, n, attrs)
        self.seqs_ = seqs
        rows = np.repeat(np.arange(len(seqs)), seqs.lengths)
        hist = sp.csr_array(
            (np.ones(rows.shape[0], np.float32), (rows, seqs.items)), shape=(len(seqs), n)
        )
        hist.sum_duplicates()
        hist.data[:] = 1.0
        self.history_ = hist
        self.subjects_ = SubjectIndex(data.users.ids[: len(seqs)])
        return self

    def _window(
        self, seqs: _Seqs, n: int, attrs: Any, w: int, rng: np.random.Generator
    ) -> tuple[F32, FloatArray, IntArray] | None:
        """Features, labels and group sizes of window ``w`` (None when it teaches nothing)."""
        lens = seqs.lengths
        users = np.flatnonzero(lens > w)  # at least one item before the label
        if not users.size:
            return None
        if users.shape[0] > self.max_train_users:
            users = np.sort(rng.choice(users, self.max_train_users, replace=False))
        before = seqs.cut(w)
        stage = self._stage(before, n, attrs)
        label = seqs.items[seqs.indptr[users + 1] - w]
        xs: list[F32] = []
        ys: list[FloatArray] = []
        gs: list[IntArray] = []
        hits = 0
        for lo in range(0, users.shape[0], CHUNK):
            chunk = users[lo : lo + CHUNK]
            batch = _candidates(stage, [before.get(int(u)) for u in chunk], None, self._p)
            y = (batch.item == label[lo : lo + CHUNK][batch.row]).astype(np.float64)
            hit = np.bincount(batch.row, weights=y, minlength=chunk.shape[0]) > 0
            hits += int(hit.sum())
            keep = hit[batch.row]
            if keep.any():
                xs.append(batch.features[keep])
                ys.append(y[keep])
                sizes = np.bincount(batch.row[keep], minlength=chunk.shape[0])
                gs.append(sizes[sizes > 0].astype(np.int64))
        log.info(
            "seqrank window %d: %d shoppers, label among the candidates for %d (%.3f)",
            w,
            users.shape[0],
            hits,
            hits / users.shape[0],
        )
        if not xs:
            return None
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)

    def _train(self, x: F32, y: FloatArray, group: IntArray) -> Any:
        params = lambdarank_params(
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            seed=self.seed,
        )
        return train_lambdarank(x, y, group, FEATURES, params, self.n_trees)

    # -- scoring -----------------------------------------------------------------------

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def _context_rows(self, contexts: Sequence[Context]) -> tuple[list[IntArray], Any]:
        """Each context's sequence (its recent items, else its subject's fitted sequence)
        and the fitted history rows of the subjects (zero rows for unknown ones)."""
        n = self.stage_.n_items
        seqs: list[IntArray] = []
        subj = np.full(len(contexts), -1, dtype=np.int64)
        for r, c in enumerate(contexts):
            u = self.subjects_.of(c)
            fitted = 0 <= u < len(self.seqs_)
            subj[r] = u if fitted else -1
            recent = np.asarray(c.recent_items, dtype=np.int64)
            recent = recent[(recent >= 0) & (recent < n)]
            if recent.size:
                keep = np.ones(recent.shape[0], dtype=np.bool_)
                keep[1:] = recent[1:] != recent[:-1]
                seqs.append(recent[keep])
            elif fitted:
                seqs.append(self.seqs_.get(int(u)))
            else:
                seqs.append(np.empty(0, dtype=np.int64))
        ok = subj >= 0
        hist = sp.csr_array((len(contexts), n), dtype=np.float32)
        if ok.any():
            sel = sp.csr_array(
                (np.ones(int(ok.sum()), np.float32), (np.flatnonzero(ok), subj[ok])),
                shape=(len(contexts), self.history_.shape[0]),
            )
            hist = sp.csr_array(sel @ self.history_)
        return seqs, hist

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        require_fitted(self, "stage_")
        n = self.stage_.n_items
        out = np.zeros((len(contexts), n), dtype=np.float64)
        for lo in range(0, len(contexts), CHUNK):
            part = contexts[lo : lo + CHUNK]
            seqs, hist = self._context_rows(part)
            batch = _candidates(self.stage_, seqs, hist, self._p)
            block = batch.fallback.astype(np.float64)
            if batch.row.size:
                if self.booster_ is not None:
                    s = np.asarray(
                        self.booster_.predict(batch.features, num_threads=1), dtype=np.float64
                    )
                else:
                    f = batch.features
                    s = np.asarray(
                        f[:, FEATURES.index("trans")] * 10.0 + f[:, FEATURES.index("ease_recent")],
                        dtype=np.float64,
                    )
                block[batch.row, batch.item] = 1.0 + 1.0 / (1.0 + np.exp(-np.clip(s, -30, 30)))
            empty = np.asarray(hist.sum(axis=1)).reshape(-1) == 0
            empty &= np.array([q.shape[0] == 0 for q in seqs], dtype=np.bool_)
            block[empty] = 0.0
            out[lo : lo + len(part)] = block
        return out

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        require_fitted(self, "stage_")
        st = self.stage_
        arrays: dict[str, Any] = {"B": st.B, "L": st.L, "pop": st.pop}
        for key, m in (("T", st.T), ("T1", st.T1), ("C", st.C), ("A", st.A), ("H", self.history_)):
            m = sp.csr_array(m)
            arrays |= {
                f"{key}_data": m.data,
                f"{key}_indices": m.indices,
                f"{key}_indptr": m.indptr,
                f"{key}_shape": np.asarray(m.shape, dtype=np.int64),
            }
        arrays |= {
            "seq_indptr": self.seqs_.indptr,
            "seq_items": self.seqs_.items,
            "subjects": self.subjects_.keys,
        }
        params = {
            "reg": self.reg,
            "slit_reg": self.slit_reg,
            "half_life": self.half_life,
            "trans_window": self.trans_window,
            "trans_decay": self.trans_decay,
            "trans_norm": self.trans_norm,
            "user_last": self.user_last,
            "user_decay": self.user_decay,
            "n_candidates": self.n_candidates,
            "n_windows": self.n_windows,
            "max_train_users": self.max_train_users,
            "n_trees": self.n_trees,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "min_groups": self.min_groups,
            "event_weights": self.event_weights,
            "seed": self.seed,
        }
        state = {"n_items": st.n_items, "booster": self.booster_ is not None}
        save_model(path, self, params=params, state=state, arrays=arrays)
        save_booster(path, self.booster_)

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        sparse = ("T", "T1", "C", "A", "H")
        names = [f"{k}_{part}" for k in sparse for part in ("data", "indices", "indptr", "shape")]
        model, state, a = load_model(
            path, cls, items, ("B", "L", "pop", *names, "seq_indptr", "seq_items", "subjects")
        )
        n = int(state["n_items"])

        def csr(key: str) -> Any:
            shape = tuple(int(v) for v in a[f"{key}_shape"])
            return sp.csr_array(
                (a[f"{key}_data"], a[f"{key}_indices"], a[f"{key}_indptr"]), shape=shape
            )

        if a["B"].shape != (n, n) or a["L"].shape != (n, n) or a["pop"].shape != (n, 3):
            raise ModelError(f"{path} has bad stage-one arrays")
        model.stage_ = _Stage(
            B=a["B"], L=a["L"], T=csr("T"), T1=csr("T1"), C=csr("C"), A=csr("A"), pop=a["pop"]
        )
        model.history_ = csr("H")
        model.seqs_ = _Seqs(a["seq_indptr"].astype(np.int64), a["seq_items"].astype(np.int64))
        model.subjects_ = SubjectIndex(a["subjects"].tolist())
        model.booster_ = None
        if state.get("booster"):
            model.booster_ = load_booster(path)
        return model
