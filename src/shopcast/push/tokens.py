"""Short-lived signed stream tokens: a browser's ``EventSource`` cannot send an API key.

``POST /v1/users/{id}/stream-token`` (a key with the ``read`` scope) returns a token
bound to the key's tenant, that user id and an expiry (``push.stream_token_ttl_s``);
``GET /v1/users/{id}/stream?token=…`` (SSE, or the WebSocket paths) accepts it instead
of a key. The token is ``sct1.<payload>.<mac>``: ``payload`` the URL-safe base64 of
``{"t": tenant, "u": user id, "x": expiry (unix seconds)}``, ``mac`` the URL-safe
base64 HMAC-SHA256 of ``"sct1." + payload`` under the token secret (compared in
constant time). It opens that one user's stream in that tenant and nothing else.

An open stream stays authorized only as long as what opened it (``StreamAuth``): a
stream opened with a token ends when the token expires (SSE: an ``expired`` event, then
the end of the response; WebSocket: close code 4401), and one opened with an API key
ends once a re-check (every ``push.stream_recheck_s``) finds the key revoked or without
the ``read`` scope. A client reconnects with a fresh token or a valid key. Tokens are
never logged: the access log's ``token=`` and ``key=`` query values are redacted
(``privacy.logs``).

The secret is ``push.stream_token_secret``; without it a random one is created once in
``stream-token.key`` beside ``auth.keys_path`` (mode 0600), so the API processes of one
host share it; a deployment over several hosts sets the setting on all of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from shopcast.config import Settings
from shopcast.errors import AuthError, StorageError

VERSION = "sct1"
KEY_FILE = "stream-token.key"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class StreamGrant:
    tenant: str
    user_id: str
    expires_at: float


@dataclass
class StreamAuth:
    """How long an open stream stays authorized: until a token's ``expires_at`` (unix
    seconds), or while ``recheck()`` (an API key looked up again, at most every
    ``recheck_s``) says the key still may read."""

    expires_at: float | None = None
    recheck: Callable[[], bool] | None = None
    recheck_s: float = 60.0
    clock: Callable[[], float] = time.time
    _checked_at: float = field(default_factory=time.monotonic)

    def wait_s(self, heartbeat_s: float) -> float:
        """How long the stream may wait for a message before looking again."""
        if self.expires_at is None:
            return heartbeat_s
        return max(0.0, min(heartbeat_s, self.expires_at - self.clock()))

    async def ended(self) -> str | None:
        """None while the stream may go on, else why it ends (the key check runs in a
        worker thread: the key store may be a database)."""
        if self.expires_at is not None and self.clock() >= self.expires_at:
            return "the stream token has expired; ask for a new one"
        if self.recheck is not None and time.monotonic() - self._checked_at >= self.recheck_s:
            self._checked_at = time.monotonic()
            if not await anyio.to_thread.run_sync(self.recheck):
                return "the API key was revoked or may no longer read"
        return None


class StreamTokens:
    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("a stream token secret needs at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamTokens:
        configured = settings.push.stream_token_secret
        if configured is not None:
            secret = configured.get_secret_value().encode()
        else:
            secret = _key_file(Path(settings.auth.keys_path).parent / KEY_FILE)
        return cls(secret, settings.push.stream_token_ttl_s)

    def _mac(self, signed: str) -> str:
        return _b64(hmac.new(self._secret, signed.encode(), hashlib.sha256).digest())

    def issue(self, tenant: str, user_id: str) -> tuple[str, float]:
        """A token for ``user_id``'s stream in ``tenant``, and when it expires."""
        expires = int(self.clock() + self.ttl_s)
        payload = _b64(json.dumps({"t": tenant, "u": user_id, "x": expires}).encode())
        signed = f"{VERSION}.{payload}"
        return f"{signed}.{self._mac(signed)}", float(expires)

    def verify(self, token: str, user_id: str) -> StreamGrant:
        """The grant of a valid token for ``user_id``'s stream; ``AuthError`` (401)
        when it is malformed, forged, expired or for another user."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise AuthError("the stream token is malformed")
        signed = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._mac(signed), parts[2]):
            raise AuthError("the stream token is invalid")
        try:
            doc = json.loads(_unb64(parts[1]))
            grant = StreamGrant(str(doc["t"]), str(doc["u"]), float(doc["x"]))
        except (ValueError, KeyError, TypeError):
            raise AuthError("the stream token is malformed") from None
        if grant.expires_at <= self.clock():
            raise AuthError("the stream token has expired; ask for a new one")
        if not hmac.compare_digest(grant.user_id.encode(), user_id.encode()):
            raise AuthError("the stream token is for another user")
        return grant


def _key_file(path: Path) -> bytes:
    """The host's stream token secret, created once (first writer wins)."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise StorageError(f"{path}: not a stream token key ({exc})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic; fails when another process created it first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def stream_tokens(state: Any, settings: Settings) -> StreamTokens:
    """The app's ``StreamTokens`` (``app.state.stream_tokens``), made on first use."""
    tokens: StreamTokens | None = getattr(state, "stream_tokens", None)
    if tokens is None:
        tokens = StreamTokens.from_settings(settings)
        state.stream_tokens = tokens
    return tokens
