"""``POST /v1/events``: validated, deduplicated, durably committed before the 202."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shopcast.api.routes._common import (
    engine_of,
    json_body,
    pseudonyms_of,
    settings_of,
    store_of,
)
from shopcast.domain import Event
from shopcast.ingest.validate import validate_events
from shopcast.storage import AppendResult

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
    raw = pseudonyms_of(request).payload(await json_body(request))  # raw ids end here
    checked = validate_events(raw, max_batch=settings_of(request).api.max_batch)
    result = await run_in_threadpool(_commit, request, checked.events)
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


def _commit(request: Request, events: list[Event]) -> AppendResult:
    if not events:
        return AppendResult(accepted=0, duplicates=0)
    result = store_of(request).events.append(events)
    stored = [events[i] for i in result.stored]
    engine = engine_of(request)
    engine.observe(stored)
    engine.publish(stored, result.last_seq - result.accepted)  # bus (shared state only)
    return result


def _summary(body: IngestResult) -> str:
    return (
        f"{body.rejected} event(s) rejected; {body.accepted} accepted, "
        f"{body.duplicates} duplicate(s)"
    )
