"""The feedback tracker: recent feedback events in memory, attributed on demand.

``FeedbackTracker`` reads the event log incrementally (by sequence number), keeps the
rows attribution needs (``attribution.feedback_rows``) for ``feedback.horizon_s`` plus
the purchase window, and recomputes the attributed impressions at most every
``feedback.cache_s``. Every API process reads the shared log, so all of them report
the same figures. ``tracker_for(store, settings)`` gives the one tracker of a store
(one per tenant).

Erasure: the tracker registers the ``feedback_cache`` hook of
``privacy.erasure.register_hook``, which drops a user's cached rows at once (the rows
in the log are deleted by the erasure itself).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl

from shopcast.config import FeedbackSettings, Settings
from shopcast.feedback.attribution import attribute, feedback_rows
from shopcast.feedback.metrics import window_metrics
from shopcast.privacy.erasure import register_hook
from shopcast.storage import Store

_CATALOG_TTL_S = 60.0


class FeedbackTracker:
    """Recent impressions and their attributed outcomes, from the event log."""

    def __init__(
        self,
        store: Store,
        settings: FeedbackSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or FeedbackSettings()
        self.clock = clock
        self.seq_ = 0
        self._rows: pl.DataFrame | None = None
        self._attributed: pl.DataFrame | None = None
        self._attributed_at = -1.0
        self._catalog: tuple[float, int, dict[str, str]] = (-1.0, 0, {})
        self._lock = threading.RLock()
        self._item_stats: tuple[pl.DataFrame, dict[str, tuple[int, int]]] | None = None

    # -- data ------------------------------------------------------------------

    def refresh(self) -> int:
        """Read the events committed since the last call; returns how many were kept."""
        with self._lock:
            frame = self.store.events.frame(after_seq=self.seq_)
            if frame.height:
                self.seq_ = max(self.seq_, int(frame["seq"].max()))  # type: ignore[arg-type]
            new = feedback_rows(frame)
            keep_after = self.clock() - self.settings.horizon_s - self.settings.purchase_window_s
            rows = new if self._rows is None else pl.concat([self._rows, new])
            self._rows = rows.filter(pl.col("ts") >= keep_after)
            if new.height:
                self._attributed_at = -1.0
            return new.height

    def attributed(self, *, fresh: bool = False) -> pl.DataFrame:
        """Attributed impressions (``attribution.IMPRESSION_SCHEMA``) of the horizon."""
        with self._lock:
            now = self.clock()
            stale = now - self._attributed_at >= self.settings.cache_s
            if fresh or stale or self._attributed is None:
                self.refresh()
                assert self._rows is not None
                self._attributed = attribute(
                    self._rows,
                    click_window_s=self.settings.click_window_s,
                    purchase_window_s=self.settings.purchase_window_s,
                )
                self._attributed_at = now
            return self._attributed

    def forget(self, user_id: str) -> int:
        """Drop a user's cached rows (erasure); returns how many."""
        with self._lock:
            if self._rows is None:
                return 0
            before = self._rows.height
            self._rows = self._rows.filter(
                pl.col("user_id").is_null() | (pl.col("user_id") != user_id)
            )
            self._attributed, self._attributed_at = None, -1.0
            return before - self._rows.height

    def _catalog_info(self) -> tuple[int, dict[str, str]]:
        at, size, cats = self._catalog
        now = self.clock()
        if now - at > _CATALOG_TTL_S or at < 0:
            size, cats = 0, {}
            for item in self.store.items.scan():
                size += 1
                if item.category:
                    cats[item.item_id] = " > ".join(item.category)
            self._catalog = (now, size, cats)
        return size, cats

    # -- metrics ---------------------------------------------------------------

    def metrics(
        self, windows_s: list[float] | None = None, *, fresh: bool = False
    ) -> dict[str, Any]:
        """``GET /v1/metrics``: every window's metrics (``feedback.metrics``)."""
        imps = self.attributed(fresh=fresh)
        size, cats = self._catalog_info()
        now = self.clock()
        return {
            "generated_at": now,
            "catalog_items": size,
            "windows": [
                window_metrics(imps, now=now, window_s=w, catalog_size=size, categories=cats)
                for w in (windows_s or self.settings.windows_s)
            ],
        }

    def item_stats(self) -> Mapping[str, tuple[int, int]]:
        """``item -> (clicks, impressions)`` over the horizon (Thompson sampling); the
        same object until the attributed impressions are recomputed."""
        imps = self.attributed()
        cached = self._item_stats
        if cached is not None and cached[0] is imps:
            return cached[1]
        stats: dict[str, tuple[int, int]] = {}
        if imps.height:
            agg = imps.group_by("item_id").agg(
                pl.col("clicked").sum().alias("c"), pl.len().alias("n")
            )
            stats = {
                i: (int(c), int(n))
                for i, c, n in zip(agg["item_id"], agg["c"], agg["n"], strict=True)
            }
        self._item_stats = (imps, stats)
        return stats


_TRACKERS: weakref.WeakKeyDictionary[Any, FeedbackTracker] = weakref.WeakKeyDictionary()
_TRACKERS_LOCK = threading.Lock()


def tracker_for(store: Store, settings: Settings) -> FeedbackTracker:
    """The store's tracker (created on first use)."""
    with _TRACKERS_LOCK:
        tracker = _TRACKERS.get(store)
        if tracker is None:
            tracker = _TRACKERS[store] = FeedbackTracker(store, settings.feedback)
        return tracker


def _erase(store: Store, user_id: str, _settings: Settings) -> int:
    with _TRACKERS_LOCK:
        tracker = _TRACKERS.get(store)
    return 0 if tracker is None else tracker.forget(user_id)


register_hook("feedback_cache", _erase)
