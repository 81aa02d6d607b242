"""Signed stream tokens (``push.tokens``): a browser's EventSource opens a user's stream
with ``?token=`` instead of an API key. Auth on, two tenants (SYNTHETIC data)."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from tests.push.test_stream_server import _free_port
from tests.push.test_tenants_auth import auth, nudge, setup_shop

from shopcast.config import Settings
from shopcast.errors import AuthError
from shopcast.privacy.apikeys import KeyStore
from shopcast.push.tokens import KEY_FILE, StreamTokens

SECRET = b"0123456789abcdef0123456789abcdef"


def test_token_round_trip_expiry_user_and_forgery() -> None:
    now = [1_000_000.0]
    tokens = StreamTokens(SECRET, 600, clock=lambda: now[0])
    token, expires = tokens.issue("shop-a", "alice")
    assert expires == 1_000_600.0
    grant = tokens.verify(token, "alice")
    assert (grant.tenant, grant.user_id) == ("shop-a", "alice")
    with pytest.raises(AuthError, match="another user"):
        tokens.verify(token, "bob")
    now[0] += 601
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(token, "alice")
    now[0] -= 601
    # a payload rewritten to another tenant (or user, or expiry) fails the signature
    version, payload, mac = token.split(".")
    import base64

    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc["t"] = "shop-b"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="invalid"):
        tokens.verify(f"{version}.{forged}.{mac}", "alice")
    with pytest.raises(AuthError, match="invalid"):  # another deployment's secret
        StreamTokens(b"another-secret-0123456789", 600, clock=lambda: now[0]).verify(token, "alice")
    for bad in ("", "sct1", "x.y.z", f"{version}.{payload}"):
        with pytest.raises(AuthError):
            tokens.verify(bad, "alice")


def test_key_file_created_private_once(tmp_path: Path) -> None:
    settings = Settings(environment="test", auth={"keys_path": tmp_path / "k" / "keys.db"})
    one = StreamTokens.from_settings(settings)
    two = StreamTokens.from_settings(settings)  # another process of the host: same key
    path = tmp_path / "k" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token, _ = one.issue("default", "u")
    assert two.verify(token, "u").tenant == "default"
    configured = Settings(environment="test", push={"stream_token_secret": "x" * 32})
    with pytest.raises(AuthError):  # the configured secret wins over the file
        StreamTokens.from_settings(configured).verify(token, "u")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": True, "keys_path": tmp_path / "keys.db"},
        push={
            "quiet_hours": {"enabled": False},
            "min_gap": 0,
            "tick_interval_s": 3600,
            "heartbeat_s": 0.2,
            "stream_recheck_s": 0.3,
            "triggers": {"session_nudge": {"holdout": 0}},
        },
    )


def test_stream_token_api_scopes_expiry_user_tenant(settings: Settings) -> None:
    from shopcast.api import create_app

    keys = KeyStore(settings.auth.keys_path)
    a_admin = auth(keys.create(["admin"], tenant="shop-a")[1])
    b_admin = auth(keys.create(["admin"], tenant="shop-b")[1])
    a_read = auth(keys.create(["read"], tenant="shop-a")[1])
    b_read = auth(keys.create(["read"], tenant="shop-b")[1])
    a_ingest = auth(keys.create(["ingest"], tenant="shop-a")[1])
    keys.close()
    with TestClient(create_app(settings)) as client:
        for admin in (a_admin, b_admin):
            setup_shop(client, admin)
        nudge(client, a_ingest)  # a pending push for alice in shop-a
        assert client.post("/v1/users/alice/stream-token").status_code == 401
        assert client.post("/v1/users/alice/stream-token", headers=a_ingest).status_code == 403
        r = client.post("/v1/users/alice/stream-token", headers=a_read)
        assert r.status_code == 200, r.text
        body = r.json()
        token = body["token"]
        assert body["expires_in"] == 600 and body["expires_at"].endswith("Z")
        assert body["stream_url"] == f"/v1/users/alice/stream?token={token}"
        # refused before any stream opens: wrong user, expired, forged, no token
        assert client.get(f"/v1/users/bob/stream?token={token}").status_code == 401
        expired_tokens = StreamTokens.from_settings(settings)
        expired_tokens.clock = lambda: time.time() - 3600
        expired, _ = expired_tokens.issue("shop-a", "alice")
        r = client.get(f"/v1/users/alice/stream?token={expired}")
        assert r.status_code == 401 and "expired" in r.json()["message"]
        assert client.get(f"/v1/users/alice/stream?token={token}x").status_code == 401
        assert client.get("/v1/users/alice/stream").status_code == 401
        # a token opens the stream only: not the user's history, not other endpoints
        assert client.get(f"/v1/users/alice/push?token={token}").status_code == 401
        assert client.get(f"/v1/users/alice/recommendations?token={token}").status_code == 401
        # WebSocket with ?token=: tenant A's pending push arrives
        with client.websocket_connect(f"/v1/users/alice/stream/ws?token={token}") as ws:
            frame = ws.receive_json()
        assert frame["event"] == "push" and frame["data"]["user_id"] == "alice"
        # shop-b's token for the same user id opens shop-b's stream: heartbeats, no push
        b_token = client.post("/v1/users/alice/stream-token", headers=b_read).json()["token"]
        with client.websocket_connect(f"/v1/users/alice/stream/ws?token={b_token}") as ws:
            assert ws.receive_json() == {"event": "heartbeat"}
        from starlette.websockets import WebSocketDisconnect

        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect(f"/v1/users/bob/stream/ws?token={token}") as ws,
        ):
            ws.receive_json()


def _soon_expiring(settings: Settings, user: str, in_s: float = 1.2) -> str:
    """A valid token for ``user`` in shop-a that expires about ``in_s`` from now."""
    tokens = StreamTokens.from_settings(settings)
    tokens.clock = lambda: time.time() + in_s - tokens.ttl_s + 1  # issue() floors to a second
    return tokens.issue("shop-a", user)[0]


def test_an_open_stream_ends_when_its_token_expires_or_its_key_is_revoked(
    settings: Settings,
) -> None:
    from starlette.websockets import WebSocketDisconnect

    from shopcast.api import create_app

    keys = KeyStore(settings.auth.keys_path)
    admin = auth(keys.create(["admin"], tenant="shop-a")[1])
    ws_key, ws_secret = keys.create(["read"], tenant="shop-a")
    sse_key, sse_secret = keys.create(["read"], tenant="shop-a")
    keys.close()
    with TestClient(create_app(settings)) as client:
        setup_shop(client, admin)
        # SSE opened with a token: heartbeats, then an "expired" event and the end
        token = _soon_expiring(settings, "alice")
        started = time.monotonic()
        r = client.get(f"/v1/users/alice/stream?token={token}")
        assert r.status_code == 200
        assert time.monotonic() - started < 10
        assert ": heartbeat" in r.text
        assert r.text.rstrip().endswith('expired; ask for a new one"}')
        assert "event: expired" in r.text
        # the same over a WebSocket: closed with 4401
        token = _soon_expiring(settings, "alice")
        with client.websocket_connect(f"/v1/users/alice/stream/ws?token={token}") as ws:
            frames = []
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(100):
                    frames.append(ws.receive_json())
        assert closed.value.code == 4401 and {"event": "heartbeat"} in frames
        # a WebSocket opened with an API key ends once the key is revoked
        with client.websocket_connect(f"/v1/users/alice/stream/ws?key={ws_secret}") as ws:
            assert ws.receive_json() == {"event": "heartbeat"}
            assert ws.receive_json() == {"event": "heartbeat"}  # re-checked, still valid
            revoking = KeyStore(settings.auth.keys_path)
            revoking.revoke(ws_key.key_id)
            revoking.close()
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(100):
                    ws.receive_json()
        assert closed.value.code == 4401

        # and an SSE stream opened with a key: revoked from another thread meanwhile
        def revoke_soon() -> None:
            time.sleep(0.8)
            other = KeyStore(settings.auth.keys_path)
            other.revoke(sse_key.key_id)
            other.close()

        revoker = threading.Thread(target=revoke_soon)
        revoker.start()
        r = client.get("/v1/users/alice/stream", headers=auth(sse_secret))
        revoker.join()
        assert r.status_code == 200 and "event: expired" in r.text and "revoked" in r.text
        assert r.text.count(": heartbeat") >= 2  # re-checked while valid, then ended


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    from shopcast.api import create_app
    from shopcast.privacy.logs import log_config

    keys = KeyStore(settings.auth.keys_path)
    admin = auth(keys.create(["admin"], tenant="shop-a")[1])
    read = auth(keys.create(["read"], tenant="shop-a")[1])
    keys.close()
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="info",
        log_config=log_config(settings),
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", admin, read
    finally:
        srv.should_exit = True
        srv.force_exit = True
        thread.join(timeout=30)


@pytest.mark.server
def test_sse_with_token_and_no_token_in_the_access_log(
    server: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    import io
    import logging

    base, admin, read = server
    written = io.StringIO()
    for handler in logging.getLogger("uvicorn.access").handlers:  # from log_config(settings)
        if getattr(handler, "filters", None) and isinstance(handler, logging.StreamHandler):
            handler.setStream(written)
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.put("/v1/items", json=_items(), headers=admin).status_code < 300
        users = [{"user_id": "alice", "consent": {"push": True}}]
        assert http.put("/v1/users", json=users, headers=admin).status_code < 300
        for item in ("s1", "s2", "s3"):
            r = http.post(
                "/v1/events",
                json={"type": "view", "user_id": "alice", "item_id": item},
                headers=admin,
            )
            assert r.status_code == 202
        url = http.post("/v1/users/alice/stream-token", headers=read).json()["stream_url"]
        token = url.split("token=", 1)[1]
        data = None
        # what EventSource does: a GET with no Authorization header
        with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    break
    assert data is not None and data["user_id"] == "alice"
    logged = written.getvalue()
    assert "/stream?token=<redacted>" in logged
    assert token not in logged


def _items() -> list[dict[str, object]]:
    from tests.push.test_api import ITEMS

    return ITEMS
