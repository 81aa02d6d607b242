"""Accuracy and beyond-accuracy metrics, vectorized over users.

Ranking metrics work on a boolean ``hits`` matrix: ``hits[u, r]`` is True when the
item at rank ``r`` (0 = best) of user ``u``'s list is relevant; ``n_relevant[u]`` is
the size of the user's relevant set (items that are not in the list count too).
Per-user functions return one value per row; users with no relevant item get 0 (leave
them out before averaging). ``ranking_metrics`` averages everything for a set of cutoffs.

Conventions (the usual ones; see each docstring):

- Recall@K divides by ``|relevant|``, or by ``min(K, |relevant|)`` with ``capped=True``
  (the Q3 protocol's denominator).
- NDCG@K uses binary gains ``1 / log2(rank + 2)`` and the ideal DCG of
  ``min(K, |relevant|)`` hits at the top.
- AP@K divides by ``min(K, |relevant|)``; MAP@K is its mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shopcast.errors import ValidationError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "average_precision_at_k",
    "catalog_coverage",
    "f1_at_k",
    "hit_rate_at_k",
    "hits_matrix",
    "intra_list_diversity",
    "mae",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "rmse",
]


# -- rating ----------------------------------------------------------------------------


def _pair(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValidationError(f"{t.shape[0]} true values but {p.shape[0]} predictions")
    if not t.size:
        raise ValidationError("no values to compare")
    return t, p


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Root mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


# -- ranking ---------------------------------------------------------------------------


def hits_matrix(top: IntArray, relevant: Any) -> BoolArray:
    """``hits[u, r]``: is ``top[u, r]`` in row ``u`` of ``relevant``?

    ``top`` holds item indices (-1 pads short lists and never hits); ``relevant`` is
    a sparse matrix (users x items, nonzero = relevant) or a sequence of item sets.
    """
    top = np.asarray(top, dtype=np.int64)
    if top.ndim != 2:
        raise ValidationError("top must be a 2-D array (users x ranks)")
    n, k = top.shape
    if sp.issparse(relevant):
        csr = _clean(relevant)
        if csr.shape[0] != n:
            raise ValidationError(f"{n} lists but {csr.shape[0]} relevance rows")
        width = max(int(csr.shape[1]), int(top.max(initial=-1)) + 1, 1)
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(csr.indptr))
        keys = rows * width + csr.indices.astype(np.int64)  # sorted: CSR rows, sorted columns
    else:
        sets = list(relevant)
        if len(sets) != n:
            raise ValidationError(f"{n} lists but {len(sets)} relevance rows")
        width = max([int(top.max(initial=-1)) + 1, 1] + [max(s, default=-1) + 1 for s in sets])
        keys = np.sort(
            np.fromiter((u * width + int(i) for u, s in enumerate(sets) for i in s), dtype=np.int64)
        )
    query = np.arange(n, dtype=np.int64)[:, None] * width + top
    pos = np.minimum(np.searchsorted(keys, query), max(keys.shape[0] - 1, 0))
    found = keys[pos] == query if keys.size else np.zeros((n, k), dtype=np.bool_)
    return np.asarray(found & (top >= 0), dtype=np.bool_)


def _clean(relevant: Any) -> Any:
    """A CSR copy without duplicates or explicit zeros, columns sorted."""
    csr = sp.csr_array(relevant, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    return csr


def _cut(hits: BoolArray, k: int) -> BoolArray:
    if k < 1:
        raise ValidationError(f"k must be >= 1, got {k}")
    h = np.asarray(hits, dtype=np.bool_)
    if h.ndim != 2:
        raise ValidationError("hits must be a 2-D array (users x ranks)")
    return h[:, :k]


def _safe_div(num: FloatArray, den: npt.ArrayLike) -> FloatArray:
    d = np.asarray(den, dtype=np.float64)
    return np.divide(num, d, out=np.zeros_like(num, dtype=np.float64), where=d > 0)


def precision_at_k(hits: BoolArray, k: int) -> FloatArray:
    """Hits in the top ``k`` divided by ``k``."""
    return np.asarray(_cut(hits, k).sum(axis=1) / float(k), dtype=np.float64)


def recall_at_k(
    hits: BoolArray, n_relevant: npt.ArrayLike, k: int, *, capped: bool = False
) -> FloatArray:
    """Hits in the top ``k`` over ``|relevant|`` (``min(k, |relevant|)`` when ``capped``)."""
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    den = np.minimum(n_rel, k) if capped else n_rel
    return _safe_div(_cut(hits, k).sum(axis=1).astype(np.float64), den)


def f1_at_k(hits: BoolArray, n_relevant: npt.ArrayLike, k: int) -> FloatArray:
    """Harmonic mean of Precision@K and (uncapped) Recall@K; 0 when both are 0."""
    p = precision_at_k(hits, k)
    r = recall_at_k(hits, n_relevant, k)
    return _safe_div(2 * p * r, p + r)


def _discounts(k: int) -> FloatArray:
    return 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)


def ndcg_at_k(hits: BoolArray, n_relevant: npt.ArrayLike, k: int) -> FloatArray:
    """DCG of the top ``k`` (binary gains) over the DCG of an ideal list."""
    h = _cut(hits, k)
    disc = _discounts(k)
    dcg = (h * disc[: h.shape[1]]).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    n_ideal = np.minimum(np.asarray(n_relevant, dtype=np.int64), k)
    return _safe_div(dcg, ideal_cum[n_ideal])


def hit_rate_at_k(hits: BoolArray, k: int) -> FloatArray:
    """1 when any of the top ``k`` is relevant, else 0."""
    return np.asarray(_cut(hits, k).any(axis=1), dtype=np.float64)


def mrr_at_k(hits: BoolArray, k: int) -> FloatArray:
    """1 / (rank of the first hit, from 1) within the top ``k``; 0 without a hit."""
    h = _cut(hits, k)
    first = h.argmax(axis=1).astype(np.float64)
    return np.asarray(np.where(h.any(axis=1), 1.0 / (first + 1.0), 0.0), dtype=np.float64)


def average_precision_at_k(hits: BoolArray, n_relevant: npt.ArrayLike, k: int) -> FloatArray:
    """Sum of Precision@r at each hit rank r <= ``k``, over ``min(k, |relevant|)``."""
    h = _cut(hits, k).astype(np.float64)
    prec = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1, dtype=np.float64)
    den = np.minimum(np.asarray(n_relevant, dtype=np.float64), k)
    return _safe_div((prec * h).sum(axis=1), den)


# -- beyond accuracy ---------------------------------------------------------------------


def catalog_coverage(top: IntArray, n_items: int) -> float:
    """Share of the ``n_items`` catalog that appears in at least one list."""
    if n_items < 1:
        raise ValidationError("n_items must be >= 1")
    t = np.asarray(top, dtype=np.int64).reshape(-1)
    t = t[(t >= 0) & (t < n_items)]
    return float(np.unique(t).shape[0] / n_items)


def novelty(top: IntArray, item_counts: npt.ArrayLike, n_users: int) -> float:
    """Mean self-information ``-log2(p_i)`` of the recommended items.

    ``p_i = max(count_i, 1) / n_users`` where ``count_i`` is the number of training
    users who interacted with item ``i`` (an item nobody had gets the count 1, so
    its information is finite). Padding (-1) is ignored.
    """
    if n_users < 1:
        raise ValidationError("n_users must be >= 1")
    counts = np.asarray(item_counts, dtype=np.float64)
    t = np.asarray(top, dtype=np.int64).reshape(-1)
    t = t[t >= 0]
    if not t.size:
        return 0.0
    c = np.ones(t.shape[0], dtype=np.float64)
    known = t < counts.shape[0]
    c[known] = np.maximum(counts[t[known]], 1.0)
    return float(np.mean(-np.log2(c / n_users)))


def intra_list_diversity(top: IntArray, features: Any) -> float:
    """Mean over lists of the mean pairwise distance ``1 - cos(f_a, f_b)``.

    ``features`` is an items x features matrix (dense or sparse; a 1-D integer array
    of category codes is one-hot encoded, so the distance is 1 between categories and
    0 within one). Items without features (or beyond the matrix) are at distance 1
    from everything. Padding (-1) is dropped; lists with fewer than two items are
    left out of the mean (0.0 when no list has two).
    """
    t = np.asarray(top, dtype=np.int64)
    f = _feature_matrix(features)
    n_items, n_feat = f.shape
    # Normalize rows, and append an empty row used for unknown items and padding.
    norms = np.sqrt(np.asarray(f.multiply(f).sum(axis=1)).reshape(-1))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    f = sp.csr_array(sp.diags_array(scale) @ f)
    f = sp.csr_array(sp.vstack([f, sp.csr_array((1, n_feat))]))
    valid = (t >= 0) & (t < n_items)
    idx = np.where(valid, t, n_items)
    present = (t >= 0).sum(axis=1)
    k = t.shape[1]
    dist_sum = np.zeros(t.shape[0], dtype=np.float64)
    for a in range(k):
        fa = f[idx[:, a]]
        for b in range(a + 1, k):
            sim = np.asarray(fa.multiply(f[idx[:, b]]).sum(axis=1)).reshape(-1)
            both = (t[:, a] >= 0) & (t[:, b] >= 0)
            dist_sum += np.where(both, 1.0 - sim, 0.0)
    pairs = present * (present - 1) / 2.0
    ok = pairs > 0
    if not ok.any():
        return 0.0
    return float(np.mean(dist_sum[ok] / pairs[ok]))


def _feature_matrix(features: Any) -> Any:
    if sp.issparse(features):
        return sp.csr_array(features, dtype=np.float64)
    arr = np.asarray(features)
    if arr.ndim == 1:
        codes = arr.astype(np.int64)
        rows = np.flatnonzero(codes >= 0)
        width = int(codes.max(initial=-1)) + 1
        return sp.csr_array(
            (np.ones(rows.shape[0]), (rows, codes[rows])), shape=(codes.shape[0], max(width, 1))
        )
    if arr.ndim != 2:
        raise ValidationError("features must be items x features (or 1-D category codes)")
    return sp.csr_array(arr.astype(np.float64))


# -- all at once ---------------------------------------------------------------------------


def ranking_metrics(
    top: IntArray,
    relevant: Any,
    ks: Iterable[int] = (10,),
    *,
    capped_recall: bool = False,
    metrics: Sequence[str] = ("HR", "NDCG", "Recall", "Precision", "F1", "MRR", "MAP"),
) -> dict[str, float]:
    """Means over users with at least one relevant item: ``{"NDCG@10": …, …}``.

    ``top`` must hold at least ``max(ks)`` ranks. Recall (and nothing else) uses the
    capped denominator when ``capped_recall``. Also returns ``users`` (users counted).
    """
    top = np.asarray(top, dtype=np.int64)
    hits = hits_matrix(top, relevant)
    if sp.issparse(relevant):
        n_rel = np.diff(_clean(relevant).indptr).astype(np.int64)
    else:
        n_rel = np.fromiter((len(set(s)) for s in relevant), dtype=np.int64, count=top.shape[0])
    keep = n_rel > 0
    hits, n_rel = hits[keep], n_rel[keep]
    out: dict[str, float] = {"users": float(keep.sum())}
    if not keep.any():
        return out
    funcs = {
        "HR": lambda k: hit_rate_at_k(hits, k),
        "NDCG": lambda k: ndcg_at_k(hits, n_rel, k),
        "Recall": lambda k: recall_at_k(hits, n_rel, k, capped=capped_recall),
        "Precision": lambda k: precision_at_k(hits, k),
        "F1": lambda k: f1_at_k(hits, n_rel, k),
        "MRR": lambda k: mrr_at_k(hits, k),
        "MAP": lambda k: average_precision_at_k(hits, n_rel, k),
    }
    unknown = [m for m in metrics if m not in funcs]
    if unknown:
        raise ValidationError(f"unknown metric(s) {unknown}; known: {', '.join(funcs)}")
    for k in ks:
        if k > top.shape[1]:
            raise ValidationError(f"lists have {top.shape[1]} ranks, cannot cut at {k}")
        for m in metrics:
            out[f"{m}@{k}"] = float(np.mean(funcs[m](k)))
    return out
