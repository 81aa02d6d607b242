"""``shopcast``: serve, train, import, demo, recommend.

Errors a user can fix (bad settings, missing files, bad input) print one clear
line on stderr and exit with code 2.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shopcast.config import Settings, load_settings
from shopcast.errors import ShopcastError

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="shopcast",
    help="Shopcast: real-time personalized recommendations and push for online shops.\n\n"
    "Start with `shopcast demo`; see `shopcast COMMAND --help` for each command.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

Db = Annotated[
    str | None,
    typer.Option("--db", help="Storage URL (default: settings database_url)", show_default=False),
]


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a ShopcastError into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ShopcastError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}")
            raise typer.Exit(2) from None

    return wrapper


def settings_for(db: str | None = None, **overrides: Any) -> Settings:
    if db is not None:
        overrides["database_url"] = db
    settings = load_settings(**overrides)
    from shopcast.online import install_announcer

    install_announcer(settings)  # promotions made here reach every API process at once
    return settings


def _import_app() -> typer.Typer:
    from shopcast.ingest.cli import app as import_app

    return import_app


app.add_typer(
    _import_app(),
    name="import",
    help="Import events, items, users or a dataset (CSV/JSONL/Parquet).",
)


def _evaluate_command() -> Callable[..., None]:
    from shopcast.evaluation.cli import evaluate

    return evaluate


app.command(name="evaluate")(_evaluate_command())


def _privacy_apps() -> tuple[typer.Typer, typer.Typer]:
    from shopcast.privacy.cli import keys_app, privacy_app

    return keys_app, privacy_app


app.add_typer(_privacy_apps()[0], name="keys", help="API keys: create, list, revoke.")
app.add_typer(
    _privacy_apps()[1], name="privacy", help="Encryption keys, rotation, retention, erasure."
)


def _db_app() -> typer.Typer:
    from shopcast.storage.cli import app as db_app

    return db_app


app.add_typer(_db_app(), name="db", help="The database: apply schema migrations.")


def _experiments_app() -> typer.Typer:
    from shopcast.experiments.cli import app as experiments_app

    return experiments_app


app.add_typer(
    _experiments_app(), name="experiments", help="A/B experiments: create, report, promote."
)


def _push_app() -> typer.Typer:
    from shopcast.push.cli import app as push_app

    return push_app


app.add_typer(
    _push_app(), name="push", help="Push: replay a dataset (simulate), run the scheduler, metrics."
)

models_app = typer.Typer(help="The model registry: list, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@friendly
def models_list() -> None:
    """Trained versions, newest first; * marks CURRENT."""
    from shopcast.training.registry import open_registry

    settings = settings_for()
    table = Table(title=f"models in {settings.model_dir}")
    for col in ("", "version", "created", "events", "trained until seq", "train s"):
        table.add_column(col, no_wrap=col == "version")
    for info in open_registry(settings).versions():
        m, stats = info.manifest, info.manifest.get("stats", {})
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.get("created_at", 0)))
        table.add_row(
            "*" if info.current else "",
            info.version,
            created,
            str(stats.get("events", "")),
            str(m.get("trained_until", "")),
            str(stats.get("train_s", "")),
        )
    console.print(table)


@models_app.command("promote")
@friendly
def models_promote(version: Annotated[str, typer.Argument(help="Version to serve")]) -> None:
    """Make VERSION CURRENT; running servers swap to it within seconds."""
    from shopcast.training.registry import open_registry

    previous = open_registry(settings_for()).promote(version)
    console.print(f"CURRENT is now {version} (was {previous})")


@models_app.command("rollback")
@friendly
def models_rollback() -> None:
    """Go back to the version served before the latest promotion."""
    from shopcast.training.registry import open_registry

    version = open_registry(settings_for()).rollback()
    console.print(f"rolled back: CURRENT is now {version}")


@app.command()
@friendly
def serve(
    db: Db = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default api.port)")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="API processes sharing the port (> 1 needs [state] url = redis://…)"
        ),
    ] = 1,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    settings = settings_for(db)
    _serve(settings, host or settings.api.host, port or settings.api.port, workers=workers)


#: How long `serve --workers N` lets a worker process go without answering its supervisor.
WORKER_STARTUP_S = 600


def _serve(settings: Settings, host: str, port: int, *, workers: int = 1) -> None:
    import uvicorn

    from shopcast.api import create_app
    from shopcast.privacy.logs import log_config

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if workers > 1:
        from shopcast.errors import ConfigError
        from shopcast.online import is_shared

        if not is_shared(settings.state.url):
            raise ConfigError(
                "--workers > 1 needs live sessions shared by the processes: set [state] "
                'url = "redis://HOST:PORT/DB" (SHOPCAST_STATE__URL)'
            )
        os.environ["SHOPCAST_DATABASE_URL"] = settings.database_url  # each worker rebuilds
        from shopcast.feedback.prometheus import prepare_multiprocess

        prepare_multiprocess()  # /metrics sums the request metrics of every worker process
        uvicorn.run(
            "shopcast.api:app_from_env",
            factory=True,
            workers=workers,
            # a worker loading a large store is busy for minutes before it serves: without
            # this the supervisor's 5 s ping kills and restarts it, forever
            timeout_worker_healthcheck=WORKER_STARTUP_S,
            host=host,
            port=port,
            log_level="info",
            log_config=log_config(settings),
            access_log=settings.api.access_log,
        )
        return
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        log_config=log_config(settings),  # access logs without raw user ids
        access_log=settings.api.access_log,  # off: no log line (and its filters) per request
    )


@app.command()
@friendly
def worker(
    db: Db = None,
    name: Annotated[
        str | None, typer.Option(help="Consumer name (default host-pid); unique per worker")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Messages read per batch")] = 100,
    claim_idle_ms: Annotated[
        int,
        typer.Option(min=1, help="Take over a message pending this long (a dead worker's)"),
    ] = 30_000,
    tenant: Annotated[
        list[str] | None,
        typer.Option(help="Only this tenant's stream (repeatable; default: every tenant)"),
    ] = None,
    discover_every: Annotated[
        float, typer.Option(min=0.1, help="Seconds between looks for new tenants")
    ] = 5.0,
) -> None:
    """Consume the event streams of every tenant (Redis): online counters, push
    triggers; run several."""
    import signal
    import threading

    from shopcast.online.worker import TenantWorkers

    settings = settings_for(db)
    workers = TenantWorkers(
        settings,
        tenants=tenant or None,
        discover_every_s=discover_every,
        name=name,
        batch=batch,
        claim_idle_ms=claim_idle_ms,
        claim_every_s=max(0.2, min(5.0, claim_idle_ms / 2000)),
        throttle_s=float(os.environ.get("SHOPCAST_WORKER_THROTTLE_S", "0")),  # tests only
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    which = ", ".join(tenant) if tenant else "every tenant"
    err_console.print(f"worker consuming the event streams of {which}")
    for name_, stats in workers.run(stop).items():
        err_console.print(
            f"worker {name_}: {stats.messages} messages, {stats.applied} applied, "
            f"{stats.duplicates} duplicates, {stats.claimed} claimed"
        )


@app.command()
@friendly
def train(
    db: Db = None,
    sequence: Annotated[
        bool | None,
        typer.Option(
            "--sequence/--no-sequence",
            help="Also fit the SASRec sequence model (default: training.sequence)",
            show_default=False,
        ),
    ] = None,
    embedding: Annotated[
        bool | None,
        typer.Option(
            "--embedding/--no-embedding",
            help="Also fit the hybrid two-tower model (default: training.embedding)",
            show_default=False,
        ),
    ] = None,
    ranker: Annotated[
        bool | None,
        typer.Option(
            "--ranker/--no-ranker",
            help="Train the learned ranker (default: when the log has >= 20,000 item "
            "events, kept only if it beats the blend on its test window)",
            show_default=False,
        ),
    ] = None,
    ddp: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train the deep models (sequence, embedding) with N data-parallel "
            "processes (gloo, CPU)",
        ),
    ] = 1,
) -> None:
    """Fit every model on the event log and make the result the CURRENT model."""
    settings = settings_for(db)
    if sequence is not None:
        settings.training.sequence = sequence
    if embedding is not None:
        settings.training.embedding = embedding
    version = _train(settings, ranker=ranker, ddp=ddp)
    console.print(f"model [bold]{version}[/] is CURRENT in {settings.model_dir}")


def _train(settings: Settings, *, ranker: bool | None = None, ddp: int = 1) -> str:
    from shopcast.privacy.crypto import open_private_store
    from shopcast.privacy.erasure import retrained
    from shopcast.training.bundle import save_bundle, train_bundle
    from shopcast.training.registry import open_registry

    started = time.time()  # retrain requests (erasures) before this are served by this run
    store = open_private_store(settings)
    try:
        with console.status("training…") as status:
            bundle = train_bundle(
                store,
                settings.recommend,
                progress=lambda s: status.update(f"training: {s}"),
                training=settings.training,
                ranker=ranker,
                settings=settings,
                ddp=ddp,
            )
        registry = open_registry(settings)  # PostgreSQL's, with a postgresql:// URL
        save_bundle(bundle, settings.model_dir, registry=registry)
        prune = settings.privacy.erasure_prunes_models
        retrained(settings.model_dir, started, prune=prune, registry=registry)
    finally:
        store.close()
    stats = ", ".join(f"{k}={v}" for k, v in bundle.stats.items())
    console.print(f"trained on {stats}")
    return bundle.version


@app.command()
@friendly
def recommend(
    user_id: Annotated[str, typer.Argument(help="The user to recommend for")],
    k: Annotated[int, typer.Option(min=1, help="How many items")] = 10,
    category: Annotated[str | None, typer.Option(help="Only this category")] = None,
    db: Db = None,
) -> None:
    """Print recommendations for a user (what the API would answer)."""
    from shopcast.privacy.crypto import open_private_store
    from shopcast.privacy.pseudonym import Pseudonymizer
    from shopcast.serving.engine import Engine
    from shopcast.serving.pipeline import RecommendRequest

    settings = settings_for(db)
    stored_id = Pseudonymizer.from_settings(settings.privacy).lookup(user_id)
    store = open_private_store(settings)
    try:
        engine = Engine.open(store, settings)
        rec = engine.recommend(RecommendRequest(user_id=stored_id, k=k, category=category))
        engine.close()
    finally:
        store.close()
    table = Table(title=f"for {user_id} (model {rec.model_version})")
    for col in ("#", "item", "title", "score", "why"):
        table.add_column(col)
    for i, item in enumerate(rec.items, 1):
        table.add_row(str(i), item.item_id, item.title or "", f"{item.score:.3f}", item.reason)
    console.print(table)


@app.command()
@friendly
def demo(
    port: Annotated[int, typer.Option(help="Port to serve on")] = 8000,
    data_dir: Annotated[
        Path, typer.Option(help="Where the demo keeps its database and models")
    ] = Path("shopcast-data/demo"),
    once: Annotated[
        bool, typer.Option("--once", help="Do everything but serving, then exit")
    ] = False,
    simulated: Annotated[
        bool, typer.Option("--simulated", help="Use the simulated shop even if data exists")
    ] = False,
    open_browser: Annotated[
        bool,
        typer.Option("--open/--no-open", help="Open the demo storefront in a web browser"),
    ] = True,
    push_delay: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds before the cart and browse reminders fire (the demo's push)"
        ),
    ] = 15.0,
) -> None:
    """The whole loop: import a shop, train, serve on 127.0.0.1, print URLs to try;
    the demo storefront (/demo/shop) opens in the browser when one is available.

    Imports UCI Online Retail from SHOPCAST_DATA when present, otherwise a built-in
    SIMULATED shop (labelled as such).
    """
    from shopcast.serving.engine import Engine
    from shopcast.serving.pipeline import RecommendRequest
    from shopcast.storage import open_store

    data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings_for(
        f"sqlite:///{data_dir / 'shopcast.db'}",
        model_dir=data_dir / "models",
        auth={"enabled": False},
        # pushes within seconds, so the storefront shows them (production: 30 min, 1 h)
        push={
            "triggers": {
                "cart_abandonment": {"delay": push_delay},
                "browse_abandonment": {"delay": 2 * push_delay},
            }
        },
    )
    console.print(
        "[yellow]the demo serves WITHOUT API keys (auth.enabled = false) on 127.0.0.1; "
        "`shopcast serve` requires keys (shopcast keys create)[/]"
    )
    store = open_store(settings.database_url)
    try:
        if store.events.count() == 0:
            _load_demo_shop(store, settings, simulated)
        else:
            console.print(f"using the shop already in {data_dir} ({store.events.count()} events)")
    finally:
        store.close()
    _train(settings)
    store = open_store(settings.database_url)
    try:
        user = _busiest_user(store)
        engine = Engine.open(store, settings)
        started = time.perf_counter()
        rec = engine.recommend(RecommendRequest(user_id=user, k=5))
        took = (time.perf_counter() - started) * 1000
        engine.close()
    finally:
        store.close()
    base = f"http://127.0.0.1:{port}"
    console.print(f"\nrecommendations for customer [bold]{user}[/] ({took:.1f} ms):")
    for item in rec.items:
        console.print(f"  • {item.title or item.item_id} — {item.reason}")
    console.print(f"\nAPI docs:        {base}/docs")
    console.print(f"recommendation:  {base}/v1/users/{user}/recommendations?k=10")
    console.print(f"health:          {base}/v1/health")
    console.print(f"[bold]demo shop:       {base}/demo/shop?user={user}[/]")
    console.print(f"[bold]dashboard:       {base}/dashboard[/]")
    console.print(
        f"push: a cart left for {push_delay:g} s (browsing: {2 * push_delay:g} s) brings a "
        "reminder to the shop page"
    )
    if not once:
        if open_browser:
            _open_when_up(f"{base}/demo/shop?user={user}", f"{base}/v1/health")
        _serve(settings, "127.0.0.1", port)


def _open_when_up(url: str, health: str) -> None:
    """Open ``url`` in the user's browser once the server answers (no-op without one)."""
    import threading
    import webbrowser

    import httpx

    def wait_and_open() -> None:
        for _ in range(600):
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    webbrowser.open(url)  # returns False on a machine without a browser
                    return
            except httpx.TransportError:
                time.sleep(0.2)

    threading.Thread(target=wait_and_open, daemon=True).start()


def _load_demo_shop(store: Any, settings: Settings, simulated: bool) -> None:
    from shopcast.ingest.importer import import_dataset, import_events, import_items, import_users

    retail = settings.data_path / "uci-online-retail"
    if retail.is_dir() and not simulated:
        console.print(f"importing UCI Online Retail from {retail} (real data)")
        summary = import_dataset(store, "online-retail", data_path=settings.data_path)
        console.print(
            f"  {summary.accepted:,} events in {summary.seconds:.1f} s "
            f"({summary.rows_per_s:,.0f} rows/s); rejected: {summary.rejected}"
        )
        return
    from shopcast.simulate import simulate_shop

    console.print(
        f"[yellow]no dataset under {settings.data_path}: using a SIMULATED shop "
        "(synthetic data, for demonstration only)[/]"
    )
    shop = simulate_shop()
    import_items(store, shop.items)
    import_users(store, shop.users)
    summary = import_events(store, shop.events)
    console.print(f"  {summary.accepted:,} simulated events")


def _busiest_user(store: Any) -> str:
    import polars as pl

    frame = store.events.frame()
    users = frame.filter(pl.col("user_id").is_not_null()).group_by("user_id").len()
    if users.height == 0:
        return "nobody"
    return str(users.sort(["len", "user_id"], descending=[True, False])["user_id"][0])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
