"""Exploration: a share of slots shows something the ranking did not pick.

Each slot of a response (not pinned, not sponsored) is explored with probability
``experiments.exploration_share``, independently of its content. An explored slot
draws an item from the *pool*: the in-stock catalog minus the items of earlier
explored slots and of pinned/sponsored slots. If the drawn item is elsewhere in the
list, the two slots swap (no duplicates). What is logged with the impression
(``propensity``) is the probability of the drawn item given that the slot is
explored:

- ``epsilon``: uniform, ``1 / |pool|`` (exact);
- ``thompson``: the item with the largest draw from Beta(1 + clicks, 1 + impressions -
  clicks) (attributed feedback of the horizon) among the 256 pool items with the
  highest posterior upper bound (mean + 2 sd); the propensity is estimated from
  ``thompson_draws`` Monte Carlo rounds of the same posterior ((count + 0.5) /
  (draws + 1), never 0).

Off-policy evaluation (``ope``) uses the explored slots only, with these propensities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from shopcast.domain import Recommendation, RecommendedItem

THOMPSON_POOL = 256
Describe = Callable[[str], dict[str, Any]]


class Pool:
    """The items exploration may show (in stock), with a set for membership tests;
    built once and reused while the catalog is unchanged (``layer``)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        self.members = frozenset(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class Explorer:
    def __init__(
        self,
        method: Literal["epsilon", "thompson"],
        share: float,
        *,
        draws: int = 200,
        seed: int | None = None,
        stats: Callable[[], Mapping[str, tuple[int, int]]] | None = None,
    ) -> None:
        self.method = method
        self.share = share
        self.draws = draws
        self.stats = stats
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._posterior: tuple[int, int, list[str], np.ndarray, np.ndarray] | None = None

    def apply(
        self, rec: Recommendation, pool: Pool | Callable[[], Pool], describe: Describe
    ) -> Recommendation:
        """``rec`` with some slots explored (a new object; ``rec`` is unchanged).
        ``pool`` may be a callable: it is only built when a slot is explored."""
        if self.share <= 0 or not rec.items:
            return rec
        items = list(rec.items)
        fixed = {i.item_id for i in items if i.sponsored or i.source in ("pinned", "sponsored")}
        with self._lock:
            explore = self._rng.random(len(items)) < self.share
        if not explore.any():
            return rec
        if callable(pool):
            pool = pool()
        taken: set[str] = set(fixed)
        changed = False
        for pos in np.flatnonzero(explore).tolist():
            if items[pos].item_id in fixed:
                continue
            drawn = self._draw(pool, taken)
            if drawn is None:
                break
            chosen, propensity = drawn
            where = next((j for j, it in enumerate(items) if it.item_id == chosen), None)
            if where is not None and where != pos:
                items[where] = items[pos]  # swap: the greedy item moves, never duplicated
            items[pos] = RecommendedItem(
                item_id=chosen,
                score=0.0,
                source="exploration",
                reason="something different for you",
                explored=True,
                propensity=round(propensity, 9),
                **describe(chosen),
            )
            taken.add(chosen)
            changed = True
        if not changed:
            return rec
        sources: dict[str, int] = {}
        for item in items:
            sources[item.source] = sources.get(item.source, 0) + 1
        return rec.model_copy(update={"items": items, "sources": sources})

    def _draw(self, pool: Pool, taken: set[str]) -> tuple[str, float] | None:
        """An item of ``pool`` outside ``taken`` and its probability."""
        with self._lock:
            if self.method == "epsilon":
                n = len(pool) - sum(1 for t in taken if t in pool.members)
                if n <= 0:
                    return None
                while True:  # rejection: uniform over the pool minus the (few) taken items
                    item = pool.ids[int(self._rng.integers(len(pool)))]
                    if item not in taken:
                        return item, 1.0 / n
            return self._thompson(pool, taken)

    def _thompson(self, pool: Pool, taken: set[str]) -> tuple[str, float] | None:
        stats = self.stats() if self.stats is not None else {}
        cached = self._posterior
        if cached is None or cached[0] != id(stats) or cached[1] != id(pool):
            ids = pool.ids
            clicks = np.array([stats.get(i, (0, 0))[0] for i in ids], np.float64)
            shown = np.array([stats.get(i, (0, 0))[1] for i in ids], np.float64)
            a, b = 1.0 + clicks, 1.0 + np.maximum(shown - clicks, 0.0)
            if len(ids) > THOMPSON_POOL:  # the items with the highest posterior upper bound
                sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
                keep = np.argsort(-(a / (a + b) + 2 * sd), kind="stable")[:THOMPSON_POOL]
                ids, a, b = [ids[k] for k in keep.tolist()], a[keep], b[keep]
            cached = self._posterior = (id(stats), id(pool), ids, a, b)
        _, _, ids, a, b = cached
        ok = np.array([i not in taken for i in ids], dtype=bool)
        if not ok.any():
            return None
        cand = [i for i, k in zip(ids, ok.tolist(), strict=True) if k]
        a, b = a[ok], b[ok]
        chosen = int(np.argmax(self._rng.beta(a, b)))
        wins = np.argmax(self._rng.beta(a, b, size=(self.draws, a.shape[0])), axis=1)
        count = int((wins == chosen).sum())
        return cand[chosen], (count + 0.5) / (self.draws + 1)
