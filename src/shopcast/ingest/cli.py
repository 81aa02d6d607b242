"""``shopcast import …``: events, items and users from files, or a known dataset.

Bad input (missing file, unknown format, bad mapping, missing dataset) prints one
line on stderr and exits with code 2; rejected rows are counted in the summary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from shopcast.config import load_settings
from shopcast.errors import ShopcastError, ValidationError
from shopcast.ingest.datasets import DATASETS, load_dataset
from shopcast.ingest.files import read_events, read_items, read_users
from shopcast.ingest.importer import (
    ImportSummary,
    import_events,
    import_frames,
    import_items,
    import_users,
)
from shopcast.privacy.crypto import open_private_store
from shopcast.privacy.pseudonym import Pseudonymizer
from shopcast.storage import Store

__all__ = ["app"]

app = typer.Typer(
    help="Import events, items, users (CSV, CSV.gz, JSONL, Parquet) or a known dataset.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

FileArg = Annotated[Path, typer.Argument(help="CSV, CSV.gz, JSONL or Parquet file")]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="csv, jsonl, parquet or xlsx (default: from the extension)"),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="SRC=FIELD: read column SRC as FIELD (repeatable); SRC= drops the column; "
        "FIELD may be attributes.KEY (items, users) or context.KEY (events)",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="FIELD=VALUE: a constant column, e.g. type=purchase (repeatable)"),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Storage URL (default: settings database_url)", show_default=False),
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """A ``ShopcastError`` becomes one line on stderr and exit code 2."""
    try:
        yield
    except ShopcastError as exc:
        err_console.print(
            f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from None


@contextmanager
def _open(db: str | None) -> Iterator[Store]:
    """The store, with field encryption of user records as configured."""
    settings = load_settings()
    if db is not None:
        settings = settings.model_copy(update={"database_url": db})
    store = open_private_store(settings)
    try:
        yield store
    finally:
        store.close()


def _pseudonyms() -> Pseudonymizer:
    """Raw user ids of imported files -> stored ids (``privacy.pseudonymize``)."""
    return Pseudonymizer.from_settings(load_settings().privacy)


def _pairs(values: list[str] | None, option: str, *, split_last: bool) -> dict[str, str]:
    """``["A=B", …]`` as a dict; ``split_last`` splits at the last ``=`` (``--map``)."""
    out: dict[str, str] = {}
    for text in values or []:
        key, sep, value = text.rpartition("=") if split_last else text.partition("=")
        if not sep or not key:
            what = "SRC=FIELD" if split_last else "FIELD=VALUE"
            raise ValidationError(f"{option} {text!r}: expected {what}")
        out[key] = value
    return out


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )


def _summary_table(title: str, summary: ImportSummary) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("rows read", f"{summary.rows_read:,}")
    table.add_row("accepted", f"{summary.accepted:,}")
    table.add_row("duplicates", f"{summary.duplicates:,}")
    table.add_row("rejected", f"{summary.rejected_total:,}")
    for reason, n in summary.rejected.items():
        table.add_row(f"  {reason}", f"{n:,}")
    if summary.items:
        table.add_row("items upserted", f"{summary.items:,}")
    if summary.users:
        table.add_row("users upserted", f"{summary.users:,}")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    table.add_row("rows/s", f"{summary.rows_per_s:,.0f}")
    return table


@app.command()
def events(
    file: FileArg,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    constants: SetOpt = None,
    db: DbOpt = None,
) -> None:
    """Import events; rows are checked with the same rules as the API."""
    with _user_errors():
        frame = read_events(
            file,
            fmt=fmt,
            mapping=_pairs(mapping, "--map", split_last=True),
            constants=_pairs(constants, "--set", split_last=False),
        )
        frame = _pseudonyms().frame(frame)
        with _open(db) as store, _progress_bar() as bar:
            task = bar.add_task("events", total=frame.height)
            summary = import_events(store, frame, lambda done: bar.update(task, completed=done))
    console.print(_summary_table(f"events from {file}", summary))


@app.command()
def items(
    file: FileArg,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    constants: SetOpt = None,
    db: DbOpt = None,
) -> None:
    """Import catalog items (a row with a known item_id replaces it)."""
    with _user_errors():
        with err_console.status(f"reading {file}"):
            records = read_items(
                file,
                fmt=fmt,
                mapping=_pairs(mapping, "--map", split_last=True),
                constants=_pairs(constants, "--set", split_last=False),
            )
        with _open(db) as store:
            summary = import_items(store, records.records, rejected=records.rejected)
    console.print(_summary_table(f"items from {file}", summary))


@app.command()
def users(
    file: FileArg,
    fmt: FormatOpt = None,
    mapping: MapOpt = None,
    constants: SetOpt = None,
    db: DbOpt = None,
) -> None:
    """Import user profiles (a row with a known user_id replaces it)."""
    with _user_errors():
        with err_console.status(f"reading {file}"):
            records = read_users(
                file,
                fmt=fmt,
                mapping=_pairs(mapping, "--map", split_last=True),
                constants=_pairs(constants, "--set", split_last=False),
            )
        users = [_pseudonyms().user_record(u) for u in records.records]
        with _open(db) as store:
            summary = import_users(store, users, rejected=records.rejected)
    console.print(_summary_table(f"users from {file}", summary))


@app.command()
def dataset(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(DATASETS)}")],
    path: Annotated[
        Path | None,
        typer.Option("--path", help="The dataset's folder or file (default: under the data path)"),
    ] = None,
    db: DbOpt = None,
) -> None:
    """Import a known public dataset: its events, items and users."""
    with _user_errors():
        started = time.perf_counter()
        with err_console.status(f"reading {name}"):
            frames = _pseudonyms().dataset(load_dataset(name, path=path))
        load_seconds = time.perf_counter() - started
        with _open(db) as store, _progress_bar() as bar:
            task = bar.add_task(name, total=frames.events.height)
            summary = import_frames(store, frames, lambda done: bar.update(task, completed=done))
    summary.seconds += load_seconds
    summary.timings["load"] = load_seconds
    console.print(_summary_table(f"dataset {name}", summary))
