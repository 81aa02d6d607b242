"""POST /v1/events: every bad input gets a clear error and nothing good is lost."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from shopcast.domain import derive_event_id


def _view(i: int, **extra: object) -> dict[str, object]:
    return {"event_id": f"e{i}", "type": "view", "user_id": "u1", "item_id": f"i{i}", **extra}


def _stored(client: TestClient) -> int:
    return int(client.app.state.store.events.count())  # type: ignore[attr-defined]


def test_single_event_is_accepted_after_commit(client: TestClient) -> None:
    r = client.post("/v1/events", json=_view(1, timestamp="2026-01-02T03:04:05Z"))
    assert r.status_code == 202, r.text
    assert r.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "event_ids": ["e1"],
        "errors": [],
    }
    [(_, event)] = client.app.state.store.events.scan(subject="u:u1")  # type: ignore[attr-defined]
    assert event.timestamp == 1767323045.0


def test_batch_forms_and_timestamps(client: TestClient) -> None:
    batch = [
        _view(1, timestamp=1767323045),  # epoch seconds
        _view(2, timestamp=1767323045123),  # epoch ms
        _view(3, timestamp="2026-01-02 03:04:05"),  # ISO without zone = UTC
    ]
    r = client.post("/v1/events", json={"events": batch})
    assert r.status_code == 202
    assert r.json()["accepted"] == 3
    rows = client.app.state.store.events.scan(subject="u:u1")  # type: ignore[attr-defined]
    assert sorted(e.timestamp for _, e in rows) == [1767323045.0, 1767323045.0, 1767323045.123]


def test_duplicates_are_counted_not_stored_twice(client: TestClient) -> None:
    assert client.post("/v1/events", json=[_view(1), _view(2)]).json()["accepted"] == 2
    r = client.post("/v1/events", json=[_view(1), _view(2), _view(3), _view(3)])
    assert r.status_code == 202
    assert (r.json()["accepted"], r.json()["duplicates"]) == (1, 3)
    assert _stored(client) == 3


def test_events_without_id_dedup_on_content(client: TestClient) -> None:
    event = {"type": "purchase", "user_id": "u9", "item_id": "x", "timestamp": 1767323045}
    first = client.post("/v1/events", json=event).json()
    again = client.post("/v1/events", json=event).json()
    assert first["accepted"] == 1 and again["duplicates"] == 1
    assert first["event_ids"] == again["event_ids"]
    assert first["event_ids"][0].startswith("h:")
    assert _stored(client) == 1
    assert derive_event_id({"a": 1}) == derive_event_id({"a": 1})


def test_malformed_json_is_400_with_position(client: TestClient) -> None:
    r = client.post(
        "/v1/events", content=b'{"type": "view",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"] == "malformed_json"
    assert "line 1" in r.json()["message"]


def test_mixed_batch_keeps_the_good_and_names_each_bad_field(client: TestClient) -> None:
    batch = [
        _view(1),
        {"event_id": "b1", "type": "teleport", "user_id": "u1", "item_id": "i"},
        {"event_id": "b2", "type": "view", "item_id": "i"},  # no user nor session
        {"event_id": "b3", "type": "view", "user_id": "u1"},  # no item
        {"event_id": "b4", "type": "purchase", "user_id": "u1", "item_id": "i", "price": "cheap"},
        {"event_id": "b5", "type": "view", "user_id": "u1", "item_id": "i", "timestamp": "soon"},
        {"event_id": "b6", "type": "rate", "user_id": "u1", "item_id": "i"},
        {"event_id": "b7", "type": "view", "user_id": "u1", "item_id": "i", "colour": "red"},
        "not an object",
        _view(2),
    ]
    r = client.post("/v1/events", json=batch)
    assert r.status_code == 422
    body = r.json()
    assert body["accepted"] == 2 and body["rejected"] == 8
    by_index = {e["index"]: e for e in body["errors"]}
    assert by_index[1]["field"] == "type" and "teleport" in by_index[1]["reason"]
    assert by_index[2]["field"] == "user_id"
    assert by_index[3]["field"] == "item_id"
    assert by_index[4]["field"] == "price"
    assert by_index[5]["field"] == "timestamp" and "ISO 8601" in by_index[5]["reason"]
    assert by_index[6]["field"] == "value"
    assert by_index[7] == {"index": 7, "field": "colour", "reason": "unknown field"}
    assert by_index[8]["field"] == "event"
    assert _stored(client) == 2  # the good ones were committed


def test_wrong_shapes(client: TestClient) -> None:
    assert client.post("/v1/events", json=[]).status_code == 422
    r = client.post("/v1/events", json=42)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"


def test_batch_over_limit_is_413_and_stores_nothing(client: TestClient) -> None:
    r = client.post("/v1/events", json=[_view(i) for i in range(1001)])
    assert r.status_code == 413
    assert "at most 1000" in r.json()["message"]
    assert _stored(client) == 0


def test_oversized_body_is_413(client: TestClient) -> None:
    huge = json.dumps(_view(1, query="x" * (5 * 1024 * 1024))).encode()
    r = client.post("/v1/events", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "too_large"
    assert _stored(client) == 0
