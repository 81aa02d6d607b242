"""Push: live streams, history, opens/clicks, metrics, runtime trigger settings.

Live stream of a user's pushes:

- ``GET /v1/users/{id}/stream`` — Server-Sent Events (``text/event-stream``). Each push
  is ``event: push`` with ``data:`` one JSON object ``{"message_id", "user_id",
  "trigger", "channel": "live", "title", "body", "items": [{"item_id", "title",
  "price", "reason"}], "created_at"}`` (ISO 8601 UTC; a ``data`` object with trigger
  details when there are any); a comment line (``: heartbeat``) every
  ``push.heartbeat_s`` (15 s) keeps proxies from closing it.
- WebSocket at the same path (a WebSocket upgrade of ``/v1/users/{id}/stream``) or at
  ``/v1/users/{id}/stream/ws``: each push is a text frame ``{"event": "push", "data":
  {...}}`` (the same object), heartbeats ``{"event": "heartbeat"}``. With auth on, a
  WebSocket sends its key as a header or as ``?key=`` (browsers cannot set headers).
- ``POST /v1/users/{id}/stream-token`` (``read`` scope): a signed token for that
  user's stream in the caller's tenant, valid ``push.stream_token_ttl_s``; the SSE and
  WebSocket streams accept ``?token=`` instead of a key (``shopcast.push.tokens``).

On connect, pushes decided while the user had no stream (up to ``push.live_ttl`` old)
are sent first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from shopcast.api.auth import TenantPool
from shopcast.api.routes._common import json_body, tenant_of, user_key
from shopcast.errors import (
    AuthError,
    FieldError,
    NotFoundError,
    StorageUnavailableError,
    ValidationError,
)
from shopcast.push.engine import PushEngine
from shopcast.push.messages import DeliveryStatus, PushMessage, iso
from shopcast.push.service import PushService
from shopcast.push.tokens import StreamAuth, stream_tokens

router = APIRouter(tags=["push"])


def push_of(request: Request) -> PushEngine:
    service: PushService | None = getattr(request.app.state, "push", None)
    push = service.get(tenant_of(request)) if service is not None else None
    if push is None:
        raise NotFoundError("the push engine is off (push.enabled = false)")
    return push


def _wire(message: PushMessage, raw_user: str) -> dict[str, Any]:
    data = message.to_json()
    data["user_id"] = raw_user  # the caller's id, not the stored pseudonym
    return data


@router.get(
    "/v1/users/{user_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def stream(request: Request, user_id: str) -> StreamingResponse:
    """The user's live pushes as Server-Sent Events (see the module docstring)."""
    push = push_of(request)
    key = user_key(request, user_id)
    hub = push.hub
    if hub is None:
        raise NotFoundError("this process has no live channel")
    heartbeat = push.config.heartbeat_s
    guard: StreamAuth = getattr(request.state, "shopcast_stream_auth", None) or StreamAuth()
    sub = hub.subscribe(key)

    async def events() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            await run_in_threadpool(push.connected, key)
            while True:
                try:
                    message = await asyncio.wait_for(
                        sub.queue.get(), timeout=guard.wait_s(heartbeat)
                    )
                except TimeoutError:
                    why = await guard.ended()
                    if why is not None:  # the token expired or the key was revoked
                        yield f"event: expired\ndata: {json.dumps({'message': why})}\n\n"
                        return
                    yield ": heartbeat\n\n"
                    continue
                payload = json.dumps(_wire(message, user_id), separators=(",", ":"))
                yield f"event: push\ndata: {payload}\n\n"
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _socket(websocket: WebSocket, user_id: str) -> None:
    service: PushService | None = getattr(websocket.app.state, "push", None)
    settings = websocket.app.state.settings
    tenant_name = "default"
    guard = StreamAuth()
    if settings.auth.enabled:
        from shopcast.privacy.apikeys import open_key_store

        stream_token = websocket.query_params.get("token")
        if stream_token:  # a signed stream token (POST /v1/users/{id}/stream-token)
            try:
                grant = stream_tokens(websocket.app.state, settings).verify(stream_token, user_id)
            except AuthError:
                await websocket.close(code=4401)
                return
            tenant_name = grant.tenant
            guard = StreamAuth(
                expires_at=grant.expires_at,
                clock=stream_tokens(websocket.app.state, settings).clock,
            )
        else:
            token = websocket.headers.get("x-api-key") or websocket.query_params.get("key")
            auth = websocket.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                token = auth[7:].strip()
            key = None
            shared = getattr(websocket.state, "shopcast_keys", None)  # the auth middleware's
            if token and shared is not None:
                key = await run_in_threadpool(shared.verify, token)
            elif token:
                keys = open_key_store(settings)  # PostgreSQL's with a postgresql:// database
                try:
                    key = await run_in_threadpool(keys.verify, token)
                finally:
                    keys.close()
            if key is None or not key.allows("read"):
                await websocket.close(code=4401)
                return
            tenant_name = key.tenant
            guard = _key_guard(websocket, settings, token or "")
    pool: TenantPool = websocket.app.state.tenants
    tenant = await pool.ensure(tenant_name)
    push = service.get(tenant) if service is not None else None
    if push is None or push.hub is None:
        await websocket.close(code=4404)
        return
    try:
        stored = tenant.pseudonyms.user(user_id)
    except ValueError:
        await websocket.close(code=4422)
        return
    await websocket.accept()
    sub = push.hub.subscribe(stored)
    try:
        await run_in_threadpool(push.connected, stored)
        while True:
            try:
                message = await asyncio.wait_for(
                    sub.queue.get(), timeout=guard.wait_s(push.config.heartbeat_s)
                )
            except TimeoutError:
                why = await guard.ended()
                if why is not None:  # the token expired or the key was revoked
                    await websocket.close(code=4401, reason=why[:120])
                    return
                await websocket.send_json({"event": "heartbeat"})
                continue
            await websocket.send_json({"event": "push", "data": _wire(message, user_id)})
    except WebSocketDisconnect:
        pass
    finally:
        push.hub.unsubscribe(sub)


def _key_guard(websocket: WebSocket, settings: Any, token: str) -> StreamAuth:
    """The API key of a WebSocket stream, looked up again every ``stream_recheck_s``."""
    from shopcast.privacy.apikeys import open_key_store

    def still_reads() -> bool:
        shared = getattr(websocket.state, "shopcast_keys", None)
        keys = shared if shared is not None else open_key_store(settings)
        try:
            key = keys.verify(token)
        except StorageUnavailableError:
            return True  # authorized when it opened; the next reachable check decides
        finally:
            if shared is None:
                keys.close()
        return key is not None and key.allows("read")

    return StreamAuth(recheck=still_reads, recheck_s=settings.push.stream_recheck_s)


@router.websocket("/v1/users/{user_id}/stream")
async def stream_socket(websocket: WebSocket, user_id: str) -> None:
    await _socket(websocket, user_id)


@router.websocket("/v1/users/{user_id}/stream/ws")
async def stream_socket_ws(websocket: WebSocket, user_id: str) -> None:
    await _socket(websocket, user_id)


@router.post("/v1/users/{user_id}/stream-token", responses={422: {}})
async def stream_token(request: Request, user_id: str) -> dict[str, Any]:
    """A short-lived signed token for this user's live stream in the caller's tenant
    (``GET /v1/users/{id}/stream?token=…``: a browser's EventSource sends no key).
    Needs the ``read`` scope; expires after ``push.stream_token_ttl_s``."""
    push_of(request)  # 404 when push is off
    user_key(request, user_id)  # 422 for an invalid id
    tokens = stream_tokens(request.app.state, request.app.state.settings)
    token, expires = tokens.issue(tenant_of(request).name, user_id)
    path = f"/v1/users/{quote(user_id, safe='')}/stream"
    return {
        "token": token,
        "expires_at": iso(expires),
        "expires_in": int(tokens.ttl_s),
        "stream_url": f"{path}?token={token}",
    }


@router.get("/v1/users/{user_id}/push")
async def history(
    request: Request, user_id: str, limit: int = Query(50, ge=1, le=1000)
) -> dict[str, Any]:
    """The user's push messages, newest first, with deliveries and opens/clicks."""
    push = push_of(request)
    rows = await run_in_threadpool(push.history, user_key(request, user_id), limit)
    for row in rows:
        row["user_id"] = user_id
    return {"user_id": user_id, "messages": rows}


async def _feedback(request: Request, message_id: str, kind: str) -> dict[str, Any]:
    push = push_of(request)
    new = await run_in_threadpool(push.feedback, message_id, kind)
    return {"message_id": message_id, "kind": kind, "recorded": new}


@router.post("/v1/push/{message_id}/open", responses={404: {"description": "Unknown message"}})
async def opened(request: Request, message_id: str) -> dict[str, Any]:
    """Record that the shopper opened (saw) a push; idempotent."""
    return await _feedback(request, message_id, "open")


@router.post("/v1/push/{message_id}/click", responses={404: {"description": "Unknown message"}})
async def clicked(request: Request, message_id: str) -> dict[str, Any]:
    """Record a click on a push (implies an open); idempotent."""
    return await _feedback(request, message_id, "click")


@router.get("/v1/push/metrics")
async def metrics(request: Request, since: float | None = None) -> dict[str, Any]:
    """Per trigger: decisions, sent, holdout, deferred, suppressed per rule, lift vs
    holdout with a 95 % interval; per trigger and channel: messages, delivered,
    opened, clicked, purchases (of a pushed item within push.attribution_window) and
    purchases after a click; dead letters."""
    push = push_of(request)
    return await run_in_threadpool(push.metrics, since)


@router.get("/v1/push/triggers")
async def triggers(request: Request) -> dict[str, Any]:
    push = push_of(request)
    return {name: cfg.model_dump() for name, cfg in push.config.triggers.items()}


@router.put("/v1/push/triggers/{name}", responses={404: {}, 422: {}})
async def configure(request: Request, name: str) -> dict[str, Any]:
    """Change some fields of a trigger (e.g. ``{"delay": "10s"}``); kept across restarts."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ValidationError("expected a JSON object", [FieldError("body", "not an object")])
    cfg = await run_in_threadpool(push_of(request).configure_trigger, name, body)
    return {"name": name, **cfg.model_dump()}


@router.post("/v1/push/promotions/{promotion_id}/run", responses={404: {}})
async def run_promotion(request: Request, promotion_id: str) -> dict[str, Any]:
    """Push a configured promotion now to its best-matching users."""
    verdicts = await run_in_threadpool(push_of(request).run_promotion, promotion_id)
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.outcome] = counts.get(v.outcome, 0) + 1
    return {"promotion_id": promotion_id, "decisions": len(verdicts), "outcomes": counts}


@router.get("/v1/push/dead-letters")
async def dead_letters(
    request: Request, limit: int = Query(100, ge=1, le=10_000)
) -> dict[str, Any]:
    push = push_of(request)
    rows = push.outbox.deliveries(status=DeliveryStatus.DEAD, limit=limit)
    return {"deliveries": [d.to_json() for d in rows]}


@router.post("/v1/push/deliveries/{delivery_id}/requeue", responses={404: {}})
async def requeue(request: Request, delivery_id: str) -> dict[str, Any]:
    """Send a dead-lettered delivery again (same delivery id)."""
    push = push_of(request)
    if not push.outbox.requeue(delivery_id, now=push.clock()):
        raise NotFoundError(f"no dead delivery {delivery_id!r}")
    return {"delivery_id": delivery_id, "status": "pending"}
