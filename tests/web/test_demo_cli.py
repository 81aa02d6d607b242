"""``shopcast demo`` points at the storefront and the dashboard (SIMULATED shop)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from shopcast.cli import app


def test_demo_prints_the_storefront_and_dashboard_urls(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["demo", "--once", "--simulated", "--port", "8123", "--data-dir", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    assert "http://127.0.0.1:8123/demo/shop?user=sim-user-" in r.output
    assert "http://127.0.0.1:8123/dashboard" in r.output
