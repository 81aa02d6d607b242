"""Retention: old events are deleted on demand (CLI) and on a schedule (API task)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.domain import Event
from shopcast.privacy.retention import DAY, apply_retention, expired
from shopcast.storage import open_store


def _events(now: float) -> list[Event]:
    ages = [400, 200, 91, 89, 1]  # days
    return [
        Event(event_id=f"e{a}", type="view", user_id="u1", item_id="i1", timestamp=now - a * DAY)
        for a in ages
    ]


def test_apply_retention_deletes_only_old_events() -> None:
    now = time.time()
    store = open_store("memory://")
    store.events.append(_events(now))
    assert expired(store, 90, now) == 3
    assert apply_retention(store, 90, now) == 3
    assert [e.event_id for _, e in store.events.scan()] == ["e89", "e1"]


def test_retention_cli_dry_run_then_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shopcast.cli import app

    db = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(db)
    store.events.append(_events(time.time()))
    store.close()
    monkeypatch.setenv("SHOPCAST_DATABASE_URL", db)
    result = CliRunner().invoke(app, ["privacy", "retention"])
    assert result.exit_code == 2 and "retention_days" in result.output  # none configured
    monkeypatch.setenv("SHOPCAST_PRIVACY__RETENTION_DAYS", "90")
    dry = CliRunner().invoke(app, ["privacy", "retention"])
    assert json.loads(dry.output) == {"retention_days": 90.0, "applied": False, "events": 3}
    done = CliRunner().invoke(app, ["privacy", "retention", "--apply", "--days", "100"])
    assert json.loads(done.output)["events"] == 2
    store = open_store(db)
    assert store.events.count() == 3
    store.close()


def test_the_api_applies_retention_on_a_schedule(settings: Settings) -> None:
    timed = settings.model_copy(
        update={
            "privacy": settings.privacy.model_copy(
                update={"retention_days": 90.0, "maintenance_interval_s": 0.05}
            )
        }
    )
    store = open_store(timed.database_url)
    store.events.append(_events(time.time()))
    store.close()
    with TestClient(create_app(timed)) as c:
        deadline = time.monotonic() + 60
        while c.app.state.store.events.count() > 2 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.05)
        assert c.app.state.store.events.count() == 2  # type: ignore[attr-defined]
        r = c.post("/v1/privacy/retention")
        assert r.json() == {"retention_days": 90.0, "deleted_events": 0}
