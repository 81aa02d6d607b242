"""``shopcast experiments list | create | report | stop | promote``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shopcast.config import Settings, load_settings
from shopcast.errors import FieldError, ShopcastError, ValidationError

app = typer.Typer(
    help="A/B experiments: list, create, report, stop, promote.", no_args_is_help=True
)
console = Console()


def _settings() -> Settings:
    return load_settings()


def _friendly(fn: Callable[[], None]) -> Callable[[], None]:
    """A ShopcastError becomes one line on stderr and exit code 2 (as ``shopcast``)."""

    @functools.wraps(fn)
    def wrapper() -> None:
        try:
            fn()
        except ShopcastError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc.message}")
            raise typer.Exit(2) from None

    return wrapper


def _variant(text: str, n: int) -> dict[str, object]:
    """``NAME:SHARE[:VERSION][:diversity=X]`` (VERSION ``current``: the CURRENT one)."""
    parts = text.split(":")
    if len(parts) < 2:
        raise ValidationError(
            "invalid --variant",
            [FieldError(f"variant.{n}", "expected NAME:SHARE[:VERSION][:diversity=X]")],
        )
    out: dict[str, object] = {"name": parts[0], "share": parts[1]}
    for part in parts[2:]:
        if part.startswith("diversity="):
            out["diversity"] = part.split("=", 1)[1]
        elif part and part != "current":
            out["model_version"] = part
    return out


@app.command("list")
def list_experiments() -> None:
    """Every experiment, oldest first."""

    @_friendly
    def run() -> None:
        from shopcast.experiments.service import experiments

        table = Table(title="experiments")
        for col in ("id", "status", "variants", "traffic", "scenes", "metric", "promoted"):
            table.add_column(col)
        for e in experiments(_settings()).all():
            variants = ", ".join(
                f"{v.name} {v.share:g} {v.model_version or 'CURRENT'}"
                + (f" div={v.diversity:g}" if v.diversity is not None else "")
                for v in e.variants
            )
            table.add_row(
                e.experiment_id,
                e.status,
                variants,
                f"{e.traffic:g}",
                ",".join(e.scenes) or "all",
                e.metric,
                e.promoted or "",
            )
        console.print(table)

    run()


@app.command("create")
def create(
    experiment_id: Annotated[str, typer.Argument(help="Lower-case id")],
    variant: Annotated[
        list[str],
        typer.Option(
            "--variant",
            "-v",
            help="NAME:SHARE[:VERSION][:diversity=X]; the first is the control; 2 or more",
        ),
    ],
    scene: Annotated[list[str] | None, typer.Option("--scene", help="Scenes (default all)")] = None,
    traffic: Annotated[float, typer.Option(help="Share of shoppers in the experiment")] = 1.0,
    metric: Annotated[str, typer.Option(help="ctr, conversion_rate or rpm")] = "ctr",
    salt: Annotated[str | None, typer.Option(help="Hash salt (default: the id)")] = None,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Start an experiment (servers pick it up within a request)."""

    @_friendly
    def run() -> None:
        import pydantic

        from shopcast.experiments.model import ExperimentSpec
        from shopcast.experiments.service import create as create_experiment

        raw = {
            "experiment_id": experiment_id,
            "variants": [_variant(v, n) for n, v in enumerate(variant)],
            "scenes": scene or [],
            "traffic": traffic,
            "metric": metric,
            "salt": salt,
            "description": description,
        }
        try:
            spec = ExperimentSpec.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                "invalid experiment: "
                + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
            ) from None
        e = create_experiment(_settings(), spec)
        console.print(f"experiment {e.experiment_id} running with {len(e.variants)} variants")

    run()


@app.command("report")
def report(
    experiment_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report")] = False,
) -> None:
    """Per-variant CTR, conversion and RPM with intervals; tests against the control."""

    @_friendly
    def run() -> None:
        from shopcast.experiments.service import report as experiment_report
        from shopcast.feedback.tracker import FeedbackTracker
        from shopcast.storage import open_store

        settings = _settings()
        store = open_store(settings.database_url)
        try:
            out = experiment_report(
                settings, FeedbackTracker(store, settings.feedback), experiment_id
            )
        finally:
            store.close()
        if as_json:
            console.print_json(json.dumps(out))
            return
        table = Table(title=f"{experiment_id} ({out['status']}), alpha {out['alpha']}")
        for col in ("variant", "users", "impressions", "clicks", "ctr [CI]", "conv [CI]", "rpm"):
            table.add_column(col)
        for v in out["variants"]:
            m = v["metrics"]

            def fmt(x: dict[str, object]) -> str:
                ci = x["ci"]
                val = x["value"]
                if val is None:
                    return "-"
                return f"{val:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")  # type: ignore[index]

            table.add_row(
                v["name"],
                str(v["users"]),
                str(v["impressions"]),
                str(v["clicks"]),
                fmt(m["ctr"]),
                fmt(m["conversion_rate"]),
                fmt(m["rpm"]),
            )
        console.print(table)
        for c in out["comparisons"]:
            console.print(
                f"{c['variant']} vs {c['control']} {c['metric']}: diff {c['diff']} "
                f"CI {c['ci']} lift {c['relative_lift']} p {c['p_value']}"
                + (" [bold green]significant[/]" if c["significant"] else "")
            )
        srm = out["sample_ratio_mismatch"]
        if srm["detected"]:
            console.print(f"[bold red]sample ratio mismatch[/] (p {srm['p_value']:.2g})")
        console.print(f"winner: {out['winner'] or 'none yet'}")

    run()


@app.command("stop")
def stop(experiment_id: str) -> None:
    """Stop an experiment: every shopper gets the default again."""

    @_friendly
    def run() -> None:
        from shopcast.experiments.service import stop as stop_experiment

        e = stop_experiment(_settings(), experiment_id)
        console.print(f"experiment {e.experiment_id} is {e.status}")

    run()


@app.command("promote")
def promote(
    experiment_id: str,
    variant: Annotated[str | None, typer.Option(help="Default: the report's winner")] = None,
    force: Annotated[bool, typer.Option(help="Promote a variant that is not the winner")] = False,
) -> None:
    """Stop the experiment and make the variant's model version CURRENT."""

    @_friendly
    def run() -> None:
        from shopcast.experiments.service import promote as promote_variant
        from shopcast.feedback.tracker import FeedbackTracker
        from shopcast.storage import open_store

        settings = _settings()
        store = open_store(settings.database_url)
        try:
            out = promote_variant(
                settings,
                FeedbackTracker(store, settings.feedback),
                experiment_id,
                variant,
                force=force,
            )
        finally:
            store.close()
        console.print(
            f"promoted {out['promoted']} of {experiment_id}: CURRENT is "
            f"{out['model_version'] or 'unchanged'} (was {out['previous']})"
        )

    run()
