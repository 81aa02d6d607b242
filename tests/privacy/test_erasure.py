"""Erasure reaches the models, and consent keeps a user out of personalization.

SYNTHETIC shop: shoppers u0..u5 browse camping gear; "eve" is the only one who ever
touched item "secret" (in the catalog) and item "ghost" (known only from her events).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopcast.api import create_app
from shopcast.config import AuthSettings, Settings
from shopcast.domain import Event, Item, User
from shopcast.privacy.apikeys import KeyStore
from shopcast.privacy.crypto import open_private_store
from shopcast.privacy.erasure import pending_retrain
from shopcast.privacy.pseudonym import Pseudonymizer
from shopcast.training.bundle import save_bundle, train_bundle
from shopcast.training.registry import ModelRegistry

from .conftest import HMAC_KEY, bearer, db_bytes

T0 = 1_700_000_000.0
GEAR = ["tent", "stove", "lamp", "mug", "pan", "rope"]
ONLY_EVE = {"secret", "ghost"}


def _items() -> list[Item]:
    out = [Item(item_id=i, title=f"Camping {i}", category="Outdoor > Camping") for i in GEAR]
    out.append(Item(item_id="secret", title="Harpsichord tuning fork", category="Music"))
    return out


def _ev(user: str, item: str, t: float, kind: str = "view") -> Event:
    return Event(type=kind, user_id=user, item_id=item, timestamp=t)


def _others() -> list[Event]:
    out = []
    for u in range(6):
        path = GEAR[u % 3 :] + GEAR[: u % 3]
        out += [_ev(f"u{u}", item, T0 + 100 * u + n) for n, item in enumerate(path)]
        out.append(_ev(f"u{u}", path[1], T0 + 100 * u + 50, "purchase"))
    return out


def _eve(t: float) -> list[Event]:
    seq = ["tent", "secret", "ghost", "stove", "secret"]
    out = [_ev("eve", item, t + n) for n, item in enumerate(seq)]
    return [
        *out,
        _ev("eve", "secret", t + 9, "purchase"),
        _ev("eve", "ghost", t + 10, "add_to_cart"),
    ]


def _mapped(events: list[Event], p: Pseudonymizer) -> list[Event]:
    return [e.model_copy(update={"user_id": p.user(e.user_id)}) if e.user_id else e for e in events]


@pytest.fixture
def shop(secure_settings: Settings) -> Settings:
    """The store with a trained CURRENT model that saw half of eve's events."""
    p = Pseudonymizer.from_settings(secure_settings.privacy)
    store = open_private_store(secure_settings)
    store.items.upsert(_items())
    store.users.upsert([p.user_record(User(user_id="eve", region="Tallinn", age=33))])
    store.events.append(_mapped([*_others(), *_eve(T0 + 1000)], p))
    save_bundle(train_bundle(store, secure_settings.recommend), secure_settings.model_dir)
    store.close()
    return secure_settings


@pytest.fixture
def admin(keys: KeyStore) -> dict[str, str]:
    return bearer(keys.create(["admin"])[1])


def _listed(c: TestClient, h: dict[str, str]) -> dict[str, set[str]]:
    """Every item each listing endpoint shows, by endpoint."""
    out: dict[str, set[str]] = {}

    def ids(r: Any) -> set[str]:
        assert r.status_code == 200, r.text
        return {i["item_id"] for i in r.json()["items"]}

    out["trending"] = ids(c.get("/v1/trending?k=50", headers=h))
    for item in GEAR:
        out[f"similar {item}"] = ids(c.get(f"/v1/items/{item}/similar?k=50", headers=h))
        out[f"bought {item}"] = ids(c.get(f"/v1/items/{item}/bought-together?k=50", headers=h))
        out[f"product {item}"] = ids(
            c.get(f"/v1/users/u1/recommendations?k=50&scene=product_page&item={item}", headers=h)
        )
    for u in range(6):
        out[f"home u{u}"] = ids(c.get(f"/v1/users/u{u}/recommendations?k=50", headers=h))
    cart = c.post("/v1/cart/recommendations", json={"items": ["tent"], "k": 50}, headers=h)
    out["cart"] = ids(cart)
    return out


def _secret_in(listed: dict[str, set[str]]) -> dict[str, set[str]]:
    return {k: v & ONLY_EVE for k, v in listed.items() if v & ONLY_EVE}


def test_erasure_removes_everything_derived_from_the_user(
    shop: Settings, admin: dict[str, str], tmp_path: Path
) -> None:
    registry = ModelRegistry(shop.model_dir)
    first = registry.current()
    pseudonym = Pseudonymizer.from_settings(shop.privacy).user("eve")
    with TestClient(create_app(shop)) as c:
        online = [e.model_dump(mode="json") for e in _eve(T0 + 5000)]
        assert c.post("/v1/events", json=online, headers=admin).status_code == 202
        rec = c.get("/v1/users/eve/recommendations?k=5", headers=admin)
        assert rec.status_code == 200
        before = _secret_in(_listed(c, admin))
        assert "trending" in before and any(k.startswith("similar") for k in before)
        assert c.get("/v1/users/eve/profile", headers=admin).status_code == 200

        r = c.delete("/v1/users/eve", headers=admin)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["user_id"] == "eve"
        assert report["removed"]["events"] == 14
        assert report["removed"]["impressions"] >= 5
        assert report["removed"]["user_record"] == 1
        assert report["removed"]["profile"] == 1 and report["removed"]["live_session"] == 1
        assert report["models"] == {
            "popularity": "unlearned",
            "covisit": "unlearned",
            "bought_together": "unlearned",
        }
        assert report["retrain_scheduled"] is True
        assert report["model_version"] != first and first in report["models_pruned"]

        assert _secret_in(_listed(c, admin)) == {}
        assert c.get("/v1/users/eve/profile", headers=admin).status_code == 404
        assert c.get("/v1/users/eve", headers=admin).status_code == 404
        assert c.delete("/v1/users/eve", headers=admin).status_code == 404
        cold = c.get("/v1/users/nobody/recommendations?k=10", headers=admin).json()
        again = c.get("/v1/users/eve/recommendations?k=10", headers=admin).json()
        assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in cold["items"]]
        assert set(again["sources"]) <= {"popular", "new_arrivals", "category_popular"}
        c.app.state.engine.impressions.flush()  # type: ignore[attr-defined]
        # those answers logged impressions under the id: a second erasure takes them
        second = c.delete("/v1/users/eve", headers=admin).json()
        assert second["removed"]["impressions"] == len(again["items"]) > 0
        assert second["removed"]["events"] == 0
    assert registry.current() == second["model_version"]
    assert [v.version for v in registry.versions()] == [second["model_version"]]
    assert [r["reason"] for r in pending_retrain(shop.model_dir)] == ["erasure", "erasure"]
    assert pseudonym.encode() not in db_bytes(tmp_path / "shop.db")

    with TestClient(create_app(shop)) as c:  # a restart serves the unlearned model
        assert _secret_in(_listed(c, admin)) == {}

    # `shopcast train` serves the retrain requests
    env = {
        "SHOPCAST_DATABASE_URL": shop.database_url,
        "SHOPCAST_MODEL_DIR": str(shop.model_dir),
        "SHOPCAST_PRIVACY__PSEUDONYMIZE": "true",
        "SHOPCAST_PRIVACY__HMAC_KEY": HMAC_KEY,
        "SHOPCAST_PRIVACY__ENCRYPT_USERS": "true",
    }
    from shopcast.cli import app

    result = CliRunner().invoke(app, ["train"], env=env)
    assert result.exit_code == 0, result.output
    assert pending_retrain(shop.model_dir) == []
    assert len(registry.versions()) == 1 and registry.current() != second["model_version"]


def test_the_cli_erases_and_promotes_an_unlearned_model(shop: Settings) -> None:
    from shopcast.cli import app

    env = {
        "SHOPCAST_DATABASE_URL": shop.database_url,
        "SHOPCAST_MODEL_DIR": str(shop.model_dir),
        "SHOPCAST_PRIVACY__PSEUDONYMIZE": "true",
        "SHOPCAST_PRIVACY__HMAC_KEY": HMAC_KEY,
        "SHOPCAST_PRIVACY__ENCRYPT_USERS": "true",
    }
    first = ModelRegistry(shop.model_dir).current()
    result = CliRunner().invoke(app, ["privacy", "erase", "eve"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["removed"]["events"] == 7 and report["removed"]["user_record"] == 1
    assert report["models"]["covisit"] == "unlearned"
    assert ModelRegistry(shop.model_dir).current() == report["model_version"] != first
    open_settings = shop.model_copy(update={"auth": AuthSettings(enabled=False)})
    with TestClient(create_app(open_settings)) as c:
        assert _secret_in(_listed(c, {})) == {}


@pytest.fixture
def consent_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        for item in [*GEAR, "zzz", "aaa", "bbb"]:
            assert c.put(f"/v1/items/{item}", json={"title": f"Thing {item}"}).status_code == 200
        users = [{"user_id": "quiet", "consent": {"personalization": False}}, {"user_id": "later"}]
        assert c.put("/v1/users", json=users).status_code == 200
        events = [e.model_dump(mode="json") for e in _others()]
        events += [_ev("quiet", i, T0 + 9000 + n).model_dump(mode="json")
                   for n, i in enumerate(["tent", "zzz", "tent", "zzz"])]  # fmt: skip
        events += [_ev("later", i, T0 + 9500 + n).model_dump(mode="json")
                   for n, i in enumerate(["aaa", "bbb"])]  # fmt: skip
        assert c.post("/v1/events", json=events).status_code == 202
        yield c


def _ids(r: Any, source: str | None = None) -> list[str]:
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"] if source in (None, i["source"])]


def test_without_personalization_consent(consent_client: TestClient) -> None:
    c = consent_client
    # not personalized: the same answer as for an unknown shopper
    assert _ids(c.get("/v1/users/quiet/recommendations?k=10")) == _ids(
        c.get("/v1/users/nobody/recommendations?k=10")
    )
    assert c.get("/v1/users/quiet/profile").json()["behaviour"] is None
    # the user's events feed popularity (trending), never co-visitation
    assert "zzz" in _ids(c.get("/v1/trending?k=50"))
    assert "zzz" not in _ids(c.get("/v1/items/tent/similar?k=50"), "covisit")
    assert "tent" in _ids(c.get("/v1/items/stove/similar?k=50"), "covisit")  # others' do
    assert _ids(c.get("/v1/items/zzz/similar?k=50"), "covisit") == []
    # the same holds after a retrain
    c.app.state.engine.swap(  # type: ignore[attr-defined]
        train_bundle(c.app.state.store, c.app.state.settings.recommend)  # type: ignore[attr-defined]
    )
    assert "zzz" not in _ids(c.get("/v1/items/tent/similar?k=50"), "covisit")
    assert "zzz" in _ids(c.get("/v1/trending?k=50"))


def test_withdrawing_consent_unlearns_at_once(
    consent_client: TestClient, settings: Settings
) -> None:
    c = consent_client
    assert "bbb" in _ids(c.get("/v1/items/aaa/similar?k=50"), "covisit")
    r = c.put("/v1/users/later", json={"consent": {"personalization": False}})
    assert r.status_code == 200
    assert "bbb" not in _ids(c.get("/v1/items/aaa/similar?k=50"), "covisit")
    assert "bbb" in _ids(c.get("/v1/trending?k=50"))
    assert [x["reason"] for x in pending_retrain(settings.model_dir)] == ["consent"]
