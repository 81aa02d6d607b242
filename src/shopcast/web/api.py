"""JSON (and SVG) endpoints the dashboard and the demo storefront need.

- ``GET /v1/dashboard/overview``: events per minute by type, active users, request
  rate and latency percentiles, daily CTR / conversion, catalog coverage.
- ``GET /v1/dashboard/charts/{name}.svg``: the same as server-rendered charts
  (``events``, ``requests``, ``latency``, ``daily``).
- ``GET /v1/dashboard/evaluations`` and ``/v1/dashboard/evaluations/{file}``: the
  reports ``shopcast evaluate`` wrote (JSON summaries, PNG plots).
- ``GET /v1/admin/users/{id}/session``: the live session (admin: personal data).
- ``GET /v1/shop/items``, ``GET /v1/shop/categories``: catalog browsing.
- ``POST /v1/jobs``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}``: long jobs with progress.

Scopes (``api/auth.py``): GETs need ``read`` (``/v1/admin`` needs ``admin``); starting a
job is a write, so ``admin``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from shopcast.api.auth import tenant_name
from shopcast.api.routes._common import (
    engine_of,
    json_body,
    pseudonyms_of,
    settings_of,
    store_of,
    tenant_of,
)
from shopcast.domain import Item
from shopcast.errors import FieldError, NotFoundError, ValidationError
from shopcast.web import jobs as jobs_mod
from shopcast.web.stats import LIVE_MINUTES, EventStats, request_stats
from shopcast.web.svg import line_chart

router = APIRouter(tags=["dashboard"])

_state_lock = threading.Lock()


def event_stats(request: Request) -> EventStats:
    """The tenant's incremental event statistics (one per tenant and process)."""
    with _state_lock:
        per_tenant: dict[str, EventStats] = getattr(request.app.state, "event_stats", None) or {}
        request.app.state.event_stats = per_tenant
        name = tenant_name(request.scope)
        stats = per_tenant.get(name)
        if stats is None or stats.store is not store_of(request):
            stats = per_tenant[name] = EventStats(store_of(request))
        return stats


def job_runner(request: Request) -> jobs_mod.JobRunner:
    with _state_lock:
        runner: jobs_mod.JobRunner | None = getattr(request.app.state, "job_runner", None)
        if runner is None:
            runner = request.app.state.job_runner = jobs_mod.JobRunner()
        return runner


def _minute_labels() -> list[str]:
    now = int(time.time() // 60)
    return [
        time.strftime("%H:%M", time.gmtime(m * 60)) for m in range(now - LIVE_MINUTES + 1, now + 1)
    ]


# -- overview ---------------------------------------------------------------------------


def _overview(request: Request) -> dict[str, Any]:
    stats = event_stats(request)
    stats.refresh()
    engine = engine_of(request)
    per_minute = stats.events_per_minute()
    return {
        "generated_at": time.time(),
        "model_version": engine.bundle.version,
        "total_events": stats.total_events,
        "minutes": _minute_labels(),
        "events_per_minute": per_minute,
        "events_last_minute": {k: v[-1] for k, v in per_minute.items()},
        "active": stats.active_users(),
        "requests": request_stats(request.app).summary(),
        "daily": stats.daily(),
        "coverage": stats.coverage(len(_catalog(request))),
    }


@router.get("/v1/dashboard/overview")
async def overview(request: Request) -> dict[str, Any]:
    """What the overview panel shows (this process's requests; the whole log's events)."""
    return await run_in_threadpool(_overview, request)


CHARTS = ("events", "requests", "latency", "daily")


def _chart(request: Request, name: str, width: int) -> str:
    if name in ("requests", "latency"):
        minutes = request_stats(request.app).per_minute()
        if name == "requests":
            return line_chart(
                {"requests": minutes["requests"]},
                _minute_labels(),
                title="Recommendation requests per minute (this server, UTC)",
                y_label="requests",
                width=width,
            )
        return line_chart(
            {"p50": minutes["p50"], "p95": minutes["p95"]},
            _minute_labels(),
            title="Recommendation latency per minute, ms (this server, UTC)",
            y_label="ms",
            width=width,
        )
    stats = event_stats(request)
    stats.refresh()
    if name == "events":
        per_minute: dict[str, list[float | None]] = {
            k: [float(v) for v in vs] for k, vs in stats.events_per_minute().items()
        }
        return line_chart(
            per_minute,
            _minute_labels(),
            title="Events per minute by type (last hour, UTC)",
            y_label="events",
            empty="no events in the last hour",
            width=width,
        )
    ctr: list[float | None] = []
    conversion: list[float | None] = []
    labels: list[str] = []
    previous: float | None = None
    for d in stats.daily():
        day = time.mktime(time.strptime(d["day"], "%Y-%m-%d"))
        if previous is not None and day - previous > 1.5 * 86_400:  # days without events
            ctr.append(None)  # a break in the lines, not a slope across the gap
            conversion.append(None)
            labels.append("…")
        previous = day
        ctr.append(d["ctr"])
        conversion.append(d["conversion"])
        labels.append(d["day"][5:])
    return line_chart(
        {"CTR": ctr, "conversion": conversion},
        labels,
        title="Click-through and conversion per day (last 30 days with events)",
        percent=True,
        width=width,
    )


@router.get(
    "/v1/dashboard/charts/{name}.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}, 404: {"description": "Unknown chart"}},
)
async def chart(
    request: Request,
    name: str,
    width: Annotated[int, Query(ge=240, le=2000, description="Drawing width in px")] = 640,
) -> Response:
    """A server-rendered SVG chart: ``events``, ``requests``, ``latency`` or ``daily``."""
    if name not in CHARTS:
        raise NotFoundError(f"no chart {name!r}; one of {', '.join(CHARTS)}")
    svg = await run_in_threadpool(_chart, request, name, width)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


# -- offline evaluation reports ------------------------------------------------------------


def _reports(request: Request) -> dict[str, Path]:
    folder: Path = request.app.state.settings.reports_dir
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix in (".json", ".png", ".md")}


def _summary(path: Path) -> dict[str, Any]:
    """A report's headline table: one row per model and peer (``evaluation/report.py``)."""
    from shopcast.evaluation.report import HEADLINE

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"file": path.name, "error": f"unreadable: {exc}"}
    if not isinstance(data, dict):
        return {"file": path.name, "error": "not a report"}
    rows: list[dict[str, Any]] = []
    for kind in ("models", "peers"):
        for name, metrics in (data.get(kind) or {}).items():
            if isinstance(metrics, dict):
                flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
                rows.append({"kind": kind[:-1], "name": name, **flat})
    wanted = HEADLINE.get(str(data.get("benchmark")), ())
    present = {k for r in rows for k in r} - {"kind", "name"}
    columns = [c for c in wanted if c in present] or sorted(present - {"skipped"})[:8]
    return {
        "file": path.name,
        "benchmark": data.get("benchmark"),
        "dataset": data.get("dataset"),
        "columns": columns,
        "rows": rows,
        "modified": path.stat().st_mtime,
    }


@router.get("/v1/dashboard/evaluations")
def evaluations(request: Request) -> dict[str, Any]:
    """Reports written by ``shopcast evaluate`` (in ``settings.reports_dir``), if any."""
    files = _reports(request)
    return {
        "folder": str(request.app.state.settings.reports_dir),
        "reports": [_summary(p) for n, p in files.items() if n.endswith(".json")],
        "plots": [n for n in files if n.endswith(".png")],
    }


@router.get("/v1/dashboard/evaluations/{name}", response_class=FileResponse)
def evaluation_file(request: Request, name: str) -> FileResponse:
    """One report file (only names the listing shows: no path can be named)."""
    path = _reports(request).get(name)
    if path is None:
        raise NotFoundError(f"no evaluation file {name!r}")
    return FileResponse(path)


# -- live session (personal data: /v1/admin) --------------------------------------------


@router.get("/v1/admin/users/{user_id}/session")
def live_session(request: Request, user_id: str) -> dict[str, Any]:
    """The user's live session: recent item events, cart, purchases, items shown."""
    raw = user_id.strip()
    stored = pseudonyms_of(request).lookup(raw)
    engine = engine_of(request)
    live = engine.sessions.get(f"u:{stored}")
    catalog = _catalog(request)
    recent = [
        {
            "item_id": item,
            "title": _title(catalog, item),
            "type": str(kind),
            "ts": ts,
        }
        for item, kind, ts in zip(live.items, live.types, live.ts, strict=True)
    ]
    return {
        "user_id": raw,
        "events": list(reversed(recent)),
        "cart": [
            {"item_id": i, "title": _title(catalog, i), "ts": t} for i, t in live.cart.items()
        ],
        "purchases": [
            {"item_id": i, "title": _title(catalog, i), "ts": times[-1]}
            for i, times in live.purchases.items()
        ],
        "shown": {scene: list(items) for scene, items in live.shown.items()},
    }


def _title(catalog: dict[str, Item], item_id: str) -> str | None:
    item = catalog.get(item_id)
    return item.title if item else None


# -- catalog browsing (storefront) -------------------------------------------------------


def _catalog(request: Request) -> dict[str, Item]:
    """The tenant's catalog by id, cached until its engine's catalog changes (another
    ``CatalogIndex`` after a model swap, or a new revision after an upsert/delete)."""
    engine = engine_of(request)
    index, revision = engine.catalog, engine.catalog.revision
    with _state_lock:
        caches: dict[str, tuple[Any, int, dict[str, Item]]] = (
            getattr(request.app.state, "shop_catalogs", None) or {}
        )
        request.app.state.shop_catalogs = caches
        cached = caches.get(tenant_name(request.scope))
    if cached is not None and cached[0] is index and cached[1] == revision:
        return cached[2]
    items = {item.item_id: item for item in store_of(request).items.scan()}
    with _state_lock:
        caches[tenant_name(request.scope)] = (index, revision, items)
    return items


class ShopItems(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total: int
    offset: int
    limit: int
    items: list[Item]


@router.get("/v1/shop/items", response_model=ShopItems)
def shop_items(
    request: Request,
    q: Annotated[str | None, Query(max_length=200, description="Words in the title")] = None,
    category: Annotated[str | None, Query(max_length=200, description="Any level")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 24,
) -> ShopItems:
    """Catalog items with a title, by title; filtered by words and/or category."""
    items = [i for i in _catalog(request).values() if i.title]
    if category:
        want = category.strip().lower()
        items = [i for i in items if want in (c.lower() for c in _groups(i))]
    if q:
        words = q.lower().split()
        items = [i for i in items if all(w in (i.title or "").lower() for w in words)]
    items.sort(key=lambda i: ((i.title or "").lower(), i.item_id))
    return ShopItems(
        total=len(items), offset=offset, limit=limit, items=items[offset : offset + limit]
    )


def _groups(item: Item) -> list[str]:
    """What the shop groups an item by: its category path, else its genres (MovieLens)."""
    if item.category:
        return list(item.category)
    genres = item.attributes.get("genres")
    return [str(g) for g in genres] if isinstance(genres, list) else []


@router.get("/v1/shop/categories")
def shop_categories(request: Request) -> dict[str, Any]:
    """Top-level categories (genres for a catalog without categories) with item counts,
    largest first."""
    counts: dict[str, int] = {}
    for item in _catalog(request).values():
        top = _groups(item)[:1] if item.category else _groups(item)  # every genre counts
        for name in top if item.title else ():
            counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"categories": [{"name": k, "items": n} for k, n in ordered]}


# -- jobs ---------------------------------------------------------------------------------


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description=f"One of: {', '.join(jobs_mod.KINDS)}")
    params: dict[str, Any] = Field(default_factory=dict)


@router.post("/v1/jobs", status_code=202, tags=["jobs"])
async def start_job(request: Request) -> JSONResponse:
    """Start a long job (``import``, ``train``, ``evaluate``); poll ``/v1/jobs/{id}``."""
    raw = await json_body(request)
    if not isinstance(raw, dict):
        raise ValidationError(
            "the body must be a JSON object", [FieldError("body", "not an object")]
        )
    try:
        body = JobBody.model_validate(raw)
    except Exception as exc:
        from pydantic import ValidationError as PydanticError

        from shopcast.ingest.validate import field_errors

        if isinstance(exc, PydanticError):
            raise ValidationError("invalid job", field_errors(exc, None)) from None
        raise
    tenant = tenant_of(request)
    ctx = jobs_mod.JobContext(settings_of(request), tenant.store, tenant.engine, tenant.name)
    job = job_runner(request).submit(body.kind, body.params, ctx)
    return JSONResponse(job.as_dict(), status_code=202)


@router.get("/v1/jobs", tags=["jobs"])
def list_jobs(request: Request) -> dict[str, Any]:
    """The jobs of this process, newest first."""
    mine = tenant_name(request.scope)
    return {"jobs": [j.as_dict() for j in job_runner(request).jobs() if j.tenant == mine]}


@router.get("/v1/jobs/{job_id}", tags=["jobs"])
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    job = job_runner(request).get(job_id)
    if job.tenant != tenant_name(request.scope):  # another tenant's job does not exist here
        raise NotFoundError(f"no job {job_id!r}")
    return job.as_dict()
