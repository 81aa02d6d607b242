"""``POST /v1/events``: validated, deduplicated, durably committed before the 202."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shopcast.api.auth import Tenant
from shopcast.api.ingest import GroupCommit
from shopcast.api.routes._common import json_body, tenant_of
from shopcast.domain import Event
from shopcast.ingest.validate import validate_events
from shopcast.storage import AppendResult, append_batches

router = APIRouter(tags=["events"])


class FieldProblem(BaseModel):
    index: int | None = None
    field: str
    reason: str


class IngestResult(BaseModel):
    accepted: int = Field(description="Events newly stored")
    duplicates: int = Field(description="Events whose event_id was already stored")
    rejected: int = Field(description="Events refused; see errors")
    event_ids: list[str] = Field(description="Ids of the valid events, in batch order")
    errors: list[FieldProblem] = Field(default_factory=list)


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IngestResult,
    responses={
        400: {"description": "Body is not JSON"},
        413: {"description": "Body or batch too large"},
        422: {"description": "Some or all events invalid; valid ones were still stored"},
    },
)
async def post_events(request: Request) -> JSONResponse:
    """One event, a list of events, or ``{"events": [...]}`` (at most ``api.max_batch``).

    The response is sent only after the valid events are committed. When some events
    are invalid the answer is 422 listing each bad event's index, field and reason;
    the valid events of the batch are stored anyway and counted in ``accepted``.
    """
    tenant = tenant_of(request)
    raw = tenant.pseudonyms.payload(await json_body(request))  # raw ids end here
    checked = validate_events(raw, max_batch=tenant.settings.api.max_batch)
    if checked.events:  # committed with the concurrent posts (group commit)
        result = await _group(tenant).submit(checked.events)
    else:
        result = AppendResult(accepted=0, duplicates=0)
    body = IngestResult(
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=len(checked.rejected_indices),
        event_ids=[e.event_id for e in checked.events if e.event_id is not None],
        errors=[FieldProblem(**e.as_dict()) for e in checked.errors],
    )
    status = 422 if checked.errors else 202
    payload: dict[str, Any] = body.model_dump()
    if checked.errors:
        payload = {"error": "validation_error", "message": _summary(body), **payload}
    return JSONResponse(payload, status_code=status)


def _group(tenant: Tenant) -> GroupCommit[AppendResult]:
    """The tenant's group committer (made on its first post)."""
    group = tenant.ingest
    if group is None:
        cfg = tenant.settings.api
        group = GroupCommit(
            lambda batches: append_batches(tenant.store.events, batches),
            lambda batches, results: _apply(tenant, batches, results),
            wait_s=cfg.group_commit_wait_s,
            max_events=cfg.group_commit_max_events,
        )
        tenant.ingest = group
    return group


def _apply(tenant: Tenant, batches: list[list[Event]], results: Sequence[AppendResult]) -> None:
    """The engine learns the group's stored events, in commit order, before any 202."""
    stored = [batch[i] for batch, r in zip(batches, results, strict=True) for i in r.stored]
    if not stored:
        return
    engine = tenant.engine
    engine.observe(stored)
    engine.publish(stored, results[-1].last_seq - len(stored))  # bus (shared state only)


def _summary(body: IngestResult) -> str:
    return (
        f"{body.rejected} event(s) rejected; {body.accepted} accepted, "
        f"{body.duplicates} duplicate(s)"
    )
