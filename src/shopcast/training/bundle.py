"""A model bundle: the models of one training run, with their shared item vocabulary.

On disk (no pickle)::

    <model_dir>/CURRENT                 name of the version in service (see registry.py)
    <model_dir>/<version>/manifest.json version, trained_until (event seq), data window,
                                        config, stats
    <model_dir>/<version>/items.json    the item vocabulary, index order
    <model_dir>/<version>/<model>/      each model's own .npz + meta.json
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from shopcast.config import RecommendSettings, Settings, TrainingSettings
from shopcast.errors import ModelError
from shopcast.models import (
    CoVisitation,
    Interactions,
    OnlineLearner,
    Popularity,
    Recommender,
    SASRec,
    Vocabulary,
    model_class,
)
from shopcast.models._hybrid_side import SideFeatures
from shopcast.models.hybrid import HybridRanker
from shopcast.privacy.dp import DPConfig
from shopcast.storage import Store
from shopcast.training.distributed import supports as supports_data_parallel
from shopcast.training.registry import ModelRegistry

Progress = Callable[[str], None]

#: Roles that count events without linking a shopper's items (trending): they learn
#: from every event. Every other role learns only from users who did not decline
#: personalization (``User.consent["personalization"] = False``).
AGGREGATE_ROLES = frozenset({"popularity"})

#: Event weights of the bought-together model: what ends in a cart or an order.
BOUGHT_TOGETHER_WEIGHTS = {"purchase": 1.0, "add_to_cart": 0.5}


@dataclass
class ModelBundle:
    """Models by role. ``popularity`` and ``covisit`` are always there; other roles
    (``bought_together``, later sequence and embedding models) are optional."""

    version: str
    items: Vocabulary
    models: dict[str, Recommender]
    trained_until: int = 0
    created_at: float = field(default_factory=time.time)
    stats: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    data_window: dict[str, float | None] = field(default_factory=dict)

    @property
    def popularity(self) -> Popularity:
        return _typed(self.models["popularity"], Popularity)

    @property
    def covisit(self) -> CoVisitation:
        return _typed(self.models["covisit"], CoVisitation)

    @property
    def bought_together(self) -> CoVisitation | None:
        model = self.models.get("bought_together")
        return None if model is None else _typed(model, CoVisitation)

    def learn(self, data: Interactions, personal: Interactions | None = None) -> None:
        """Online update of every model that learns incrementally; ``personal`` (when
        given) is ``data`` without declining users, for the roles not in
        ``AGGREGATE_ROLES``."""
        for role, model in self.models.items():
            if isinstance(model, OnlineLearner):
                only = personal is not None and role not in AGGREGATE_ROLES
                model.learn(personal if only and personal is not None else data)


M = TypeVar("M")


def _typed(model: object, cls: type[M]) -> M:
    if not isinstance(model, cls):
        raise ModelError(f"expected a {cls.__name__}, the bundle holds {type(model).__name__}")
    return model


def new_version() -> str:
    return time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def make_models(cfg: RecommendSettings) -> dict[str, Recommender]:
    """The serving models of one bundle, by role, configured from settings."""
    return {
        "popularity": Popularity(
            half_life_days=cfg.popularity_half_life_days, event_weights=cfg.event_weights
        ),
        "covisit": CoVisitation(
            window=cfg.covisit_window,
            half_life_days=cfg.covisit_half_life_days,
            event_weights=cfg.event_weights,
        ),
        "bought_together": CoVisitation(
            window=max(cfg.covisit_window, 20),
            half_life_days=cfg.covisit_half_life_days,
            event_weights=BOUGHT_TOGETHER_WEIGHTS,
        ),
    }


def optional_models(
    training: TrainingSettings, store: Store | None = None
) -> dict[str, Recommender]:
    """The opt-in models of ``[training]`` (slow to fit), by role.

    ``embedding`` is the hybrid two-tower model; its side features (category, brand,
    price, title text; demographics) come from the store's catalog and user records.
    With ``embedding_dp_epsilon`` it trains with DP-SGD (``shopcast.privacy.dp_hybrid``;
    the spent ε, δ, noise multiplier and clipping norm go to its ``meta.json`` and the
    bundle manifest's ``dp``).
    """
    out: dict[str, Recommender] = {}
    if training.embedding:
        side = None
        if store is not None:
            side = SideFeatures.from_records(store.items.scan(), store.users.scan())
        out["embedding"] = HybridRanker(
            dim=training.embedding_dim,
            epochs=training.embedding_epochs,
            seed=training.seed,
            side=side,
            dp=None
            if training.embedding_dp_epsilon is None
            else DPConfig(
                epsilon=training.embedding_dp_epsilon,
                epochs=training.embedding_epochs,
                max_grad_norm=training.embedding_dp_max_grad_norm,
            ),
        )
    if training.mf:  # incremental MF; new catalog items get content factors (foldin.py)
        from shopcast.training.foldin import OnlineALS

        catalog = list(store.items.scan()) if store is not None else None
        out["mf"] = OnlineALS(n_factors=training.mf_factors, seed=training.seed, catalog=catalog)
    if training.sequence:
        out["sequence"] = SASRec(
            hidden=training.sequence_hidden,
            max_len=training.sequence_max_len,
            epochs=training.sequence_epochs,
            max_seconds=training.sequence_max_seconds,
            dropout=training.sequence_dropout,
            attn_dropout=training.sequence_dropout,
            lr=training.sequence_lr,
            seed=training.seed,
        )
    return out


def train_bundle(
    store: Store,
    cfg: RecommendSettings,
    progress: Progress | None = None,
    training: TrainingSettings | None = None,
    *,
    ranker: bool | None = None,
    settings: Settings | None = None,
    ddp: int = 1,
) -> ModelBundle:
    """Fit every model on the whole event log (catalog items join the vocabulary first).

    ``ddp`` > 1 trains the deep models (sequence, hybrid embedding) with that many
    data-parallel processes (``training/distributed.py``).

    ``ranker``: train the learned ranker (role ``ranker``, ``training/ranker_data.py``)
    — None: when the log is large enough and the ranker beats the blend on its test
    window; ``settings`` give it the profile, item-feature and merchandising settings.
    """
    report = progress or (lambda _stage: None)
    started = time.perf_counter()
    report("load events")
    items = Vocabulary(item.item_id for item in store.items.scan())
    frame = store.events.frame()
    trained_until = int(frame.select(pl.col("seq").max()).item() or 0) if frame.height else 0
    data = Interactions.from_frame(frame, items=items)
    personal = _without_declined(store, frame, data)
    models = {**make_models(cfg), **optional_models(training or TrainingSettings(), store)}
    for role, model in models.items():
        report(f"fit {role}")
        part = data if role in AGGREGATE_ROLES else personal
        if ddp > 1 and supports_data_parallel(model):  # DP-SGD models: one process
            from shopcast.training.distributed import fit_distributed

            models[role] = fit_distributed(model, part, world=ddp)  # type: ignore[type-var]
        else:
            model.fit(part)
    window = {
        "from_ts": float(data.ts.min()) if len(data) else None,
        "to_ts": float(data.ts.max()) if len(data) else None,
    }
    stats = {
        "events": len(data),
        "items": len(items),
        "subjects": len(data.users),
        "train_s": round(time.perf_counter() - started, 3),
    }
    bundle = ModelBundle(
        new_version(),
        items,
        models,
        trained_until,
        stats=stats,
        config=cfg.model_dump(mode="json"),
        data_window=window,
    )
    if ranker is not False:
        from shopcast.training.ranker_data import attach_ranker  # imports serving

        full = settings or Settings.model_construct(recommend=cfg)
        users = list(store.users.scan())
        attach_ranker(
            bundle, frame, store.items.scan(), users, full, required=bool(ranker), progress=report
        )
    return bundle


def _without_declined(store: Store, frame: pl.DataFrame, data: Interactions) -> Interactions:
    """``data`` without the events of users who declined personalization."""
    declined = [
        u.user_id for u in store.users.scan() if u.consent.get("personalization", True) is False
    ]
    if not declined:
        return data
    keep = frame.filter(~pl.col("user_id").is_in(declined) | pl.col("user_id").is_null())
    return Interactions.from_frame(keep, users=data.users, items=data.items)


def save_bundle(
    bundle: ModelBundle,
    model_dir: Path,
    *,
    promote: bool = True,
    registry: ModelRegistry | None = None,
) -> Path:
    """Write the bundle; make it CURRENT unless ``promote`` is False.

    ``registry`` (default: the files of ``model_dir``) records it, e.g. ``open_registry``'s
    PostgreSQL registry."""
    path = model_dir / bundle.version
    path.mkdir(parents=True, exist_ok=False)
    (path / "items.json").write_text(json.dumps(bundle.items.ids))
    for name, model in bundle.models.items():
        model.save(path / name)
    manifest = {
        "version": bundle.version,
        "trained_until": bundle.trained_until,
        "created_at": bundle.created_at,
        "stats": bundle.stats,
        "config": bundle.config,
        "data_window": bundle.data_window,
        "models": {role: model.name for role, model in bundle.models.items()},
        # What each DP-trained model spent (epsilon, delta, noise multiplier, clip norm).
        "dp": {
            role: report.to_json()
            for role, model in bundle.models.items()
            if (report := getattr(model, "dp_report_", None)) is not None
        },
    }
    # The manifest goes last: a directory without one is not a (complete) bundle.
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    registry = registry or ModelRegistry(model_dir)
    registry.register(bundle.version, manifest)
    if promote:
        registry.promote(bundle.version)
    return path


def load_bundle(path: Path) -> ModelBundle:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        items = Vocabulary(json.loads((path / "items.json").read_text()))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model bundle at {path}: {exc}") from None
    models = {
        role: _model_class(name).load(path / role, items)
        for role, name in manifest["models"].items()
    }
    return ModelBundle(
        version=manifest["version"],
        items=items,
        models=models,
        trained_until=int(manifest["trained_until"]),
        created_at=float(manifest["created_at"]),
        stats=manifest.get("stats", {}),
        config=manifest.get("config", {}),
        data_window=manifest.get("data_window", {}),
    )


def _model_class(name: str) -> type[Recommender]:
    """``model_class`` plus the learned ranker, which ranks candidate features and so is
    not in ``MODELS`` (no model contract, no benchmark entry)."""
    from shopcast.serving.ranker import LearnedRanker
    from shopcast.training.foldin import OnlineALS

    if name == OnlineALS.name:
        return OnlineALS
    return LearnedRanker if name == LearnedRanker.name else model_class(name)


def load_current(model_dir: Path, registry: ModelRegistry | None = None) -> ModelBundle | None:
    """The bundle named by ``CURRENT``, or None when nothing was trained yet."""
    registry = registry or ModelRegistry(model_dir)
    version = registry.current()
    return None if version is None else load_bundle(registry.path(version))
