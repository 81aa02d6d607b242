"""Settings, the scheduler loop, and erasure without a running push engine (CLI)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tests.push.conftest import Harness, ev
from typer.testing import CliRunner

from shopcast.config import Settings, load_settings
from shopcast.domain import Event, Item, User
from shopcast.errors import ConfigError
from shopcast.push.scheduler import run_blocking, step


def test_bad_push_settings_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"push\.triggers\.cart_abandonment\.delay"):
        load_settings(push={"triggers": {"cart_abandonment": {"delay": "soon"}}})
    with pytest.raises(ConfigError, match="unknown trigger"):
        load_settings(push={"triggers": {"spam": {}}})
    with pytest.raises(ConfigError, match=r"push\.webhooks\.0\.secret"):
        load_settings(push={"webhooks": [{"name": "x", "url": "http://a", "secret": "short"}]})
    with pytest.raises(ConfigError, match=r"push\.quiet_hours\.start"):
        load_settings(push={"quiet_hours": {"start": "25:00"}})


def test_durations_and_per_field_trigger_overrides() -> None:
    s = Settings(push={"triggers": {"cart_abandonment": {"delay": "45m"}}, "min_gap": "2h"})
    cart = s.push.triggers["cart_abandonment"]
    assert (cart.delay, cart.priority) == (2700.0, 80)  # other fields keep their defaults
    assert s.push.min_gap == 7200.0
    assert s.push.triggers["complementary"].delay == 3 * 86400


def test_bad_settings_exit_code_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shopcast.cli import app

    monkeypatch.setenv("SHOPCAST_PUSH__MIN_GAP", "whenever")
    result = CliRunner().invoke(app, ["push", "metrics"])
    assert result.exit_code == 2
    assert "push.min_gap" in result.output


def test_scheduler_step_and_blocking_loop(harness) -> None:  # type: ignore[no-untyped-def]
    h: Harness = harness(triggers={"cart_abandonment": {"delay": 1}})
    h.observe(ev("add_to_cart", "s1"))
    h.clock.advance(1)
    assert step(h.engine)["decided"] == 1
    assert len(h.live.messages) == 1  # live pushes go out with the tick itself
    h.observe(ev("add_to_cart", "s2", "u2"))
    h.clock.advance(1)
    stop = threading.Event()
    seen: list[dict[str, int]] = []

    def on_step(done: dict[str, int]) -> None:
        seen.append(done)
        stop.set()

    run_blocking(h.engine, 0.01, stop, on_step=on_step)
    assert seen == [{"decided": 1, "delivered": 0, "retried": 0, "dead": 0}]
    assert [m.user_id for m in h.live.messages] == ["u1", "u2"]


def test_erasure_without_a_running_engine(tmp_path: Path) -> None:
    """``shopcast privacy erase`` finds the push tables in the SQLite file beside the store's."""
    from shopcast.privacy.erasure import erase_user
    from shopcast.push.attribution import Attribution
    from shopcast.push.engine import PushEngine, push_urls
    from shopcast.push.items import CatalogItems
    from shopcast.push.outbox import open_outbox
    from shopcast.push.state import PushState
    from shopcast.storage import open_store

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    settings = Settings(
        environment="test",
        database_url=url,
        model_dir=tmp_path / "m",
        push={
            "quiet_hours": {"enabled": False},
            "min_gap": 0,
            "triggers": {"session_nudge": {"views": 2, "holdout": 0}},
        },
    )
    store = open_store(url)
    store.users.upsert([User(user_id="gone", consent={"push": True})])
    items = [Item(item_id=f"i{n}", category=["C"]) for n in range(5)]
    push_url, _ = push_urls(url, settings.push)
    assert push_url == f"sqlite:///{tmp_path / 'shop.push.db'}"
    push = PushEngine(
        settings,
        outbox=open_outbox(push_url),
        state=PushState(push_url),
        journal=Attribution(push_url),
        items=CatalogItems(items),
        users=lambda u: User(user_id=u, consent={"push": True}),
    )
    source = push.items
    assert isinstance(source, CatalogItems)
    for user in ("gone", "kept"):
        views = [Event(type="view", user_id=user, item_id=f"i{n}") for n in range(2)]
        source.observe([Event(type="purchase", user_id="x", item_id="i4")])  # popular: i4
        push.observe(views)
    assert push.outbox.history("gone")
    push.close()
    report = erase_user(store, "gone", settings)
    assert report["removed"]["push_outbox"] == 2  # message + delivery
    assert report["removed"]["push_history"] >= 2
    box = open_outbox(push_url)
    assert box.history("gone") == [] and len(box.history("kept")) == 1
    box.close()
    store.close()


def test_retention_prunes_old_push_data(harness) -> None:  # type: ignore[no-untyped-def]
    from shopcast.push.channels import Retry

    h: Harness = harness(retention_days=1, triggers={"cart_abandonment": {"delay": 1}})
    h.observe(ev("view", "t1"), ev("add_to_cart", "s1"))
    h.tick(1)  # delivered on the live channel
    assert h.engine.outbox.history("u1")

    class Nobody:  # a second push nobody receives: stays pending
        def deliver(self, claim: object, now: float) -> Retry:
            return Retry(now + 10**6, "no stream")

    h.engine.channels["live"] = Nobody()
    h.observe(ev("add_to_cart", "s2", "u2"))
    h.tick(1)
    h.clock.advance(2 * 86400)
    removed = h.engine.prune()
    assert removed["push_outbox"] == 2  # u1's message and delivery
    assert removed["push_history"] >= 3  # decisions, sent rows, interest
    assert h.engine.outbox.history("u1") == []
    assert len(h.engine.outbox.history("u2")) == 1  # pending: kept
    assert h.engine.state.interested("t1", since=0) == {}


def test_cli_run_once_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shopcast.cli import app

    monkeypatch.setenv("SHOPCAST_DATABASE_URL", f"sqlite:///{tmp_path / 'shop.db'}")
    monkeypatch.setenv("SHOPCAST_MODEL_DIR", str(tmp_path / "models"))
    result = CliRunner().invoke(app, ["push", "run", "--once"])
    assert result.exit_code == 0, result.output
    assert "decided" in result.output
    result = CliRunner().invoke(app, ["push", "metrics"])
    assert result.exit_code == 0, result.output
    assert '"decisions": 0' in result.output


def test_offline_erasure_follows_the_configured_outbox_url(tmp_path: Path) -> None:
    """Without a running engine, erasure looks where ``push.outbox_url`` puts the push
    tables, not where the defaults would."""
    from shopcast.privacy.erasure import erase_user
    from shopcast.push.attribution import Attribution
    from shopcast.push.engine import PushEngine
    from shopcast.push.items import CatalogItems
    from shopcast.push.outbox import open_outbox
    from shopcast.push.state import PushState
    from shopcast.storage import open_store

    push_url = f"sqlite:///{tmp_path / 'elsewhere' / 'push.db'}"
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "m",
        push={
            "outbox_url": push_url,
            "quiet_hours": {"enabled": False},
            "min_gap": 0,
            "triggers": {"session_nudge": {"views": 2, "holdout": 0}},
        },
    )
    store = open_store(settings.database_url)
    push = PushEngine(
        settings,
        outbox=open_outbox(push_url),
        state=PushState(push_url),
        journal=Attribution(push_url),
        items=CatalogItems([Item(item_id=f"i{n}", category=["C"]) for n in range(5)]),
        users=lambda u: User(user_id=u, consent={"push": True}),
    )
    source = push.items
    assert isinstance(source, CatalogItems)
    source.observe([Event(type="purchase", user_id="x", item_id="i4")])  # popular: i4
    push.observe([Event(type="view", user_id="gone", item_id=f"i{n}") for n in range(2)])
    assert push.outbox.history("gone")
    push.close()
    report = erase_user(store, "gone", settings)
    assert report["removed"]["push_outbox"] == 2  # message + delivery
    box = open_outbox(push_url)
    assert box.history("gone") == []
    box.close()
    store.close()
