"""The model registry: list versions, promote one, roll back. Every process hot-swaps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from shopcast.api.routes._common import engine_of, settings_of
from shopcast.training.registry import ModelRegistry, open_registry

router = APIRouter(tags=["models"])


def _registry(request: Request) -> ModelRegistry:
    return open_registry(settings_of(request))


@router.get("/v1/models")
def list_models(request: Request) -> dict[str, Any]:
    """Every trained version, newest first, and the one this process serves."""
    return {
        "serving": engine_of(request).bundle.version,
        "versions": [m.as_dict() for m in _registry(request).versions()],
    }


@router.post("/v1/models/{version}/promote")
async def promote(request: Request, version: str) -> dict[str, Any]:
    """Make ``version`` CURRENT and serve it now (other processes follow within seconds)."""
    previous = _registry(request).promote(version.strip())
    await run_in_threadpool(engine_of(request).reload_if_changed)
    return {"serving": engine_of(request).bundle.version, "previous": previous}


@router.post("/v1/models/rollback")
async def rollback(request: Request) -> dict[str, Any]:
    """Serve the version that was CURRENT before the latest promotion."""
    version = _registry(request).rollback()
    await run_in_threadpool(engine_of(request).reload_if_changed)
    return {"serving": engine_of(request).bundle.version, "rolled_back_to": version}
