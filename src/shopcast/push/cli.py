"""``shopcast push …``: replay a dataset through the triggers (``simulate``), run the
scheduler as its own process (``run``), and show the metrics (``metrics``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shopcast.config import load_settings
from shopcast.privacy.cli import friendly

app = typer.Typer(
    help="Push: replay a dataset through the triggers, run the scheduler, metrics.",
    no_args_is_help=True,
)
console = Console()
if not console.is_terminal:  # wide enough for the tables in logs and pipes
    console = Console(width=150)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def report_table(report: dict[str, Any]) -> Table:
    table = Table(title="Push replay: per trigger")
    for col in (
        "trigger",
        "decisions",
        "pushes",
        "holdout",
        "deferred",
        "suppressed",
        "followed by purchase",
        "rate",
        "holdout rate",
        "lift [95% CI]",
    ):
        table.add_column(col, justify="left" if col == "trigger" else "right")
    for r in report["triggers"]:
        lift = "-"
        if r["lift"] is not None:
            lo, hi = r["ci95"]
            lift = f"{100 * r['lift']:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        table.add_row(
            r["trigger"],
            str(r["decisions"]),
            str(r["pushes"]),
            str(r["holdout"]),
            str(r["deferred"]),
            str(sum(r["suppressed"].values())),
            str(r["followed_by_purchase"]),
            _pct(r["purchase_rate"]),
            _pct(r["holdout_rate"]),
            lift,
        )
    return table


def rules_table(report: dict[str, Any]) -> Table:
    rules = sorted(report["suppressed"], key=lambda k: -report["suppressed"][k])
    table = Table(title="Suppressed per policy rule")
    table.add_column("trigger")
    for rule in rules:
        table.add_column(rule, justify="right")
    for r in report["triggers"]:
        table.add_row(r["trigger"], *(str(r["suppressed"].get(rule, 0)) for rule in rules))
    table.add_row("all", *(str(report["suppressed"][rule]) for rule in rules), style="bold")
    return table


@app.command("simulate")
@friendly
def simulate(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data root ($SHOPCAST_DATA), the dataset folder or file"),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Which dataset (a log with purchases)")] = "taobao",
    timezone: Annotated[
        str, typer.Option(help="The shoppers' time zone (quiet hours)")
    ] = "Asia/Shanghai",
    output: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here")
    ] = None,
) -> None:
    """Replay a real event log through the push triggers and policy (settings: the
    [push] section of shopcast.toml) and print pushes per trigger, suppressions per
    policy rule and pushes followed by a purchase of a pushed item."""
    from shopcast.ingest.datasets import DATASETS, load_dataset
    from shopcast.push.replay import events_from_frame, replay

    settings = load_settings()
    root = data if data is not None else settings.data_path
    spec = DATASETS.get(dataset)
    if spec is not None and (root / spec.folder).exists():
        frames = load_dataset(dataset, data_path=root)
    else:
        frames = load_dataset(dataset, path=root)
    quiet = settings.push.quiet_hours.model_copy(update={"default_timezone": timezone})
    settings = settings.model_copy(
        update={"push": settings.push.model_copy(update={"quiet_hours": quiet})}
    )
    console.print(f"loading {frames.events.height:,} events of {dataset} …")
    events = events_from_frame(frames.events)
    with Progress(
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("replay", total=len(events))
        result = replay(
            events, frames.items, settings, progress=lambda n: bar.update(task, completed=n)
        )
    report = {"dataset": dataset, **result.as_dict()}
    console.print(
        f"{report['events']:,} events, {report['users']:,} users, "
        f"{(report['last_ts'] - report['first_ts']) / 86400:.1f} days, "
        f"replayed in {report['seconds']:.1f} s; every user assumed opted in to push; "
        "purchases are what the log says (a push changes nothing)"
    )
    console.print(report_table(report))
    console.print(rules_table(report))
    t = report["totals"]
    console.print(
        f"total: {t['sent']:,} pushes, {t['holdout']:,} held out, "
        f"{sum(report['suppressed'].values()):,} suppressed, {t['conversions']:,} followed "
        "by a purchase of a pushed item"
    )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
        console.print(f"report written to {output}")


@app.command("run")
@friendly
def run(
    interval: Annotated[
        float | None, typer.Option(min=0.01, help="Seconds between passes (push.tick_interval_s)")
    ] = None,
    once: Annotated[bool, typer.Option(help="One pass, then exit")] = False,
) -> None:
    """The push scheduler as its own process: due timers and webhook deliveries over the
    configured store (set push.in_process = false on the API servers to leave it here)."""
    from shopcast.privacy.crypto import open_private_store
    from shopcast.push.engine import PushEngine
    from shopcast.push.scheduler import run_blocking, step
    from shopcast.serving.engine import Engine

    settings = load_settings()
    store = open_private_store(settings)
    engine = Engine.open(store, settings)
    push = PushEngine.open(store, settings, engine)
    try:
        if once:
            console.print(step(push))
            return
        stop = threading.Event()
        console.print("push scheduler running (Ctrl-C stops it)")

        def show(done: dict[str, int]) -> None:
            if done["decided"] or done["delivered"] or done["dead"]:
                console.print(done)

        try:
            run_blocking(push, interval or settings.push.tick_interval_s, stop, on_step=show)
        except KeyboardInterrupt:
            stop.set()
    finally:
        push.close()
        engine.close()
        store.close()


@app.command("metrics")
@friendly
def metrics(
    since: Annotated[float | None, typer.Option(help="Epoch seconds")] = None,
) -> None:
    """The push metrics of the configured store (JSON)."""
    from shopcast.push.attribution import Attribution
    from shopcast.push.engine import push_urls

    settings = load_settings()
    _, state_url = push_urls(settings.database_url, settings.push)
    journal = Attribution(state_url)
    try:
        console.print_json(json.dumps(journal.metrics(since)))
    finally:
        journal.close()
