"""Helpers shared by the models: hyperparameter checks, scoring, persistence."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shopcast.domain import EventType
from shopcast.errors import ConfigError, ModelError, NotFittedError, ShopcastError
from shopcast.models._base import EVENT_CODES, FloatArray, IntArray, Recommender, Vocabulary

SECONDS_PER_DAY = 86_400.0
FORMAT_VERSION = 1
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"

R = TypeVar("R", bound=Recommender)


def resolve_event_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The weight of each event type; ``None`` means ``RecommendSettings().event_weights``.

    A type missing from an explicit mapping weighs 0.
    """
    if weights is None:
        from shopcast.config import RecommendSettings

        return dict(RecommendSettings().event_weights)
    known = {t.value for t in EventType}
    out: dict[str, float] = {}
    for name, w in weights.items():
        if name not in known:
            raise ConfigError(
                f"unknown event type {name!r} in event_weights; expected one of: "
                + ", ".join(sorted(known))
            )
        if not w >= 0:
            raise ConfigError(f"event weight of {name!r} must be >= 0, got {w}")
        out[name] = float(w)
    return out


def weight_array(weights: Mapping[str, float]) -> FloatArray:
    """Weights indexed by ``EVENT_CODES``."""
    out = np.zeros(len(EVENT_CODES), dtype=np.float64)
    for t, code in EVENT_CODES.items():
        out[code] = weights.get(t.value, 0.0)
    return out


def check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value


def check_ints(*specs: tuple[str, object, int]) -> None:
    """Each ``(name, value, low)``: ``value`` must be an int (not a bool) ``>= low``."""
    for name, value, low in specs:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def require_fitted(model: object, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise NotFittedError(f"{type(model).__name__} is not fitted; call fit() first")


def gather(values: FloatArray, candidates: IntArray) -> FloatArray:
    """``values[candidates]`` as float64, 0 for indices outside ``values``."""
    idx = np.asarray(candidates, dtype=np.int64)
    out = np.zeros(idx.shape, dtype=np.float64)
    ok = (idx >= 0) & (idx < values.shape[0])
    out[ok] = values[idx[ok]]
    return out


def top_indices(scores: FloatArray, n: int) -> IntArray:
    """Positions of the ``n`` largest scores, best first; ties go to the lower position."""
    size = scores.shape[0]
    if n <= 0 or size == 0:
        return np.empty(0, dtype=np.int64)
    if n < size:
        kth = np.partition(scores, size - n)[size - n]  # the n-th largest score
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: n - above.shape[0]]
        chosen = np.concatenate([above, ties])
    else:
        chosen = np.arange(size)
    return chosen[np.lexsort((chosen, -scores[chosen]))].astype(np.int64)


def save_model(
    path: Path,
    model: Recommender,
    params: Mapping[str, Any],
    state: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray[Any, Any]],
) -> None:
    """Write ``meta.json`` (name, hyperparameters, scalar state) and ``arrays.npz``.

    ``path`` is a directory of its own; it is created when missing.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / ARRAYS_FILE, allow_pickle=False, **arrays)
    meta = {
        "model": model.name,
        "format": FORMAT_VERSION,
        "params": dict(params),
        "state": dict(state),
    }
    (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_model(
    path: Path, cls: type[R], items: Vocabulary, arrays: tuple[str, ...]
) -> tuple[R, dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
    """``(model, state, arrays)`` from ``save_model``; the model is built, not yet filled.

    Raises ``ModelError`` when the files are missing or unreadable, hold another model
    or format, or cover more items (``state["n_items"]``) than ``items`` has.
    """
    path = Path(path)
    name = cls.name
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read a saved model at {path}: {exc}") from None
    found = meta.get("model") if isinstance(meta, dict) else None
    if found != name:
        raise ModelError(f"{path} holds model {found!r}, not {name!r}")
    if meta.get("format") != FORMAT_VERSION:
        raise ModelError(f"{path} has format {meta.get('format')!r}; expected {FORMAT_VERSION}")
    try:
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
            loaded = {k: npz[k] for k in arrays}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the arrays of the saved model at {path}: {exc}") from None
    try:
        state = dict(meta["state"])
        n_items = int(state["n_items"])
        model = cls(**meta["params"])
    except (KeyError, TypeError, ValueError, ShopcastError) as exc:
        raise ModelError(f"{path} has bad metadata: {exc}") from None
    if n_items > len(items):
        raise ModelError(
            f"{path} was saved with {n_items} items but the vocabulary has only "
            f"{len(items)}; load it with the vocabulary it was trained with"
        )
    return model, state, loaded
