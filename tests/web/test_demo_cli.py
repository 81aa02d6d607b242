"""``shopcast demo`` points at the storefront and the dashboard (SIMULATED shop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shopcast.cli import app


def test_demo_prints_the_storefront_and_dashboard_urls(tmp_path: Path) -> None:
    args = ["demo", "--once", "--simulated", "--port", "8123", "--push-delay", "5"]
    r = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "http://127.0.0.1:8123/demo/shop?user=sim-user-" in r.output
    assert "http://127.0.0.1:8123/dashboard" in r.output
    assert "a cart left for 5 s" in r.output


def test_demo_serves_with_short_push_delays_and_opens_the_shop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shopcast.cli as cli

    served: list[Any] = []
    opened: list[str] = []
    monkeypatch.setattr(cli, "_serve", lambda settings, host, port: served.append(settings))
    monkeypatch.setattr(cli, "_open_when_up", lambda url, health: opened.append(url))
    args = ["demo", "--simulated", "--port", "8124", "--push-delay", "3"]
    r = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (settings,) = served
    assert settings.push.triggers["cart_abandonment"].delay == 3
    assert settings.push.triggers["browse_abandonment"].delay == 6
    assert settings.push.triggers["cart_abandonment"].priority == 80  # the rest as configured
    assert opened and opened[0].startswith("http://127.0.0.1:8124/demo/shop?user=")
    served.clear()
    opened.clear()
    r = CliRunner().invoke(app, [*args, "--no-open", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0 and served and not opened
