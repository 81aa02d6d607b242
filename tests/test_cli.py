"""The CLI: demo on the simulated shop, train, recommend, clear errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopcast.cli import app

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for command in ("serve", "train", "demo", "import", "recommend"):
        assert command in r.output


def test_demo_once_on_the_simulated_shop(tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--once", "--simulated", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert "SIMULATED" in r.output
    assert "http://127.0.0.1:8000/docs" in r.output
    assert "/v1/users/sim-user-" in r.output
    assert (tmp_path / "d" / "models" / "CURRENT").is_file()
    # a second run reuses the shop instead of importing it again
    r = runner.invoke(app, ["demo", "--once", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0 and "using the shop already" in r.output


def test_train_then_recommend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner.invoke(app, ["demo", "--once", "--simulated", "--data-dir", str(tmp_path / "d")])
    db = f"sqlite:///{tmp_path / 'd' / 'shopcast.db'}"
    monkeypatch.setenv("SHOPCAST_MODEL_DIR", str(tmp_path / "m"))
    r = runner.invoke(app, ["train", "--db", db])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "CURRENT").is_file()
    r = runner.invoke(app, ["recommend", "sim-user-00003", "--k", "3", "--db", db])
    assert r.exit_code == 0, r.output
    assert r.output.count("sim-0") >= 3


def test_bad_settings_exit_2_with_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner.invoke(app, ["train", "--db", "nonsense"])
    assert r.exit_code == 2
    assert "database_url" in r.output
    r = runner.invoke(app, ["train", "--db", "mongo://x"])
    assert r.exit_code == 2 and "no storage backend" in r.output
    monkeypatch.setenv("SHOPCAST_API__PORT", "99999")
    r = runner.invoke(app, ["train"])
    assert r.exit_code == 2 and "api.port" in r.output
