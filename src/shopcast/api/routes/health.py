"""Liveness and basic facts about the running service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

import shopcast
from shopcast.api.routes._common import engine_of

router = APIRouter(tags=["health"])


@router.get("/v1/health")
def health(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    return {
        "status": "ok",
        "version": shopcast.__version__,
        "model_version": engine.bundle.version,
        "items": len(engine.bundle.items),
        "live_sessions": len(engine.sessions),
        # online state: "memory" (in process) or "redis"; false while Redis is unreachable
        # (answers are then degraded, see docs/operations.md)
        "online_state": "redis" if engine.online.shared else "memory",
        "online_state_available": engine.online.conn is None or engine.online.conn.ping(),
    }
