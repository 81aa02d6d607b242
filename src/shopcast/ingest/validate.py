"""Validation of event payloads from the API: per event, with field-level errors.

A payload is one event object, a list of events, or ``{"events": [...]}``. Each
event is validated on its own so the good events of a mixed batch are kept; each
bad one yields ``FieldError(index, field, reason)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pydantic

from shopcast.domain import Event
from shopcast.errors import BatchTooLargeError, FieldError, ValidationError

_VALUE_ERROR_PREFIX = "Value error, "


@dataclass(slots=True)
class BatchValidation:
    """Valid events (with their positions in the batch) and the errors of the rest."""

    events: list[Event] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)
    size: int = 0

    @property
    def rejected_indices(self) -> list[int]:
        return sorted({e.index for e in self.errors if e.index is not None})


def event_records(raw: object, *, max_batch: int) -> list[object]:
    """The list of raw event records in a payload; refuses bad shapes and big batches."""
    if isinstance(raw, dict) and set(raw) == {"events"}:
        raw = raw["events"]
    if isinstance(raw, dict):
        records: list[object] = [raw]
    elif isinstance(raw, list):
        records = raw
    else:
        raise ValidationError(
            'the body must be an event object, a list of events or {"events": [...]}',
            [FieldError("body", f"got JSON {type(raw).__name__}")],
        )
    if not records:
        raise ValidationError("the batch is empty", [FieldError("events", "must not be empty")])
    if len(records) > max_batch:
        raise BatchTooLargeError(
            f"the batch has {len(records)} events; at most {max_batch} per request",
            [FieldError("events", f"{len(records)} events > limit {max_batch}")],
        )
    return records


def field_errors(exc: pydantic.ValidationError, index: int | None = None) -> list[FieldError]:
    """Turn pydantic's errors into ``FieldError`` naming the field and the problem.

    Model-level rules in ``shopcast.domain`` raise ``"<field>: <reason>"``.
    """
    out: list[FieldError] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix(_VALUE_ERROR_PREFIX)
        if not loc and ": " in msg:
            loc, msg = msg.split(": ", 1)
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "is required"
        out.append(FieldError(loc or "event", msg, index))
    return out


def validate_events(raw: object, *, max_batch: int) -> BatchValidation:
    """Validate every record of a payload (see ``event_records``)."""
    records = event_records(raw, max_batch=max_batch)
    result = BatchValidation(size=len(records))
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            result.errors.append(
                FieldError("event", f"must be a JSON object, got {type(record).__name__}", i)
            )
            continue
        try:
            event = Event.model_validate(_without_nulls(record))
        except pydantic.ValidationError as exc:
            result.errors.extend(field_errors(exc, i))
            continue
        result.events.append(event)
        result.positions.append(i)
    return result


def _without_nulls(record: dict[str, Any]) -> dict[str, Any]:
    """JSON ``null`` means "absent" (so a null timestamp defaults to now)."""
    return {k: v for k, v in record.items() if v is not None}
