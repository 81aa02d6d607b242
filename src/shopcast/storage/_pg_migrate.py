"""Schema migrations of the PostgreSQL backend (Alembic, scripts in ``pg_migrations/``).

``ensure_schema`` runs on every open: it reads the schema's revision with one query and
runs Alembic only when the schema is behind (first open of an empty schema, or after an
upgrade of Shopcast). Several processes opening at once are serialized by an advisory
lock per schema, so each migration runs once. ``shopcast db upgrade`` calls ``upgrade``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors

from shopcast.errors import StorageError

#: The newest revision this version of Shopcast knows (tests check it is Alembic's head).
HEAD = "0004"
#: Every revision, oldest first.
REVISIONS = ("0001", "0002", "0003", "0004")
SCRIPT_LOCATION = Path(__file__).parent / "pg_migrations"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('shopcast-migrate:' || current_schema()))"


def revision(conn: Any) -> str | None:
    """The schema's Alembic revision, or None when it has never been migrated.

    ``conn`` is a psycopg connection (plain, or the one under a SQLAlchemy connection)."""
    row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return None
    found = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if found is None else str(found[0])


def create_schema(conn: psycopg.Connection[Any], name: str) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` (a concurrent creator winning the race is fine)."""
    with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')


def ensure_schema(conninfo: str, create: str | None = None) -> None:
    """Bring the schema to ``HEAD`` (creating schema ``create`` first when given); refuse
    one written by a newer Shopcast."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        if create is not None:
            create_schema(conn, create)
        current = revision(conn)
    if current == HEAD:
        return
    upgrade(conninfo)


def upgrade(conninfo: str, target: str = "head") -> tuple[str | None, str]:
    """Run the pending migrations up to ``target`` in one transaction; returns
    (before, after)."""
    import sqlalchemy
    import sqlalchemy.exc
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo, connect_timeout=10),
        poolclass=NullPool,
    )
    try:
        return _upgrade(engine, target)
    except sqlalchemy.exc.DBAPIError as exc:  # psycopg's own error, for errors_of to map
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from None
        raise
    finally:
        engine.dispose()


def _upgrade(engine: Any, target: str) -> tuple[str | None, str]:
    from alembic import command
    from alembic.config import Config

    with engine.begin() as connection:
        connection.exec_driver_sql(_LOCK)  # released at commit
        before = revision(connection.connection.driver_connection)
        if before is not None and before not in REVISIONS:
            raise StorageError(
                f"the PostgreSQL schema is at revision {before!r}, which this shopcast "
                f"does not know (newest known: {HEAD}); upgrade shopcast"
            )
        config = Config()
        config.set_main_option("script_location", str(SCRIPT_LOCATION))
        config.attributes["connection"] = connection
        command.upgrade(config, target)
        after = revision(connection.connection.driver_connection)
    return before, after or HEAD
