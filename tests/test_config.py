"""Settings: defaults, TOML file, environment, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopcast.config import load_settings
from shopcast.errors import ConfigError


def test_defaults_are_the_embedded_backend() -> None:
    s = load_settings()
    assert s.database_url.startswith("sqlite:///")
    assert s.api.max_batch == 1000


def test_toml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shopcast.toml").write_text(
        'environment = "production"\n[api]\nmax_batch = 500\nport = 9000\n'
    )
    monkeypatch.setenv("SHOPCAST_API__PORT", "9100")
    s = load_settings()
    assert (s.environment, s.api.max_batch, s.api.port) == ("production", 500, 9100)


def test_errors_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shopcast.toml").write_text("[recommend]\nevent_weights = {teleport = 1.0}\n")
    with pytest.raises(ConfigError, match=r"recommend\.event_weights"):
        load_settings()
    (tmp_path / "shopcast.toml").write_text("[api]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"api\.bogus"):
        load_settings()
    monkeypatch.setenv("SHOPCAST_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
