"""Pseudonymization: HMAC ids at every entry point; no raw id reaches the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.domain import User
from shopcast.ingest.bulk import clean_events
from shopcast.ingest.validate import validate_events
from shopcast.privacy.apikeys import KeyStore
from shopcast.privacy.pseudonym import Pseudonymizer

from .conftest import HMAC_KEY, bearer, db_bytes

KEY = HMAC_KEY.encode()
RAW = ["alice@example.com", "bob@example.com"]


def test_pseudonyms_are_keyed_stable_and_cleaned() -> None:
    p = Pseudonymizer(KEY)
    a = p.user("alice@example.com")
    assert a.startswith("p_") and len(a) == 34 and "alice" not in a
    assert p.user(" alice@example.com ") == a  # cleaned first, like every id
    assert Pseudonymizer(KEY).user("42") == Pseudonymizer(KEY).user(42)  # type: ignore[arg-type]
    assert Pseudonymizer(b"another-key" * 4).user("alice@example.com") != a
    assert Pseudonymizer(KEY, "shop-b").user("alice@example.com") != a  # tenants unlinkable
    with pytest.raises(ValueError):
        p.user("bad\x00id")
    assert p.lookup("bad\x00id") == "bad\x00id"  # matches nothing stored
    off = Pseudonymizer(None)
    assert not off.enabled and off.user(" alice ") == "alice"


def test_payload_shapes_and_records() -> None:
    p = Pseudonymizer(KEY)
    ev = {"type": "view", "user_id": "alice@example.com", "item_id": "i1"}
    mapped = p.user("alice@example.com")
    assert p.payload(ev)["user_id"] == mapped
    assert p.payload([ev, {"session_id": "s"}])[0]["user_id"] == mapped
    assert p.payload({"events": [ev]})["events"][0]["user_id"] == mapped
    assert p.payload({"type": "view", "user_id": ""})["user_id"] == ""  # left to validation
    assert p.user_record(User(user_id="alice@example.com", age=3)).user_id == mapped


def test_api_and_bulk_paths_give_the_same_event_ids() -> None:
    """An event without event_id gets the same derived id from the API and an import."""
    p = Pseudonymizer(KEY)
    record = {"type": "view", "user_id": 17850, "item_id": "i1", "timestamp": 1_700_000_000}
    [api_event] = validate_events(p.payload(record), max_batch=10).events
    frame = pl.DataFrame(
        {"type": ["view"], "user_id": [17850], "item_id": ["i1"], "timestamp": [1_700_000_000]}
    )
    bulk = clean_events(p.frame(frame)).frame
    assert bulk["user_id"].to_list() == [api_event.user_id] == [p.user("17850")]
    assert bulk["event_id"].to_list() == [api_event.event_id]
    # and the derived id is a hash of the pseudonymous content, not of the raw id
    [plain] = validate_events(record, max_batch=10).events
    assert plain.event_id != api_event.event_id


def _events(user: str, items: list[str], t0: float = 1_700_000_000) -> list[dict[str, Any]]:
    return [
        {"type": "view", "user_id": user, "item_id": i, "timestamp": t0 + n}
        for n, i in enumerate(items)
    ]


def test_no_raw_user_id_or_attribute_reaches_the_database(
    secure_settings: Settings, keys: KeyStore, tmp_path: Path
) -> None:
    admin = bearer(keys.create(["admin"])[1])
    with TestClient(create_app(secure_settings)) as c:
        for n in range(4):
            r = c.put(f"/v1/items/sku-{n}", json={"title": f"Item {n}"}, headers=admin)
            assert r.status_code == 200
        user = {
            "age": 41,
            "gender": "female",
            "region": "Lisbon",
            "occupation": "Surgeon",
            "attributes": {"nickname": "Zanzibar"},
            "consent": {"personalization": True},
        }
        assert c.put(f"/v1/users/{RAW[0]}", json=user, headers=admin).status_code == 200
        assert c.put("/v1/users", json=[{"user_id": RAW[1]}], headers=admin).status_code == 200
        assert c.post("/v1/events", json=_events(RAW[0], ["sku-0", "sku-1"]), headers=admin)
        assert c.post(
            "/v1/events", json=_events(RAW[1], ["sku-0", "sku-1", "sku-2"]), headers=admin
        )
        r = c.post("/v1/users/" + RAW[0] + "/merge", json={"session_id": "s-9"}, headers=admin)
        assert r.status_code == 200 and r.json()["user_id"] == RAW[0]
        # reads by the raw id find the pseudonymous data
        got = c.get(f"/v1/users/{RAW[0]}", headers=admin).json()
        assert got["user_id"] == RAW[0] and got["region"] == "Lisbon" and got["age"] == 41
        profile = c.get(f"/v1/users/{RAW[0]}/profile", headers=admin).json()
        assert profile["user_id"] == RAW[0] and profile["behaviour"]["activity"]["events"] == 2
        rec = c.get(f"/v1/users/{RAW[0]}/recommendations?k=3", headers=admin).json()
        assert rec["user_id"] == RAW[0]
        sources = {i["item_id"]: i["source"] for i in rec["items"]}
        assert sources.get("sku-2") == "covisit"  # bob's history reaches alice
        cart = {"user_id": RAW[1], "items": ["sku-0"]}
        assert (
            c.post("/v1/cart/recommendations", json=cart, headers=admin).json()["user_id"] == RAW[1]
        )
        r = c.get("/v1/items/sku-0/bought-together", params={"user_id": RAW[1]}, headers=admin)
        assert r.status_code == 200
        stored = c.app.state.store  # type: ignore[attr-defined]
        pseudonym = Pseudonymizer(KEY).user(RAW[0])
        assert {e.user_id for _, e in stored.events.scan(subject=f"u:{pseudonym}")} == {pseudonym}
        mapped = c.post(
            "/v1/privacy/pseudonyms", json={"user_ids": [RAW[0], ""]}, headers=admin
        ).json()
        assert mapped == {"pseudonymized": True, "ids": {RAW[0]: pseudonym, "": None}}
    data = db_bytes(tmp_path / "shop.db")
    assert b"sku-0" in data and Pseudonymizer(KEY).user(RAW[1]).encode() in data
    for secret in [*RAW, "alice", "Lisbon", "Surgeon", "Zanzibar", "female"]:
        assert secret.encode() not in data, secret


def test_imports_pseudonymize_too(secure_settings: Settings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shopcast.cli import app

    events = tmp_path / "events.csv"
    events.write_text("type,user_id,item_id,timestamp\nview,carol@example.com,i1,1700000000\n")
    users = tmp_path / "users.jsonl"
    users.write_text('{"user_id": "carol@example.com", "region": "Porto"}\n')
    env = {
        "SHOPCAST_DATABASE_URL": secure_settings.database_url,
        "SHOPCAST_ENVIRONMENT": "test",
        "SHOPCAST_PRIVACY__PSEUDONYMIZE": "true",
        "SHOPCAST_PRIVACY__HMAC_KEY": HMAC_KEY,
        "SHOPCAST_PRIVACY__ENCRYPT_USERS": "true",
    }
    runner = CliRunner()
    for args in (["import", "events", str(events)], ["import", "users", str(users)]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
    data = db_bytes(tmp_path / "shop.db")
    assert b"carol" not in data and b"Porto" not in data
    assert Pseudonymizer(KEY).user("carol@example.com").encode() in data
