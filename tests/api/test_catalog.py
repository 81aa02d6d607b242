"""Items and users: CRUD, bulk upsert, 404s, field errors."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_item_round_trip(client: TestClient) -> None:
    body = {"title": " Red mug ", "category": "Home > Kitchen", "price": 8.0, "original_price": 10}
    r = client.put("/v1/items/ mug-1 ", json=body)
    assert r.status_code == 200, r.text
    got = client.get("/v1/items/mug-1").json()
    assert got["item_id"] == "mug-1" and got["title"] == "Red mug"
    assert got["category"] == ["Home", "Kitchen"]
    assert client.delete("/v1/items/mug-1").status_code == 204
    r = client.get("/v1/items/mug-1")
    assert r.status_code == 404 and "mug-1" in r.json()["message"]
    assert client.delete("/v1/items/mug-1").status_code == 404


def test_item_errors_name_the_field(client: TestClient) -> None:
    r = client.put("/v1/items/x", json={"price": -1})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "price"
    r = client.put("/v1/items/x", json={"item_id": "y"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "item_id"


def test_bulk_items_keep_good_ones(client: TestClient) -> None:
    r = client.put(
        "/v1/items",
        json={"items": [{"item_id": "a"}, {"item_id": "b", "stock": -3}, {"item_id": "c"}]},
    )
    assert r.status_code == 422
    assert r.json()["upserted"] == 2
    assert r.json()["errors"] == [
        {"field": "stock", "reason": r.json()["errors"][0]["reason"], "index": 1}
    ]
    assert client.get("/v1/items/c").status_code == 200


def test_user_round_trip_and_timezone_check(client: TestClient) -> None:
    r = client.put("/v1/users/u1", json={"age": 31, "timezone": "Europe/London"})
    assert r.status_code == 200
    assert client.get("/v1/users/u1").json()["age"] == 31
    r = client.put("/v1/users/u2", json={"timezone": "Mars/Olympus"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "timezone"
    assert client.get("/v1/users/nobody").status_code == 404
    r = client.put("/v1/users", json=[{"user_id": "u3", "age": 200}])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "age"


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/v1/health").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/events" in paths and "/v1/users/{user_id}/recommendations" in paths
