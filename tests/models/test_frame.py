"""Interactions.from_frame on SYNTHETIC event frames."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shopcast.domain import EventType
from shopcast.errors import ValidationError
from shopcast.models import Interactions, Vocabulary
from shopcast.models._base import EVENT_CODES

from .synthetic import T0, ev, event_frame, interactions


def test_subject_is_user_else_session() -> None:
    data = interactions(
        [
            ev("alice", "i1", session="s1"),
            ev(None, "i1", session="s1"),
            ev("", "i2", session="s2"),
        ]
    )
    assert data.users.ids == ["u:alice", "s:s1", "s:s2"]
    assert data.user.tolist() == [0, 1, 2]


def test_rows_without_item_or_subject_are_dropped() -> None:
    data = interactions(
        [
            ev("a", None, "search", query="shoes"),
            ev(None, "i1", session=None),
            ev("a", "i2", "add_to_cart", ts=T0 + 1),
        ]
    )
    assert len(data) == 1
    assert data.items.ids == ["i2"]
    assert data.type.tolist() == [EVENT_CODES[EventType.ADD_TO_CART]]


def test_given_vocabularies_are_extended_in_place_in_time_order() -> None:
    users, items = Vocabulary(["u:b"]), Vocabulary(["old", "i9"])
    data = interactions(
        [ev("c", "i9", ts=T0 + 2), ev("b", "new2", ts=T0 + 1), ev("d", "new1", ts=T0)],
        users=users,
        items=items,
    )
    assert data.users is users and data.items is items
    assert users.ids == ["u:b", "u:d", "u:c"]
    assert items.ids == ["old", "i9", "new1", "new2"]
    assert data.user.tolist() == [1, 0, 2]
    assert data.item.tolist() == [2, 3, 1]


def test_sort_is_stable_by_ts_then_seq() -> None:
    rows = [ev("a", "x", ts=T0 + 5), ev("a", "y", ts=T0), ev("a", "z", ts=T0)]
    data = interactions(rows)
    assert [data.items.id(i) for i in data.item] == ["y", "z", "x"]
    assert data.ts.tolist() == [T0, T0, T0 + 5]

    with_seq = event_frame(rows).with_columns(seq=pl.Series([1, 3, 2]))
    data = Interactions.from_frame(with_seq)
    assert [data.items.id(i) for i in data.item] == ["z", "y", "x"]


def test_columns_types_and_values() -> None:
    data = interactions([ev("a", "x", "pv"), ev("a", "x", "rate", ts=T0 + 1, value=4.0)])
    assert data.type.tolist() == [EVENT_CODES[EventType.VIEW], EVENT_CODES[EventType.RATE]]
    assert data.user.dtype == data.item.dtype == data.type.dtype == np.int64
    assert data.ts.dtype == data.value.dtype == np.float64
    assert np.isnan(data.value[0]) and data.value[1] == 4.0


def test_empty_frame_gives_empty_columns() -> None:
    data = interactions([])
    assert len(data) == 0 and len(data.items) == 0
    assert data.item.dtype == np.int64 and data.ts.dtype == np.float64


def test_unknown_type_is_an_error_naming_it() -> None:
    with pytest.raises(ValidationError, match="'teleport'"):
        interactions([ev("a", "x", "teleport")])


def test_missing_column_and_missing_ts_are_errors() -> None:
    with pytest.raises(ValidationError, match="item_id"):
        Interactions.from_frame(event_frame([ev("a", "x")]).drop("item_id"))
    with pytest.raises(ValidationError, match="ts"):
        interactions([ev("a", "x", ts=None)])  # type: ignore[arg-type]
