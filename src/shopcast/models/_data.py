"""Matrices, ratings and per-user ridge solves shared by the factor and neighbour models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from shopcast.domain import EventType
from shopcast.errors import ModelError
from shopcast.models._base import EVENT_CODES, Context, FloatArray, IntArray, Interactions
from shopcast.models._common import weight_array

#: Entries per chunk of ``ridge_by_group`` times the squared dimension (bounds memory).
_CHUNK_FLOATS = 1 << 17


def n_items_of(data: Interactions) -> int:
    return max(len(data.items), int(data.item.max(initial=-1)) + 1)


def subset_rows(data: Interactions, mask: Any) -> Interactions:
    """The interactions ``mask`` (booleans or row indices) selects, same vocabularies."""
    return Interactions(
        users=data.users,
        items=data.items,
        user=data.user[mask],
        item=data.item[mask],
        type=data.type[mask],
        ts=data.ts[mask],
        value=data.value[mask],
    )


def n_users_of(data: Interactions) -> int:
    return max(len(data.users), int(data.user.max(initial=-1)) + 1)


def user_item_matrix(
    data: Interactions, weights: Mapping[str, float], *, binary: bool, n_items: int
) -> Any:
    """CSR ``users x n_items`` (float64): summed event weights, or 1 where positive."""
    w = weight_array(weights)[data.type]
    keep = w > 0
    m = sp.csr_array(
        (w[keep], (data.user[keep], data.item[keep])), shape=(n_users_of(data), n_items)
    )
    m.sum_duplicates()
    if binary:
        m.data[:] = 1.0
    return m


def explicit_ratings(data: Interactions) -> tuple[IntArray, IntArray, FloatArray]:
    """``(user, item, rating)`` of the ``rate`` events with a value; the latest per pair wins.

    Raises ``ModelError`` when there is none.
    """
    rows = explicit_rating_rows(data)
    return data.user[rows], data.item[rows], data.value[rows].astype(np.float64)


def explicit_rating_rows(data: Interactions) -> IntArray:
    """Positions in ``data`` of the ratings ``explicit_ratings`` returns, in its order
    (so ``data.ts[rows]`` are their timestamps). Raises ``ModelError`` when there is none."""
    keep = np.flatnonzero((data.type == EVENT_CODES[EventType.RATE]) & np.isfinite(data.value))
    user, item = data.user[keep], data.item[keep]
    if not user.size:
        raise ModelError("no explicit ratings (rate events with a value) to fit on")
    key = user * (int(item.max()) + 1) + item
    # Events are in time order: keep the last occurrence of each (user, item).
    _, last = np.unique(key[::-1], return_index=True)
    pick = np.sort(user.shape[0] - 1 - last)
    rows: IntArray = keep[pick].astype(np.int64)
    return rows


def als_baselines(
    user: IntArray,
    item: IntArray,
    r: FloatArray,
    n_users: int,
    n_items: int,
    *,
    reg_users: float,
    reg_items: float,
    n_epochs: int,
) -> tuple[float, FloatArray, FloatArray]:
    """``(μ, b_u, b_i)`` by ``n_epochs`` rounds of regularized alternating least squares
    (item biases with ``reg_items``, then user biases with ``reg_users``; Surprise's ALS
    baselines)."""
    mu = float(r.mean())
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    n_u = np.bincount(user, minlength=n_users)
    n_i = np.bincount(item, minlength=n_items)
    for _ in range(n_epochs):
        bi = np.bincount(item, r - mu - bu[user], n_items) / (reg_items + n_i)
        bu = np.bincount(user, r - mu - bi[item], n_users) / (reg_users + n_u)
    return mu, bu, bi


class SubjectIndex:
    """Maps a ``Context`` to the fitted subject index (``u:<user>`` or ``s:<session>``)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = np.asarray(list(keys), dtype=np.str_)
        self._index = {k: i for i, k in enumerate(self.keys.tolist())}

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def of(self, context: Context) -> int:
        """The subject index of ``context`` or -1 when unknown (user id tried first)."""
        for prefix, value in (("u:", context.user_id), ("s:", context.session_id)):
            if value:
                idx = self._index.get(prefix + value, -1)
                if idx >= 0:
                    return idx
        return -1


def context_matrix(
    contexts: Sequence[Context],
    history: Any,
    subjects: SubjectIndex,
    weights: Mapping[str, float],
    *,
    binary: bool,
) -> Any:
    """CSR ``len(contexts) x n_items``: each subject's fitted row plus its recent items.

    A recent item adds the weight of its type (1 when ``recent_types`` is missing);
    items outside the fitted range are dropped.
    """
    n_items = history.shape[1]
    w_type = weight_array(weights)
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    for r, c in enumerate(contexts):
        u = subjects.of(c)
        if 0 <= u < history.shape[0]:
            lo, hi = history.indptr[u], history.indptr[u + 1]
            cols.append(history.indices[lo:hi].astype(np.int64))
            vals.append(history.data[lo:hi].astype(np.float64))
            rows.append(np.full(hi - lo, r, np.int64))
        items = np.asarray(c.recent_items, dtype=np.int64)
        types = np.asarray(c.recent_types, dtype=np.int64)
        v = w_type[types] if types.shape == items.shape else np.ones(items.shape[0])
        ok = (items >= 0) & (items < n_items) & (v > 0)
        cols.append(items[ok])
        vals.append(v[ok])
        rows.append(np.full(int(ok.sum()), r, np.int64))
    m = sp.csr_array(
        (
            np.concatenate(vals) if vals else np.empty(0),
            (
                np.concatenate(rows) if rows else np.empty(0, np.int64),
                np.concatenate(cols) if cols else np.empty(0, np.int64),
            ),
        ),
        shape=(len(contexts), n_items),
    )
    m.sum_duplicates()
    if binary:
        m.data[:] = 1.0
    return m


#: Array names of a saved history (``history_arrays``).
HISTORY_ARRAYS = ("h_data", "h_indices", "h_indptr", "subjects")


def history_arrays(history: Any, subjects: SubjectIndex) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays that persist a fitted ``X`` and its subject keys."""
    return {
        "h_data": history.data,
        "h_indices": history.indices,
        "h_indptr": history.indptr,
        "subjects": subjects.keys,
    }


def load_history(
    arrays: Mapping[str, np.ndarray[Any, Any]], n_items: int
) -> tuple[Any, SubjectIndex]:
    """``(history, subjects)`` back from ``history_arrays``."""
    subjects = SubjectIndex(arrays["subjects"].tolist())
    history = sp.csr_array(
        (arrays["h_data"], arrays["h_indices"], arrays["h_indptr"]),
        shape=(arrays["h_indptr"].shape[0] - 1, n_items),
    )
    return history, subjects


def ridge_by_group(
    group: IntArray,
    n_groups: int,
    feats: FloatArray,
    gram_weight: FloatArray,
    rhs: FloatArray,
    reg: FloatArray,
    gram0: FloatArray | None = None,
    *,
    rhs0: FloatArray | None = None,
    noise: FloatArray | None = None,
) -> FloatArray:
    """Solve one ridge system per group, vectorized.

    For each ``g``: ``(gram0 + Σ w_e f_e f_eᵀ + diag(reg_g)) x_g = Σ rhs_e f_e`` over the
    entries ``e`` with ``group[e] == g`` (plus ``rhs0`` on the right). ``feats`` is ``(n, d)``;
    ``reg`` is ``(d,)`` or ``(n_groups, d)``. Groups without entries get 0. With ``noise``
    (``(n_groups, d)`` standard normals) each ``x_g`` is instead a draw from the Gaussian with
    that mean and the system matrix as precision.
    """
    d = feats.shape[1]
    reg2 = np.broadcast_to(np.asarray(reg, dtype=np.float64), (n_groups, d))
    out = np.zeros((n_groups, d), dtype=np.float64)
    order = np.argsort(group, kind="stable")
    g_sorted = group[order]
    present, starts = np.unique(g_sorted, return_index=True)
    ends = np.append(starts[1:], g_sorted.shape[0])
    step = max(1, _CHUNK_FLOATS // (d * d))
    first = 0
    while first < present.shape[0]:
        # Take groups until the chunk's entries reach ``step`` (at least one group).
        limit = starts[first] + step
        last = max(first + 1, int(np.searchsorted(ends, limit, side="right")))
        lo, hi = int(starts[first]), int(ends[last - 1])
        idx = order[lo:hi]
        f = feats[idx]
        wf = f * gram_weight[idx, None]
        outer = wf[:, :, None] * f[:, None, :]
        offsets = starts[first:last] - lo
        a = np.add.reduceat(outer, offsets, axis=0)
        b = np.add.reduceat(f * rhs[idx, None], offsets, axis=0)
        gs = present[first:last]
        if gram0 is not None:
            a += gram0
        if rhs0 is not None:
            b += rhs0
        a[:, np.arange(d), np.arange(d)] += reg2[gs]
        out[gs] = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        if noise is not None:
            lower = np.linalg.cholesky(a)
            out[gs] += np.linalg.solve(np.swapaxes(lower, 1, 2), noise[gs][:, :, None])[:, :, 0]
        first = last
    return out
