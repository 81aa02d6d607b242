"""API keys on every backend (``ApiKeyStore``: SQLite file, PostgreSQL), and keys shared
by several API processes on one PostgreSQL database."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.errors import NotFoundError, ValidationError
from shopcast.privacy._apikeys_pg import PgKeyStore
from shopcast.privacy.apikeys import ApiKeyStore, KeyStore, open_key_store
from shopcast.storage._postgres import split_url

Opener = Callable[[], ApiKeyStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store on one backend; every store opened sees the same keys."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    settings = Settings(
        environment="test", database_url=url, auth={"keys_path": tmp_path / "keys.db"}
    )
    opened: list[ApiKeyStore] = []

    def open_one() -> ApiKeyStore:
        store = open_key_store(settings)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def test_the_backend_follows_the_database_url(opener: Opener) -> None:
    store = opener()
    assert isinstance(store, (KeyStore, PgKeyStore))


def test_create_verify_list_revoke(opener: Opener) -> None:
    store = opener()
    key, token = store.create(["read", "ingest"], tenant="shop-a", name="web shop")
    assert token.startswith(f"sck_{key.key_id}_")
    found = store.verify(token)
    assert found is not None
    assert (found.key_id, found.scopes, found.tenant, found.name) == (
        key.key_id,
        frozenset({"read", "ingest"}),
        "shop-a",
        "web shop",
    )
    assert found.created_at == pytest.approx(key.created_at)
    assert found.allows("read") and not found.allows("admin")
    other, _ = store.create(["admin"])
    assert [k.key_id for k in store.list()] == [key.key_id, other.key_id]
    revoked = store.revoke(key.key_id)
    assert revoked.revoked_at is not None
    assert store.verify(token) is None
    again = store.revoke(key.key_id)  # a second revoke keeps the first time
    assert again.revoked_at == pytest.approx(revoked.revoked_at)
    listed = {k.key_id: k for k in store.list()}
    assert listed[key.key_id].revoked_at is not None and listed[other.key_id].revoked_at is None


def test_wrong_malformed_and_unknown_tokens(opener: Opener) -> None:
    store = opener()
    _, token = store.create(["read"])
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert store.verify(forged) is None
    assert store.verify("sck_000000000000_" + "A" * 43) is None  # well formed, unknown
    assert store.verify("not-a-key") is None
    assert store.verify(token + "x") is None
    with pytest.raises(NotFoundError):
        store.revoke("ffffffffffff")
    with pytest.raises(ValidationError, match="scope"):
        store.create(["owner"])
    with pytest.raises(ValidationError):
        store.create([])
    assert store.verify(token) is not None


def test_a_revocation_is_seen_by_another_store_at_once(opener: Opener) -> None:
    one, two = opener(), opener()
    key, token = one.create(["read"])
    assert two.verify(token) is not None  # created by the other one
    two.revoke(key.key_id)
    assert one.verify(token) is None  # no cache: the next check refuses it


def test_only_the_hash_is_stored_in_postgresql(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(environment="test", database_url=postgres_url)
    store = open_key_store(settings)
    try:
        assert isinstance(store, PgKeyStore)
        key, token = store.create(["admin"])
        secret = token.rsplit("_", 1)[1]
        with psycopg.connect(split_url(postgres_url)[0]) as conn:
            rows = conn.execute("SELECT * FROM api_keys").fetchall()
        assert len(rows) == 1 and key.key_id in rows[0]
        assert not any(secret in str(v) for v in rows[0])
    finally:
        store.close()
    assert not Path(settings.auth.keys_path).exists()  # no SQLite file on PostgreSQL


def test_sqlite_keys_stay_in_the_keys_file(tmp_path: Path) -> None:
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        auth={"keys_path": tmp_path / "keys.db"},
    )
    store = open_key_store(settings)
    try:
        assert isinstance(store, KeyStore)
        store.create(["read"])
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "keys.db") as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)


def _secure(url: str, tmp_path: Path, name: str) -> Settings:
    return Settings(
        environment="test",
        database_url=url,
        model_dir=tmp_path / "models",
        # each "process" its own keys file: on PostgreSQL it must not be used
        auth={"enabled": True, "keys_path": tmp_path / f"{name}-keys.db"},
    )


def test_two_api_processes_on_one_database_share_keys_and_revocations(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two app instances (as ``serve --workers 2`` or two hosts) on one PostgreSQL
    database; the key is made and revoked by the CLI, a third process."""
    from shopcast.cli import app as cli

    monkeypatch.setenv("SHOPCAST_DATABASE_URL", postgres_url)
    monkeypatch.setenv("SHOPCAST_MODEL_DIR", str(tmp_path / "models"))
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--scope", "read", "--name", "shop"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    listed = runner.invoke(cli, ["keys", "list"])
    assert listed.exit_code == 0 and key_id in listed.output, listed.output
    headers = {"Authorization": f"Bearer {token}"}
    with (
        TestClient(create_app(_secure(postgres_url, tmp_path, "a"))) as a,
        TestClient(create_app(_secure(postgres_url, tmp_path, "b"))) as b,
    ):
        assert a.get("/v1/trending", headers=headers).status_code == 200
        assert b.get("/v1/trending", headers=headers).status_code == 200
        revoked = runner.invoke(cli, ["keys", "revoke", key_id])
        assert revoked.exit_code == 0, revoked.output
        for client in (a, b):  # both refuse it at the next request
            r = client.get("/v1/trending", headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
    assert not (tmp_path / "a-keys.db").exists() and not (tmp_path / "b-keys.db").exists()
    unknown = runner.invoke(cli, ["keys", "revoke", "ffffffffffff"])
    assert unknown.exit_code != 0 and "ffffffffffff" in unknown.output


def test_the_app_closes_its_key_store_and_reopens_it(postgres_url: str, tmp_path: Path) -> None:
    """The pool opened for the keys is closed when the app stops (no connection left
    behind per app); an app started again opens it again."""
    name = f"sctest-{uuid.uuid4().hex[:8]}"  # tells this app's connections apart
    app_url = f"{postgres_url}&application_name={name}"
    keys = open_key_store(Settings(environment="test", database_url=postgres_url))
    headers = {"X-API-Key": keys.create(["read"])[1]}
    app = create_app(_secure(app_url, tmp_path, "a"))

    def connections() -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        with psycopg.connect(split_url(postgres_url)[0]) as conn:
            row = conn.execute(sql, [name]).fetchone()
        return int(row[0]) if row else 0

    try:
        for _ in range(2):
            with TestClient(app) as c:
                assert c.get("/v1/trending", headers=headers).status_code == 200
                assert connections() > 0
            # Every pool of the app closed on shutdown. A closed connection's backend
            # leaves pg_stat_activity a moment after the client hangs up (it failed once
            # at load 10 when read at once), so poll briefly; a leak stays at > 0.
            deadline = time.monotonic() + 5.0
            while connections() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert connections() == 0
    finally:
        keys.close()


def test_a_websocket_stream_checks_its_key_in_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """``/v1/users/{id}/stream/ws?key=`` (browsers send no header) uses PostgreSQL's keys."""
    from starlette.websockets import WebSocketDisconnect

    settings = _secure(postgres_url, tmp_path, "a").model_copy(
        update={"push": Settings(push={"heartbeat_s": 0.2}).push}
    )
    keys = open_key_store(settings)
    key, token = keys.create(["read"])
    try:
        with TestClient(create_app(settings)) as c:
            with c.websocket_connect(f"/v1/users/alice/stream/ws?key={token}") as ws:
                assert ws.receive_json() == {"event": "heartbeat"}
            keys.revoke(key.key_id)
            with (
                pytest.raises(WebSocketDisconnect) as refused,
                c.websocket_connect(f"/v1/users/alice/stream/ws?key={token}") as ws,
            ):
                ws.receive_json()
            assert refused.value.code == 4401
    finally:
        keys.close()


def test_a_key_store_that_cannot_be_reached_answers_503(tmp_path: Path) -> None:
    """PostgreSQL down while a key is checked: 503 with Retry-After (the client retries),
    not a 500; the check ran off the event loop."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from shopcast.api.auth import AuthMiddleware
    from shopcast.errors import StorageUnavailableError

    class Down:
        def verify(self, token: str) -> None:
            raise StorageUnavailableError("PostgreSQL at db is unavailable", 2.0)

        def close(self) -> None:
            pass

    settings = _secure("memory://", tmp_path, "a")
    app = Starlette(routes=[Route("/v1/trending", lambda r: PlainTextResponse("ok"))])
    app.add_middleware(AuthMiddleware, settings=settings, keys=Down())
    r = TestClient(app).get("/v1/trending", headers={"X-API-Key": "sck_" + "0" * 12 + "_x"})
    assert r.status_code == 503
    assert r.json()["error"] == "storage_unavailable" and r.headers["Retry-After"] == "2"


def test_moving_to_postgresql_keeps_the_keys_of_the_file(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first open on PostgreSQL imports ``auth.keys_path`` into the empty table
    (hashes, revocations as they are); later keys of the file come with ``keys import``."""
    from shopcast.cli import app as cli

    old = KeyStore(tmp_path / "keys.db")
    live, live_token = old.create(["read"], tenant="shop-a", name="web")
    gone, gone_token = old.create(["admin"])
    old.revoke(gone.key_id)
    settings = Settings(
        environment="test", database_url=postgres_url, auth={"keys_path": tmp_path / "keys.db"}
    )
    store = open_key_store(settings)
    try:
        assert isinstance(store, PgKeyStore)
        found = store.verify(live_token)
        assert found is not None and (found.tenant, found.name) == ("shop-a", "web")
        assert store.verify(gone_token) is None  # still revoked
        assert [k.key_id for k in store.list()] == [live.key_id, gone.key_id]
    finally:
        store.close()
    _, later_token = old.create(["ingest"])  # made in the file afterwards
    old.close()
    again = open_key_store(settings)  # the table is not empty: no second import
    try:
        assert again.verify(later_token) is None
    finally:
        again.close()
    monkeypatch.setenv("SHOPCAST_DATABASE_URL", postgres_url)
    monkeypatch.setenv("SHOPCAST_AUTH__KEYS_PATH", str(tmp_path / "keys.db"))
    done = CliRunner().invoke(cli, ["keys", "import"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())  # rich wraps lines
    assert "1 keys imported" in said and "(3 keys in PostgreSQL)" in said
    last = open_key_store(settings)
    try:
        assert last.verify(later_token) is not None
    finally:
        last.close()
    monkeypatch.setenv("SHOPCAST_DATABASE_URL", f"sqlite:///{tmp_path / 'shop.db'}")
    refused = CliRunner().invoke(cli, ["keys", "import"])
    assert refused.exit_code == 2 and "postgresql://" in refused.output


def test_a_file_that_is_not_a_key_store_does_not_stop_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    (tmp_path / "keys.db").write_bytes(b"not a database")
    settings = Settings(
        environment="test", database_url=postgres_url, auth={"keys_path": tmp_path / "keys.db"}
    )
    store = open_key_store(settings)
    try:
        assert store.list() == []
    finally:
        store.close()
