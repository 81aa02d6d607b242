"""Every exception Shopcast raises, in one place.

Hierarchy::

    ShopcastError                  base of everything below
    ├── ConfigError                invalid or unsafe settings (CLI exit code 2)
    ├── ValidationError            bad input; carries a list of FieldError (HTTP 422)
    │   ├── MalformedInputError    a body that is not JSON at all (HTTP 400)
    │   └── BatchTooLargeError     a batch or body over the configured limit (HTTP 413)
    ├── AuthError                  missing or invalid API key (HTTP 401)
    │   ├── ForbiddenError         a valid key without the scope the endpoint needs (HTTP 403)
    │   └── RateLimitedError       a key over its request rate (HTTP 429, ``retry_after``)
    ├── NotFoundError              unknown user, item, model, dataset (HTTP 404)
    │   └── DatasetNotFoundError   a dataset's files are not where we looked
    ├── StorageError               a backend failed or was given a bad URL
    │   ├── UnknownBackendError    no backend for that URL scheme
    │   ├── StateUnavailableError  the online-state server (Redis) is unreachable (HTTP 503)
    │   └── StorageUnavailableError the database is unreachable for now (HTTP 503, ``retry_after``)
    ├── ModelError                 a model used before fit, or a bad saved model
    │   ├── NotFittedError
    │   └── NoRollbackError        no earlier version to roll back to (HTTP 409)
    ├── ConflictError              a request that clashes with the current state (HTTP 409)
    └── MissingDependencyError     an optional extra is not installed

Each error has an ``http_status`` and a stable ``code`` so the API and the CLI
render it the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of one input record."""

    field: str
    reason: str
    index: int | None = None  # position of the record in a batch, when there is one

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "reason": self.reason}
        if self.index is not None:
            out["index"] = self.index
        return out


class ShopcastError(Exception):
    """Base class of every Shopcast error."""

    http_status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


class ConfigError(ShopcastError):
    code = "config_error"


class ValidationError(ShopcastError):
    http_status = 422
    code = "validation_error"

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["errors"] = [e.as_dict() for e in self.errors]
        return out


class MalformedInputError(ValidationError):
    http_status = 400
    code = "malformed_json"


class BatchTooLargeError(ValidationError):
    http_status = 413
    code = "too_large"


class AuthError(ShopcastError):
    http_status = 401
    code = "unauthorized"


class ForbiddenError(AuthError):
    http_status = 403
    code = "forbidden"


class RateLimitedError(AuthError):
    http_status = 429
    code = "rate_limited"

    def __init__(
        self, message: str, retry_after: float, limit: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit  # which limit was hit (name, rate, burst), for the body

    def to_dict(self) -> dict[str, Any]:
        out = {**super().to_dict(), "retry_after": round(self.retry_after, 3)}
        if self.limit is not None:
            out["limit"] = self.limit
        return out


class NotFoundError(ShopcastError):
    http_status = 404
    code = "not_found"


class DatasetNotFoundError(NotFoundError):
    code = "dataset_not_found"


class StorageError(ShopcastError):
    code = "storage_error"


class UnknownBackendError(StorageError):
    code = "unknown_backend"


class StateUnavailableError(StorageError):
    """The shared online state (Redis) cannot be reached; callers degrade, not fail."""

    http_status = 503
    code = "state_unavailable"


class StorageUnavailableError(StorageError):
    """The database cannot be reached now (restart, failover, network): the request was
    not acknowledged and can be retried after ``retry_after`` seconds (event writes are
    idempotent by ``event_id``)."""

    http_status = 503
    code = "storage_unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retry_after": round(self.retry_after, 3)}


class ModelError(ShopcastError):
    code = "model_error"


class NotFittedError(ModelError):
    code = "not_fitted"


class NoRollbackError(ModelError):
    http_status = 409
    code = "nothing_to_roll_back"


class ConflictError(ShopcastError):
    """E.g. two running experiments on one scene, promoting a stopped experiment's loser."""

    http_status = 409
    code = "conflict"


class MissingDependencyError(ShopcastError):
    code = "missing_dependency"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install the extra: pip install 'shopcast[{extra}]'"
        )
        self.package = package
        self.extra = extra
