"""A model bundle: the models of one training run, with their shared item vocabulary.

On disk (no pickle)::

    <model_dir>/CURRENT                 name of the version in service
    <model_dir>/<version>/manifest.json version, trained_until (event seq), stats
    <model_dir>/<version>/items.json    the item vocabulary, index order
    <model_dir>/<version>/<model>/      each model's own .npz + meta.json
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shopcast.config import RecommendSettings
from shopcast.errors import ModelError
from shopcast.models import CoVisitation, Interactions, Popularity, Vocabulary
from shopcast.storage import Store

Progress = Callable[[str], None]


@dataclass
class ModelBundle:
    version: str
    items: Vocabulary
    popularity: Popularity
    covisit: CoVisitation
    trained_until: int = 0
    created_at: float = field(default_factory=time.time)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> dict[str, Popularity | CoVisitation]:
        return {"popularity": self.popularity, "covisit": self.covisit}


def new_version() -> str:
    return time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def make_models(cfg: RecommendSettings) -> tuple[Popularity, CoVisitation]:
    popularity = Popularity(
        half_life_days=cfg.popularity_half_life_days, event_weights=cfg.event_weights
    )
    covisit = CoVisitation(
        window=cfg.covisit_window,
        half_life_days=cfg.covisit_half_life_days,
        event_weights=cfg.event_weights,
    )
    return popularity, covisit


def train_bundle(
    store: Store, cfg: RecommendSettings, progress: Progress | None = None
) -> ModelBundle:
    """Fit every model on the whole event log (catalog items join the vocabulary first)."""
    report = progress or (lambda _stage: None)
    started = time.perf_counter()
    report("load events")
    items = Vocabulary(item.item_id for item in store.items.scan())
    frame = store.events.frame()
    trained_until = int(frame.select(pl.col("seq").max()).item() or 0) if frame.height else 0
    data = Interactions.from_frame(frame, items=items)
    popularity, covisit = make_models(cfg)
    report("fit popularity")
    popularity.fit(data)
    report("fit covisit")
    covisit.fit(data)
    stats = {
        "events": len(data),
        "items": len(items),
        "subjects": len(data.users),
        "train_s": round(time.perf_counter() - started, 3),
    }
    return ModelBundle(new_version(), items, popularity, covisit, trained_until, stats=stats)


def save_bundle(bundle: ModelBundle, model_dir: Path) -> Path:
    """Write the bundle and make it CURRENT (atomic rename)."""
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
        "models": sorted(bundle.models),
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    tmp = model_dir / f".CURRENT.{os.getpid()}"
    tmp.write_text(bundle.version)
    tmp.replace(model_dir / "CURRENT")
    return path


def load_bundle(path: Path) -> ModelBundle:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        items = Vocabulary(json.loads((path / "items.json").read_text()))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model bundle at {path}: {exc}") from None
    return ModelBundle(
        version=manifest["version"],
        items=items,
        popularity=Popularity.load(path / "popularity", items),
        covisit=CoVisitation.load(path / "covisit", items),
        trained_until=int(manifest["trained_until"]),
        created_at=float(manifest["created_at"]),
        stats=manifest.get("stats", {}),
    )


def load_current(model_dir: Path) -> ModelBundle | None:
    """The bundle named by ``CURRENT``, or None when nothing was trained yet."""
    current = model_dir / "CURRENT"
    if not current.is_file():
        return None
    return load_bundle(model_dir / current.read_text().strip())
