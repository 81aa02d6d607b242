"""FastAPI app factory: wiring, error rendering, body limits."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import shopcast
from shopcast.api.auth import AuthMiddleware, Tenant, TenantPool, document_security
from shopcast.api.limits import BodyLimitMiddleware
from shopcast.api.routes import (
    catalog,
    events,
    experiments,
    features,
    health,
    metrics,
    models,
    profiles,
    recommend,
    targeting,
)
from shopcast.api.routes import privacy as privacy_routes
from shopcast.api.routes import push as push_routes
from shopcast.config import Settings
from shopcast.errors import ShopcastError, StorageUnavailableError
from shopcast.feedback.prometheus import RequestMetricsMiddleware, Telemetry
from shopcast.online.sync import OnlineSync
from shopcast.privacy.crypto import open_private_store
from shopcast.privacy.pseudonym import Pseudonymizer
from shopcast.privacy.retention import maintenance
from shopcast.privacy.tenants import DEFAULT_TENANT
from shopcast.push.service import PushService
from shopcast.serving.engine import Engine
from shopcast.storage import Store
from shopcast.training.continuous import start_continuous

log = logging.getLogger(__name__)


async def _watch_registry(tenants: TenantPool, settings: Settings) -> None:
    """Hot-swap when a registry's CURRENT changes (promotion from any process or CLI)."""
    while True:
        await asyncio.sleep(settings.api.reload_interval_s)
        for tenant in tenants.tenants():
            engine = tenant.engine
            try:
                await run_in_threadpool(engine.reload_if_changed)
            except Exception:  # a broken bundle must not stop the service: keep the old one
                log.exception(
                    "could not load the promoted model; still serving %s", engine.bundle.version
                )


def _reload_all(tenants: TenantPool) -> None:
    """Swap every open tenant to its registry's CURRENT (a promotion was announced)."""
    for tenant in tenants.tenants():
        tenant.engine.reload_if_changed()


def create_app(
    settings: Settings, *, store: Store | None = None, engine: Engine | None = None
) -> FastAPI:
    """The API over ``settings.database_url`` (or the given store/engine, for tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        app.state.store = store or open_private_store(settings)
        app.state.engine = engine or Engine.open(app.state.store, settings)
        app.state.tenants = TenantPool(
            settings,
            Tenant(
                DEFAULT_TENANT,
                settings,
                app.state.store,
                app.state.engine,
                Pseudonymizer.from_settings(settings.privacy),
                owned=False,
            ),
        )
        watcher = asyncio.create_task(_watch_registry(app.state.tenants, settings))
        upkeep = asyncio.create_task(maintenance(app.state.tenants, settings))  # retention
        # Background retrain + quality gate + rollback guard (continuous.enabled only).
        learner = start_continuous(app.state.store, settings)
        # Shared online state (Redis): follow other processes' events, swap on promotion.
        sync = OnlineSync(app.state.engine, lambda: _reload_all(app.state.tenants)).start()
        app.state.online_sync = sync
        tenant_syncs: list[OnlineSync] = []  # every other tenant follows its own stream
        app.state.tenants.on_open.append(
            lambda t: tenant_syncs.append(
                OnlineSync(t.engine, lambda: _reload_all(app.state.tenants)).start()
            )
        )
        app.state.push = PushService(settings)  # push engines per tenant + scheduler
        app.state.push.start(app.state.tenants)
        try:
            yield
        finally:
            sync.stop()
            for tenant_sync in tenant_syncs:
                tenant_sync.stop()
            watcher.cancel()
            upkeep.cancel()
            if learner is not None:
                learner.stop()
            app.state.push.close()
            app.state.tenants.close()  # the tenants opened for requests
            if engine is None:
                app.state.engine.close()
            if own_store:
                app.state.store.close()

    app = FastAPI(
        title="Shopcast",
        version=shopcast.__version__,
        description="Real-time personalized recommendations and push for online shops.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.telemetry = Telemetry()  # /metrics: request counts and latency
    from shopcast.web import RequestTimer  # here: shopcast.web imports shopcast.api
    from shopcast.web import router as web_router

    app.add_middleware(RequestTimer)  # recommendation latency for the dashboard
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(AuthMiddleware, settings=settings)  # outermost: before any body is read
    app.add_middleware(RequestMetricsMiddleware, telemetry=app.state.telemetry)  # all answers
    document_security(app, settings)

    @app.exception_handler(ShopcastError)
    async def _shopcast_error(_: Request, exc: ShopcastError) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, StorageUnavailableError):  # the client may retry the same request
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p not in ("body", "query", "path")]
            errors.append({"field": ".".join(loc) or "body", "reason": err["msg"]})
        return JSONResponse(
            {"error": "validation_error", "message": "invalid request", "errors": errors},
            status_code=422,
        )

    for module in (health, events, catalog, recommend, features, profiles, models, targeting):
        app.include_router(module.router)
    app.include_router(privacy_routes.router)
    app.include_router(push_routes.router)  # /v1/push, /v1/users/{id}/stream
    app.include_router(metrics.router)  # /v1/metrics, /metrics (feedback)
    app.include_router(experiments.router)  # /v1/experiments (A/B, OPE)
    app.include_router(web_router)  # /dashboard, /demo/shop and their JSON endpoints
    return app
