"""Item cleaning and normalization over the catalog, as a polars table.

``ItemFeatures.fit(items)`` learns, from the catalog (``Catalog.scan()`` items or an
``items_frame``): the price statistics of every category prefix with at least
``min_group_size`` priced items, the level-1 categories that get a one-hot column,
the normalized title keys (to find duplicates of later items) and the missing counts.
``transform(items)`` gives the cleaned table, one row per item:

==========================  ==============================================================
column                      meaning
==========================  ==============================================================
item_id, title, description trimmed; empty text is null
brand, category, price, …   as in ``Item``
title_norm, brand_norm      lower case, runs of anything but letters/digits -> one space
duplicate_group             smallest item id sharing ``title_norm`` + ``brand_norm`` with
                            this item (fitted catalog + this batch), null when unique or
                            untitled; a missing brand only matches a missing brand
duplicate_count             size of that group (1 when unique)
level_1, level_2, level_3   the first three category levels (null when absent)
category_depth              number of levels (0 = no category)
category_path               levels joined with " > "
discount_pct                ``100 · (1 - price / original_price)`` when both are known and
                            ``original_price > 0``; a price above the original gives 0
stock_flag                  ``untracked`` (stock null), ``out_of_stock`` (0), ``low_stock``
                            (1..``low_stock_threshold``), ``in_stock``
price_group                 category path the price is compared within: the deepest prefix
                            of the item's path with >= ``min_group_size`` priced items at
                            fit (a category counts the items of its whole subtree), else
                            ``""`` (the whole catalog); null without a price
price_group_level           depth of that prefix (0 = whole catalog)
price_group_size            priced items of that group at fit
price_z                     ``(price - mean) / std`` in the group (population std; 0 when
                            std is 0)
price_pct                   mid-rank percentile in the group, in [0, 1]:
                            ``(#below + #equal / 2) / n``
<field>_missing             True when the field is null (title, description, brand,
                            category (no level), price, original_price, stock, created_at)
==========================  ==============================================================

``matrix(items, vocab)`` is the numeric item feature matrix for the models, one row per
vocabulary index (float64), columns ``columns_``: see ``BASE_COLUMNS`` and
``ItemFeatures.matrix``. Saved as ``item_features.json`` + ``item_features.npz`` (no
pickle).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

from shopcast.domain import Item
from shopcast.errors import ConfigError, ModelError, NotFittedError
from shopcast.models._base import FloatArray, IntArray, Vocabulary

FORMAT_VERSION = 1
LEVELS = 3
SEP = "\x1f"  # joins category levels inside price group keys
GLOBAL = ""  # the price group of the whole catalog
OTHER_CATEGORY = "<other>"

ITEM_SCHEMA: dict[str, Any] = {
    "item_id": pl.String,
    "title": pl.String,
    "description": pl.String,
    "brand": pl.String,
    "category": pl.List(pl.String),
    "price": pl.Float64,
    "original_price": pl.Float64,
    "stock": pl.Int64,
    "created_at": pl.Float64,
}
#: Fields whose absence is reported and gets a ``<field>_missing`` column.
MISSING_FIELDS: tuple[str, ...] = (
    "title",
    "description",
    "brand",
    "category",
    "price",
    "original_price",
    "stock",
    "created_at",
)
STOCK_FLAGS: tuple[str, ...] = ("in_stock", "low_stock", "out_of_stock", "untracked")

#: The fixed columns of ``ItemFeatures.matrix`` (one-hot level-1 columns follow).
BASE_COLUMNS: tuple[str, ...] = (
    "in_catalog",  # 1 for items of the catalog, 0 for vocabulary ids without one
    "price_log",  # ln(1 + price), 0 when missing
    "price_z",  # clipped to [-z_clip, z_clip], 0 when missing
    "price_pct",  # 0.5 when missing
    "discount",  # discount_pct / 100, 0 when unknown
    "stock_in",
    "stock_low",
    "stock_out",
    "stock_untracked",
    "category_depth",
    "is_duplicate",
    "title_missing",
    "description_missing",
    "brand_missing",
    "category_missing",
    "price_missing",
    "original_price_missing",
)


def items_frame(items: Iterable[Item]) -> pl.DataFrame:
    """The items as a columnar table with ``ITEM_SCHEMA`` (attributes left out)."""
    cols: dict[str, list[Any]] = {name: [] for name in ITEM_SCHEMA}
    for item in items:
        for name, values in cols.items():
            values.append(getattr(item, name))
    return pl.DataFrame(cols, schema=ITEM_SCHEMA)


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr == "").then(None).otherwise(expr)


def normalized(column: str) -> pl.Expr:
    """Lower case, every run of characters other than letters and digits -> one space."""
    text = (
        pl.col(column).str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]+", " ").str.strip_chars()
    )
    return _blank_to_null(text)


_NON_ALNUM = re.compile(r"[\W_]+")


def normalize_title(text: str | None) -> str | None:
    """``normalized`` for one string, in Python (None when nothing is left)."""
    if text is None:
        return None
    return _NON_ALNUM.sub(" ", text.lower()).strip() or None


def duplicate_key(item: Item) -> str | None:
    """What duplicates share: normalized title + normalized brand (None without a title)."""
    title = normalize_title(item.title)
    if title is None:
        return None
    return title + SEP + (normalize_title(item.brand) or "")


def clean_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Trimmed ids and texts, empty text -> null, blank category levels dropped.

    Rows with an empty id are dropped; when ids repeat, the last row wins.
    """
    missing = [c for c in ITEM_SCHEMA if c not in frame.columns]
    if missing:
        frame = frame.with_columns(pl.lit(None, ITEM_SCHEMA[c]).alias(c) for c in missing)
    texts = ("title", "description", "brand")
    out = frame.select(
        pl.col("item_id").cast(pl.String).str.strip_chars(),
        *(_blank_to_null(pl.col(c).cast(pl.String).str.strip_chars()).alias(c) for c in texts),
        pl.col("category")
        .cast(pl.List(pl.String))
        .list.eval(pl.element().str.strip_chars().filter(pl.element().str.len_chars() > 0))
        .fill_null([]),
        *(pl.col(c).cast(ITEM_SCHEMA[c]) for c in ("price", "original_price", "stock")),
        pl.col("created_at").cast(pl.Float64),
    )
    out = out.filter(pl.col("item_id").is_not_null() & (pl.col("item_id") != ""))
    return out.unique("item_id", keep="last", maintain_order=True)


def _as_frame(items: Iterable[Item] | pl.DataFrame) -> pl.DataFrame:
    frame = items if isinstance(items, pl.DataFrame) else items_frame(items)
    return clean_frame(frame)


def _dup_key() -> pl.Expr:
    return pl.when(pl.col("title_norm").is_not_null()).then(
        pl.concat_str([pl.col("title_norm"), pl.col("brand_norm").fill_null("")], separator=SEP)
    )


def duplicate_groups(items: Iterable[Item] | pl.DataFrame) -> pl.DataFrame:
    """Groups of items sharing normalized title + brand: ``title_norm``, ``brand_norm``,
    ``item_ids`` (sorted), ``n``; largest groups first, then by first id."""
    frame = _as_frame(items).with_columns(
        normalized("title").alias("title_norm"), normalized("brand").alias("brand_norm")
    )
    return (
        frame.filter(pl.col("title_norm").is_not_null())
        .group_by("title_norm", "brand_norm")
        .agg(pl.col("item_id").sort().alias("item_ids"), pl.len().alias("n"))
        .filter(pl.col("n") >= 2)
        .with_columns(pl.col("item_ids").list.first().alias("_first"))
        .sort(["n", "_first"], descending=[True, False])
        .drop("_first")
        .with_columns(pl.col("n").cast(pl.Int64))
    )


def missing_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Null count per field of ``MISSING_FIELDS`` (an empty category counts as missing)."""
    row = frame.select(
        *(pl.col(f).is_null().sum().alias(f) for f in MISSING_FIELDS if f != "category"),
        (pl.col("category").list.len() == 0).sum().alias("category"),
    ).row(0, named=True)
    return {f: int(row[f] or 0) for f in MISSING_FIELDS}


def _prefix(depth: int) -> pl.Expr:
    """The first ``depth`` category levels joined with ``SEP`` (null when shallower)."""
    cat = pl.col("category")
    return pl.when(cat.list.len() >= depth).then(cat.list.head(depth).list.join(SEP))


class ItemFeatures:
    """Cleaned, normalized item features (see the module docstring for the columns).

    Hyperparameters: ``low_stock_threshold`` (stock 1..threshold is low),
    ``min_group_size`` (priced items a category needs for its own price statistics),
    ``max_categories`` (level-1 categories with a one-hot column; the rest share
    ``cat1=<other>``), ``z_clip`` (bound of ``price_z`` in the matrix).

    Learned state: ``n_items_``, ``group_keys_`` / ``group_n_`` / ``group_mean_`` /
    ``group_std_`` / ``group_offset_`` / ``sorted_prices_`` (per price group),
    ``categories_``, ``missing_``, ``dup_ids_`` / ``dup_keys_``, ``columns_``.
    """

    n_items_: int
    group_keys_: list[str]
    group_n_: IntArray
    group_mean_: FloatArray
    group_std_: FloatArray
    group_offset_: IntArray
    sorted_prices_: FloatArray
    categories_: list[str]
    missing_: dict[str, int]
    dup_ids_: list[str]
    dup_keys_: list[str]
    columns_: list[str]

    def __init__(
        self,
        *,
        low_stock_threshold: int = 5,
        min_group_size: int = 5,
        max_categories: int = 50,
        z_clip: float = 5.0,
    ) -> None:
        if low_stock_threshold < 0:
            raise ConfigError(f"low_stock_threshold must be >= 0, got {low_stock_threshold}")
        if min_group_size < 1:
            raise ConfigError(f"min_group_size must be >= 1, got {min_group_size}")
        if max_categories < 0:
            raise ConfigError(f"max_categories must be >= 0, got {max_categories}")
        if not z_clip > 0:
            raise ConfigError(f"z_clip must be > 0, got {z_clip}")
        self.low_stock_threshold = low_stock_threshold
        self.min_group_size = min_group_size
        self.max_categories = max_categories
        self.z_clip = z_clip

    # -- fit ---------------------------------------------------------------------------

    def fit(self, items: Iterable[Item] | pl.DataFrame) -> Self:
        """Learn price groups, level-1 categories, title keys and missing counts."""
        frame = _as_frame(items)
        priced = frame.filter(pl.col("price").is_not_null())
        depth = int(priced.select(pl.col("category").list.len().max()).item() or 0)
        parts = [priced.select(pl.lit(GLOBAL).alias("key"), "price")]
        for d in range(1, depth + 1):
            parts.append(priced.select(_prefix(d).alias("key"), "price").drop_nulls("key"))
        stats = (
            pl.concat(parts)
            .group_by("key")
            .agg(
                pl.len().alias("n"),
                pl.col("price").mean().alias("mean"),
                pl.col("price").std(ddof=0).alias("std"),
                pl.col("price").sort().alias("prices"),
            )
            .filter((pl.col("n") >= self.min_group_size) | (pl.col("key") == GLOBAL))
            .sort("key")
        )
        n = stats["n"].cast(pl.Int64).to_numpy()
        self.group_keys_ = stats["key"].to_list()
        self.group_n_ = n.astype(np.int64)
        self.group_mean_ = stats["mean"].fill_null(0.0).to_numpy().astype(np.float64)
        self.group_std_ = stats["std"].fill_null(0.0).to_numpy().astype(np.float64)
        self.group_offset_ = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        self.sorted_prices_ = (
            stats["prices"].explode().drop_nulls().to_numpy().astype(np.float64)
            if n.sum()
            else np.empty(0, np.float64)
        )
        level1 = (
            frame.select(pl.col("category").list.first().alias("c"))
            .drop_nulls()
            .group_by("c")
            .len()
            .sort(["len", "c"], descending=[True, False])
            .head(self.max_categories)
        )
        self.categories_ = sorted(level1["c"].to_list())
        self.missing_ = missing_counts(frame)
        keys = frame.select(
            "item_id",
            _raw_dup_key().alias("key"),
        ).drop_nulls("key")
        self.dup_ids_ = keys["item_id"].to_list()
        self.dup_keys_ = keys["key"].to_list()
        self.n_items_ = frame.height
        self.columns_ = [
            *BASE_COLUMNS,
            *(f"cat1={c}" for c in self.categories_),
            f"cat1={OTHER_CATEGORY}",
        ]
        return self

    def _require_fitted(self) -> None:
        if not hasattr(self, "columns_"):
            raise NotFittedError("ItemFeatures is not fitted; call fit() first")

    # -- transform -----------------------------------------------------------------------

    def transform(self, items: Iterable[Item] | pl.DataFrame) -> pl.DataFrame:
        """The cleaned feature table of ``items`` (columns in the module docstring)."""
        self._require_fitted()
        frame = _as_frame(items)
        cat = pl.col("category")
        price, original, stock = pl.col("price"), pl.col("original_price"), pl.col("stock")
        out = frame.with_columns(
            normalized("title").alias("title_norm"),
            normalized("brand").alias("brand_norm"),
            *(cat.list.get(i, null_on_oob=True).alias(f"level_{i + 1}") for i in range(LEVELS)),
            cat.list.len().cast(pl.Int64).alias("category_depth"),
            _blank_to_null(cat.list.join(" > ")).alias("category_path"),
            pl.when(price.is_not_null() & (original > 0))
            .then((100.0 * (1.0 - price / original)).clip(lower_bound=0.0))
            .alias("discount_pct"),
            pl.when(stock.is_null())
            .then(pl.lit("untracked"))
            .when(stock <= 0)
            .then(pl.lit("out_of_stock"))
            .when(stock <= self.low_stock_threshold)
            .then(pl.lit("low_stock"))
            .otherwise(pl.lit("in_stock"))
            .alias("stock_flag"),
            *(pl.col(f).is_null().alias(f"{f}_missing") for f in MISSING_FIELDS if f != "category"),
            (cat.list.len() == 0).alias("category_missing"),
        )
        out = self._prices(out)
        out = self._duplicates(out)
        return out.select(
            *ITEM_SCHEMA,
            "title_norm",
            "brand_norm",
            "duplicate_group",
            "duplicate_count",
            *(f"level_{i + 1}" for i in range(LEVELS)),
            "category_depth",
            "category_path",
            "discount_pct",
            "stock_flag",
            "price_group",
            "price_group_level",
            "price_group_size",
            "price_z",
            "price_pct",
            *(f"{f}_missing" for f in MISSING_FIELDS),
        )

    def fit_transform(self, items: Iterable[Item] | pl.DataFrame) -> pl.DataFrame:
        frame = _as_frame(items)
        return self.fit(frame).transform(frame)

    def _prices(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Add the price group of each priced item, its size, ``price_z`` and ``price_pct``."""
        depth = int(frame.select(pl.col("category").list.len().max()).item() or 0)
        known = pl.Series(self.group_keys_, dtype=pl.String)
        candidates = [
            pl.when(_prefix(d).is_in(known.implode())).then(_prefix(d)) for d in range(depth, 0, -1)
        ]
        key = pl.coalesce([*candidates, pl.lit(GLOBAL)]) if candidates else pl.lit(GLOBAL)
        lookup = pl.DataFrame(
            {"price_group": self.group_keys_, "_gid": np.arange(len(self.group_keys_))},
            schema={"price_group": pl.String, "_gid": pl.Int64},
        )
        frame = frame.with_columns(
            pl.when(pl.col("price").is_not_null()).then(key).alias("price_group")
        ).join(lookup, on="price_group", how="left", maintain_order="left")
        gid = frame["_gid"].fill_null(-1).to_numpy().astype(np.int64)
        prices = frame["price"].fill_null(0.0).to_numpy().astype(np.float64)
        size = np.zeros(gid.shape[0], np.int64)
        z = np.full(gid.shape[0], np.nan)
        pct = np.full(gid.shape[0], np.nan)
        has = gid >= 0
        if self.group_n_.size:
            g = gid[has]
            n = self.group_n_[g]
            std = self.group_std_[g]
            size[has] = n
            ok = std > 0
            zz = np.zeros(g.shape[0])
            zz[ok] = (prices[has][ok] - self.group_mean_[g][ok]) / std[ok]
            z[has] = np.where(n > 0, zz, np.nan)
            pct[has] = self._percentiles(g, prices[has])
        level = frame["price_group"].str.count_matches(SEP) + 1
        return (
            frame.drop("_gid")
            .with_columns(
                pl.when(pl.col("price_group") == GLOBAL)
                .then(0)
                .otherwise(level)
                .cast(pl.Int64)
                .alias("price_group_level"),
                pl.Series("price_group_size", size).cast(pl.Int64),
                pl.Series("price_z", z).fill_nan(None),
                pl.Series("price_pct", pct).fill_nan(None),
            )
            .with_columns(
                pl.when(pl.col("price_group").is_null())
                .then(None)
                .otherwise(pl.col("price_group_size"))
                .alias("price_group_size"),
                pl.col("price_group").str.replace_all(SEP, " > ", literal=True),
            )
        )

    def _percentiles(self, gid: IntArray, prices: FloatArray) -> FloatArray:
        out = np.full(gid.shape[0], np.nan)
        for g in np.unique(gid):
            sel = gid == g
            n = int(self.group_n_[g])
            if n == 0:
                continue
            start = int(self.group_offset_[g])
            ref = self.sorted_prices_[start : start + n]
            below = np.searchsorted(ref, prices[sel], side="left")
            upto = np.searchsorted(ref, prices[sel], side="right")
            out[sel] = (below + 0.5 * (upto - below)) / n
        return out

    def _duplicates(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Groups over the fitted catalog (minus ids in ``frame``) plus ``frame`` itself."""
        batch = frame.select("item_id", _dup_key().alias("key"))
        fitted = pl.DataFrame(
            {"item_id": self.dup_ids_, "key": self.dup_keys_},
            schema={"item_id": pl.String, "key": pl.String},
        )
        keys = batch["key"].drop_nulls().unique()
        fitted = fitted.filter(pl.col("key").is_in(keys.implode())).join(
            batch.select("item_id"), on="item_id", how="anti"
        )
        groups = (
            pl.concat([fitted, batch.drop_nulls("key")])
            .group_by("key")
            .agg(
                pl.col("item_id").min().alias("duplicate_group"),
                pl.len().cast(pl.Int64).alias("duplicate_count"),
            )
        )
        out = frame.with_columns(_dup_key().alias("key")).join(
            groups, on="key", how="left", maintain_order="left"
        )
        return out.drop("key").with_columns(
            pl.when(pl.col("duplicate_count") >= 2).then(pl.col("duplicate_group")),
            pl.col("duplicate_count").fill_null(1),
        )

    # -- the matrix ----------------------------------------------------------------------

    def matrix(self, items: Iterable[Item] | pl.DataFrame, vocab: Vocabulary) -> FloatArray:
        """Numeric features, ``len(vocab) x len(columns_)``, row ``i`` = ``vocab.id(i)``.

        ``items`` are raw items or the output of ``transform``. Ids of the vocabulary
        that are not among ``items`` get ``in_catalog = 0``, every ``*_missing`` = 1,
        ``stock_untracked = 1``, ``price_pct = 0.5``, zeros elsewhere; items not in
        ``vocab`` are left out. Level-1 one-hots: ``cat1=<name>`` for ``categories_``,
        ``cat1=<other>`` for any other level 1, none without a category.
        """
        self._require_fitted()
        table = items if _is_transformed(items) else self.transform(items)
        assert isinstance(table, pl.DataFrame)
        col = {name: j for j, name in enumerate(self.columns_)}
        out = np.zeros((len(vocab), len(self.columns_)), dtype=np.float64)
        for name in ("stock_untracked", *(f"{f}_missing" for f in MISSING_FIELDS)):
            if name in col:
                out[:, col[name]] = 1.0
        out[:, col["price_pct"]] = 0.5
        rows = vocab.indices(table["item_id"].to_list())
        keep = rows >= 0
        t = table.filter(pl.Series(keep))
        r = rows[keep]
        price = t["price"]
        values: dict[str, Any] = {
            "in_catalog": 1.0,
            "price_log": np.log1p(price.fill_null(0.0).to_numpy()),
            "price_z": np.clip(t["price_z"].fill_null(0.0).to_numpy(), -self.z_clip, self.z_clip),
            "price_pct": t["price_pct"].fill_null(0.5).to_numpy(),
            "discount": t["discount_pct"].fill_null(0.0).to_numpy() / 100.0,
            "stock_in": (t["stock_flag"] == "in_stock").to_numpy(),
            "stock_low": (t["stock_flag"] == "low_stock").to_numpy(),
            "stock_out": (t["stock_flag"] == "out_of_stock").to_numpy(),
            "stock_untracked": (t["stock_flag"] == "untracked").to_numpy(),
            "category_depth": t["category_depth"].to_numpy(),
            "is_duplicate": t["duplicate_group"].is_not_null().to_numpy(),
        }
        for f in MISSING_FIELDS:
            if f"{f}_missing" in col:
                values[f"{f}_missing"] = t[f"{f}_missing"].to_numpy()
        for name, v in values.items():
            out[r, col[name]] = v
        level1 = t["level_1"].to_list()
        other = col[f"cat1={OTHER_CATEGORY}"]
        for i, c in zip(r.tolist(), level1, strict=True):
            if c is not None:
                out[i, col.get(f"cat1={c}", other)] = 1.0
        return out

    def report(self) -> dict[str, Any]:
        """What ``fit`` saw: items, missing counts per field, duplicate groups, price groups."""
        self._require_fitted()
        keys = pl.DataFrame({"key": self.dup_keys_}, schema={"key": pl.String})
        sizes = keys.group_by("key").len().filter(pl.col("len") >= 2)["len"]
        return {
            "items": self.n_items_,
            "missing": dict(self.missing_),
            "duplicate_groups": sizes.len(),
            "items_in_duplicate_groups": int(sizes.sum() or 0),
            "price_groups": len(self.group_keys_),
        }

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``item_features.json`` and ``item_features.npz`` into directory ``path``."""
        self._require_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "params": {
                "low_stock_threshold": self.low_stock_threshold,
                "min_group_size": self.min_group_size,
                "max_categories": self.max_categories,
                "z_clip": self.z_clip,
            },
            "n_items": self.n_items_,
            "group_keys": self.group_keys_,
            "categories": self.categories_,
            "missing": self.missing_,
            "dup_ids": self.dup_ids_,
            "dup_keys": self.dup_keys_,
            "columns": self.columns_,
        }
        (path / "item_features.json").write_text(json.dumps(meta))
        np.savez(
            path / "item_features.npz",
            allow_pickle=False,
            group_n=self.group_n_,
            group_mean=self.group_mean_,
            group_std=self.group_std_,
            group_offset=self.group_offset_,
            sorted_prices=self.sorted_prices_,
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read what ``save`` wrote; ``ModelError`` when missing or inconsistent."""
        path = Path(path)
        try:
            meta = json.loads((path / "item_features.json").read_text())
            with np.load(path / "item_features.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            out = cls(**meta["params"])
            out.n_items_ = int(meta["n_items"])
            out.group_keys_ = [str(k) for k in meta["group_keys"]]
            out.categories_ = [str(c) for c in meta["categories"]]
            out.missing_ = {str(k): int(v) for k, v in meta["missing"].items()}
            out.dup_ids_ = [str(i) for i in meta["dup_ids"]]
            out.dup_keys_ = [str(k) for k in meta["dup_keys"]]
            out.columns_ = [str(c) for c in meta["columns"]]
            out.group_n_ = arrays["group_n"].astype(np.int64)
            out.group_mean_ = arrays["group_mean"].astype(np.float64)
            out.group_std_ = arrays["group_std"].astype(np.float64)
            out.group_offset_ = arrays["group_offset"].astype(np.int64)
            out.sorted_prices_ = arrays["sorted_prices"].astype(np.float64)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"cannot read saved item features at {path}: {exc}") from None
        sizes = {
            out.group_n_.shape[0],
            out.group_mean_.shape[0],
            out.group_std_.shape[0],
            len(out.group_keys_),
        }
        if (
            meta.get("format") != FORMAT_VERSION
            or len(sizes) != 1
            or int(out.group_n_.sum()) != out.sorted_prices_.shape[0]
            or len(out.dup_ids_) != len(out.dup_keys_)
        ):
            raise ModelError(f"{path} holds inconsistent item features")
        return out


def _raw_dup_key() -> pl.Expr:
    """The duplicate key computed from raw ``title`` / ``brand`` columns."""
    return (
        pl.when(normalized("title").is_not_null())
        .then(
            pl.concat_str([normalized("title"), normalized("brand").fill_null("")], separator=SEP)
        )
        .otherwise(None)
    )


def _is_transformed(items: object) -> bool:
    return isinstance(items, pl.DataFrame) and "stock_flag" in items.columns
