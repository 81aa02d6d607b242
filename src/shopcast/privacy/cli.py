"""``shopcast keys …`` (API keys) and ``shopcast privacy …`` (keys for encryption and
pseudonyms, rotation, retention, erasure)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shopcast.config import Settings, load_settings
from shopcast.errors import ConfigError, ShopcastError
from shopcast.privacy.apikeys import SCOPES, open_key_store
from shopcast.privacy.tenants import DEFAULT_TENANT, tenant_settings

P = ParamSpec("P")
R = TypeVar("R")
console = Console()
err_console = Console(stderr=True)


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """A ShopcastError (ConfigError included) is one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ShopcastError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


keys_app = typer.Typer(
    help="API keys: create (the secret is shown once), list, revoke.", no_args_is_help=True
)
privacy_app = typer.Typer(
    help="Privacy operations: keys, rotation, retention, erasure.", no_args_is_help=True
)

TenantOpt = Annotated[str, typer.Option("--tenant", help="The tenant (its own store and models)")]


def _settings(tenant: str = DEFAULT_TENANT) -> Settings:
    return tenant_settings(load_settings(), tenant)


@keys_app.command("create")
@friendly
def keys_create(
    scope: Annotated[
        list[str], typer.Option("--scope", help=f"One of {', '.join(SCOPES)} (repeatable)")
    ],
    tenant: TenantOpt = DEFAULT_TENANT,
    name: Annotated[str, typer.Option("--name", help="A label, e.g. 'web shop'")] = "",
) -> None:
    """Create a key; prints its secret once (only a hash is stored)."""
    store = open_key_store(load_settings())
    try:
        key, token = store.create(scope, tenant=tenant, name=name)
    finally:
        store.close()
    console.print(f"key [bold]{key.key_id}[/] ({', '.join(sorted(key.scopes))}; tenant {tenant})")
    console.print("secret (shown once, keep it safe):")
    print(token)


@keys_app.command("list")
@friendly
def keys_list() -> None:
    """Every key (never its secret), revoked ones too."""
    store = open_key_store(load_settings())
    try:
        found = store.list()
    finally:
        store.close()
    table = Table(title="API keys")
    for col in ("key id", "scopes", "tenant", "name", "created", "revoked"):
        table.add_column(col)
    for k in found:
        table.add_row(
            k.key_id,
            ",".join(sorted(k.scopes)),
            k.tenant,
            k.name,
            _when(k.created_at),
            _when(k.revoked_at) if k.revoked_at else "",
        )
    console.print(table)


@keys_app.command("import")
@friendly
def keys_import(
    path: Annotated[
        Path | None,
        typer.Argument(help="A SQLite key file (default: auth.keys_path)"),
    ] = None,
) -> None:
    """Copy the keys of a SQLite key file into PostgreSQL (database_url); keys already
    there are kept as they are. Only hashes move: no secret is needed or shown."""
    from shopcast.privacy._apikeys_pg import PgKeyStore
    from shopcast.privacy.apikeys import sqlite_rows

    settings = load_settings()
    source = path or Path(settings.auth.keys_path)
    if not source.is_file():
        raise ConfigError(f"no key file at {str(source)!r}")
    store = open_key_store(settings)  # imports by itself into an empty table
    try:
        if not isinstance(store, PgKeyStore):
            raise ConfigError("database_url: keys are imported into a postgresql:// database")
        added = store.import_rows(sqlite_rows(source))
        known = len(store.list())
    finally:
        store.close()
    console.print(f"{added} keys imported from {source} ({known} keys in PostgreSQL)")


@keys_app.command("revoke")
@friendly
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (sck_<id>_…)")]) -> None:
    """Revoke a key at once: servers see it at their next check with a SQLite key file
    or a redis:// state.url (announced there), else within auth.key_cache_ttl_s."""
    from shopcast.api.keycache import announce_revoked

    settings = load_settings()
    store = open_key_store(settings)
    try:
        store.revoke(key_id)
    finally:
        store.close()
    announce_revoked(settings, key_id)
    console.print(f"key {key_id} revoked")


def _when(ts: float | None) -> str:
    import time

    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


@privacy_app.command("gen-key")
@friendly
def gen_key() -> None:
    """Print a new random key (base64 of 32 bytes): for privacy.encryption_keys, or as
    privacy.hmac_key."""
    from shopcast.privacy.crypto import new_key

    print(new_key())


@privacy_app.command("rotate-key")
@friendly
def rotate_key(tenant: TenantOpt = DEFAULT_TENANT) -> None:
    """Reseal every user record with privacy.active_key (then the old key can go)."""
    from shopcast.privacy.crypto import EncryptedUsers, open_private_store

    settings = _settings(tenant)
    store = open_private_store(settings)
    try:
        users = store.users
        if not isinstance(users, EncryptedUsers):
            raise ConfigError("no encryption key is configured (privacy.encryption_keys)")
        counts = users.rotate()
    finally:
        store.close()
    _print_json({"active_key": users.cipher.active, **counts})


@privacy_app.command("retention")
@friendly
def retention(
    apply: Annotated[bool, typer.Option("--apply", help="Delete (default: only count)")] = False,
    days: Annotated[
        float | None, typer.Option(help="Override privacy.retention_days", min=0.0)
    ] = None,
    tenant: TenantOpt = DEFAULT_TENANT,
) -> None:
    """Delete (with --apply) the events older than the retention period."""
    from shopcast.privacy.retention import apply_retention, expired
    from shopcast.storage import open_store

    settings = _settings(tenant)
    period = days if days is not None else settings.privacy.retention_days
    if period is None:
        raise ConfigError("no retention period: set privacy.retention_days or pass --days")
    store = open_store(settings.database_url)
    try:
        n = apply_retention(store, period) if apply else expired(store, period)
    finally:
        store.close()
    _print_json({"retention_days": period, "applied": apply, "events": n})


@privacy_app.command("erase")
@friendly
def erase(
    user_id: Annotated[str, typer.Argument(help="The user's id, as the shop knows it")],
    tenant: TenantOpt = DEFAULT_TENANT,
) -> None:
    """Erase a user: events, record, the user's influence on the models (an unlearned
    model is promoted; running servers follow), and schedule a retrain. Prints a report.

    Running servers drop the user's live session and profile at their next start; on a
    running service prefer DELETE /v1/users/{id}.
    """
    from shopcast.privacy.crypto import open_private_store
    from shopcast.privacy.erasure import erase_user
    from shopcast.privacy.pseudonym import Pseudonymizer

    settings = _settings(tenant)
    stored = Pseudonymizer.from_settings(settings.privacy, tenant).lookup(user_id)
    store = open_private_store(settings)
    try:
        report = erase_user(store, stored, settings)
    finally:
        store.close()
    _print_json({"user_id": user_id, **report})
