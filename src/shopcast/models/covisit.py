"""Item-to-item co-visitation, weighted by event type and recency."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from shopcast.errors import ConfigError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    SECONDS_PER_DAY,
    check_positive,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
    top_indices,
    weight_array,
)

#: Online pair weights are merged into ``matrix_`` once the delta holds this many entries
#: (or a tenth of ``matrix_.nnz`` when that is more).
MERGE_MIN_ENTRIES = 100_000
#: ``learn`` moves ``t_ref_`` forward (rescaling everything) once events are this many
#: half-lives newer, so float32 weights never overflow.
REBASE_HALF_LIVES = 16.0
#: After ``unlearn``, a pair weight within this fraction of what it was is rounding
#: (float32 storage): removed.
UNLEARN_RESIDUE = 1e-5
#: Rows kept by ``_row`` (~1.6 KB each at 100 neighbours); all dropped when full.
ROW_CACHE = 8_192


class CoVisitation:
    """Items seen by the same shopper close together are related.

    Events of one subject (user or anonymous session), ordered by time, are paired
    with the previous ``window`` events of that subject; events whose type weighs 0
    (impressions, searches by default) are left out first. A pair (a, b), b the later
    event, adds ``sqrt(w(a) · w(b)) · 2^((t_b - t_ref_) / half_life)`` to both
    ``M[a, b]`` and ``M[b, a]``; ``t_ref_`` is the newest event of the training data.
    Pairs of an item with itself are skipped (they still take a window slot). After
    ``fit`` each row keeps its ``max_neighbors`` largest entries (ties: lower index),
    so ``M`` may then be slightly asymmetric.

    ``score`` is a weighted mean over ``context.recent_items`` (most recent last): the
    k-th most recent item, weighing ``session_decay**k``, contributes its row of ``M``
    divided by the row's maximum, so scores lie in [0, 1]. Context items without any
    neighbour (unknown ones too) keep their rank but are left out of the mean. Only the
    latest ``context_items`` items of a context count (an older one would weigh less
    than ``session_decay**context_items``): a long live session costs no more.

    Online: ``learn`` keeps the last ``window`` weighted items of each of the
    ``max_live_subjects`` most recently active subjects and adds the new pairs to
    ``delta_``, which ``score`` reads at once and which is merged into ``matrix_`` when
    it grows large, on ``save`` and when ``t_ref_`` moves. Only events passed to
    ``learn`` enter these rings: events from before ``fit``/``load`` are not paired with
    online ones (the next ``fit`` pairs them). Rows are not pruned online. ``save``
    persists ``matrix_`` (with the delta merged in) but not the rings. Not thread-safe:
    callers serialize ``learn`` with the other methods.

    Learned state: ``matrix_`` (scipy CSR, float32), ``delta_``, ``recent_``,
    ``t_ref_``, ``n_items_``.
    """

    name: ClassVar[str] = "covisit"

    matrix_: Any  # scipy.sparse.csr_array, float32, n_items_ x n_items_ or smaller
    delta_: dict[int, dict[int, float]]
    recent_: OrderedDict[int, deque[tuple[int, float]]]
    t_ref_: float
    n_items_: int

    def __init__(
        self,
        window: int = 5,
        half_life_days: float = 60.0,
        event_weights: Mapping[str, float] | None = None,
        max_neighbors: int = 100,
        session_decay: float = 0.7,
        max_live_subjects: int = 100_000,
        context_items: int = 20,
    ) -> None:
        for label, value in (
            ("window", window),
            ("max_neighbors", max_neighbors),
            ("max_live_subjects", max_live_subjects),
            ("context_items", context_items),
        ):
            if value < 1:
                raise ConfigError(f"{label} must be >= 1, got {value}")
        if not 0 < session_decay <= 1:
            raise ConfigError(f"session_decay must be in (0, 1], got {session_decay}")
        self.window = window
        self.half_life_days = check_positive("half_life_days", half_life_days)
        self.event_weights = resolve_event_weights(event_weights)
        self.max_neighbors = max_neighbors
        self.session_decay = session_decay
        self.max_live_subjects = max_live_subjects
        self.context_items = context_items

    @property
    def _half_life(self) -> float:
        return self.half_life_days * SECONDS_PER_DAY

    def fit(self, data: Interactions) -> Self:
        n = max(len(data.items), int(data.item.max(initial=-1)) + 1)
        self.t_ref_ = float(data.ts.max()) if len(data) else 0.0
        w = weight_array(self.event_weights)[data.type]
        keep = w > 0
        subject, item, ts, w = data.user[keep], data.item[keep], data.ts[keep], w[keep]
        order = np.lexsort((ts, subject))  # by subject, then time; stable
        subject, item, ts, w = subject[order], item[order], ts[order], w[order]
        decay = np.exp2((ts - self.t_ref_) / self._half_life)

        # One lag at a time, summed into CSR (int32 indices): the pairs of a log of
        # millions of events never sit in memory all at once.
        index = np.int32 if n < 2**31 - 1 else np.int64
        item = item.astype(index)
        total = sp.csr_array((n, n), dtype=np.float64)
        for k in range(1, min(self.window, item.shape[0] - 1) + 1):
            pair = (subject[k:] == subject[:-k]) & (item[k:] != item[:-k])
            early, late = item[:-k][pair], item[k:][pair]
            v = np.sqrt(w[:-k][pair] * w[k:][pair]) * decay[k:][pair]
            lag = sp.coo_array(
                (
                    np.concatenate([v, v]),
                    (np.concatenate([early, late]), np.concatenate([late, early])),
                ),
                shape=(n, n),
            ).tocsr()
            del pair, early, late, v
            total = sp.csr_array(total + lag)
        self.matrix_ = _prune(total, self.max_neighbors).astype(np.float32)
        self.matrix_.eliminate_zeros()  # pairs decayed to nothing
        self.n_items_ = n
        self._reset_online()
        return self

    def learn(self, data: Interactions) -> None:
        """Pair new events with the subject's previous ones; new items are accepted."""
        require_fitted(self, "matrix_")
        self.n_items_ = max(self.n_items_, len(data.items), int(data.item.max(initial=-1)) + 1)
        if not len(data):
            return
        newest = float(data.ts.max())
        if newest - self.t_ref_ > REBASE_HALF_LIVES * self._half_life:
            self._rebase(newest)
        w = weight_array(self.event_weights)[data.type]
        keep = w > 0
        decay = np.exp2((data.ts[keep] - self.t_ref_) / self._half_life)
        rings = self.recent_
        for s, i, wi, di in zip(
            data.user[keep].tolist(),
            data.item[keep].tolist(),
            w[keep].tolist(),
            decay.tolist(),
            strict=True,
        ):
            ring = rings.get(s)
            if ring is None:
                ring = rings[s] = deque(maxlen=self.window)
                if len(rings) > self.max_live_subjects:
                    rings.popitem(last=False)
            else:
                rings.move_to_end(s)
            for j, wj in ring:
                if j != i:
                    v = (wi * wj) ** 0.5 * di
                    self._bump(i, j, v)
                    self._bump(j, i, v)
            ring.append((i, wi))
        if self._delta_entries > max(MERGE_MIN_ENTRIES, self.matrix_.nnz // 10):
            self._merge()

    def unlearn(self, data: Interactions) -> None:
        """Take the pairs of ``data``'s events back out (an erasure), and forget the live
        ring of each subject in ``data``.

        The pairs are formed as ``fit`` forms them (per subject, time order, ``window``)
        and their current weight is subtracted. Entries left within rounding of 0 are
        removed, none goes below 0. Pass events ``fit`` saw and events ``learn`` saw in
        separate calls: pairs across the two were never added.
        """
        require_fitted(self, "matrix_")
        for s in np.unique(data.user).tolist():
            self.recent_.pop(int(s), None)
        n = self.n_items_
        known = (data.item >= 0) & (data.item < n)
        if not known.any():
            return
        w = weight_array(self.event_weights)[data.type]
        keep = known & (w > 0)
        subject, item, ts, w = data.user[keep], data.item[keep], data.ts[keep], w[keep]
        order = np.lexsort((ts, subject))
        subject, item, ts, w = subject[order], item[order], ts[order], w[order]
        decay = np.exp2((ts - self.t_ref_) / self._half_life)
        rows: list[IntArray] = []
        cols: list[IntArray] = []
        vals: list[FloatArray] = []
        for k in range(1, min(self.window, item.shape[0] - 1) + 1):
            pair = (subject[k:] == subject[:-k]) & (item[k:] != item[:-k])
            early, late = item[:-k][pair], item[k:][pair]
            v = np.sqrt(w[:-k][pair] * w[k:][pair]) * decay[k:][pair]
            rows += [early, late]
            cols += [late, early]
            vals += [v, v]
        if not rows:
            return
        sub = sp.coo_array(
            (_concat(vals, np.float64), (_concat(rows, np.int64), _concat(cols, np.int64))),
            shape=(n, n),
        ).tocsr()
        sub.sum_duplicates()
        self._merge()
        old = self.matrix_.astype(np.float64)
        left = sp.csr_array(old - sub)
        # Keep entries clearly above rounding (this also drops negative ones).
        kept = sp.csr_array(left - UNLEARN_RESIDUE * (old + sub)) > 0
        left = sp.csr_array(left.multiply(kept))
        left.eliminate_zeros()
        left.sort_indices()
        self.matrix_ = left.astype(np.float32)
        self._rows.clear()

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        require_fitted(self, "matrix_")
        parts, inverse, _, norm = self._contributions(context, candidates)
        total = parts.sum(axis=0) / norm if norm else parts.sum(axis=0)
        return np.asarray(total[inverse], dtype=np.float64)

    def contributors(self, context: Context, candidates: IntArray) -> IntArray:
        """For each candidate, the recent item that adds most to its score (-1 if none).

        Ties go to the more recent item.
        """
        require_fitted(self, "matrix_")
        parts, inverse, recent, _ = self._contributions(context, candidates)
        return _best_contributors(parts, inverse, recent)

    def score_and_contributors(
        self, context: Context, candidates: IntArray
    ) -> tuple[FloatArray, IntArray]:
        """``score`` and ``contributors`` from one pass over the context's rows (a
        candidate source that also explains its items pays for the pass once)."""
        require_fitted(self, "matrix_")
        parts, inverse, recent, norm = self._contributions(context, candidates)
        total = parts.sum(axis=0) / norm if norm else parts.sum(axis=0)
        scores = np.asarray(total[inverse], dtype=np.float64)
        return scores, _best_contributors(parts, inverse, recent)

    def neighbors(self, item_index: int, k: int) -> tuple[IntArray, FloatArray]:
        """The ``k`` items most co-visited with ``item_index``, best first.

        Weights are divided by the row maximum: the same values ``score`` gives for a
        context holding only ``item_index``. Unknown items have no neighbours.
        """
        require_fitted(self, "matrix_")
        cols, vals = self._row(item_index)
        best = top_indices(vals, k)
        scale = vals.max() if vals.size else 1.0
        return cols[best], vals[best] / scale

    def save(self, path: Path) -> None:
        """Save ``matrix_`` with the online delta merged in (the rings are not saved)."""
        require_fitted(self, "matrix_")
        self._merge()
        m = self.matrix_
        save_model(
            path,
            self,
            params={
                "window": self.window,
                "half_life_days": self.half_life_days,
                "event_weights": self.event_weights,
                "max_neighbors": self.max_neighbors,
                "session_decay": self.session_decay,
                "max_live_subjects": self.max_live_subjects,
                "context_items": self.context_items,
            },
            state={"t_ref": self.t_ref_, "n_items": self.n_items_},
            arrays={"data": m.data, "indices": m.indices, "indptr": m.indptr},
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        model, state, arrays = load_model(path, cls, items, ("data", "indices", "indptr"))
        n = int(state["n_items"])
        model.matrix_ = sp.csr_array(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n)
        )
        model.t_ref_ = float(state["t_ref"])
        model.n_items_ = n
        model._reset_online()
        return model

    # -- internals -------------------------------------------------------------------

    def _contributions(
        self, context: Context, candidates: IntArray
    ) -> tuple[FloatArray, IntArray, IntArray, float]:
        """``(parts, inverse, recent, norm)``.

        ``recent`` is the context, most recent first; ``parts[k, j]`` is what
        ``recent[k]`` adds to unique candidate ``j`` (decayed, row-max normalized);
        ``inverse`` maps each candidate to its ``j``; ``norm`` is the summed decay of
        the context items that have neighbours.
        """
        recent = np.asarray(context.recent_items, dtype=np.int64)[::-1][: self.context_items]
        unique, inverse = np.unique(np.asarray(candidates, dtype=np.int64), return_inverse=True)
        parts = np.zeros((recent.shape[0], unique.shape[0]), dtype=np.float64)
        norm = 0.0
        # A session often holds an item several times: its row is read and matched once.
        matched: dict[int, tuple[IntArray, FloatArray, float] | None] = {}
        for k, r in enumerate(recent.tolist()):
            if r not in matched:
                cols, vals = self._row(r)
                if not cols.size:
                    matched[r] = None
                else:
                    pos = np.minimum(np.searchsorted(unique, cols), max(unique.shape[0] - 1, 0))
                    hit = unique[pos] == cols if unique.size else np.zeros(cols.shape, bool)
                    matched[r] = (pos[hit], vals[hit], float(vals.max()))
            found = matched[r]
            if found is None:
                continue
            weight = self.session_decay**k
            norm += weight
            parts[k, found[0]] = weight * found[1] / found[2]  # as before, to the last bit
        return parts, inverse.reshape(-1), recent, norm

    def _row(self, r: int) -> tuple[IntArray, FloatArray]:
        """Column indices (sorted) and positive weights of row ``r``, delta included.

        Rows are kept once read (a request reads the rows of every session item, and
        the same items' rows again on the next requests) until the row changes:
        ``_bump`` drops the row it adds to, ``_merge``/``_rebase``/``unlearn``/``fit``/
        ``load`` all rows. Callers must not write into the arrays returned."""
        if not 0 <= r < self.n_items_:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        rows: dict[int, tuple[IntArray, FloatArray]] = self.__dict__.setdefault("_rows", {})
        found = rows.get(r)
        if found is not None:
            return found
        if len(rows) >= ROW_CACHE:
            rows.clear()
        found = rows[r] = self._read_row(r)
        return found

    def _read_row(self, r: int) -> tuple[IntArray, FloatArray]:
        m = self.matrix_
        if r < m.shape[0]:
            lo, hi = m.indptr[r], m.indptr[r + 1]
            cols = m.indices[lo:hi].astype(np.int64)
            vals = m.data[lo:hi].astype(np.float64)
        else:
            cols, vals = np.empty(0, np.int64), np.empty(0, np.float64)
        extra = self.delta_.get(r)
        if extra:
            cols = np.concatenate([cols, np.fromiter(extra, np.int64, len(extra))])
            vals = np.concatenate([vals, np.fromiter(extra.values(), np.float64, len(extra))])
            cols, inv = np.unique(cols, return_inverse=True)
            vals = np.bincount(inv.reshape(-1), weights=vals, minlength=cols.shape[0])
        positive = vals > 0
        return cols[positive], vals[positive]

    def _reset_online(self) -> None:
        self._rows: dict[int, tuple[IntArray, FloatArray]] = {}
        self.delta_ = {}
        self.recent_ = OrderedDict()
        self._delta_entries = 0

    def _bump(self, a: int, b: int, v: float) -> None:
        self._rows.pop(a, None)
        row = self.delta_.setdefault(a, {})
        old = row.get(b)
        if old is None:
            self._delta_entries += 1
            row[b] = v
        else:
            row[b] = old + v

    def _merge(self) -> None:
        """Fold ``delta_`` into ``matrix_`` and grow it to ``n_items_``."""
        n = self.n_items_
        m = self.matrix_
        if m.shape[0] < n:
            m = sp.csr_array(
                (m.data, m.indices, np.pad(m.indptr, (0, n - m.shape[0]), "edge")), shape=(n, n)
            )
        if self.delta_:
            rows = [a for a, row in self.delta_.items() for _ in row]
            cols = [b for row in self.delta_.values() for b in row]
            vals = [v for row in self.delta_.values() for v in row.values()]
            delta = sp.coo_array((vals, (rows, cols)), shape=(n, n)).tocsr()
            m = (m.astype(np.float64) + delta).astype(np.float32).tocsr()
            m.sort_indices()
            self.delta_ = {}
            self._delta_entries = 0
        self.matrix_ = m
        self._rows.clear()

    def _rebase(self, t_ref: float) -> None:
        """Move ``t_ref_`` to ``t_ref``, rescaling all learned weights."""
        self._merge()
        self.matrix_.data *= np.float32(2.0 ** ((self.t_ref_ - t_ref) / self._half_life))
        self.matrix_.eliminate_zeros()
        self.t_ref_ = t_ref
        self._rows.clear()


def _concat(parts: list[Any], dtype: type[np.generic]) -> Any:
    return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)


def _prune(m: Any, k: int) -> Any:
    """Keep the ``k`` largest entries of each row of CSR ``m`` (ties: lower column)."""
    m.sum_duplicates()
    counts = np.diff(m.indptr)
    if counts.size == 0 or counts.max() <= k:
        return m
    row = np.repeat(np.arange(m.shape[0]), counts)
    heavy = np.flatnonzero(counts[row] > k)  # entries of rows that must be cut
    # Stable sort: entries are in column order, so ties keep the lower column first.
    order = heavy[np.lexsort((-m.data[heavy], row[heavy]))]
    heavy_counts = counts[counts > k]
    starts = np.concatenate([[0], np.cumsum(heavy_counts)[:-1]])
    rank = np.arange(order.shape[0]) - np.repeat(starts, heavy_counts)
    keep = np.ones(m.nnz, dtype=np.bool_)
    keep[order[rank >= k]] = False
    indptr = np.concatenate([[0], np.cumsum(np.minimum(counts, k))])
    return sp.csr_array((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def _best_contributors(parts: FloatArray, inverse: IntArray, recent: IntArray) -> IntArray:
    """Per candidate, the recent item with the largest part (-1 when none adds)."""
    if not recent.size:
        return np.full(inverse.shape, -1, dtype=np.int64)
    best = np.where(parts.max(axis=0) > 0, recent[parts.argmax(axis=0)], -1)
    return np.asarray(best[inverse], dtype=np.int64)
