"""Push with auth on (as shipped), pseudonymized ids and two tenants (SYNTHETIC data)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.push.test_api import ITEMS

from shopcast.config import Settings
from shopcast.privacy.apikeys import KeyStore

HMAC_KEY = "test-hmac-key-0123456789abcdef0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": True, "keys_path": tmp_path / "keys.db"},
        privacy={"pseudonymize": True, "hmac_key": HMAC_KEY},
        push={
            "quiet_hours": {"enabled": False},
            "min_gap": 0,
            "tick_interval_s": 3600,
            "triggers": {"session_nudge": {"holdout": 0}},
        },
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from shopcast.api import create_app

    with TestClient(create_app(settings)) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def setup_shop(client: TestClient, admin: dict[str, str]) -> None:
    assert client.put("/v1/items", json=ITEMS, headers=admin).status_code < 300
    users = [{"user_id": "alice", "consent": {"push": True}}]
    assert client.put("/v1/users", json=users, headers=admin).status_code < 300


def nudge(client: TestClient, key: dict[str, str], user: str = "alice") -> None:
    for item in ("s1", "s2", "s3"):
        r = client.post(
            "/v1/events", json={"type": "view", "user_id": user, "item_id": item}, headers=key
        )
        assert r.status_code == 202, r.text


def test_tenants_pseudonyms_and_scopes(client: TestClient, settings: Settings) -> None:
    keys = KeyStore(settings.auth.keys_path)
    a_admin = auth(keys.create(["admin"], tenant="shop-a")[1])
    a_ingest = auth(keys.create(["ingest"], tenant="shop-a")[1])
    b_admin = auth(keys.create(["admin"], tenant="shop-b")[1])
    a_read = keys.create(["read"], tenant="shop-a")[1]
    keys.close()
    for admin in (a_admin, b_admin):
        setup_shop(client, admin)
    nudge(client, a_ingest)  # the browser's ingest key: events only
    (msg,) = client.get("/v1/users/alice/push", headers=a_admin).json()["messages"]
    assert msg["user_id"] == "alice"  # the raw id, though stored as a pseudonym
    assert client.get("/v1/users/alice/push", headers=b_admin).json()["messages"] == []
    assert client.get("/v1/users/alice/push", headers=a_ingest).status_code == 403
    assert client.get("/v1/users/alice/push").status_code == 401
    r = client.post(f"/v1/push/{msg['message_id']}/click", headers=a_ingest)
    assert r.status_code == 200 and r.json()["recorded"] is True
    assert client.post(f"/v1/push/{msg['message_id']}/click", headers=b_admin).status_code == 404
    assert (
        client.put(
            "/v1/push/triggers/session_nudge", json={"views": 4}, headers=a_ingest
        ).status_code
        == 403
    )
    metrics_b = client.get("/v1/push/metrics", headers=b_admin).json()
    assert metrics_b["totals"]["decisions"] == 0
    # the stream of tenant A's shopper over WebSocket with ?key= (browsers send no header)
    with client.websocket_connect(f"/v1/users/alice/stream/ws?key={a_read}") as ws:
        frame = ws.receive_json()  # the pending push, sent on connect
    assert frame["data"]["message_id"] == msg["message_id"]
    assert frame["data"]["user_id"] == "alice"
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/v1/users/alice/stream/ws") as ws,
    ):
        ws.receive_json()
