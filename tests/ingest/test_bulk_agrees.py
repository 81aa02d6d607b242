"""The bulk path (``clean_events``) and the single-record path (``Event``) must agree:
same rows accepted, same normalized values, same derived ids, and a rejection blamed
on the same field. Data here is hand-written, not real."""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any

import polars as pl
import pydantic
import pytest

from shopcast.domain import Event, parse_timestamp
from shopcast.ingest.bulk import PY_WHITESPACE, clean_events

NOW = 1_700_000_000.0
BASE = {"type": "view", "user_id": "u1", "item_id": "i1", "timestamp": 1_600_000_000}

RECORDS: list[dict[str, Any]] = [
    BASE,
    {**BASE, "type": " PV ", "user_id": "  u1\t", "item_id": "\u3000i1 "},
    {**BASE, "user_id": 42, "item_id": 7},
    {**BASE, "timestamp": 1_600_000_000_123},
    {**BASE, "timestamp": 1.6e9 + 0.25},
    {**BASE, "timestamp": "2020-01-01T10:00:00Z"},
    {**BASE, "timestamp": "2020-01-01T10:00:00.5+05:30"},
    {**BASE, "timestamp": "2019-10-01 00:00:00 UTC"},
    {**BASE, "timestamp": "2020-01-01"},
    {**BASE, "timestamp": " 1600000000 "},
    {**BASE, "timestamp": "１６００００００００"},
    {**BASE, "timestamp": "20200101T100000"},
    {**BASE, "timestamp": datetime(2021, 5, 6, 7, 8, 9, 123456)},
    {k: v for k, v in BASE.items() if k != "timestamp"},
    {**BASE, "timestamp": "yesterday"},
    {**BASE, "timestamp": "2020-02-30"},
    {**BASE, "timestamp": -5},
    {**BASE, "timestamp": "nan"},
    {**BASE, "type": "buy", "quantity": 2, "price": "3.50"},
    {**BASE, "type": "purchase", "quantity": "1_000", "price": 0},
    {**BASE, "type": "purchase", "quantity": 0},
    {**BASE, "type": "purchase", "price": -1},
    {**BASE, "type": "purchase", "quantity": float("inf")},
    {**BASE, "type": "rating", "value": " 4.5 "},
    {**BASE, "type": "rate", "value": True},
    {**BASE, "type": "rate", "value": "abc"},
    {**BASE, "type": "rate"},
    {"type": "search", "session_id": "s1", "timestamp": 1e9, "query": " red shoes "},
    {**BASE, "type": "search", "item_id": None, "query": "   "},
    {**BASE, "type": "search", "query": "   "},
    {**BASE, "user_id": None},
    {**BASE, "user_id": None, "session_id": "s1"},
    {**BASE, "item_id": None},
    {**BASE, "type": "teleport"},
    {**BASE, "type": "ADD-TO-CART"},
    {**BASE, "user_id": "   "},
    {**BASE, "item_id": "a\x00b"},
    {**BASE, "item_id": "x" * 257},
    {**BASE, "item_id": "x" * 256},
    {**BASE, "user_id": True},
    {**BASE, "user_id": 3.0},
    {**BASE, "user_id": "e\u0301"},
    {**BASE, "event_id": "  evt-1 ", "recommendation_id": "rec-9"},
    {**BASE, "event_id": 12345},
    {**BASE, "context": {"page": "home", "position": 3, "promo": True, "score": 0.5, "x": None}},
    {**BASE, "context": {"nested": {"a": 1}}},
]  # fmt: skip


def expected(record: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """What ``Event`` makes of a record: (dump, None) or (None, first field in error).

    As on the API, a null is absent, and an absent timestamp is "now" (``NOW`` here).
    """
    data = {k: v for k, v in record.items() if v is not None}
    data.setdefault("timestamp", NOW)
    try:
        return Event.model_validate(data).model_dump(mode="json"), None
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        if err["loc"]:
            return None, str(err["loc"][0])
        return None, str(err["msg"]).removeprefix("Value error, ").split(":")[0]


def as_dumps(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Clean rows in ``Event.model_dump(mode="json")`` form."""
    out = []
    for row in frame.to_dicts():
        row["timestamp"] = row.pop("ts")
        row["context"] = json.loads(row["context"]) if row["context"] else {}
        out.append(row)
    return out


def frame_of(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Records as a frame; a context dict travels as JSON text."""
    columns: dict[str, list[Any]] = {}
    for i, record in enumerate(records):
        for key, value in record.items():
            if key == "context":
                value = json.dumps(value)
            columns.setdefault(key, [None] * len(records))[i] = value
    return pl.DataFrame(columns, strict=False)


def as_text(record: dict[str, Any]) -> dict[str, Any]:
    """The record as a CSV reader sees it: every value as text."""
    return {k: v if v is None or k == "context" else str(v) for k, v in record.items()}


@pytest.mark.parametrize("record", RECORDS, ids=[str(i) for i in range(len(RECORDS))])
def test_each_record_agrees(record: dict[str, Any]) -> None:
    dump, field = expected(record)
    result = clean_events(frame_of([record]), now=NOW)
    if dump is not None:
        assert result.rejected == {}
        assert as_dumps(result.frame) == [dump]
    else:
        assert result.frame.height == 0
        [reason] = result.rejected
        assert reason.split(":")[0] == field, reason


def test_the_table_covers_both_outcomes() -> None:
    outcomes = [expected(r)[0] is not None for r in RECORDS]
    assert 15 <= sum(outcomes) <= len(outcomes) - 15


def test_a_text_only_batch_agrees_row_for_row() -> None:
    records = [as_text(r) for r in RECORDS]
    result = clean_events(frame_of(records), now=NOW)
    wanted = [d for d, _ in map(expected, records) if d is not None]
    assert as_dumps(result.frame) == wanted
    assert result.rejected_total == len(records) - len(wanted)


def test_rejections_are_counted_by_reason() -> None:
    records = [{**BASE, "user_id": None}] * 3 + [{**BASE, "type": "rate"}] * 2 + [BASE]
    result = clean_events(frame_of(records), now=NOW)
    assert result.rejected == {
        "user_id: one of user_id or session_id is required": 3,
        "value: is required for a rate event (the rating)": 2,
    }
    assert result.frame.columns == [
        "event_id", "type", "user_id", "session_id", "item_id", "ts", "value", "quantity",
        "price", "query", "recommendation_id", "context",
    ]  # fmt: skip


def test_py_whitespace_is_what_str_strip_removes() -> None:
    assert set(PY_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def _random_timestamp(rng: random.Random) -> str:
    year = rng.choice(["1969", "1970", "2020", "2099", "2100", "0999"])
    date = f"{year}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}"
    if rng.random() < 0.2:
        return date + rng.choice(["", "Z", " UTC"])
    time = f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}"
    if rng.random() < 0.7:
        time += f":{rng.randint(0, 61):02d}"
        if rng.random() < 0.5:
            time += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 8)))
    zone = rng.choice(["", "Z", " UTC", "+05:30", "-00:00", "+23:59", "+24:00", "-11:60", "z"])
    return date + rng.choice(["T", " ", "t"]) + time + zone


def _random_number(rng: random.Random) -> str:
    sign = rng.choice(["", "+", "-"])
    digits = str(rng.randint(0, 10**14))
    shape = rng.choice(["{}", "{}.", ".{}", "{}.5", "{}e3", "{}E-2", "{}_0"])
    return sign + shape.format(digits) + rng.choice(["", " ", "x"])


def test_timestamp_fast_paths_agree_with_parse_timestamp() -> None:
    rng = random.Random(1)
    texts = [_random_timestamp(rng) for _ in range(400)] + [_random_number(rng) for _ in range(200)]
    frame = pl.DataFrame({"type": "view", "user_id": "u", "item_id": "i", "timestamp": texts})
    result = clean_events(frame.with_row_index("event_id"), now=NOW)
    got = dict(zip(result.frame["event_id"].cast(pl.Int64), result.frame["ts"], strict=True))
    for i, text in enumerate(texts):
        try:
            want: float | None = parse_timestamp(text)
        except ValueError:
            want = None
        assert got.get(i) == want, text
    assert 100 < len(got) < 500


def test_number_fast_path_agrees_with_pydantic() -> None:
    rng = random.Random(2)
    texts = [_random_number(rng) for _ in range(300)]
    frame = pl.DataFrame({"type": "rate", "user_id": "u", "item_id": "i", "value": texts})
    result = clean_events(frame.with_row_index("event_id"), now=NOW)
    got = dict(zip(result.frame["event_id"].cast(pl.Int64), result.frame["value"], strict=True))
    for i, text in enumerate(texts):
        dump, _ = expected({"type": "rate", "user_id": "u", "item_id": "i", "value": text})
        assert got.get(i) == (dump["value"] if dump else None), text
