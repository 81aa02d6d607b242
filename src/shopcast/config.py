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

import base64
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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
    reload_interval_s: float = Field(
        2.0, gt=0, description="How often a server checks the registry for a promoted model"
    )
    group_commit_wait_s: float = Field(
        0.001, ge=0, le=0.1, description="Event posts: wait this long for others to commit with"
    )
    group_commit_max_events: int = Field(
        5000, ge=1, description="Event posts: commit at once when this many events wait"
    )
    access_log: bool = Field(True, description="uvicorn's access log (one line per request)")
    recommend_threads: int = Field(
        0, ge=0, le=64, description="Own threads for recommendations (0: the shared pool)"
    )


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
    session_length: int = Field(
        50,
        ge=1,
        le=500,
        description="Recent events kept per shopper (what 'recently viewed' can re-show; "
        "co-visitation scores from the latest 20 of them)",
    )
    online_learning: bool = Field(
        True, description="Models learn from every ingested event (off: frozen batch model)"
    )
    source_timeout_ms: float = Field(
        50.0, gt=0, description="Model-backed candidate sources slower than this are skipped"
    )
    new_arrival_days: float = Field(
        30.0, gt=0, description="Items created within this many days are new arrivals"
    )
    log_impressions: bool = Field(
        True, description="Log every returned item as an impression event (for attribution)"
    )
    live_sessions: bool = Field(
        True, description="Live sessions follow ingested events (off: history as trained)"
    )
    recently_viewed_weight: float = Field(
        1.0,
        ge=0,
        description="Scales the 'recently viewed' source's blend weight in every scene "
        "(items of the live session looked at and not bought; 0 turns it off)",
    )
    result_cache: bool = Field(
        True,
        description="Keep each shopper's ranked candidate list (serving/result_cache.py): "
        "reused while the shopper's live session, filters, catalog and model are unchanged",
    )
    result_cache_size: int = Field(10_000, ge=1, description="Ranked lists kept (LRU)")
    result_cache_ttl_s: float = Field(
        30.0,
        gt=0,
        description="Age after which a kept list is recomputed (bounds what other "
        "shoppers' events taught the online models meanwhile)",
    )
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


class TrainingSettings(BaseModel):
    """Which optional models `shopcast train` fits besides popularity and co-visitation."""

    model_config = ConfigDict(extra="forbid")

    sequence: bool = Field(
        False, description="Fit the SASRec sequence model (minutes on CPU; serves 'sequence')"
    )
    sequence_epochs: int = Field(30, ge=1, le=1000)
    sequence_hidden: int = Field(64, ge=4, le=1024)
    sequence_max_len: int = Field(50, ge=2, le=1000)
    sequence_max_seconds: float = Field(900.0, gt=0, description="Training time budget")
    sequence_dropout: float = Field(0.5, ge=0, lt=1)
    sequence_lr: float = Field(1e-3, gt=0)
    embedding: bool = Field(
        False, description="Fit the hybrid two-tower model (serves 'embedding' via an ANN index)"
    )
    embedding_dim: int = Field(48, ge=4, le=1024)
    embedding_epochs: int = Field(20, ge=1, le=1000)
    embedding_dp_epsilon: float | None = Field(
        None,
        gt=0,
        description="Train the embedding model with DP-SGD at this ε (user-level, δ = 1/users; "
        "none: no DP)",
    )
    embedding_dp_max_grad_norm: float = Field(
        1.0, gt=0, description="DP-SGD clipping norm of each user's gradient"
    )
    mf: bool = Field(
        False, description="Fit incremental implicit ALS (serves 'mf'; fold-in on every event)"
    )
    mf_factors: int = Field(64, ge=2, le=1024)
    seed: int = 0


class ProfileSettings(BaseModel):
    """User profiles, tags and segments (``shopcast.features``)."""

    model_config = ConfigDict(extra="forbid")

    half_life_days: float = Field(30.0, gt=0, description="Decay of category/brand affinities")
    top_n: int = Field(10, ge=1, le=1000, description="Affinities shown per profile")
    recent_items: int = Field(20, ge=1, le=1000, description="Recent items kept per kind")
    new_days: float = Field(14.0, gt=0, description="'new' while first seen within this")
    at_risk_days: float = Field(30.0, gt=0, description="'at_risk' when inactive longer")
    churn_days: float = Field(90.0, gt=0, description="'churned' when inactive longer")
    segments: int = Field(8, ge=1, le=100, description="k of the k-means segments")
    segment_seed: int = 0
    resident_users: int | None = Field(
        None,
        ge=1,
        description="Lazy profiles (large shops): keep at most this many users' profile "
        "states and records in memory, each read from the store on first use; RFM "
        "quintiles and segments are fitted on a sample of recently active users. "
        "None: every user's, batch-built from the whole log at start",
    )
    reference_time: Literal["wall", "log"] = Field(
        "wall", description="'now' of profiles: the wall clock, or the log's last event (replays)"
    )

    @model_validator(mode="after")
    def _thresholds(self) -> ProfileSettings:
        if not self.at_risk_days < self.churn_days:
            raise ValueError("at_risk_days must be smaller than churn_days")
        return self


class Boost(BaseModel):
    """Multiply the score of matching items (a merchandiser's boost; < 1 buries)."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = None
    brand: str | None = None
    item_id: str | None = None
    factor: float = Field(gt=0)

    @model_validator(mode="after")
    def _one_target(self) -> Boost:
        if sum(x is not None for x in (self.category, self.brand, self.item_id)) != 1:
            raise ValueError("a boost names exactly one of category, brand or item_id")
        return self


class Pin(BaseModel):
    """Put an item at a fixed position (1-based) in the given scenes (all when empty)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    position: int = Field(ge=1)
    scenes: list[str] = Field(default_factory=list)


class Campaign(BaseModel):
    """Sponsored items shown at configured positions, labelled as sponsored."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    item_ids: list[str] = Field(min_length=1)
    positions: list[int] = Field(default_factory=lambda: [3], description="1-based slots")
    scenes: list[str] = Field(default_factory=list, description="All scenes when empty")
    label: str = "sponsored"


class MerchandisingSettings(BaseModel):
    """Business rules applied after ranking (``shopcast.serving.rules``)."""

    model_config = ConfigDict(extra="forbid")

    boosts: list[Boost] = Field(default_factory=list)
    pins: list[Pin] = Field(default_factory=list)
    campaigns: list[Campaign] = Field(default_factory=list)
    rebuy_categories: list[str] = Field(
        default_factory=list,
        description="Consumables: purchased items under these categories stay recommendable",
    )
    diversity: float = Field(
        0.3, ge=0, le=1, description="MMR strength: 0 = pure relevance, 1 = pure novelty"
    )
    cart_scenes: list[str] = Field(
        default_factory=lambda: ["home"],
        description="Scenes that may show items still in the shopper's cart ('still in "
        "your cart'); every other scene leaves them out",
    )

    @field_validator("cart_scenes")
    @classmethod
    def _cart_scenes(cls, v: list[str]) -> list[str]:
        known = ("home", "product_page", "cart", "post_purchase", "search")
        unknown = [s for s in v if s not in known]
        if unknown:
            raise ValueError(f"unknown scene(s) {unknown} in cart_scenes; known: {known}")
        return v


#: The placeholder of every secret; accepted (with a warning) only in development and test.
PLACEHOLDER_SECRET = "changethis"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class RateLimitSettings(BaseModel):
    """Token bucket per API key: ``rate_per_s`` sustained, bursts up to ``burst``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    rate_per_s: float = Field(100.0, gt=0, description="Requests per second per key")
    burst: int = Field(200, ge=1, description="Bucket size: requests allowed at once")


class AuthSettings(BaseModel):
    """API keys with scopes (``shopcast.api.auth``); tenants by key."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Every endpoint but /v1/health needs a key")
    keys_path: Path = Field(
        Path("shopcast-data/keys.db"), description="SQLite file of the hashed API keys"
    )
    open_docs: bool = Field(True, description="/docs, /redoc and /openapi.json need no key")
    key_cache_ttl_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Key checks cached this long (0: none; revocations: api.keycache)",
    )
    key_cache_size: int = Field(10_000, ge=1, description="Keys (hashed tokens) cached at most")
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)


class PrivacySettings(BaseModel):
    """Pseudonymization, field encryption, retention, noise (``shopcast.privacy``)."""

    model_config = ConfigDict(extra="forbid")

    pseudonymize: bool = Field(False, description="Store HMAC pseudonyms, never raw user ids")
    hmac_key: SecretStr = Field(
        SecretStr(PLACEHOLDER_SECRET), description="Key of the user-id HMAC (>= 32 characters)"
    )
    encrypt_users: bool = Field(False, description="AES-GCM on users' personal attributes")
    encryption_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description="Key id -> base64 of 32 random bytes"
    )
    active_key: str | None = Field(None, description="Key id new ciphertexts use")
    retention_days: float | None = Field(
        None, gt=0, description="Events older than this are deleted (None: kept)"
    )
    maintenance_interval_s: float = Field(
        300.0, gt=0, description="How often a server applies retention and pending retrains"
    )
    auto_retrain: bool = Field(
        True, description="A server retrains after an erasure (else `shopcast train` does)"
    )
    erasure_prunes_models: bool = Field(
        True, description="An erasure deletes the model versions still holding the user"
    )
    dp_epsilon: float | None = Field(
        None, gt=0, description="Noise on released aggregates (None: exact counts)"
    )
    dp_delta: float = Field(0.0, ge=0, lt=1, description="0: Laplace; > 0: Gaussian")

    @field_validator("encryption_keys")
    @classmethod
    def _keys(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for kid, secret in v.items():
            if not _KEY_ID.match(kid):
                raise ValueError(f"key id {kid!r}: letters, digits, '_' or '-', at most 32")
            try:
                raw = base64.b64decode(secret.get_secret_value(), altchars=b"-_", validate=True)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    f"key {kid!r} must be base64 of 32 bytes (shopcast privacy gen-key)"
                )
        return v

    @model_validator(mode="after")
    def _active(self) -> PrivacySettings:
        if self.active_key is not None and self.active_key not in self.encryption_keys:
            raise ValueError(f"active_key {self.active_key!r} is not in encryption_keys")
        if self.active_key is None and len(self.encryption_keys) > 1:
            raise ValueError("active_key: name the key new ciphertexts use")
        return self


class StateSettings(BaseModel):
    """Online state shared by API processes and workers (``shopcast.online``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "memory://",
        description="memory:// (in-process, default) or redis://HOST:PORT/DB[?prefix=P]",
    )
    session_ttl_s: float = Field(
        7 * 86_400.0, gt=0, description="A live session idle this long leaves Redis"
    )
    counter_ttl_s: float = Field(
        30 * 86_400.0, gt=0, description="Lifetime of online popularity/co-visitation deltas"
    )
    stream_maxlen: int = Field(
        1_000_000, ge=1000, description="Events kept in the Redis stream (approximate trim)"
    )
    dedupe_ttl_s: float = Field(
        7 * 86_400.0, gt=0, description="How long a worker remembers an applied event id"
    )
    covisit_window: int = Field(
        5, ge=1, le=100, description="Recent items per shopper paired with each new event"
    )
    retry_s: float = Field(
        1.0, gt=0, description="After a Redis failure, calls skip Redis this long (degraded)"
    )
    timeout_s: float = Field(0.25, gt=0, description="Redis socket timeout")

    @field_validator("url")
    @classmethod
    def _state_url(cls, v: str) -> str:
        if v.split("://", 1)[0].lower() not in ("memory", "redis", "rediss", "unix"):
            raise ValueError(f"{v!r}: expected memory:// or redis://HOST:PORT/DB")
        return v


class FeedbackSettings(BaseModel):
    """Attribution and online metrics (``shopcast.feedback``)."""

    model_config = ConfigDict(extra="forbid")

    click_window_s: float = Field(
        3600.0, gt=0, description="A click counts for an impression shown at most this long before"
    )
    purchase_window_s: float = Field(
        86_400.0, gt=0, description="Carts/purchases count for a click at most this long before"
    )
    windows_s: list[float] = Field(
        default_factory=lambda: [3600.0, 86_400.0],
        description="Windows of the online metrics (GET /v1/metrics, /metrics)",
    )
    horizon_s: float = Field(
        7 * 86_400.0, gt=0, description="How far back feedback is kept in memory for metrics"
    )
    cache_s: float = Field(5.0, ge=0, description="Metrics are recomputed at most this often")

    @field_validator("windows_s")
    @classmethod
    def _windows(cls, v: list[float]) -> list[float]:
        if not v or any(w <= 0 for w in v):
            raise ValueError("windows_s: one or more positive windows in seconds")
        return v


class ExperimentSettings(BaseModel):
    """A/B experiments and exploration (``shopcast.experiments``)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance level of reports")
    exploration: Literal["off", "epsilon", "thompson"] = Field(
        "off", description="Explore a share of slots: uniform (epsilon) or Thompson sampling"
    )
    exploration_share: float = Field(
        0.05, ge=0, le=1, description="Probability that a slot is explored"
    )
    thompson_draws: int = Field(
        200, ge=10, le=100_000, description="Monte Carlo draws estimating Thompson propensities"
    )
    exploration_seed: int | None = Field(None, description="Seed (tests); None: random")


class ContinuousSettings(BaseModel):
    """Background retraining with a quality gate and rollback (``shopcast.training``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Run the retrain loop in this server process")
    check_interval_s: float = Field(300.0, gt=0, description="How often the loop looks")
    retrain_interval_s: float = Field(
        86_400.0, gt=0, description="Retrain when the model in service is this old"
    )
    drift_threshold: float = Field(
        0.2, gt=0, le=1, description="Retrain early when item drift (JS divergence) exceeds it"
    )
    min_new_events: int = Field(1000, ge=1, description="No retrain before this many new events")
    warm_start: bool = Field(
        True, description="Start from the model in service and learn only the new events"
    )
    holdout_s: float = Field(86_400.0, gt=0, description="Recent window the quality gate tests")
    holdout_events: int = Field(500, ge=10, description="Holdout events sampled by the gate")
    tolerance: float = Field(
        0.0, ge=0, lt=1, description="Promote when not worse than the incumbent by this share"
    )
    guard_s: float = Field(
        3600.0, gt=0, description="After a promotion, watch online CTR this long for a drop"
    )
    guard_min_impressions: int = Field(2000, ge=10)
    max_ctr_drop: float = Field(
        0.1, gt=0, lt=1, description="Roll back on a significant CTR drop larger than this share"
    )


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or text: ``"90s"``, ``"30m"``, ``"2h"``, ``"3d"``."""
    if isinstance(value, bool):
        raise ValueError("must be seconds or a duration like '30m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", value)
        if m is None:
            raise ValueError(f"{value!r} is not a duration; use e.g. '5s', '30m', '2h', '3d'")
        unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
        seconds = float(m.group(1)) * unit[m.group(2) or "s"]
    else:
        raise ValueError("must be seconds or a duration like '30m'")
    if not 0 <= seconds < 1e9:
        raise ValueError("must be between 0 and 1e9 seconds")
    return seconds


#: Seconds, written as a number or as ``"30m"``, ``"3d"`` … in TOML and JSON.
Duration = Annotated[float, BeforeValidator(parse_duration)]

PUSH_TRIGGERS = (
    "cart_abandonment",
    "browse_abandonment",
    "price_drop",
    "back_in_stock",
    "after_sales",
    "complementary",
    "promotion",
    "new_arrivals",
    "replenishment",
    "session_nudge",
)


PushChannel = Literal["live", "webhook"]
PUSH_CHANNELS: tuple[PushChannel, ...] = ("live", "webhook")


class PushTriggerSettings(BaseModel):
    """One push trigger (``shopcast.push.triggers``). ``delay`` is how long after the
    event the trigger fires (cart abandonment: no purchase within it); ``views``,
    ``window``, ``min_drop``, ``lead`` and ``min_score`` are read by the triggers that
    name them in their docstring."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    delay: Duration = Field(0.0, description="Wait after the event before firing")
    priority: int = Field(50, ge=0, le=1000, description="Higher wins among competing pushes")
    max_per_day: int | None = Field(1, ge=0, description="Per user for this trigger (None: no cap)")
    holdout: float = Field(0.1, ge=0, lt=1, description="Share of users held out (lift)")
    channels: list[PushChannel] = Field(default_factory=lambda: list(PUSH_CHANNELS))
    items: int = Field(4, ge=1, le=20, description="Items per message")
    title: str | None = Field(None, description="Template; {item} is the first item's title")
    body: str | None = None
    views: int = Field(3, ge=1, description="Views that show intent (browse, session nudge)")
    window: Duration = Field(1800.0, description="Look-back of views / interest")
    min_drop: float = Field(0.05, gt=0, lt=1, description="Price drop that counts (fraction)")
    lead: Duration = Field(0.0, description="Replenishment: remind this long before due")
    min_score: float = Field(0.0, ge=0, description="Targeting score a promotion needs")


def _push_trigger_defaults() -> dict[str, PushTriggerSettings]:
    t = PushTriggerSettings
    return {
        "cart_abandonment": t(delay=1800, priority=80, window=7 * 86400),
        "browse_abandonment": t(delay=3600, priority=40, window=86400),
        "price_drop": t(priority=70, window=30 * 86400),
        "back_in_stock": t(priority=75, window=30 * 86400),
        "after_sales": t(delay=86400, priority=30, channels=["webhook"]),
        "complementary": t(delay=3 * 86400, priority=35),
        "promotion": t(priority=20, max_per_day=1, min_score=0.05),
        "new_arrivals": t(priority=25, min_score=0.05),
        "replenishment": t(priority=60, lead=86400),
        "session_nudge": t(priority=90, channels=["live"], max_per_day=3, window=600, holdout=0.1),
    }


class QuietHoursSettings(BaseModel):
    """No push between ``start`` and ``end`` in the user's time zone (``User.timezone``,
    else ``default_timezone``); ``defer`` sends it when they end, ``drop`` suppresses it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    start: str = Field("21:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field("08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    default_timezone: str = "UTC"
    mode: Literal["defer", "drop"] = "defer"
    exempt_triggers: list[str] = Field(
        default_factory=lambda: ["session_nudge"], description="The shopper is on the site"
    )


class WebhookEndpointSettings(BaseModel):
    """A receiver of push messages (the shop's e-mail / app-push backend)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr = Field(description="HMAC-SHA256 key of the signature (>= 16 chars)")
    triggers: list[str] = Field(default_factory=list, description="All triggers when empty")
    timeout_s: float = Field(5.0, gt=0, le=60)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("a webhook secret needs at least 16 characters")
        return v


class PushGuide(BaseModel):
    """After-sales help attached to an item or a category (sent by ``after_sales``)."""

    model_config = ConfigDict(extra="forbid")

    title: str
    url: str | None = None
    text: str | None = None
    kind: Literal["guide", "care", "warranty"] = "guide"
    item_id: str | None = None
    category: str | None = Field(None, description="Any level name or full path 'A > B'")

    @model_validator(mode="after")
    def _one_target(self) -> PushGuide:
        if (self.item_id is None) == (self.category is None):
            raise ValueError("a guide names exactly one of item_id or category")
        return self


class PushPromotion(BaseModel):
    """A coupon or campaign pushed to the users the targeting API ranks highest."""

    model_config = ConfigDict(extra="forbid")

    promotion_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    title: str
    body: str = ""
    coupon: str | None = None
    item_id: str | None = None
    category: str | None = None
    brand: str | None = None
    text: str | None = None
    limit: int = Field(100, ge=1, le=100_000, description="Users reached at most")
    starts_at: float | None = Field(None, description="Epoch seconds; None: when run")

    @model_validator(mode="after")
    def _target(self) -> PushPromotion:
        if not (self.item_id or self.category or self.brand or self.text):
            raise ValueError("a promotion names an item_id, category, brand or text")
        return self


class PushSettings(BaseModel):
    """The push engine (``shopcast.push``): triggers, policy, channels, outbox."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    outbox_url: str | None = Field(
        None,
        description="sqlite:///PATH, memory:// or postgresql://...; None: the store's own "
        "database (its SQLite file or PostgreSQL schema)",
    )
    in_process: bool = Field(
        True, description="The API runs triggers and the scheduler (False: a worker does)"
    )
    tick_interval_s: float = Field(1.0, gt=0, le=3600, description="Scheduler period")
    daily_cap: int = Field(3, ge=0, description="Pushes per user per rolling 24 h")
    weekly_cap: int = Field(10, ge=0, description="Pushes per user per rolling 7 days")
    min_gap: Duration = Field(300.0, description="At least this between two pushes to a user")
    no_repeat_days: float = Field(7.0, ge=0, description="An item is not pushed again within")
    holdout_salt: str = Field("shopcast-holdout", min_length=1)
    attribution_window: Duration = Field(3 * 86400.0, description="Push -> purchase window")
    consent_required: dict[str, bool] = Field(
        default_factory=lambda: {"live": False, "webhook": True},
        description="Channel needs consent['push_<channel>'] = true (else only no opt-out)",
    )
    live_ttl: Duration = Field(600.0, description="A live push waits this long for a stream")
    live_retry_s: float = Field(2.0, gt=0)
    webhooks: list[WebhookEndpointSettings] = Field(default_factory=list)
    webhook_concurrency: int = Field(
        8, ge=1, le=256, description="Webhook requests in flight at once (all endpoints)"
    )
    webhook_per_endpoint: int = Field(
        4, ge=1, le=256, description="Webhook requests in flight at once per endpoint"
    )
    retry_base_s: float = Field(5.0, gt=0, description="Webhook backoff: base * 2^(attempt-1)")
    retry_max_s: float = Field(3600.0, gt=0)
    max_attempts: int = Field(8, ge=1, le=100, description="Then the dead-letter list")
    lease_s: float = Field(30.0, gt=0, description="A claimed delivery is reclaimable after")
    heartbeat_s: float = Field(15.0, gt=0, description="SSE comment heartbeat period")
    stream_token_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="HMAC key of stream tokens (?token=); None: a random one in "
        "stream-token.key beside auth.keys_path (set it when API hosts differ)",
    )
    stream_token_ttl_s: float = Field(
        600.0, gt=0, le=86400, description="Lifetime of a stream token (an open stream ends)"
    )
    stream_recheck_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="An open stream's API key is looked up again this often (revoked: it ends)",
    )
    retention_days: float = Field(
        90.0, gt=0, description="Finished pushes, the journal and interest are deleted after"
    )
    quiet_hours: QuietHoursSettings = Field(default_factory=QuietHoursSettings)
    guides: list[PushGuide] = Field(default_factory=list)
    promotions: list[PushPromotion] = Field(default_factory=list)
    triggers: dict[str, PushTriggerSettings] = Field(default_factory=_push_trigger_defaults)

    @field_validator("triggers", mode="before")
    @classmethod
    def _known_triggers(cls, v: Any) -> Any:
        """Known names only; a trigger's fields override its own defaults one by one."""
        if not isinstance(v, dict):
            return v
        unknown = sorted(set(v) - set(PUSH_TRIGGERS))
        if unknown:
            raise ValueError(f"unknown trigger(s) {unknown}; known: {', '.join(PUSH_TRIGGERS)}")
        out: dict[str, Any] = {}
        for name, default in _push_trigger_defaults().items():
            raw = v.get(name)
            if isinstance(raw, dict):
                raw = {**default.model_dump(), **raw}
            out[name] = default if raw is None else raw
        return out

    @field_validator("consent_required")
    @classmethod
    def _channels(cls, v: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(v) - {"live", "webhook"})
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; known: live, webhook")
        return {"live": False, "webhook": True, **v}

    @field_validator("outbox_url")
    @classmethod
    def _outbox_url(cls, v: str | None) -> str | None:
        if v is not None and v.split("://", 1)[0] not in (
            "sqlite",
            "memory",
            "postgresql",
            "postgres",
        ):
            raise ValueError(f"{v!r}: use sqlite:///path.db, memory:// or postgresql://...")
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
    reports_dir: Path = Field(
        Path("bench/results/evaluate"),
        description="Where `shopcast evaluate` and the dashboard's evaluate job write their "
        "reports (JSON, Markdown, PNG) and where the dashboard lists them",
    )
    data_path: Path = Field(default_factory=default_data_path, description="Shared datasets")
    api: ApiSettings = Field(default_factory=ApiSettings)
    item_features: ItemFeatureSettings = Field(default_factory=ItemFeatureSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    merchandising: MerchandisingSettings = Field(default_factory=MerchandisingSettings)
    profiles: ProfileSettings = Field(default_factory=ProfileSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    experiments: ExperimentSettings = Field(default_factory=ExperimentSettings)
    continuous: ContinuousSettings = Field(default_factory=ContinuousSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    push: PushSettings = Field(default_factory=PushSettings)

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

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        """Outside development and test, an enabled feature needs a real secret."""
        if self.environment in ("development", "test"):
            return self
        p = self.privacy
        key = p.hmac_key.get_secret_value()
        if p.pseudonymize and (key == PLACEHOLDER_SECRET or len(key) < 32):
            raise ValueError(
                "privacy.hmac_key: set a random secret of >= 32 characters "
                "(SHOPCAST_PRIVACY__HMAC_KEY) outside development"
            )
        if p.encrypt_users and not p.encryption_keys:
            raise ValueError(
                "privacy.encryption_keys: set a key (shopcast privacy gen-key; "
                "SHOPCAST_PRIVACY__ENCRYPTION_KEYS) outside development"
            )
        return self


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
