"""Settings: ``shopcast.toml`` + ``SHOPCAST_*`` environment variables, validated.

Precedence (highest first): keyword arguments, environment (``SHOPCAST_DATABASE_URL``,
nested with a double underscore: ``SHOPCAST_API__MAX_BATCH=500``), the TOML file
(``SHOPCAST_CONFIG`` or ``./shopcast.toml``), defaults.

Example ``shopcast.toml``::

    environment = "production"
    database_url = "sqlite:///var/lib/shopcast/shopcast.db"

    [api]
    max_batch = 1000

    [recommend]
    popularity_half_life_days = 7
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shopcast.errors import ConfigError


def default_data_path() -> Path:
    """Where the shared real datasets live: ``SHOPCAST_DATA`` or ``../shared/datasets``."""
    env = os.environ.get("SHOPCAST_DATA")
    return Path(env) if env else Path("../shared/datasets")


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch: int = Field(1000, ge=1, le=100_000, description="Events per POST")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Refused with 413 above")


class ItemFeatureSettings(BaseModel):
    """Item features and content similarity (``shopcast.features.live``)."""

    model_config = ConfigDict(extra="forbid")

    text_backend: Literal["tfidf", "minilm"] = Field(
        "tfidf", description="Text encoder; 'minilm' needs the extra 'text'"
    )
    low_stock_threshold: int = Field(5, ge=0, description="Stock 1..threshold is 'low_stock'")
    min_price_group: int = Field(
        5, ge=1, description="Priced items a category needs for its own price statistics"
    )
    refit_growth: float = Field(
        0.2, gt=0, description="Refit item features when the catalog grew by this fraction"
    )


class RecommendSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(200, ge=1, le=10_000)
    popularity_half_life_days: float = Field(14.0, gt=0)
    covisit_half_life_days: float = Field(60.0, gt=0)
    covisit_window: int = Field(5, ge=1, le=100, description="Neighbours per event in a history")
    session_length: int = Field(20, ge=1, le=500, description="Recent events kept per shopper")
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 1.0,
            "click": 1.0,
            "search": 0.0,
            "favorite": 2.0,
            "add_to_cart": 3.0,
            "remove_from_cart": 0.0,
            "purchase": 5.0,
            "rate": 2.0,
            "impression": 0.0,
        }
    )

    @field_validator("event_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        from shopcast.domain import EventType

        known = {t.value for t in EventType}
        for name, w in v.items():
            if name not in known:
                raise ValueError(f"unknown event type {name!r} in event_weights")
            if w < 0:
                raise ValueError(f"weight of {name!r} must be >= 0")
        return v


class Settings(BaseSettings):
    """All of Shopcast's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPCAST_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = Field(
        "sqlite:///shopcast-data/shopcast.db",
        description="sqlite:///PATH (default) or memory://",
    )
    model_dir: Path = Path("shopcast-data/models")
    data_path: Path = Field(default_factory=default_data_path, description="Shared datasets")
    api: ApiSettings = Field(default_factory=ApiSettings)
    item_features: ItemFeatureSettings = Field(default_factory=ItemFeatureSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("SHOPCAST_CONFIG", "shopcast.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError(f"{v!r} is not a URL; expected e.g. sqlite:///path.db or memory://")
        return v


def load_settings(**overrides: Any) -> Settings:
    """Settings from file + env + overrides; raises ConfigError naming each bad field."""
    toml_path = Path(os.environ.get("SHOPCAST_CONFIG", "shopcast.toml"))
    if "SHOPCAST_CONFIG" in os.environ and not toml_path.is_file():
        raise ConfigError(f"SHOPCAST_CONFIG={toml_path} does not exist")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except ValueError as exc:  # e.g. a malformed TOML file
        raise ConfigError(f"invalid settings file {toml_path}: {exc}") from None
