"""The experiment layer of the serving engine: which variant serves a request, and
exploration of a share of slots.

``Engine.recommend`` asks ``plan(request)`` before running the pipeline: the running
experiment covering the request's scene (re-read when ``<model_dir>/experiments``
changes) assigns the shopper a variant (``model.Experiment.assign``), whose model
version the engine loads and keeps caught up beside the bundle in service
(``Engine.variant``) and whose ``diversity`` picks the MMR strength. ``finish``
labels the answer with the experiment and variant and applies exploration
(``exploration.Explorer``), so the impressions carry all of it.

A variant whose model version cannot be loaded serves the default pipeline, unlabelled
(so the experiment's report is not polluted), with ``experiment`` in ``degraded``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shopcast.domain import Recommendation
from shopcast.experiments.exploration import Explorer, Pool
from shopcast.experiments.model import Experiment, ExperimentStore
from shopcast.serving.rerank import MMR

if TYPE_CHECKING:
    from shopcast.serving.engine import Engine, _Serving
    from shopcast.serving.pipeline import RecommendPipeline, RecommendRequest

log = logging.getLogger(__name__)

#: How long the exploration pool (in-stock items) is reused before it is rebuilt.
POOL_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How one request is served."""

    experiment: str | None = None
    variant: str | None = None
    version: str | None = None  # None: the bundle in service
    diversity: float | None = None
    explore: bool = True


DEFAULT_PLAN = Plan()


class ExperimentLayer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        settings = engine.settings
        self.store = ExperimentStore.of(settings.model_dir)
        self._stamp = -1.0
        self._running: list[Experiment] = []
        self._lock = threading.Lock()
        self._pipelines: dict[tuple[int, float], tuple[RecommendPipeline, RecommendPipeline]] = {}
        self._pools: dict[int, tuple[float, Pool]] = {}
        cfg = settings.experiments
        self.explorer: Explorer | None = None
        if cfg.exploration != "off" and cfg.exploration_share > 0:
            self.explorer = Explorer(
                cfg.exploration,
                cfg.exploration_share,
                draws=cfg.thompson_draws,
                seed=cfg.exploration_seed,
                stats=self._item_stats if cfg.exploration == "thompson" else None,
            )

    def _item_stats(self) -> Any:
        from shopcast.feedback.tracker import tracker_for

        return tracker_for(self.engine.store, self.engine.settings).item_stats()

    def running(self) -> list[Experiment]:
        """The running experiments, re-read when the directory changed."""
        stamp = self.store.stamp()
        if stamp != self._stamp:
            with self._lock:
                self._running = self.store.running()
                self._stamp = stamp
            self.engine.keep_variants(
                {v.model_version for e in self._running for v in e.variants if v.model_version}
            )
        return self._running

    def plan(self, request: RecommendRequest) -> Plan:
        for experiment in self.running():
            if not experiment.covers(request.scene):
                continue
            variant = experiment.assign(request.user_id, request.session_id)
            if variant is None:
                return DEFAULT_PLAN
            return Plan(
                experiment.experiment_id, variant.name, variant.model_version, variant.diversity
            )
        return DEFAULT_PLAN

    def pipeline(self, plan: Plan, serving: _Serving) -> RecommendPipeline:
        """The serving's pipeline, with the plan's MMR strength when it sets one."""
        if plan.diversity is None:
            return serving.pipeline
        key = (id(serving.pipeline), plan.diversity)
        found = self._pipelines.get(key)
        if found is not None and found[0] is serving.pipeline:
            return found[1]
        variant = copy.copy(serving.pipeline)
        variant.rerank = MMR(serving.catalog, plan.diversity)
        with self._lock:
            if len(self._pipelines) > 64:
                self._pipelines.clear()
            self._pipelines[key] = (serving.pipeline, variant)
        return variant

    def finish(self, rec: Recommendation, plan: Plan, serving: _Serving) -> Recommendation:
        """Experiment labels and exploration."""
        if plan.experiment is not None:
            rec = rec.model_copy(update={"experiment": plan.experiment, "variant": plan.variant})
        if self.explorer is None or not plan.explore:
            return rec
        if rec.user_id is None and rec.session_id is None:
            return rec  # no impression is logged for nobody: exploring would teach nothing
        catalog, items = serving.catalog, serving.bundle.items

        def describe(item_id: str) -> dict[str, Any]:
            meta = catalog.get(items.index(item_id))
            if meta is None:
                return {}
            return {"title": meta.title, "category": meta.category, "price": meta.price}

        return self.explorer.apply(rec, lambda: self._pool(serving), describe)

    def _pool(self, serving: _Serving) -> Pool:
        """In-stock items of the serving's catalog, rebuilt at most every ``POOL_TTL_S``."""
        now = time.monotonic()
        key = id(serving.catalog)
        found = self._pools.get(key)
        if found is not None and now - found[0] < POOL_TTL_S:
            return found[1]
        catalog, items = serving.catalog, serving.bundle.items
        every = np.arange(len(items), dtype=np.int64)
        pool = Pool([items.id(int(i)) for i in every[catalog.available(every)].tolist()])
        with self._lock:
            if len(self._pools) > 16:
                self._pools.clear()
            self._pools[key] = (now, pool)
        return pool
