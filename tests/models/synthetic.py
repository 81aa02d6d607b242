"""Event builders for the model tests. All events made here are SYNTHETIC (hand-written)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from shopcast.models import Interactions, Vocabulary
from shopcast.storage._protocols import EVENT_COLUMNS

DAY = 86_400.0
T0 = 1_700_000_000.0

_STRINGS = {"event_id", "type", "user_id", "session_id", "item_id", "query"}
_STRINGS |= {"recommendation_id", "context"}
SCHEMA = {c: (pl.String if c in _STRINGS else pl.Float64) for c in EVENT_COLUMNS}


def ev(
    user: str | None,
    item: str | None,
    type: str = "view",
    ts: float = T0,
    *,
    session: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One synthetic event row."""
    return {"user_id": user, "session_id": session, "item_id": item, "type": type, "ts": ts} | extra


def event_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """A frame with every ``EVENT_COLUMNS`` column (missing values null)."""
    full = [
        {c: r.get(c) for c in EVENT_COLUMNS} | {"event_id": f"e{i}"} for i, r in enumerate(rows)
    ]
    return pl.DataFrame(full, schema=SCHEMA)


def interactions(
    rows: Sequence[dict[str, Any]],
    users: Vocabulary | None = None,
    items: Vocabulary | None = None,
) -> Interactions:
    return Interactions.from_frame(event_frame(rows), users=users, items=items)
