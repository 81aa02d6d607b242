"""Field-level encryption at rest of users' personal attributes (AES-256-GCM).

``EncryptedUsers`` wraps a users repository: on write, ``age``, ``gender``,
``occupation``, ``region`` and ``attributes`` are sealed together into one ciphertext
kept in ``attributes["__sealed__"]`` (the other fields are emptied); on read they are
restored. The record's id, time zone and consent flags stay readable (the engine needs
them; they are not personal attributes). The ciphertext is
``enc1:<key id>:<base64url(nonce | ciphertext | tag)>``, with a fresh 96-bit nonce and the
user id as associated data, so a sealed blob moved to another record fails to open.

Keys (``privacy.encryption_keys``: key id -> base64 of 32 bytes, ``privacy.active_key``)
come from settings or ``SHOPCAST_PRIVACY__ENCRYPTION_KEYS``. Rotation: add a key, make
it active, run ``shopcast privacy rotate-key`` (``EncryptedUsers.rotate``) to reseal
every record with it, then drop the old key. In development and test only, without a
configured key, a development key derived from the placeholder is used (and refused
elsewhere by ``Settings``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from shopcast.config import PLACEHOLDER_SECRET, PrivacySettings, Settings
from shopcast.domain import User
from shopcast.errors import (
    ConfigError,
    FieldError,
    MissingDependencyError,
    StorageError,
    ValidationError,
)
from shopcast.storage import Catalog, EventLog, Profiles, Store, open_store

log = logging.getLogger(__name__)
SEALED = "__sealed__"
SEALED_FIELDS = ("age", "gender", "occupation", "region", "attributes")
_PREFIX = "enc1"
_NONCE = 12
DEV_KEY_ID = "dev"


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - a core dependency
        raise MissingDependencyError("cryptography", "privacy") from None
    return AESGCM(key)


def new_key() -> str:
    """A fresh random key, as ``privacy.encryption_keys`` expects it (base64url)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class FieldCipher:
    """AES-GCM with a key ring: encrypts with the active key, decrypts with any."""

    def __init__(self, keys: dict[str, bytes], active: str) -> None:
        if active not in keys:
            raise ConfigError(f"encryption key {active!r} is not configured")
        self._ciphers = {kid: _aesgcm(key) for kid, key in keys.items()}
        self.active = active

    @classmethod
    def from_settings(cls, settings: Settings) -> FieldCipher | None:
        """The configured cipher; the development key in development/test; else None."""
        p: PrivacySettings = settings.privacy
        keys = {
            kid: base64.b64decode(secret.get_secret_value(), altchars=b"-_")
            for kid, secret in p.encryption_keys.items()
        }
        if not keys:
            if not p.encrypt_users or settings.environment not in ("development", "test"):
                return None
            log.warning("encrypting user attributes with the development key: development only")
            keys = {
                DEV_KEY_ID: hashlib.sha256(b"shopcast-dev:" + PLACEHOLDER_SECRET.encode()).digest()
            }
        active = p.active_key or next(iter(keys))
        return cls(keys, active)

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self.active].encrypt(nonce, plaintext, aad)
        body = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{_PREFIX}:{self.active}:{body}"

    def decrypt(self, token: str, aad: bytes) -> bytes:
        kid = key_id(token)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise StorageError(f"a record is sealed with key {kid!r}, which is not configured")
        raw = base64.urlsafe_b64decode(token.split(":", 2)[2])
        try:
            plaintext: bytes = cipher.decrypt(raw[:_NONCE], raw[_NONCE:], aad)
        except Exception:  # cryptography's InvalidTag: tampered, or another record's blob
            raise StorageError("a sealed record failed authentication") from None
        return plaintext


def key_id(token: str) -> str:
    """The key id named in a ciphertext."""
    prefix, sep, rest = token.partition(":")
    kid = rest.partition(":")[0]
    if prefix != _PREFIX or not sep or not kid:
        raise StorageError("not a Shopcast ciphertext")
    return kid


def _aad(user_id: str) -> bytes:
    return b"user:" + user_id.encode()


def seal(user: User, cipher: FieldCipher) -> User:
    """The record with its personal attributes encrypted."""
    fields = user.model_dump(include=set(SEALED_FIELDS), mode="json")
    token = cipher.encrypt(json.dumps(fields, separators=(",", ":")).encode(), _aad(user.user_id))
    empty: dict[str, Any] = {f: None for f in SEALED_FIELDS}
    return user.model_copy(update={**empty, "attributes": {SEALED: token}})


def unseal(user: User, cipher: FieldCipher) -> User:
    """The record with its personal attributes decrypted (a plain record as it is)."""
    token = user.attributes.get(SEALED)
    if not isinstance(token, str) or len(user.attributes) != 1:
        return user
    fields = json.loads(cipher.decrypt(token, _aad(user.user_id)))
    return User.model_validate({**user.model_dump(mode="json"), **fields})


class EncryptedUsers:
    """A users repository that stores personal attributes encrypted (see module doc).

    With ``write_sealed`` False (encryption switched off but keys still configured)
    records are read decrypted and written in clear.
    """

    def __init__(self, inner: Profiles, cipher: FieldCipher, *, write_sealed: bool = True) -> None:
        self.inner = inner
        self.cipher = cipher
        self.write_sealed = write_sealed

    def upsert(self, records: Sequence[User]) -> int:
        """Write the records (sealed); ``ValidationError`` if one uses the reserved key."""
        for i, r in enumerate(records):
            if SEALED in r.attributes:
                raise ValidationError(
                    f"attribute {SEALED!r} is reserved",
                    [FieldError(f"attributes.{SEALED}", "is reserved", i)],
                )
        if not self.write_sealed:
            return self.inner.upsert([unseal(r, self.cipher) for r in records])
        return self.inner.upsert([seal(r, self.cipher) for r in records])

    def get(self, key: str) -> User | None:
        found = self.inner.get(key)
        return None if found is None else unseal(found, self.cipher)

    def get_many(self, keys: Sequence[str]) -> dict[str, User]:
        return {k: unseal(u, self.cipher) for k, u in self.inner.get_many(keys).items()}

    def scan(self) -> Iterator[User]:
        return (unseal(u, self.cipher) for u in self.inner.scan())

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def count(self) -> int:
        return self.inner.count()

    def rotate(self, batch: int = 1000) -> dict[str, int]:
        """Reseal every record not sealed with the active key (plain ones too).

        Returns counts: ``resealed`` and ``unchanged``.
        """
        todo: list[User] = []
        counts = {"resealed": 0, "unchanged": 0}
        for user in self.inner.scan():
            token = user.attributes.get(SEALED)
            if self.write_sealed and isinstance(token, str) and key_id(token) == self.cipher.active:
                counts["unchanged"] += 1
                continue
            if not self.write_sealed and unseal(user, self.cipher) is user:
                counts["unchanged"] += 1
                continue
            todo.append(unseal(user, self.cipher))
            if len(todo) >= batch:
                counts["resealed"] += self.upsert(todo)
                todo = []
        if todo:
            counts["resealed"] += self.upsert(todo)
        return counts


class PrivateStore:
    """A store whose users repository is ``EncryptedUsers``; the rest is the inner store."""

    def __init__(self, inner: Store, users: EncryptedUsers) -> None:
        self.inner = inner
        self.url = inner.url
        self.events: EventLog = inner.events
        self.items: Catalog = inner.items
        self.users: Profiles = users

    def close(self) -> None:
        self.inner.close()


def protect_store(store: Store, settings: Settings) -> Store:
    """``store`` with field encryption when keys are configured (or in development)."""
    cipher = FieldCipher.from_settings(settings)
    if cipher is None:
        return store
    users = EncryptedUsers(store.users, cipher, write_sealed=settings.privacy.encrypt_users)
    return PrivateStore(store, users)


def open_private_store(settings: Settings) -> Store:
    """``open_store(settings.database_url)`` with field encryption as configured."""
    store = open_store(settings.database_url)
    try:
        return protect_store(store, settings)
    except BaseException:
        store.close()
        raise


__all__ = [
    "SEALED",
    "SEALED_FIELDS",
    "EncryptedUsers",
    "FieldCipher",
    "PrivateStore",
    "new_key",
    "open_private_store",
    "protect_store",
    "seal",
    "unseal",
]
