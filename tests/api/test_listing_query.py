"""The listing endpoints' query parameters, parsed by ``recommend.filters`` from the query
string (not solved by FastAPI one by one): same rules, same 422s, same OpenAPI."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

LISTINGS = (
    "/v1/users/{user_id}/recommendations",
    "/v1/sessions/{session_id}/recommendations",
    "/v1/trending",
    "/v1/items/{item_id}/similar",
    "/v1/items/{item_id}/bought-together",
)
FILTERS = {"k", "scene", "category", "brand", "price_min", "price_max", "exclude", "page", "item"}


def test_every_listing_documents_its_filters(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in LISTINGS:
        op = paths[path]["get"]
        params = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
        assert set(params) >= FILTERS, path
        assert "422" in op["responses"], path
        k = params["k"]["schema"]["anyOf"][0]
        assert k == {"type": "integer", "minimum": 1}
        page = params["page"]["schema"]
        assert (page["minimum"], page["maximum"], page["default"]) == (1, 100, 1)
        assert params["exclude"]["schema"]["anyOf"][0]["type"] == "array"
        assert params["price_min"]["schema"]["anyOf"][0]["minimum"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("k=0", "k"),
        ("k=-3", "k"),
        ("k=abc", "k"),
        ("k=1.5", "k"),
        ("k=", "k"),
        ("k=100000", "k"),  # over recommend.max_k
        ("page=0", "page"),
        ("page=101", "page"),
        ("price_min=-1", "price_min"),
        ("price_min=abc", "price_min"),
        ("price_min=nan", "price_min"),
        ("price_max=-0.5", "price_max"),
        ("price_min=10&price_max=5", "price_min"),
        ("scene=nowhere", "scene"),
    ],
)
def test_bad_filters_are_422_naming_the_field(client: TestClient, query: str, field: str) -> None:
    for path in ("/v1/users/ann/recommendations", "/v1/trending"):
        r = client.get(f"{path}?{query}")
        assert r.status_code == 422, (path, query, r.text)
        body = r.json()
        assert body["error"] == "validation_error"
        assert [e["field"] for e in body["errors"]] == [field], body


@pytest.mark.parametrize(
    "query",
    [
        "",
        "k=5",
        "k=%2B5",
        "k=1_0",  # pydantic's lax int, as FastAPI's validation accepted it
        "k=5&page=2",
        "page=100",
        "price_min=0&price_max=10.5",
        "price_min=3&price_max=3",
        "exclude=a,b&exclude=c",
        "scene=home&category=x&brand=y",
    ],
)
def test_good_filters_answer(client: TestClient, query: str) -> None:
    r = client.get(f"/v1/users/ann/recommendations?{query}")
    assert r.status_code == 200, (query, r.text)
