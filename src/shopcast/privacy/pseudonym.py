"""Pseudonymization of user ids: ``p_`` + 32 hex digits of HMAC-SHA256(key, id).

Applied once, where raw ids enter Shopcast (the API routes and the bulk importer, see
``docs/architecture.md``), so storage, the engine, profiles and models only ever see
pseudonyms. The id is cleaned first (``domain.clean_id``: trimmed, NFC, integers as
text), so ``" 42"``, ``"42"`` and ``42`` share one pseudonym; an id that fails cleaning
is left as it is for validation to reject (it is never stored). A tenant other than
``default`` uses a key derived from the tenant id, so one shopper's pseudonyms in two
tenants cannot be linked. Without ``privacy.pseudonymize`` every method returns the
cleaned id unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import replace
from typing import Any

import polars as pl

from shopcast.config import PLACEHOLDER_SECRET, PrivacySettings
from shopcast.domain import User, clean_id
from shopcast.ingest.datasets import DatasetFrames
from shopcast.privacy.tenants import DEFAULT_TENANT, check_tenant

PREFIX = "p_"
log = logging.getLogger(__name__)


class Pseudonymizer:
    """Maps raw user ids to pseudonyms (or leaves them when disabled)."""

    def __init__(self, key: bytes | None, tenant: str = DEFAULT_TENANT) -> None:
        check_tenant(tenant)
        if key is not None and tenant != DEFAULT_TENANT:
            key = hmac.new(key, b"tenant:" + tenant.encode(), hashlib.sha256).digest()
        self._key = key

    @classmethod
    def from_settings(cls, privacy: PrivacySettings, tenant: str = DEFAULT_TENANT) -> Pseudonymizer:
        key = privacy.hmac_key.get_secret_value().encode() if privacy.pseudonymize else None
        if key == PLACEHOLDER_SECRET.encode():
            log.warning("pseudonymizing with the placeholder hmac_key: development only")
        return cls(key, tenant)

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def user(self, raw: str) -> str:
        """The pseudonym of a (valid) raw id; ``ValueError`` when the id is invalid."""
        cleaned = clean_id(raw)
        if cleaned is None:
            raise ValueError("must not be empty")
        if self._key is None:
            return cleaned
        digest = hmac.new(self._key, cleaned.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:32]

    def optional(self, raw: str | None) -> str | None:
        return None if raw is None else self.user(raw)

    def _lenient(self, raw: Any) -> Any:
        """The pseudonym of a valid id; anything else unchanged (validation rejects it)."""
        try:
            return self.user(raw)
        except ValueError:
            return raw

    def record(self, record: Any) -> Any:
        """A raw JSON record (event or user) with its ``user_id`` mapped."""
        if self._key is None or not isinstance(record, dict) or record.get("user_id") is None:
            return record
        return {**record, "user_id": self._lenient(record["user_id"])}

    def lookup(self, raw: str) -> str:
        """The stored id to look ``raw`` up by; an invalid id is returned as it is
        (it matches nothing, since nothing invalid is ever stored)."""
        return str(self._lenient(raw))

    def payload(self, raw: Any) -> Any:
        """An events payload (one event, a list, or ``{"events": [...]}``) mapped."""
        if self._key is None:
            return raw
        if isinstance(raw, dict) and set(raw) == {"events"} and isinstance(raw["events"], list):
            return {"events": [self.record(r) for r in raw["events"]]}
        if isinstance(raw, list):
            return [self.record(r) for r in raw]
        return self.record(raw)

    def user_record(self, user: User) -> User:
        return user.model_copy(update={"user_id": self.user(user.user_id)})

    def frame(self, frame: pl.DataFrame) -> pl.DataFrame:
        """A raw (not yet cleaned) event frame with its ``user_id`` column mapped.

        Each distinct id is mapped once; the result agrees with ``record`` row by row. A
        column of another type than text or integers is left for cleaning to reject.
        """
        if self._key is None or "user_id" not in frame.columns:
            return frame
        dtype = frame["user_id"].dtype
        if not (dtype.is_integer() or dtype in (pl.String, pl.Categorical)):
            return frame
        column = frame["user_id"].cast(pl.String) if dtype.is_integer() else frame["user_id"]
        distinct = column.drop_nulls().unique().to_list()
        mapping = {v: str(self._lenient(v)) for v in distinct}
        mapped = column.cast(pl.String).replace_strict(
            mapping, default=None, return_dtype=pl.String
        )
        return frame.with_columns(mapped.alias("user_id"))

    def dataset(self, frames: DatasetFrames) -> DatasetFrames:
        """A loaded dataset with every user id mapped (events and user records)."""
        if self._key is None:
            return frames
        return replace(
            frames,
            events=self.frame(frames.events),
            users=[self.user_record(u) for u in frames.users],
        )
