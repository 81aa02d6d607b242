"""Rerank for diversity: maximal marginal relevance over categories and near-duplicates.

Greedy MMR picks, at each step, the candidate maximizing
``(1 - λ) · relevance - λ · max_similarity(candidate, already picked)`` where
relevance is the blended score scaled to [0, 1] and similarity is 1 for the same
leaf category (or a near-duplicate), 0.5 for the same top-level category, else 0.
Whatever λ is, two near-duplicates (same normalized title) are never placed side by
side when another candidate can go between them.
"""

from __future__ import annotations

import re

import numpy as np

from shopcast.models._base import FloatArray, IntArray
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.rules import Ranked

_NON_WORD = re.compile(r"[^0-9a-z]+")


def title_key(title: str | None) -> str | None:
    """A normalized title: lower case, letters and digits only (near-duplicate test)."""
    if not title:
        return None
    key = _NON_WORD.sub(" ", title.lower()).strip()
    return key or None


class MMR:
    def __init__(self, catalog: CatalogIndex, diversity: float) -> None:
        self.catalog = catalog
        self.diversity = diversity

    def __call__(self, ranked: Ranked, k: int) -> IntArray:
        """Positions in ``ranked`` of the ``k`` items to show, in order."""
        n = ranked.items.shape[0]
        if n == 0:
            return np.empty(0, np.int64)
        pool = np.argsort(-ranked.scores, kind="stable")[: max(4 * k, k + 20)]
        rel = _unit(ranked.scores[pool])
        leaf, top, dup = self._keys(ranked.items[pool])
        lam = self.diversity
        chosen: list[int] = []
        max_sim = np.zeros(pool.shape[0])
        available = np.ones(pool.shape[0], dtype=bool)
        while len(chosen) < min(k, pool.shape[0]):
            gain = (1 - lam) * rel - lam * max_sim
            gain[~available] = -np.inf
            if chosen and dup[chosen[-1]] is not None:  # never a near-duplicate next
                twins = np.array([d == dup[chosen[-1]] for d in dup]) & available
                if (available & ~twins).any():
                    gain[twins] = -np.inf
            pick = int(np.argmax(gain))
            chosen.append(pick)
            available[pick] = False
            sim = np.where(leaf == leaf[pick], 1.0, np.where(top == top[pick], 0.5, 0.0))
            sim[leaf == ""] = 0.0
            if dup[pick] is not None:
                sim[[i for i, d in enumerate(dup) if d == dup[pick]]] = 1.0
            max_sim = np.maximum(max_sim, sim)
        return pool[np.asarray(chosen, dtype=np.int64)]

    def _keys(self, items: IntArray) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        leaf, top, dup = [], [], []
        for idx in items.tolist():
            path = self.catalog.category_of(idx)
            leaf.append("/".join(path))
            top.append(path[0] if path else "")
            item = self.catalog.get(idx)
            dup.append(title_key(item.title) if item is not None else None)
        return np.asarray(leaf), np.asarray(top), dup


def _unit(scores: FloatArray) -> FloatArray:
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.ones_like(scores)
