"""User feature vectors for the models, and data-driven segments (k-means).

``FeatureSpace`` turns profiles into rows with these columns, in this order
(vocabularies and scaling are learned by ``fit`` on training profiles only):

- ``age_band=<band>`` for ``<18 … 65+`` and ``unknown`` (one-hot);
- ``gender=f|m|other|unknown`` (f/female/w/woman → f, m/male/man → m);
- ``occupation=<v>`` for the ``n_top`` most frequent occupations in training, then
  ``occupation=other`` and ``occupation=unknown``; ``region=…`` likewise;
- ``lifecycle=new|active|at_risk|churned`` (one-hot);
- ``log_events``, ``log_events_30d``, ``log_events_7d``: ln(1 + count);
- ``log_days_since_last``: ln(1 + days since the last event);
- ``has_purchased`` (0/1), ``log_frequency`` ln(1 + orders), ``log_monetary``
  ln(1 + monetary), ``log_recency`` ln(1 + days since the last purchase);
- ``cart_rate``, ``purchase_rate`` (per view), ``discount_share``,
  ``log_price_index`` ln(1 + price index), ``night_share`` (events 22:00–04:59 local);
- ``cat=<key>``: the category share of each of the ``n_categories`` top-level
  categories with the largest summed share in training.

Values that do not exist for a user (recency without purchases, rates without views,
any behaviour without consent) are imputed with the training mean, i.e. 0 after
scaling. Scaling is a z-score with the training mean and standard deviation (a
constant column gets std 1). Saved as ``features.npz`` (mean, std) + ``features.json``
(columns, vocabularies), loaded without pickle.

``Segmenter`` clusters scaled rows with k-means: k-means++ seeding and one step of
``scipy.cluster.vq.kmeans2`` from a seeded generator, then Lloyd steps until no row
changes segment (at most ``iterations``), so one seed gives one result.
Segments are numbered by size (0 = largest; empty clusters are dropped) and named from
their centroid: the columns furthest from the mean (|z| ≥ 0.5) become phrases such as
"frequent buyers" (+) or "recent buyers" (− ``log_recency``); one-hot columns only
speak when above the mean ("from United Kingdom"). A new user gets the segment of the
nearest centroid. Saved as ``segments.npz`` + ``segments.json``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from scipy.cluster.vq import kmeans2

from shopcast.errors import ModelError, NotFittedError
from shopcast.features.profiles import AGE_BANDS, LIFECYCLES, NIGHT_HOURS, OLDEST_BAND, UserProfile

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BANDS = (*(b for _, b in AGE_BANDS), OLDEST_BAND)
GENDERS = {"f": "f", "female": "f", "w": "f", "woman": "f", "m": "m", "male": "m", "man": "m"}
NUMERIC = (
    "log_events",
    "log_events_30d",
    "log_events_7d",
    "log_days_since_last",
    "has_purchased",
    "log_frequency",
    "log_monetary",
    "log_recency",
    "cart_rate",
    "purchase_rate",
    "discount_share",
    "log_price_index",
    "night_share",
)
#: (above the mean, below the mean) phrases of numeric columns, for segment names.
PHRASES: dict[str, tuple[str, str]] = {
    "log_events": ("very active", "rarely active"),
    "log_events_30d": ("active this month", "quiet this month"),
    "log_events_7d": ("active this week", "quiet this week"),
    "log_days_since_last": ("long inactive", "recently active"),
    "has_purchased": ("buyers", "non-buyers"),
    "log_frequency": ("frequent buyers", "one-off buyers"),
    "log_monetary": ("big spenders", "small spenders"),
    "log_recency": ("lapsed buyers", "recent buyers"),
    "cart_rate": ("cart often", "rarely cart"),
    "purchase_rate": ("convert well", "rarely convert"),
    "discount_share": ("deal seekers", "full-price buyers"),
    "log_price_index": ("premium taste", "budget taste"),
    "night_share": ("night owls", "daytime shoppers"),
}
MIN_Z = 0.5
#: Columns that say nearly the same thing; a segment name takes one phrase per family.
FAMILIES = {
    **dict.fromkeys(("has_purchased", "log_frequency", "log_monetary", "log_recency"), "buy"),
    **dict.fromkeys(
        ("log_events", "log_events_30d", "log_events_7d", "log_days_since_last", "lifecycle"),
        "activity",
    ),
}


def _family(column: str) -> str:
    return FAMILIES.get(column, FAMILIES.get(column.split("=", 1)[0], column))


def _gender(value: str | None) -> str:
    if value is None:
        return "unknown"
    return GENDERS.get(value.strip().lower(), "other")


def _log1p(x: float | None) -> float:
    return math.nan if x is None else math.log1p(max(x, 0.0))


def _top(values: Sequence[str | None], n: int) -> list[str]:
    counts = Counter(v for v in values if v is not None)
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


class FeatureSpace:
    """Profiles → scaled feature rows; columns in the module docstring."""

    def __init__(self, n_top: int = 10, n_categories: int = 10) -> None:
        self.n_top = n_top
        self.n_categories = n_categories
        self.columns_: list[str] | None = None
        self.occupations_: list[str] = []
        self.regions_: list[str] = []
        self.categories_: list[str] = []
        self.mean_: FloatArray | None = None
        self.std_: FloatArray | None = None

    def fit(self, profiles: Sequence[UserProfile]) -> Self:
        """Learn vocabularies, column means and deviations from training ``profiles``."""
        self.fit_transform(profiles)
        return self

    def fit_transform(self, profiles: Sequence[UserProfile]) -> FloatArray:
        """``fit`` then ``transform`` of the same profiles (reading each profile once)."""
        if not profiles:
            raise ModelError("FeatureSpace.fit needs at least one profile")
        self.occupations_ = _top([p.demographics.occupation for p in profiles], self.n_top)
        self.regions_ = _top([p.demographics.region for p in profiles], self.n_top)
        totals: dict[str, float] = {}
        for p in profiles:
            if p.behaviour is not None:
                for a in p.behaviour.categories:
                    if a.level == 0:
                        totals[a.key] = totals.get(a.key, 0.0) + a.share
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
        self.categories_ = [k for k, _ in ranked[: self.n_categories]]
        self.columns_ = self._columns()
        raw = self.raw(profiles)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            mean = np.nanmean(raw, axis=0)
            std = np.nanstd(raw, axis=0)
        self.mean_ = np.nan_to_num(mean, nan=0.0)
        self.std_ = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        return self.scale(raw)

    def _columns(self) -> list[str]:
        return [
            *(f"age_band={b}" for b in (*BANDS, "unknown")),
            *(f"gender={g}" for g in ("f", "m", "other", "unknown")),
            *(f"occupation={o}" for o in (*self.occupations_, "other", "unknown")),
            *(f"region={r}" for r in (*self.regions_, "other", "unknown")),
            *(f"lifecycle={s}" for s in LIFECYCLES),
            *NUMERIC,
            *(f"cat={c}" for c in self.categories_),
        ]

    @property
    def columns(self) -> list[str]:
        if self.columns_ is None:
            raise NotFittedError("FeatureSpace used before fit")
        return self.columns_

    def raw(self, profiles: Sequence[UserProfile]) -> FloatArray:
        """Unscaled rows (NaN where a value does not exist)."""
        columns = self.columns
        index = {c: i for i, c in enumerate(columns)}
        out = np.full((len(profiles), len(columns)), np.nan)
        for row, p in enumerate(profiles):
            out[row] = self._row(p, index, len(columns))
        return out

    def _row(self, p: UserProfile, index: dict[str, int], width: int) -> FloatArray:
        x = np.zeros(width)
        d = p.demographics
        x[index[f"age_band={d.age_band or 'unknown'}"]] = 1.0
        x[index[f"gender={_gender(d.gender)}"]] = 1.0
        for name, value, vocab in (
            ("occupation", d.occupation, self.occupations_),
            ("region", d.region, self.regions_),
        ):
            key = "unknown" if value is None else value if value in vocab else "other"
            x[index[f"{name}={key}"]] = 1.0
        b = p.behaviour
        if b is None:
            x[index["lifecycle=new"] :] = np.nan
            return x
        x[index[f"lifecycle={b.activity.lifecycle}"]] = 1.0
        total = sum(b.hours)
        values = {
            "log_events": _log1p(b.activity.events),
            "log_events_30d": _log1p(b.activity.events_30d),
            "log_events_7d": _log1p(b.activity.events_7d),
            "log_days_since_last": _log1p(b.activity.days_since_last_event),
            "has_purchased": float(b.price.purchases > 0),
            "log_frequency": _log1p(b.rfm.frequency),
            "log_monetary": _log1p(b.rfm.monetary),
            "log_recency": _log1p(b.rfm.recency_days),
            "cart_rate": math.nan if b.funnel.cart_rate is None else b.funnel.cart_rate,
            "purchase_rate": math.nan if b.funnel.purchase_rate is None else b.funnel.purchase_rate,
            "discount_share": math.nan
            if b.price.discount_share is None
            else b.price.discount_share,
            "log_price_index": _log1p(b.price.price_index),
            "night_share": sum(b.hours[h] for h in NIGHT_HOURS) / total if total else math.nan,
        }
        for column, v in values.items():
            x[index[column]] = v
        shares = {a.key: a.share for a in b.categories if a.level == 0}
        for c in self.categories_:
            x[index[f"cat={c}"]] = shares.get(c, 0.0)
        return x

    def transform(self, profiles: Sequence[UserProfile]) -> FloatArray:
        """Scaled rows: (raw − training mean) / training std, missing → 0."""
        return self.scale(self.raw(profiles))

    def scale(self, raw: FloatArray) -> FloatArray:
        """Scale rows of ``raw`` (NaN = missing) with the training mean and std."""
        if self.mean_ is None or self.std_ is None:
            raise NotFittedError("FeatureSpace used before fit")
        raw = np.where(np.isnan(raw), self.mean_, raw)
        return (raw - self.mean_) / self.std_

    def save(self, path: Path) -> None:
        if self.mean_ is None or self.std_ is None:
            raise NotFittedError("FeatureSpace.save called before fit")
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "features.npz", mean=self.mean_, std=self.std_)
        meta = {
            "n_top": self.n_top,
            "n_categories": self.n_categories,
            "columns": self.columns,
            "occupations": self.occupations_,
            "regions": self.regions_,
            "categories": self.categories_,
        }
        (path / "features.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            meta = json.loads((path / "features.json").read_text())
            with np.load(path / "features.npz", allow_pickle=False) as arrays:
                mean, std = arrays["mean"], arrays["std"]
            out = cls(n_top=int(meta["n_top"]), n_categories=int(meta["n_categories"]))
            out.occupations_ = list(meta["occupations"])
            out.regions_ = list(meta["regions"])
            out.categories_ = list(meta["categories"])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"cannot load the feature space from {path}: {exc}") from None
        out.columns_ = out._columns()
        if out.columns_ != meta["columns"] or mean.shape != (len(out.columns_),):
            raise ModelError(f"{path}: saved columns do not match the arrays")
        out.mean_, out.std_ = mean.astype(np.float64), std.astype(np.float64)
        return out


def _phrase(column: str, z: float) -> str | None:
    """Readable phrase of a centroid coordinate, or None when it says nothing."""
    if column in PHRASES:
        return PHRASES[column][0 if z > 0 else 1]
    if z <= 0 or "=" not in column:
        return None
    name, value = column.split("=", 1)
    if value in ("unknown", "other"):
        return None
    return {
        "age_band": f"aged {value}",
        "gender": {"f": "mostly women", "m": "mostly men"}.get(value),
        "occupation": f"{value}s",
        "region": f"from {value}",
        "lifecycle": f"{value.replace('_', '-')} customers",
        "cat": f"into {value}",
    }.get(name)


class Segmenter:
    """k-means segments over scaled feature rows, named from their centroids."""

    def __init__(self, k: int = 8, seed: int = 0, iterations: int = 50) -> None:
        self.k = k
        self.seed = seed
        self.iterations = iterations
        self.centroids_: FloatArray | None = None
        self.columns_: list[str] = []
        self.sizes_: list[int] = []
        self.names_: list[str] = []
        self.descriptions_: list[str] = []

    def fit(self, rows: FloatArray, columns: Sequence[str]) -> Self:
        """Cluster ``rows`` (scaled, one per user) into at most ``k`` segments."""
        n = rows.shape[0]
        if n == 0:
            raise ModelError("Segmenter.fit needs at least one row")
        k = max(1, min(self.k, n))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "one of the clusters is empty"
            centroids, _ = kmeans2(
                rows, k, iter=1, minit="++", rng=np.random.default_rng(self.seed)
            )
        labels = self._nearest(rows, centroids)
        for _ in range(self.iterations):  # Lloyd steps until no row changes segment
            for c in range(k):
                members = rows[labels == c]
                if len(members):  # an empty cluster keeps its centroid
                    centroids[c] = members.mean(axis=0)
            moved = self._nearest(rows, centroids)
            if np.array_equal(moved, labels):
                break
            labels = moved
        sizes = np.bincount(labels, minlength=k)
        order = sorted((i for i in range(k) if sizes[i] > 0), key=lambda i: (-sizes[i], i))
        self.centroids_ = np.asarray(centroids[order], dtype=np.float64)
        self.columns_ = list(columns)
        labels = self._nearest(rows, self.centroids_)
        self.sizes_ = np.bincount(labels, minlength=len(order)).tolist()
        self._name()
        return self

    @staticmethod
    def _nearest(rows: FloatArray, centroids: FloatArray) -> IntArray:
        # ||x - c||² without the constant ||x||²: memory n × k, not n × k × d.
        d = (centroids**2).sum(axis=1)[None, :] - 2.0 * rows @ centroids.T
        return np.asarray(np.argmin(d, axis=1), dtype=np.int64)

    def assign(self, rows: FloatArray) -> IntArray:
        """Segment id (nearest centroid) of each scaled row."""
        if self.centroids_ is None:
            raise NotFittedError("Segmenter.assign called before fit")
        if rows.shape[0] == 0:
            return np.empty(0, np.int64)
        return self._nearest(rows, self.centroids_)

    def _name(self) -> None:
        assert self.centroids_ is not None
        self.names_, self.descriptions_ = [], []
        seen: Counter[str] = Counter()
        for centroid in self.centroids_:
            ranked = sorted(
                range(len(centroid)), key=lambda j: (-abs(centroid[j]), self.columns_[j])
            )
            traits: list[tuple[str, int]] = []
            for j in ranked:
                z = float(centroid[j])
                if abs(z) < MIN_Z or len(traits) == 4:
                    break
                phrase = _phrase(self.columns_[j], z)
                if phrase is not None and phrase not in (t for t, _ in traits):
                    traits.append((phrase, j))
            named: list[str] = []
            families: set[str] = set()
            for phrase, j in traits:
                if len(named) < 2 and _family(self.columns_[j]) not in families:
                    named.append(phrase)
                    families.add(_family(self.columns_[j]))
            name = ", ".join(named) or "typical shoppers"
            name = name[0].upper() + name[1:]
            seen[name] += 1
            if seen[name] > 1:
                name = f"{name} ({seen[name]})"
            self.names_.append(name)
            details = "; ".join(
                f"{t} ({self.columns_[j]} {float(centroid[j]):+.1f}σ)" for t, j in traits
            )
            text = details or "close to the average on every feature"
            self.descriptions_.append(text[0].upper() + text[1:])

    def save(self, path: Path) -> None:
        if self.centroids_ is None:
            raise NotFittedError("Segmenter.save called before fit")
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "segments.npz", centroids=self.centroids_)
        meta: dict[str, Any] = {
            "k": self.k,
            "seed": self.seed,
            "iterations": self.iterations,
            "columns": self.columns_,
            "sizes": self.sizes_,
            "names": self.names_,
            "descriptions": self.descriptions_,
        }
        (path / "segments.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            meta = json.loads((path / "segments.json").read_text())
            with np.load(path / "segments.npz", allow_pickle=False) as arrays:
                centroids = arrays["centroids"].astype(np.float64)
            out = cls(k=int(meta["k"]), seed=int(meta["seed"]), iterations=int(meta["iterations"]))
            out.columns_ = list(meta["columns"])
            out.sizes_ = [int(s) for s in meta["sizes"]]
            out.names_ = list(meta["names"])
            out.descriptions_ = list(meta["descriptions"])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"cannot load segments from {path}: {exc}") from None
        if centroids.shape != (len(out.sizes_), len(out.columns_)):
            raise ModelError(f"{path}: centroids do not match the saved columns")
        out.centroids_ = centroids
        return out
