"""``shopcast evaluate q1|q2|q3``: run a benchmark and write JSON, Markdown and plots.

Bad input (unknown benchmark, model or peer, missing data) prints one line on stderr
and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from shopcast.errors import ShopcastError

__all__ = ["evaluate"]

console = Console()
err_console = Console(stderr=True)


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    if value.strip().lower() in ("", "none"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def _folds(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v.strip().removeprefix("u")) for v in value.split(",") if v.strip()]
    except ValueError:
        from shopcast.errors import ValidationError

        raise ValidationError(f"--folds takes fold numbers such as 1,2; got {value!r}") from None


def evaluate(
    benchmark: Annotated[
        str,
        typer.Argument(
            help="q1 (MovieLens ratings), q2 (Amazon Beauty "
            "next item) or q3 (Online Retail next month)"
        ),
    ],
    models: Annotated[
        str | None,
        typer.Option(help="Shopcast models, comma-separated (default: all that fit the task)"),
    ] = None,
    peers: Annotated[
        str | None,
        typer.Option(help="Peers, comma-separated, or 'none' (default: the benchmark's peers)"),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder or file (default: <data_path>/<benchmark's dataset folder>)"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Result JSON (default: <reports_dir>/<benchmark>.json, reports_dir from the "
            "settings: bench/results/evaluate); .md and "
            ".png are written next to it"
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Subsample the data and skip tuning (smoke run)")
    ] = False,
    tune: Annotated[
        bool, typer.Option("--tune/--no-tune", help="Tune hyperparameters on validation")
    ] = True,
    cutoff: Annotated[
        str | None, typer.Option(help="Q3 test cutoff date (default 2011-11-01)")
    ] = None,
    folds: Annotated[
        str | None,
        typer.Option(help="Q1: MovieLens folds to run, e.g. 1 or 1,2 (default: all five)"),
    ] = None,
) -> None:
    """Run a benchmark of BENCHMARKS.md with Shopcast's models and the peers side by side."""
    try:
        _evaluate(benchmark, models, peers, data, out, quick, tune, cutoff, folds)
    except ShopcastError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from None


def _evaluate(
    benchmark: str,
    models: str | None,
    peers: str | None,
    data: Path | None,
    out: Path | None,
    quick: bool,
    tune: bool,
    cutoff: str | None,
    folds: str | None = None,
) -> None:
    from shopcast.config import load_settings
    from shopcast.errors import NotFoundError
    from shopcast.evaluation.benchmarks import BENCHMARKS, RunOptions, run_benchmark
    from shopcast.evaluation.harness import Tracker
    from shopcast.evaluation.report import markdown_table, write_report

    bench = BENCHMARKS.get(benchmark.lower())
    if bench is None:
        raise NotFoundError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    settings = load_settings()
    if data is None:
        data = settings.data_path / bench.folder
    out = out or settings.reports_dir / f"{bench.name}{'-quick' if quick else ''}.json"
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    opts = RunOptions(
        data=data,
        models=_names(models),
        peers=_names(peers),
        quick=quick,
        tune=tune and not quick,
        cutoff=cutoff,
        folds=_folds(folds),
        tracker=Tracker(progress),
    )
    with progress:
        result = run_benchmark(bench.name, opts)
    paths = write_report(result, out)
    console.print(f"[bold]{bench.name.upper()}[/] — {escape(str(result['dataset']))}")
    console.print(markdown_table(result), markup=False, highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths))
