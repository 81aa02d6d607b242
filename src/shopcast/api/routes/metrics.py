"""Online metrics: ``GET /v1/metrics`` (JSON) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field

from shopcast.api.routes._common import engine_of, settings_of, store_of
from shopcast.feedback.prometheus import OnlineCollector, Telemetry
from shopcast.feedback.tracker import FeedbackTracker, tracker_for

router = APIRouter(tags=["metrics"])


def _tracker(request: Request) -> FeedbackTracker:
    engine = engine_of(request)
    if engine.impressions is not None:
        engine.impressions.flush()
    return tracker_for(store_of(request), settings_of(request))


@router.get("/v1/metrics")
async def online_metrics(
    request: Request,
    window_s: Annotated[
        list[Annotated[float, Field(gt=0)]] | None,
        Query(description="Windows in seconds, repeatable (default: feedback.windows_s)"),
    ] = None,
) -> dict[str, Any]:
    """CTR, conversion, revenue per mille, click position, coverage and diversity of the
    recommendations shown, per window, overall and by model version, scene, source,
    position and experiment variant."""
    tracker = await run_in_threadpool(_tracker, request)  # flushes impressions (disk)
    return await run_in_threadpool(tracker.metrics, window_s)


@router.get("/metrics", include_in_schema=False)
async def prometheus(request: Request) -> Response:
    """Prometheus text: API request counts and latency histograms (summed over the
    processes of ``serve --workers N``), online metrics."""
    telemetry: Telemetry = request.app.state.telemetry
    tracker = await run_in_threadpool(_tracker, request)  # flushes impressions (disk)
    online = CollectorRegistry(auto_describe=True)
    online.register(OnlineCollector(tracker.metrics))
    body = telemetry.exposition() + await run_in_threadpool(generate_latest, online)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
