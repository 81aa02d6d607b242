"""Event frame -> ``Interactions``, column-wise (no per-row validation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from shopcast.domain import parse_event_type
from shopcast.errors import ValidationError
from shopcast.models._base import EVENT_CODES, IntArray, Vocabulary

if TYPE_CHECKING:
    from shopcast.models._base import Interactions

_NEEDED = ("type", "user_id", "session_id", "item_id", "ts", "value")


def interactions_from_frame(
    cls: type[Interactions],
    frame: pl.DataFrame,
    *,
    users: Vocabulary | None = None,
    items: Vocabulary | None = None,
) -> Interactions:
    """Build ``cls`` from an event frame; see ``Interactions.from_frame``.

    Rows without an item, or with neither a user nor a session, are dropped. Rows are
    sorted stably by ``ts`` (then ``seq`` when the frame has it). New subjects and
    items are appended to the vocabularies in order of first appearance in time.
    """
    missing = [c for c in _NEEDED if c not in frame.columns]
    if missing:
        raise ValidationError(f"event frame lacks column(s): {', '.join(missing)}")
    users = Vocabulary() if users is None else users
    items = Vocabulary() if items is None else items

    user_id = pl.col("user_id").cast(pl.String)
    session_id = pl.col("session_id").cast(pl.String)
    subject = (
        pl.when(user_id.is_not_null() & (user_id != ""))
        .then(pl.lit("u:") + user_id)
        .otherwise(pl.lit("s:") + session_id)
    )
    order = ["ts", "seq"] if "seq" in frame.columns else ["ts"]
    df = (
        frame.lazy()
        .select(
            subject.alias("subject"),
            pl.col("item_id").cast(pl.String),
            pl.col("type").cast(pl.String),
            pl.col("ts").cast(pl.Float64),
            pl.col("value").cast(pl.Float64).fill_null(float("nan")),
            *([pl.col("seq")] if "seq" in frame.columns else []),
        )
        .filter(pl.col("item_id").is_not_null() & pl.col("subject").is_not_null())
        .collect()
    )
    if df["ts"].null_count():
        raise ValidationError("event frame has events without a ts")
    df = df.sort(order, maintain_order=True)

    return cls(
        users=users,
        items=items,
        user=_codes(df["subject"], users),
        item=_codes(df["item_id"], items),
        type=_type_codes(df["type"]),
        ts=df["ts"].to_numpy().astype(np.float64),
        value=df["value"].to_numpy().astype(np.float64),
    )


def _codes(column: pl.Series, vocab: Vocabulary) -> IntArray:
    """Vocabulary indices of a string column, adding unseen keys."""
    uniq = column.unique(maintain_order=True)
    idx = vocab.indices(uniq.to_list(), add=True)
    mapped = column.replace_strict(uniq, idx, return_dtype=pl.Int64)
    return np.asarray(mapped.to_numpy(), dtype=np.int64)


def _type_codes(column: pl.Series) -> IntArray:
    """``EVENT_CODES`` of a type column; aliases (``pv``, ``buy``, ...) are accepted."""
    uniq = column.unique(maintain_order=True)
    codes: list[int] = []
    bad: list[str] = []
    for raw in uniq.to_list():
        try:
            codes.append(EVENT_CODES[parse_event_type(raw)])
        except ValueError:
            bad.append(repr(raw))
    if bad:
        allowed = ", ".join(t.value for t in EVENT_CODES)
        raise ValidationError(
            f"unknown event type(s) {', '.join(bad)} in event frame; expected one of: {allowed}"
        )
    mapped = column.replace_strict(uniq, codes, return_dtype=pl.Int64)
    return np.asarray(mapped.to_numpy(), dtype=np.int64)
