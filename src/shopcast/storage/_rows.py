"""What every backend shares: the event row layout, frame checks and scan arguments.

An event row is a tuple in ``EVENT_COLUMNS`` order; ``context`` is compact JSON text,
or null when the event has no context.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from shopcast.domain import Event, EventType
from shopcast.errors import FieldError, ValidationError
from shopcast.storage._protocols import EVENT_COLUMNS

#: Schema of ``EventLog.frame``: ``seq`` then ``EVENT_COLUMNS``.
FRAME_SCHEMA: dict[str, type[pl.DataType]] = {
    "seq": pl.Int64,
    **{
        c: pl.Float64 if c in ("ts", "value", "quantity", "price") else pl.Utf8
        for c in EVENT_COLUMNS
    },
}
_SUBJECT_COLUMNS = {"u": "user_id", "s": "session_id"}
_EVENT_TYPES = [t.value for t in EventType]

Row = tuple[Any, ...]


def event_row(event: Event) -> Row:
    """The row that stores ``event``."""
    context = json.dumps(event.context, separators=(",", ":")) if event.context else None
    return (
        event.event_id,
        event.type.value,
        event.user_id,
        event.session_id,
        event.item_id,
        event.timestamp,
        event.value,
        event.quantity,
        event.price,
        event.query,
        event.recommendation_id,
        context,
    )


def row_event(row: Sequence[Any]) -> Event:
    """The event stored in ``row`` (``EVENT_COLUMNS`` order).

    A stored row was validated when it was appended (``event_row`` of an ``Event``, or
    ``clean_frame``), so it is not validated again: ``Event.model_construct`` with the
    type, floats and context converted is several times cheaper than
    ``model_validate`` and gives an equal event (loading a shopper's live session
    reads up to a few hundred rows on the request path)."""
    event_id, kind, user_id, session_id, item_id, ts, value, quantity, price = row[:9]
    query, recommendation_id, context = row[9:]
    return Event.model_construct(
        event_id=event_id,
        type=_TYPES.get(kind) or EventType(kind),
        user_id=user_id,
        session_id=session_id,
        item_id=item_id,
        timestamp=float(ts),
        value=None if value is None else float(value),
        quantity=None if quantity is None else float(quantity),
        price=None if price is None else float(price),
        query=query,
        recommendation_id=recommendation_id,
        context=json.loads(context) if context else {},
    )


_TYPES = {t.value: t for t in EventType}


def clean_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` reduced to ``EVENT_COLUMNS`` with the canonical dtypes.

    Raises ``ValidationError`` for a missing column, a value that does not cast, a null
    ``event_id``, ``type`` or ``ts``, or an unknown event type.
    """
    missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValidationError(
            f"event frame lacks column(s): {', '.join(missing)}",
            [FieldError(c, "missing column") for c in missing],
        )
    try:
        out = frame.select(pl.col(c).cast(FRAME_SCHEMA[c]) for c in EVENT_COLUMNS)
    except pl.exceptions.PolarsError as exc:
        raise ValidationError(f"event frame has values of the wrong type: {exc}") from exc
    for name in ("event_id", "type", "ts"):
        _reject_rows(name, out[name].is_null(), "must not be null")
    _reject_rows("type", ~out["type"].is_in(_EVENT_TYPES), "is not a canonical event type")
    return out


def _reject_rows(name: str, bad: pl.Series, reason: str) -> None:
    if bad.any():
        index = bad.arg_max()
        raise ValidationError(
            f"event frame column {name!r} {reason} (first at row {index})",
            [FieldError(name, reason, index)],
        )


def rows_frame(rows: Iterable[Sequence[Any]]) -> pl.DataFrame:
    """A ``FRAME_SCHEMA`` frame from ``(seq, *event_row)`` tuples."""
    return pl.DataFrame(list(rows), schema=FRAME_SCHEMA, orient="row")


def subject_filter(subject: str) -> tuple[str, str]:
    """``("user_id", id)`` for ``u:<id>``, ``("session_id", id)`` for ``s:<id>``."""
    kind, sep, key = subject.partition(":")
    if not sep or not key or kind not in _SUBJECT_COLUMNS:
        raise ValidationError(
            f"subject {subject!r} is neither 'u:<user_id>' nor 's:<session_id>'",
            [FieldError("subject", "must be 'u:<user_id>' or 's:<session_id>'")],
        )
    return _SUBJECT_COLUMNS[kind], key


def check_limit(limit: int | None) -> None:
    """Reject a negative scan limit (``None`` means no limit)."""
    if limit is not None and limit < 0:
        raise ValidationError(
            f"limit must be >= 0, not {limit}", [FieldError("limit", "must be >= 0")]
        )
