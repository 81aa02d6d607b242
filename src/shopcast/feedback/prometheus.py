"""Prometheus exposition (``/metrics``, prometheus-client text format).

- ``shopcast_http_requests_total{method, route, status}`` and
  ``shopcast_http_request_duration_seconds{method, route}`` (histogram) for every API
  request, by route template (``/v1/users/{user_id}/recommendations``), so ids never
  become label values;
- the online metrics of the feedback tracker (first window of ``feedback.windows_s``),
  read at scrape time: ``shopcast_online_impressions``, ``…_clicks``, ``…_purchases``,
  ``…_ctr``, ``…_conversion_rate``, ``…_rpm``, ``…_avg_click_position`` by
  ``model_version``, ``scene`` and ``variant`` (``all`` for the overall figure), and
  ``shopcast_online_coverage`` / ``…_intra_list_diversity`` / ``…_exposure_gini``.

A single process exposes its own request counters. ``shopcast serve --workers N``
runs prometheus-client's multiprocess mode (``prepare_multiprocess``: every worker
process writes its counters and histograms to files in ``PROMETHEUS_MULTIPROC_DIR``),
so ``/metrics``, whichever process answers it, reports the sum over the processes
(``Telemetry.exposition``). The online metrics come from the shared log, so every
process reports the same.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_COUNTED = ("impressions", "clicks", "purchases", "ctr", "conversion_rate", "rpm")
_GROUPS = ("model_version", "scene", "variant")
#: prometheus-client's multiprocess mode: where the processes write their values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess() -> Path:
    """Before the worker processes of ``serve --workers N`` start: the directory of
    ``PROMETHEUS_MULTIPROC_DIR`` emptied of an earlier run's ``*.db`` files (as
    prometheus-client asks), or a fresh temporary one set there; the processes started
    after this inherit it."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="shopcast-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class Telemetry:
    """The app's own Prometheus registry (one per app: tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shopcast_http_requests",
            "API requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shopcast_http_request_duration_seconds",
            "API request latency by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The request metrics as Prometheus text: this process's, or in multiprocess
        mode (``PROMETHEUS_MULTIPROC_DIR`` set) the sum over every process."""
        path = os.environ.get(MULTIPROC_ENV)
        if not path:
            return bytes(generate_latest(self.registry))
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))

    def add_online(self, source: Callable[[], dict[str, Any] | None]) -> None:
        self.registry.register(OnlineCollector(source))


class RequestMetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: streaming is not buffered)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.telemetry.observe(
                scope.get("method", "GET"), template, status, time.perf_counter() - started
            )


class OnlineCollector(Collector):
    """Gauges of the online metrics, computed when scraped (cached by the tracker)."""

    def __init__(self, source: Callable[[], dict[str, Any] | None]) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self.source()
        if not report or not report.get("windows"):
            return
        window = report["windows"][0]
        label = str(int(window["window_s"]))
        families = {
            m: GaugeMetricFamily(
                f"shopcast_online_{m}",
                f"Online {m} of recommendations shown in the window",
                labels=["window_s", "group", "value"],
            )
            for m in _COUNTED
        }
        for m in _COUNTED:
            v = window["overall"].get(m)
            if v is not None:
                families[m].add_metric([label, "all", "all"], float(v))
            for group in _GROUPS:
                for row in window.get(f"by_{group}", []):
                    if row.get(m) is not None:
                        families[m].add_metric([label, group, str(row[group])], float(row[m]))
        yield from families.values()
        for m in ("coverage", "intra_list_diversity", "exposure_gini", "avg_click_position"):
            v = window["overall"].get(m)
            g = GaugeMetricFamily(f"shopcast_online_{m}", f"Online {m}", labels=["window_s"])
            if v is not None:
                g.add_metric([label], float(v))
            yield g
