"""Candidate source ``mf``: the bundle's incremental matrix factorization
(``training.foldin.OnlineALS``, ``[training] mf = true``).

Scores every item for the shopper: the stored factors of a known shopper (updated in
closed form on every event by ``OnlineALS.learn``), or factors folded in from the live
session for a new one. Items the catalog gained since the last call get content-based
factors first (``OnlineALS.sync_catalog``), so a new item is a candidate before anyone
interacted with it. Items of the session itself are left out.
"""

from __future__ import annotations

import numpy as np

from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.sources import Candidates, RecommendRequest, Shopper, anchored_context
from shopcast.training.bundle import ModelBundle
from shopcast.training.foldin import OnlineALS

ROLE = "mf"


class FactorSource:
    name = ROLE
    heavy = True  # runs on a worker thread under the pipeline's source timeout

    def __init__(self, bundle: ModelBundle, catalog: CatalogIndex) -> None:
        self.bundle = bundle
        self.catalog = catalog

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        model = self.bundle.models.get(ROLE)
        if not isinstance(model, OnlineALS):
            return Candidates.empty()
        model.sync_catalog(self.catalog, self.bundle.items)
        ctx = anchored_context(shopper)
        scores = model.score_all([ctx])[0].copy()
        seen = ctx.recent_items[(ctx.recent_items >= 0) & (ctx.recent_items < scores.shape[0])]
        scores[seen] = 0.0
        n = min(n, scores.shape[0])
        if n == 0:
            return Candidates.empty()
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[scores[top] > 0]
        return Candidates(top.astype(np.int64), scores[top].astype(np.float64))
