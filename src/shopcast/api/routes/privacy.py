"""Privacy operations (admin keys only): ``DELETE /v1/users/{id}`` (full erasure),
``POST /v1/privacy/pseudonyms``, ``POST /v1/privacy/retention`` and
``GET /v1/privacy/stats`` (aggregates with noise when ``privacy.dp_epsilon`` is set)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from shopcast.api.routes._common import (
    engine_of,
    json_body,
    pseudonyms_of,
    settings_of,
    store_of,
)
from shopcast.errors import FieldError, NotFoundError, ValidationError
from shopcast.privacy.erasure import erase_user
from shopcast.privacy.noise import Mechanism, item_user_counts
from shopcast.privacy.retention import apply_retention

router = APIRouter(tags=["privacy"])


class ErasureReport(BaseModel):
    user_id: str
    removed: dict[str, int] = Field(description="Records removed, by kind")
    models: dict[str, str] = Field(
        description="Per model role: unlearned | not_learned | retrain (at the next retrain)"
    )
    model_version: str | None = Field(None, description="The unlearned model now CURRENT")
    models_pruned: list[str] = Field(
        default_factory=list, description="Older versions deleted (they held the user)"
    )
    retrain_scheduled: bool


@router.delete(
    "/v1/users/{user_id}",
    tags=["users"],
    response_model=ErasureReport,
    responses={404: {"description": "Nothing is known about this user"}},
)
async def erase(request: Request, user_id: str) -> ErasureReport:
    """Erase a user: events, impressions, record, profile, live session, the user's
    influence on the models (at once, and a retrain), with a report of what went."""
    raw = user_id.strip()
    stored = pseudonyms_of(request).lookup(raw)
    engine = engine_of(request)
    store = store_of(request)
    known = (
        store.users.get(stored) is not None
        or bool(store.events.scan(subject=f"u:{stored}", limit=1))
        or stored in engine.profiles.states
    )
    if not known:
        raise NotFoundError(f"user {raw!r} not found: no record, no event")
    report = await run_in_threadpool(erase_user, store, stored, settings_of(request), engine)
    return ErasureReport(user_id=raw, **report)


class PseudonymRequest(BaseModel):
    user_ids: list[str] = Field(min_length=1, max_length=10_000)


@router.post("/v1/privacy/pseudonyms")
async def pseudonyms(request: Request) -> dict[str, Any]:
    """The stored id of each raw user id (the ids segment and targeting answers list)."""
    raw = await json_body(request)
    try:
        body = PseudonymRequest.model_validate(raw)
    except Exception:
        raise ValidationError(
            "expected {'user_ids': [...]}", [FieldError("user_ids", "1 to 10,000 ids")]
        ) from None
    ids = pseudonyms_of(request)
    out: dict[str, str | None] = {}
    for uid in body.user_ids:
        try:
            out[uid] = ids.user(uid)
        except ValueError:
            out[uid] = None
    return {"pseudonymized": ids.enabled, "ids": out}


@router.post("/v1/privacy/retention")
async def retention(request: Request) -> dict[str, Any]:
    """Apply the retention period now (the server also does it on a schedule)."""
    days = settings_of(request).privacy.retention_days
    if days is None:
        return {"retention_days": None, "deleted_events": 0}
    deleted = await run_in_threadpool(apply_retention, store_of(request), days)
    return {"retention_days": days, "deleted_events": deleted}


class NoisyCount(BaseModel):
    key: str
    count: int


class StatsOut(BaseModel):
    mechanism: str = Field(description="none | laplace | gaussian")
    epsilon: float | None = Field(description="Spent by each of the two releases")
    delta: float
    noise_scale: dict[str, float] = Field(description="Laplace b or Gaussian σ per release")
    window_days: float
    items: list[NoisyCount] = Field(description="Users per item in the window (top k)")
    segments: list[NoisyCount] = Field(description="Users per segment")


@router.get("/v1/privacy/stats", response_model=StatsOut)
def stats(
    request: Request,
    k: Annotated[int, Query(ge=1, le=1000)] = 20,
    window_days: Annotated[float, Query(gt=0, le=3650)] = 30.0,
    max_items_per_user: Annotated[int, Query(ge=1, le=100)] = 10,
) -> StatsOut:
    """Popular items (distinct users) and segment sizes, with noise when configured."""
    p = settings_of(request).privacy
    frame = store_of(request).events.frame()
    since = time.time() - window_days * 86_400
    items = item_user_counts(frame, since=since, max_items_per_user=max_items_per_user)
    segments = engine_of(request).profiles.segments()
    item_counts = items["users"].to_numpy().astype(np.float64)
    seg_counts = np.array([s.size for s in segments], dtype=np.float64)
    scales: dict[str, float] = {}
    if p.dp_epsilon is not None:
        mech = Mechanism(p.dp_epsilon, p.dp_delta)
        m = float(max_items_per_user)
        scales = {"items": mech.scale(m, m**0.5), "segments": mech.scale(1.0, 1.0)}
        item_counts = mech.release(item_counts, m, m**0.5).astype(np.float64)
        seg_counts = mech.release(seg_counts, 1.0, 1.0).astype(np.float64)
    order = np.argsort(-item_counts, kind="stable")[:k]
    ids = items["item_id"].to_list()
    return StatsOut(
        mechanism="none" if p.dp_epsilon is None else Mechanism(p.dp_epsilon, p.dp_delta).name,
        epsilon=p.dp_epsilon,
        delta=p.dp_delta,
        noise_scale=scales,
        window_days=window_days,
        items=[NoisyCount(key=ids[i], count=int(item_counts[i])) for i in order],
        segments=[
            NoisyCount(key=str(s.id), count=int(c))
            for s, c in zip(segments, seg_counts, strict=True)
        ],
    )
