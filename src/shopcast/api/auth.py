"""Access control: API keys with scopes, per-key rate limits, a tenant per key.

``AuthMiddleware`` runs before routing and before the body is read. With
``auth.enabled`` every request but the open ones (``/v1/health``, and the OpenAPI
docs unless ``auth.open_docs`` is off) needs a key in ``Authorization: Bearer <key>``
or ``X-API-Key: <key>``: 401 when it is missing or invalid, 403 when the key lacks the
scope the endpoint needs (``required_scope``), 429 with ``Retry-After`` when the key is
over its token bucket. The key's tenant picks the store and engine the routes use
(``TenantPool``); without auth everything is the ``default`` tenant.

Scopes of endpoints (``required_scope``): ``POST /v1/events`` needs ``ingest``;
reads (GET, and ``POST /v1/cart/recommendations``) need ``read``, except personal data
(user records, profiles, segment members), models, privacy, keys and targeting, which
need ``admin``; every other write needs ``admin``. ``admin`` holds every scope.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopcast.api.ingest import GroupCommit
from shopcast.api.keycache import MISS, CachedKeys, RevocationListener
from shopcast.api.ratelimit import RateLimiter, open_limiter
from shopcast.api.ratelimit import TokenBuckets as TokenBuckets  # re-exported
from shopcast.config import Settings
from shopcast.errors import AuthError, ForbiddenError, RateLimitedError, StorageUnavailableError
from shopcast.privacy.apikeys import ApiKey, ApiKeyStore, KeyStore, open_key_store
from shopcast.privacy.apikeys import Scope as KeyScope
from shopcast.privacy.crypto import open_private_store
from shopcast.privacy.pseudonym import Pseudonymizer
from shopcast.privacy.tenants import DEFAULT_TENANT, tenant_settings
from shopcast.push.tokens import StreamAuth, StreamGrant, stream_tokens
from shopcast.serving.engine import Engine
from shopcast.storage import AppendResult, Store

DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PATHS = frozenset({"/v1/health", "/dashboard", "/dashboard/", "/demo/shop"})
#: The web UI's static assets (no data in them; the pages call the API with a key).
OPEN_PREFIXES = ("/ui/static/",)
#: A user's live stream, which also opens with ``?token=`` (``shopcast.push.tokens``).
STREAM_PATH = re.compile(r"^/v1/users/(?P<user>[^/]+)/stream(/ws)?/?$")
_READ = frozenset({"GET", "HEAD"})
#: (methods or None for all, path pattern, scope), first match wins.
RULES: tuple[tuple[frozenset[str] | None, re.Pattern[str], KeyScope], ...] = (
    (frozenset({"POST"}), re.compile(r"^/v1/events/?$"), "ingest"),
    (frozenset({"POST"}), re.compile(r"^/v1/push/[^/]+/(open|click)/?$"), "ingest"),
    (None, re.compile(r"^/v1/push/(triggers|promotions|deliveries|dead-letters)"), "admin"),
    (_READ, re.compile(r"^/v1/users/[^/]+/push/?$"), "admin"),
    (frozenset({"POST"}), re.compile(r"^/v1/cart/recommendations/?$"), "read"),
    (frozenset({"POST"}), re.compile(r"^/v1/users/[^/]+/stream-token/?$"), "read"),
    (None, re.compile(r"^/v1/(models|privacy|keys|admin|target|experiments)"), "admin"),
    (_READ, re.compile(r"^/v1/users/[^/]+/?$"), "admin"),
    (_READ, re.compile(r"^/v1/users/[^/]+/profile/?$"), "admin"),
    (_READ, re.compile(r"^/v1/segments/[^/]+/users/?$"), "admin"),
)


def required_scope(method: str, path: str, *, open_docs: bool = True) -> KeyScope | None:
    """The scope a request needs; None for an open endpoint."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or (open_docs and path in DOC_PATHS):
        return None
    for methods, pattern, scope in RULES:
        if (methods is None or method in methods) and pattern.match(path):
            return scope
    return "read" if method in _READ else "admin"


@dataclass
class Tenant:
    """What a request of one tenant works with."""

    name: str
    settings: Settings
    store: Store
    engine: Engine
    pseudonyms: Pseudonymizer
    owned: bool = True  # opened here (closed with the pool)
    #: The group committer of its event posts (``api.ingest``; made on the first post).
    ingest: GroupCommit[AppendResult] | None = None
    #: The thread its recommendations run on (``routes.recommend._off_loop``).
    recommender: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self.recommender is not None:
            self.recommender.shutdown(wait=False)
            self.recommender = None
        if self.owned:
            self.engine.close()
            self.store.close()


def open_tenant(settings: Settings, name: str) -> Tenant:
    """Open a tenant's store and engine (loads its model: may take seconds)."""
    own = tenant_settings(settings, name)
    store = open_private_store(own)
    try:
        engine = Engine.open(store, own)
    except BaseException:
        store.close()
        raise
    from shopcast.online.tenants import register

    register(settings, name)  # shopcast worker consumes its stream from now on
    return Tenant(name, own, store, engine, Pseudonymizer.from_settings(own.privacy, name))


class TenantPool:
    """The open tenants; others are opened on their first request."""

    def __init__(self, settings: Settings, default: Tenant) -> None:
        self.settings = settings
        self._open: dict[str, Tenant] = {default.name: default}
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_open: list[Callable[[Tenant], object]] = []  # e.g. the push service

    def get(self, name: str) -> Tenant:
        """An open tenant (``ensure`` opened it for this request)."""
        return self._open[name]

    async def ensure(self, name: str) -> Tenant:
        tenant = self._open.get(name)
        if tenant is not None:
            return tenant
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            tenant = self._open.get(name)
            if tenant is None:
                tenant = await run_in_threadpool(open_tenant, self.settings, name)
                self._open[name] = tenant
                for hook in self.on_open:
                    hook(tenant)
        return tenant

    def tenants(self) -> list[Tenant]:
        return list(self._open.values())

    def close(self) -> None:
        for tenant in self._open.values():
            tenant.close()
        self._open.clear()


def tenant_name(scope: Scope) -> str:
    state = scope.get("state") or {}
    name = state.get("shopcast_tenant", DEFAULT_TENANT)
    return str(name)


def _token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


class AuthMiddleware:
    """See the module docstring. ``keys`` defaults to ``open_key_store`` (PostgreSQL with a
    ``postgresql://`` database, else ``auth.keys_path``); the limiter to ``open_limiter``
    (Redis with a ``redis://`` ``state.url``, else this process)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        keys: ApiKeyStore | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self._keys = keys
        self._own_keys = keys is None  # closed at shutdown only when opened here
        self._own_limiter = limiter is None
        self.limiter = limiter if limiter is not None else open_limiter(settings)
        self._offload_keys: bool | None = None
        self._cache: CachedKeys | None = None
        self._listener: RevocationListener | None = None

    @property
    def keys(self) -> ApiKeyStore:
        if self._keys is None:
            self._keys = open_key_store(self.settings)
        return self._keys

    def close(self) -> None:
        """Close the key store and the limiter opened here (reopened on the next request)."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._cache = None
        if self._own_keys:
            keys, self._keys = self._keys, None
            if keys is not None:
                keys.close()
        if self._own_limiter and self.limiter is not None:
            self.limiter.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # close what was opened when the app stops

            async def closing_send(message: Message) -> None:
                if message["type"].startswith("lifespan.shutdown."):
                    self.close()
                await send(message)

            await self.app(scope, receive, closing_send)
            return
        if scope["type"] == "websocket" and self.settings.auth.enabled:
            # the stream route checks the key itself (?key=): with this process's store
            scope["state"] = {**(scope.get("state") or {}), "shopcast_keys": self.keys}
        if scope["type"] != "http" or not self.settings.auth.enabled:
            await self.app(scope, receive, send)
            return
        try:
            grant = self._stream_grant(scope)  # a browser's stream: ?token=, no key
            key = None if grant is not None else await self._authorize(scope)
        except (AuthError, StorageUnavailableError) as exc:  # key store down: 503, retry
            await _refuse(exc, scope, receive, send)
            return
        tenant = grant.tenant if grant is not None else key.tenant if key is not None else None
        if tenant is not None:
            scope["state"] = {**(scope.get("state") or {}), "shopcast_tenant": tenant}
            if STREAM_PATH.match(scope["path"]):  # kept authorized while it stays open
                scope["state"]["shopcast_stream_auth"] = self.stream_auth(
                    scope["app"].state, grant, _token(scope["headers"])
                )
            pool: TenantPool | None = getattr(scope["app"].state, "tenants", None)
            if pool is not None:
                await pool.ensure(tenant)
        await self.app(scope, receive, send)

    @property
    def cache(self) -> CachedKeys:
        """The key checks of requests, cached (``api.keycache``); revocations announced
        on Redis are followed from the first request on."""
        if self._cache is None:
            auth = self.settings.auth
            self._cache = CachedKeys(
                self.keys, ttl_s=auth.key_cache_ttl_s, max_entries=auth.key_cache_size
            )
            self._listener = RevocationListener(self.settings).start()
        return self._cache

    def _remote_keys(self) -> bool:
        """Whether looking a key up may wait on the network (PostgreSQL keys)."""
        if self._offload_keys is None:
            self._offload_keys = not isinstance(self.keys, KeyStore)
        return self._offload_keys

    def _remote_limit(self) -> bool:
        """Whether taking a token may wait on the network (Redis rate limits)."""
        return self.limiter is not None and not isinstance(self.limiter, TokenBuckets)

    def stream_auth(
        self, app_state: Any, grant: StreamGrant | None, token: str | None
    ) -> StreamAuth:
        """What keeps an open stream authorized: the token's expiry, or the key re-checked."""
        if grant is not None:
            clock = stream_tokens(app_state, self.settings).clock
            return StreamAuth(expires_at=grant.expires_at, clock=clock)
        return StreamAuth(
            recheck=lambda: self.still_reads(token or ""),
            recheck_s=self.settings.push.stream_recheck_s,
        )

    def still_reads(self, token: str) -> bool:
        """Whether the key may still read; a key store that cannot be reached keeps an
        open stream (it was authorized; the next successful check decides)."""
        try:
            key = self.keys.verify(token)
        except StorageUnavailableError:
            return True
        return key is not None and key.allows("read")

    def _stream_grant(self, scope: Scope) -> StreamGrant | None:
        """The grant of a stream token (``GET /v1/users/{id}/stream?token=``), if any."""
        if scope["method"] not in _READ:
            return None
        match = STREAM_PATH.match(scope["path"])
        if match is None:
            return None
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.get("token")
        if not token:
            return None
        return stream_tokens(scope["app"].state, self.settings).verify(
            token, unquote(match["user"])
        )

    async def _authorize(self, scope: Scope) -> ApiKey | None:
        """The request's key (None for an open endpoint); raises the refusal. Only a
        cache miss on a remote key store, or a Redis rate limit, leaves the event loop."""
        needed = required_scope(
            scope["method"], scope["path"], open_docs=self.settings.auth.open_docs
        )
        if needed is None:
            return None
        token = _token(scope["headers"])
        if token is None:
            raise AuthError("an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key'")
        cache = self.cache
        key = cache.cached(token)
        if key is MISS:
            if self._remote_keys():  # a database round trip: off the event loop
                key = await run_in_threadpool(cache.verify, token)
            else:
                key = cache.verify(token)
        if key is None:
            raise AuthError("the API key is invalid or revoked")
        if not key.allows(needed):
            raise ForbiddenError(
                f"this key's scopes ({', '.join(sorted(key.scopes))}) do not include {needed!r}"
            )
        if self.limiter is not None:
            if self._remote_limit():
                await run_in_threadpool(self._take, key)
            else:
                self._take(key)
        return key  # type: ignore[no-any-return]

    def _take(self, key: ApiKey) -> None:
        """One token of the key's bucket; ``RateLimitedError`` when it is empty."""
        assert self.limiter is not None
        wait = self.limiter.take(key.key_id, key.tenant)
        if wait > 0:
            limit = {
                "name": "auth.rate_limit",
                "per": "api_key",
                "key_id": key.key_id,
                "rate_per_s": self.limiter.rate,
                "burst": int(self.limiter.burst),
            }
            raise RateLimitedError(
                f"over this key's rate limit (auth.rate_limit: {self.limiter.rate:g}/s, "
                f"burst {int(self.limiter.burst)}); retry after {wait:.3f} s",
                wait,
                limit,
            )


async def _refuse(
    exc: AuthError | StorageUnavailableError, scope: Scope, receive: Receive, send: Send
) -> None:
    headers: dict[str, str] = {}
    if isinstance(exc, (RateLimitedError, StorageUnavailableError)):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif type(exc) is AuthError:
        headers["WWW-Authenticate"] = 'Bearer realm="shopcast"'
    response = JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)
    await response(scope, receive, send)


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
}


def document_security(app: FastAPI, settings: Settings) -> None:
    """Describe the key schemes and the 401/403/429 answers in the OpenAPI schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        if settings.auth.enabled:
            components = schema.setdefault("components", {})
            components["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema.get("paths", {}).items():
                for method, op in operations.items():
                    if required_scope(method.upper(), path) is None:
                        continue
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
                    for status, what in (
                        ("401", "Missing or invalid API key"),
                        ("403", "The key lacks the scope this endpoint needs"),
                        ("429", "Over the key's rate limit (see Retry-After)"),
                    ):
                        op.setdefault("responses", {}).setdefault(
                            status,
                            {
                                "description": what,
                                "content": {"application/json": {"schema": _ERROR_SCHEMA}},
                            },
                        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
