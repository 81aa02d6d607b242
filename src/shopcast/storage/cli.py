"""``shopcast db …``: the database schema (PostgreSQL migrations with Alembic)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from shopcast.config import load_settings
from shopcast.errors import ShopcastError

app = typer.Typer(help="The database: apply schema migrations.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


@app.command("upgrade")
def upgrade(
    db: Annotated[
        str | None,
        typer.Option("--db", help="Storage URL (default: settings database_url)"),
    ] = None,
) -> None:
    """Apply pending migrations (PostgreSQL); safe to run again, and while servers run.

    Servers also migrate on start; this command lets a deployment migrate first, once.
    """
    try:
        url = load_settings(**({"database_url": db} if db else {})).database_url
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("postgresql", "postgres"):
            console.print(f"{scheme}: the schema migrates itself on open; nothing to do")
            return
        import psycopg

        from shopcast.storage._pg_migrate import create_schema
        from shopcast.storage._pg_migrate import upgrade as run_upgrade
        from shopcast.storage._postgres import PgDatabase, split_url, url_schema

        conninfo, _ = split_url(url)
        with PgDatabase.errors_of(conninfo):
            schema = url_schema(url)
            if schema is not None:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    create_schema(conn, schema)
            before, after = run_upgrade(conninfo)
    except ShopcastError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    if before == after:
        console.print(f"PostgreSQL schema at {after} (up to date)")
    else:
        console.print(f"PostgreSQL schema migrated: {before or 'none'} -> {after}")
