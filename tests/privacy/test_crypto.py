"""Field encryption of user attributes, key rotation, and refusing unsafe secrets."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopcast.config import Settings, load_settings
from shopcast.domain import User
from shopcast.errors import ConfigError, StorageError, ValidationError
from shopcast.privacy.crypto import (
    SEALED,
    EncryptedUsers,
    FieldCipher,
    key_id,
    new_key,
    open_private_store,
    seal,
    unseal,
)
from shopcast.storage import open_store

from .conftest import db_bytes

ANN = User(
    user_id="ann",
    age=52,
    gender="female",
    occupation="Pilot",
    region="Oslo",
    timezone="Europe/Oslo",
    consent={"personalization": True, "push": False},
    attributes={"vip": True, "note": "likes Fjords"},
)


def _key() -> bytes:
    return os.urandom(32)


def test_seal_round_trip_keeps_id_timezone_and_consent_readable() -> None:
    cipher = FieldCipher({"k1": _key()}, "k1")
    sealed = seal(ANN, cipher)
    assert sealed.age is None and sealed.region is None and sealed.occupation is None
    assert set(sealed.attributes) == {SEALED} and key_id(sealed.attributes[SEALED]) == "k1"
    assert (sealed.user_id, sealed.timezone, sealed.consent) == ("ann", "Europe/Oslo", ANN.consent)
    assert "Oslo" not in sealed.model_dump_json().replace("Europe/Oslo", "")
    assert unseal(sealed, cipher) == ANN
    assert seal(ANN, cipher).attributes != sealed.attributes  # a fresh nonce every time
    assert unseal(User(user_id="plain", age=3), cipher) == User(user_id="plain", age=3)


def test_a_blob_moved_to_another_record_or_tampered_fails() -> None:
    cipher = FieldCipher({"k1": _key()}, "k1")
    token = seal(ANN, cipher).attributes[SEALED]
    with pytest.raises(StorageError, match="authentication"):
        unseal(User(user_id="mallory", attributes={SEALED: token}), cipher)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(StorageError):
        unseal(User(user_id="ann", attributes={SEALED: flipped}), cipher)
    with pytest.raises(StorageError, match="not configured"):
        unseal(seal(ANN, cipher), FieldCipher({"k2": _key()}, "k2"))


def test_rotation_reseals_every_record_with_the_active_key(tmp_path: Path) -> None:
    k1, k2 = _key(), _key()
    inner = open_store(f"sqlite:///{tmp_path / 'shop.db'}")
    users = EncryptedUsers(inner.users, FieldCipher({"k1": k1}, "k1"))
    users.upsert([ANN, User(user_id="bo", region="Bergen")])
    inner.users.upsert([User(user_id="old", region="Tromsø")])  # written before encryption
    rotated = EncryptedUsers(inner.users, FieldCipher({"k1": k1, "k2": k2}, "k2"))
    assert rotated.rotate() == {"resealed": 3, "unchanged": 0}
    assert rotated.rotate() == {"resealed": 0, "unchanged": 3}
    only_new = EncryptedUsers(inner.users, FieldCipher({"k2": k2}, "k2"))  # k1 dropped
    assert only_new.get("ann") == ANN and only_new.get("old") == User(
        user_id="old", region="Tromsø"
    )
    assert {key_id(u.attributes[SEALED]) for u in inner.users.scan()} == {"k2"}
    inner.close()
    assert b"Bergen" not in db_bytes(tmp_path / "shop.db")


def test_the_reserved_attribute_is_refused() -> None:
    users = EncryptedUsers(open_store("memory://").users, FieldCipher({"k": _key()}, "k"))
    with pytest.raises(ValidationError):
        users.upsert([User(user_id="x", attributes={SEALED: "enc1:k:AAAA"})])


def _prod(**privacy: object) -> Settings:
    return Settings(environment="production", database_url="memory://", privacy=privacy)


def test_unsafe_secrets_are_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="hmac_key"):
        _prod(pseudonymize=True)  # the placeholder
    with pytest.raises(ValueError, match="hmac_key"):
        _prod(pseudonymize=True, hmac_key="short")
    with pytest.raises(ValueError, match="encryption_keys"):
        _prod(encrypt_users=True)
    ok = _prod(pseudonymize=True, hmac_key="x" * 40, encrypt_users=True,
               encryption_keys={"k1": new_key()})  # fmt: skip
    assert ok.privacy.pseudonymize and FieldCipher.from_settings(ok) is not None
    # development and test accept the placeholders (a development key is derived)
    dev = Settings(environment="development", privacy={"pseudonymize": True, "encrypt_users": True})
    assert FieldCipher.from_settings(dev) is not None
    with pytest.raises(ValueError, match="32 bytes"):
        _prod(encryption_keys={"k1": base64.b64encode(b"short").decode()})
    with pytest.raises(ValueError, match="key id"):
        _prod(encryption_keys={"bad:id": new_key()})
    with pytest.raises(ValueError, match="active_key"):
        _prod(encryption_keys={"a": new_key(), "b": new_key()})


def test_the_cli_refuses_to_start_with_exit_code_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from shopcast.cli import app

    monkeypatch.setenv("SHOPCAST_ENVIRONMENT", "production")
    monkeypatch.setenv("SHOPCAST_PRIVACY__PSEUDONYMIZE", "true")
    with pytest.raises(ConfigError, match="hmac_key"):
        load_settings()
    for args in (["serve"], ["train"], ["keys", "list"], ["privacy", "erase", "x"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "hmac_key" in result.output


def test_rotate_key_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shopcast.cli import app

    k1, k2 = new_key(), new_key()
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    monkeypatch.setenv("SHOPCAST_DATABASE_URL", db)
    monkeypatch.setenv("SHOPCAST_PRIVACY__ENCRYPT_USERS", "true")
    monkeypatch.setenv("SHOPCAST_PRIVACY__ENCRYPTION_KEYS", f'{{"k1": "{k1}"}}')
    store = open_private_store(load_settings())
    store.users.upsert([ANN])
    store.close()
    monkeypatch.setenv("SHOPCAST_PRIVACY__ENCRYPTION_KEYS", f'{{"k1": "{k1}", "k2": "{k2}"}}')
    monkeypatch.setenv("SHOPCAST_PRIVACY__ACTIVE_KEY", "k2")
    result = CliRunner().invoke(app, ["privacy", "rotate-key"])
    assert result.exit_code == 0, result.output
    assert '"resealed": 1' in result.output
    monkeypatch.setenv("SHOPCAST_PRIVACY__ENCRYPTION_KEYS", f'{{"k2": "{k2}"}}')
    store = open_private_store(load_settings())
    assert store.users.get("ann") == ANN
    store.close()
    result = CliRunner().invoke(app, ["privacy", "gen-key"])
    assert len(base64.urlsafe_b64decode(result.output.strip())) == 32
