"""Key-check caches across processes on PostgreSQL + Redis: `shopcast keys revoke` run as
another process announces the revocation, and two API instances that cached the key
refuse it within moments (not after the cache's TTL, set to a minute here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.privacy.apikeys import open_key_store

pytestmark = pytest.mark.server


def _secure(postgres_url: str, redis_url: str, tmp_path: Path, name: str) -> Settings:
    return Settings(
        environment="test",
        database_url=postgres_url,
        model_dir=tmp_path / "models",
        state={"url": redis_url},
        auth={"enabled": True, "keys_path": tmp_path / f"{name}-keys.db", "key_cache_ttl_s": 60},
    )


def test_a_revocation_by_another_process_reaches_both_caches(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = _secure(postgres_url, redis_url, tmp_path, "a")
    keys = open_key_store(settings)
    key, token = keys.create(["read"])
    keys.close()
    headers = {"Authorization": f"Bearer {token}"}
    env = {
        **os.environ,
        "SHOPCAST_DATABASE_URL": postgres_url,
        "SHOPCAST_STATE__URL": redis_url,
        "SHOPCAST_MODEL_DIR": str(tmp_path / "models"),
    }
    with (
        TestClient(create_app(settings)) as a,
        TestClient(create_app(_secure(postgres_url, redis_url, tmp_path, "b"))) as b,
    ):
        for client in (a, b):  # cached now, for a minute
            assert client.get("/v1/trending", headers=headers).status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # both listeners subscribed (the 1st request)
            listeners = [m.listener for m in _auth(a) + _auth(b)]
            if all(x is not None and x.subscribed.is_set() for x in listeners):
                break
            time.sleep(0.05)
        done = subprocess.run(
            [sys.executable, "-m", "shopcast.cli", "keys", "revoke", key.key_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for client in (a, b):
            deadline = time.monotonic() + 5
            while client.get("/v1/trending", headers=headers).status_code == 200:
                assert time.monotonic() < deadline, "the revocation did not arrive"
                time.sleep(0.02)
            r = client.get("/v1/trending", headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"


class _Found:
    def __init__(self, listener: object) -> None:
        self.listener = listener


def _auth(client: TestClient) -> list[_Found]:
    """The AuthMiddleware of the app's built middleware stack."""
    from shopcast.api.auth import AuthMiddleware

    found: list[_Found] = []
    app = client.app.middleware_stack  # type: ignore[attr-defined]
    while app is not None and not found:
        if isinstance(app, AuthMiddleware):
            found.append(_Found(app._listener))
        app = getattr(app, "app", None)
    return found
