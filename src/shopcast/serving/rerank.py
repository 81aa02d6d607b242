"""Rerank for diversity: maximal marginal relevance over categories and near-duplicates.

Greedy MMR picks, at each step, the candidate maximizing
``(1 - λ) · relevance - λ · max_similarity(candidate, already picked)`` where
relevance is the blended score scaled to [0, 1] and similarity is 1 for the same
leaf category (or a near-duplicate), 0.5 for the same top-level category, else 0.
Whatever λ is, two near-duplicates (same normalized title) are never placed side by
side when another candidate can go between them.

Items re-shown from the shopper's own recent activity (credited to a source of
``OWN_SOURCES``: recently viewed, buy again) are not penalized for resembling what is
already picked: diversity spreads the *suggestions*, it does not hide the five phone
cases a shopper keeps going back to. They still count as picked for the others.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from shopcast.domain import Item
from shopcast.models._base import FloatArray, IntArray
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.rules import Ranked

_NON_WORD = re.compile(r"[^0-9a-z]+")
#: Sources whose items are the shopper's own (re-shown): exempt from the penalty.
OWN_SOURCES = frozenset({"recently_viewed", "buy_again"})
#: Codes kept before the code table is rebuilt from the records in use.
_MAX_CODES = 1_000_000


@functools.lru_cache(maxsize=1 << 16)
def title_key(title: str | None) -> str | None:
    """A normalized title: lower case, letters and digits only (near-duplicate test).

    Cached: the same catalog titles come back on every request.
    """
    if not title:
        return None
    key = _NON_WORD.sub(" ", title.lower()).strip()
    return key or None


class MMR:
    def __init__(self, catalog: CatalogIndex, diversity: float) -> None:
        self.catalog = catalog
        self.diversity = diversity
        #: Codes of the category keys and title keys seen; equal keys, equal codes.
        self._codes: dict[tuple[int, str], int] = {(0, ""): 0, (1, ""): 0}
        #: Per item index: the catalog record the codes were made from, and the codes.
        self._items: dict[int, tuple[Item | None, int, int, int]] = {}

    def __call__(self, ranked: Ranked, k: int) -> IntArray:
        """Positions in ``ranked`` of the ``k`` items to show, in order."""
        n = ranked.items.shape[0]
        if n == 0:
            return np.empty(0, np.int64)
        pool = np.argsort(-ranked.scores, kind="stable")[: max(4 * k, k + 20)]
        m = pool.shape[0]
        rel = _unit(ranked.scores[pool])
        leaf, top, dup = self._keys(ranked.items[pool])
        lam = self.diversity
        sources = ranked.sources
        own = np.fromiter((sources[p] in OWN_SOURCES for p in pool.tolist()), bool, m)
        # Similarity of every pair once (row: the picked item): 1 same leaf category or
        # near-duplicate titles, 0.5 same top-level category, 0 for items without one;
        # the penalty row of a pick is lam * similarity, 0 for the shopper's own items.
        sim = np.where(leaf[:, None] == leaf, 1.0, np.where(top[:, None] == top, 0.5, 0.0))
        sim[:, leaf == 0] = 0.0
        twin = (dup[:, None] == dup) & (dup >= 0)[:, None]
        sim[twin] = 1.0
        penalty = lam * sim
        penalty[:, own] = 0.0
        base = (1 - lam) * rel
        worst = np.zeros(m)  # the largest penalty of each item so far
        available = np.ones(m, dtype=bool)
        chosen: list[int] = []
        for _ in range(min(k, m)):
            gain = base - worst
            gain[~available] = -np.inf
            if chosen:  # never a near-duplicate next
                twins = twin[chosen[-1]] & available
                if twins.any() and (available & ~twins).any():
                    gain[twins] = -np.inf
            pick = int(np.argmax(gain))
            chosen.append(pick)
            available[pick] = False
            np.maximum(worst, penalty[pick], out=worst)
        return pool[np.asarray(chosen, dtype=np.int64)]

    def _keys(self, items: IntArray) -> tuple[IntArray, IntArray, IntArray]:
        """Integer codes per item of its leaf category path, its top-level category
        (0: none) and its near-duplicate title key (-1: none); equal codes, equal keys.

        An item's codes are kept until its catalog record changes (another ``Item``
        object in the catalog), so a request only looks them up."""
        if len(self._codes) > _MAX_CODES:  # keys of records long replaced: start over
            self._codes = {(0, ""): 0, (1, ""): 0}
            self._items = {}
        get, known = self.catalog.get, self._items
        out = np.empty((3, items.shape[0]), dtype=np.int64)
        for pos, idx in enumerate(items.tolist()):
            item = get(idx)
            found = known.get(idx)
            if found is None or found[0] is not item:
                found = known[idx] = (item, *self._make(item))
            out[0, pos], out[1, pos], out[2, pos] = found[1], found[2], found[3]
        return out[0], out[1], out[2]

    def _make(self, item: Item | None) -> tuple[int, int, int]:
        codes = self._codes
        path = item.category if item is not None else []
        key = title_key(item.title) if item is not None else None
        return (
            codes.setdefault((0, "/".join(path)), len(codes)),
            codes.setdefault((1, path[0] if path else ""), len(codes)),
            -1 if key is None else codes.setdefault((2, key), len(codes)),
        )


def _unit(scores: FloatArray) -> FloatArray:
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.ones_like(scores)
