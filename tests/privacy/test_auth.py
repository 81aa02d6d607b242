"""API keys, scopes, tenants and rate limits (auth on, as shipped)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopcast.api import create_app
from shopcast.api.auth import TokenBuckets, required_scope
from shopcast.config import Settings
from shopcast.privacy.apikeys import KeyStore
from shopcast.privacy.tenants import tenant_settings

from .conftest import bearer, db_bytes

ITEM = {"title": "Tent", "category": "Outdoor > Camping", "price": 120}


def _event(user: str, item: str, ts: float = 1_700_000_000, kind: str = "view") -> dict[str, Any]:
    return {"type": kind, "user_id": user, "item_id": item, "timestamp": ts}


def test_keys_are_stored_hashed_and_verified(keys: KeyStore, secure_settings: Settings) -> None:
    key, token = keys.create(["read"], name="web")
    assert token.startswith(f"sck_{key.key_id}_") and len(token) == 60
    assert keys.verify(token) == key
    assert keys.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert keys.verify("") is None and keys.verify("sck_x_y") is None
    raw = Path(secure_settings.auth.keys_path).read_bytes()
    with sqlite3.connect(secure_settings.auth.keys_path) as conn:
        dump = "\n".join(conn.iterdump())
    secret = token.rsplit("_", 1)[1]
    assert secret.encode() not in raw and secret not in dump
    keys.revoke(key.key_id)
    assert keys.verify(token) is None
    assert keys.list()[0].revoked_at is not None


def test_no_endpoint_but_health_and_docs_is_open(secure_client: TestClient) -> None:
    assert secure_client.get("/v1/health").status_code == 200
    assert secure_client.get("/openapi.json").status_code == 200
    for path in secure_client.get("/openapi.json").json()["paths"]:
        if path == "/v1/health":
            continue
        url = path.replace("{", "").replace("}", "")
        for method in ("GET", "POST", "PUT", "DELETE"):
            r = secure_client.request(method, url, content=b"{}")
            assert r.status_code in (401, 405), (method, url, r.status_code)
            if r.status_code == 401:
                assert r.json()["error"] == "unauthorized"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_bad_and_revoked_keys_are_401(secure_client: TestClient, keys: KeyStore) -> None:
    key, token = keys.create(["admin"])
    assert secure_client.get("/v1/trending", headers=bearer(token)).status_code == 200
    assert secure_client.get("/v1/trending", headers={"X-API-Key": token}).status_code == 200
    for headers in (bearer("nope"), {"Authorization": f"Basic {token}"}, bearer(token + "x")):
        r = secure_client.get("/v1/trending", headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    keys.revoke(key.key_id)
    assert secure_client.get("/v1/trending", headers=bearer(token)).status_code == 401


def test_scopes(secure_client: TestClient, keys: KeyStore) -> None:
    ingest = bearer(keys.create(["ingest"])[1])
    read = bearer(keys.create(["read"])[1])
    admin = bearer(keys.create(["admin"])[1])
    c = secure_client
    assert c.put("/v1/items/tent", json=ITEM, headers=admin).status_code == 200
    for h in (ingest, read):
        r = c.put("/v1/items/tent", json=ITEM, headers=h)
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert c.post("/v1/events", json=_event("ann", "tent"), headers=ingest).status_code == 202
    assert c.post("/v1/events", json=_event("ann", "tent"), headers=read).status_code == 403
    assert c.get("/v1/users/ann/recommendations", headers=read).status_code == 200
    assert c.get("/v1/users/ann/recommendations", headers=ingest).status_code == 403
    cart = {"items": ["tent"]}
    assert c.post("/v1/cart/recommendations", json=cart, headers=read).status_code == 200
    # personal data, models and privacy operations are admin-only
    for path in ("/v1/users/ann", "/v1/users/ann/profile", "/v1/models"):
        assert c.get(path, headers=read).status_code == 403, path
        assert c.get(path, headers=admin).status_code in (200, 404), path
    assert c.delete("/v1/users/ann", headers=read).status_code == 403
    assert c.post("/v1/users/ann/merge", json={"session_id": "s"}, headers=read).status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/v1/events", "ingest"),
        ("GET", "/v1/trending", "read"),
        ("GET", "/v1/users/u1/recommendations", "read"),
        ("GET", "/v1/users/u1", "admin"),
        ("GET", "/v1/segments/0/users", "admin"),
        ("GET", "/v1/segments", "read"),
        ("POST", "/v1/models/rollback", "admin"),
        ("POST", "/v1/something/new", "admin"),  # unknown writes need admin
        ("DELETE", "/v1/users/u1", "admin"),
        ("GET", "/v1/health", None),
        ("GET", "/docs", None),
    ],
)
def test_required_scope(method: str, path: str, scope: str | None) -> None:
    assert required_scope(method, path) == scope
    assert required_scope("GET", "/docs", open_docs=False) == "read"


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(
        environment="test",
        database_url="memory://",
        model_dir=tmp_path / "models",
        auth={
            "enabled": True,
            "keys_path": tmp_path / "keys.db",
            "rate_limit": {"rate_per_s": 0.001, "burst": 3},
        },
    )
    keys = KeyStore(settings.auth.keys_path)
    one, other = bearer(keys.create(["read"])[1]), bearer(keys.create(["read"])[1])
    with TestClient(create_app(settings)) as c:
        assert [c.get("/v1/trending", headers=one).status_code for _ in range(3)] == [200] * 3
        r = c.get("/v1/trending", headers=one)
        assert r.status_code == 429
        assert r.json()["error"] == "rate_limited" and r.json()["retry_after"] > 0
        assert int(r.headers["Retry-After"]) >= 1
        assert c.get("/v1/trending", headers=other).status_code == 200  # per key
        assert c.get("/v1/health").status_code == 200  # open endpoints are not limited
    keys.close()


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] = 0.5
    assert buckets.take("k") == 0.0
    now[0] = 100.0
    assert [buckets.take("k") for _ in range(3)][:2] == [0.0, 0.0]  # never above burst


def test_tenants_never_see_each_other(secure_settings: Settings, keys: KeyStore) -> None:
    a = bearer(keys.create(["admin"], tenant="shop-a")[1])
    b = bearer(keys.create(["admin"], tenant="shop-b")[1])
    with TestClient(create_app(secure_settings)) as c:
        assert c.put("/v1/items/a-tent", json=ITEM, headers=a).status_code == 200
        assert c.put("/v1/users/alice", json={"age": 30}, headers=a).status_code == 200
        events = [_event("alice", "a-tent", 1.7e9 + n) for n in range(3)]
        events += [_event("alice", "a-stove", 1.7e9 + 10 + n) for n in range(3)]
        assert c.post("/v1/events", json=events, headers=a).status_code == 202
        assert c.get("/v1/items/a-tent", headers=a).status_code == 200
        trending_a = c.get("/v1/trending", headers=a).json()["items"]
        assert {i["item_id"] for i in trending_a} == {"a-tent", "a-stove"}
        # tenant B sees none of it
        assert c.get("/v1/items/a-tent", headers=b).status_code == 404
        assert c.get("/v1/users/alice", headers=b).status_code == 404
        assert c.get("/v1/users/alice/profile", headers=b).status_code == 404
        assert c.get("/v1/trending", headers=b).json()["items"] == []
        assert c.get("/v1/items/a-tent/similar", headers=b).status_code == 404
        assert c.get("/v1/users/alice/recommendations", headers=b).json()["items"] == []
        assert c.get("/v1/models", headers=b).json()["versions"] == []
        # and B's own data stays in B
        assert c.put("/v1/items/b-mug", json={"title": "Mug"}, headers=b).status_code == 200
        assert c.get("/v1/items/b-mug", headers=a).status_code == 404
        # the default tenant (no tenant given at key creation) is a third one
        d = bearer(keys.create(["admin"])[1])
        assert c.get("/v1/items/a-tent", headers=d).status_code == 404
    a_db = Path(tenant_settings(secure_settings, "shop-a").database_url.split("///", 1)[1])
    b_db = Path(tenant_settings(secure_settings, "shop-b").database_url.split("///", 1)[1])
    assert a_db.is_file() and b_db.is_file() and a_db != b_db
    assert b"a-tent" in db_bytes(a_db)
    assert b"a-tent" not in db_bytes(b_db)


@pytest.mark.parametrize("tenant", ["../x", "A", "", "a/b", "a" * 64, "a\x00"])
def test_tenant_ids_cannot_name_paths(keys: KeyStore, tenant: str) -> None:
    from shopcast.errors import ConfigError

    with pytest.raises(ConfigError):
        keys.create(["read"], tenant=tenant)


def test_openapi_documents_the_key_schemes(secure_client: TestClient) -> None:
    spec = secure_client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    op = spec["paths"]["/v1/events"]["post"]
    assert op["security"] and {"401", "403", "429"} <= set(op["responses"])
    assert "security" not in spec["paths"]["/v1/health"]["get"]
