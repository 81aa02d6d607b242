"""Side features of the hybrid model: a small typed input and its fitted encoding.

``SideFeatures`` holds what is known about users and items by external id, as
``FeatureTable``s: categorical tokens (``"genre:Drama"``, ``"cat:Home/Kitchen"``,
``"age:25-34"``; several per field allowed), a numeric vector (NaN = missing) and a
text. ``SideFeatures.from_records`` fills one from catalog ``Item`` and ``User``
records; callers with other sources build the tables directly.

``TableEncoder`` turns a table into the sparse *feature bag* a tower reads: one
column per known token (weight 1 / tokens of the same field), one per numeric feature
(standardized with the mean and standard deviation of the training entities, missing
= 0) and one per TF-IDF term (the ``shopcast.features.text`` encoder, fitted on the
training entities' texts). Everything is fitted on training entities only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from shopcast.errors import ConfigError
from shopcast.models._base import FloatArray, IntArray

__all__ = ["FeatureBag", "FeatureTable", "SideFeatures", "TableEncoder"]

#: Characters of a postal code kept as a coarser region token (``zip2:85``).
_ZIP_PREFIX = 2


@dataclass(frozen=True, slots=True)
class FeatureTable:
    """Features of users or items by external id (any of the three may be empty)."""

    tokens: Mapping[str, Sequence[str]] = field(default_factory=dict)
    numeric: Mapping[str, Sequence[float]] = field(default_factory=dict)
    numeric_names: Sequence[str] = ()
    text: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        width = len(self.numeric_names)
        for key, row in self.numeric.items():
            if len(row) != width:
                raise ConfigError(
                    f"numeric features of {key!r} have {len(row)} values; numeric_names has {width}"
                )

    @property
    def ids(self) -> list[str]:
        """Every id with at least one feature, in first-seen order."""
        return list(dict.fromkeys([*self.tokens, *self.numeric, *self.text]))

    def __bool__(self) -> bool:
        return bool(self.tokens or self.numeric or self.text)

    def merged(self, other: FeatureTable) -> FeatureTable:
        """``other``'s entries override this table's (numeric names must agree)."""
        if self.numeric and other.numeric and list(self.numeric_names) != list(other.numeric_names):
            raise ConfigError("cannot merge feature tables with different numeric_names")
        return FeatureTable(
            tokens={**self.tokens, **other.tokens},
            numeric={**self.numeric, **other.numeric},
            numeric_names=tuple(other.numeric_names or self.numeric_names),
            text={**self.text, **other.text},
        )


@dataclass(frozen=True, slots=True)
class SideFeatures:
    """User and item side features; ids are external (``User.user_id``, ``Item.item_id``)."""

    users: FeatureTable = field(default_factory=FeatureTable)
    items: FeatureTable = field(default_factory=FeatureTable)

    def merged(self, other: SideFeatures) -> SideFeatures:
        return SideFeatures(self.users.merged(other.users), self.items.merged(other.items))

    @classmethod
    def from_records(cls, items: Iterable[Any] = (), users: Iterable[Any] = ()) -> SideFeatures:
        """Features of catalog ``Item`` and ``User`` records.

        Items: tokens ``cat:`` (every prefix of the category path), ``brand:``,
        ``genre:`` (``attributes["genres"]``) and ``attr:`` (``attributes
        ["attribute_ids"]``); numeric ``log_price`` and ``year`` (of ``created_at``);
        text = title and description. Users: tokens ``age:`` (band), ``gender:``,
        ``occupation:``, ``region:`` and, for postal codes, ``zip2:``; numeric ``age``.
        """
        from shopcast.features.profiles import age_band
        from shopcast.features.text import item_text

        i_tokens: dict[str, list[str]] = {}
        i_numeric: dict[str, list[float]] = {}
        i_text: dict[str, str] = {}
        for item in items:
            toks = ["cat:" + "/".join(item.category[: d + 1]) for d in range(len(item.category))]
            if item.brand:
                toks.append(f"brand:{item.brand.strip().lower()}")
            attrs = item.attributes or {}
            toks += [f"genre:{g}" for g in attrs.get("genres", ()) or ()]
            toks += [f"attr:{a}" for a in attrs.get("attribute_ids", ()) or ()]
            if toks:
                i_tokens[item.item_id] = toks
            price = math.log1p(item.price) if item.price is not None else math.nan
            year = (
                1970.0 + item.created_at / (365.25 * 86_400.0)
                if item.created_at is not None
                else math.nan
            )
            if not (math.isnan(price) and math.isnan(year)):
                i_numeric[item.item_id] = [price, year]
            text = item_text(item)
            if text:
                i_text[item.item_id] = text
        u_tokens: dict[str, list[str]] = {}
        u_numeric: dict[str, list[float]] = {}
        for user in users:
            toks = []
            band = age_band(user.age)
            if band:
                toks.append(f"age:{band}")
            for name in ("gender", "occupation"):
                value = getattr(user, name)
                if value:
                    toks.append(f"{name}:{value.strip().lower()}")
            if user.region:
                region = user.region.strip()
                toks.append(f"region:{region.lower()}")
                if region[:_ZIP_PREFIX].isdigit() and len(region) > _ZIP_PREFIX:
                    toks.append(f"zip2:{region[:_ZIP_PREFIX]}")
            if toks:
                u_tokens[user.user_id] = toks
            if user.age is not None:
                u_numeric[user.user_id] = [float(user.age)]
        return cls(
            users=FeatureTable(u_tokens, u_numeric, ("age",) if u_numeric else ()),
            items=FeatureTable(
                i_tokens, i_numeric, ("log_price", "year") if i_numeric else (), i_text
            ),
        )


@dataclass(frozen=True, slots=True)
class FeatureBag:
    """Rows of sparse feature columns: row ``r`` is ``index[offsets[r]:offsets[r+1]]``
    with ``weight`` alongside (CSR without the matrix)."""

    index: IntArray
    weight: FloatArray
    offsets: IntArray

    @property
    def rows(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @classmethod
    def empty(cls, rows: int) -> FeatureBag:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.zeros(rows + 1, np.int64))

    @classmethod
    def from_lists(cls, index: list[IntArray], weight: list[FloatArray]) -> FeatureBag:
        lengths = np.array([a.shape[0] for a in index], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(
            np.concatenate(index).astype(np.int64) if index else np.empty(0, np.int64),
            np.concatenate(weight).astype(np.float64) if weight else np.empty(0, np.float64),
            offsets,
        )

    def take(self, rows: IntArray) -> FeatureBag:
        """The bag of ``rows`` (in that order; repeats allowed); rows outside the bag
        (-1 or beyond) are empty."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.rows:
            return FeatureBag.empty(rows.shape[0])
        inside = (rows >= 0) & (rows < self.rows)
        safe = np.where(inside, rows, 0)
        starts = self.offsets[safe]
        lengths = np.where(inside, self.offsets[safe + 1] - starts, 0)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        pos = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return FeatureBag(self.index[pos], self.weight[pos], offsets)

    def concat(self, other: FeatureBag) -> FeatureBag:
        """Rows appended below."""
        return FeatureBag(
            np.concatenate([self.index, other.index]),
            np.concatenate([self.weight, other.weight]),
            np.concatenate([self.offsets[:-1], other.offsets + self.offsets[-1]]),
        )

    def join(self, other: FeatureBag) -> FeatureBag:
        """Row by row, ``other``'s entries after this bag's (same number of rows)."""
        la, lb = np.diff(self.offsets), np.diff(other.offsets)
        offsets = np.concatenate([[0], np.cumsum(la + lb)]).astype(np.int64)
        row_a = np.repeat(np.arange(la.shape[0]), la)
        row_b = np.repeat(np.arange(lb.shape[0]), lb)
        pos_a = offsets[:-1][row_a] + (np.arange(la.sum()) - self.offsets[:-1][row_a])
        pos_b = offsets[:-1][row_b] + la[row_b] + (np.arange(lb.sum()) - other.offsets[:-1][row_b])
        index = np.empty(offsets[-1], np.int64)
        weight = np.empty(offsets[-1], np.float64)
        index[pos_a], weight[pos_a] = self.index, self.weight
        index[pos_b], weight[pos_b] = other.index, other.weight
        return FeatureBag(index, weight, offsets)


class TableEncoder:
    """Fitted encoding of a ``FeatureTable`` into feature-bag columns
    ``[tokens | numeric | text terms]`` (see the module docstring).

    Tokens seen on fewer than ``min_count`` training entities are dropped; at most
    ``text_terms`` TF-IDF terms (in at least two texts) are kept.
    """

    def __init__(self, *, min_count: int = 1, text_terms: int = 2000) -> None:
        self.min_count = min_count
        self.text_terms = text_terms
        self.tokens_: list[str] = []
        self.token_index_: dict[str, int] = {}
        self.numeric_names_: list[str] = []
        self.mean_ = np.empty(0)
        self.std_ = np.empty(0)
        self.terms_: list[str] = []
        self.idf_ = np.empty(0)
        self._tfidf: Any = None

    @property
    def width(self) -> int:
        return len(self.tokens_) + len(self.numeric_names_) + len(self.terms_)

    def fit(self, table: FeatureTable, ids: Sequence[str]) -> TableEncoder:
        """Learn token, numeric and text encodings from the entities ``ids``."""
        counts: Counter[str] = Counter()
        for key in ids:
            counts.update(set(table.tokens.get(key, ())))
        self.tokens_ = sorted(t for t, c in counts.items() if c >= self.min_count)
        self.numeric_names_ = list(table.numeric_names)
        width = len(self.numeric_names_)
        rows = [table.numeric[k] for k in ids if k in table.numeric]
        values = np.array(rows, dtype=np.float64).reshape(len(rows), width)
        finite = np.isfinite(values)
        n = finite.sum(axis=0)
        filled = np.where(finite, values, 0.0)
        mean = filled.sum(axis=0) / np.maximum(n, 1)
        var = (np.where(finite, values - mean, 0.0) ** 2).sum(axis=0) / np.maximum(n, 1)
        std = np.sqrt(var)
        self.mean_ = np.nan_to_num(mean, nan=0.0)
        self.std_ = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        texts = [table.text[k] for k in ids if table.text.get(k)]
        self.terms_, self.idf_ = [], np.empty(0)
        if len(texts) >= 2 and self.text_terms > 0:
            from shopcast.features.text import TfidfText

            tfidf = TfidfText(min_df=2, max_features=self.text_terms, sublinear_tf=True).fit(texts)
            self.terms_, self.idf_ = tfidf.terms, tfidf.idf_
        self._refresh()
        return self

    def _refresh(self) -> None:
        self.token_index_ = {t: i for i, t in enumerate(self.tokens_)}
        self._tfidf = None
        if self.terms_:
            from shopcast.features.text import TfidfText

            tfidf = TfidfText(min_df=2, sublinear_tf=True)
            tfidf.vocabulary_ = {t: i for i, t in enumerate(self.terms_)}
            tfidf.idf_ = self.idf_
            self._tfidf = tfidf

    def encode(self, table: FeatureTable, ids: Sequence[str]) -> FeatureBag:
        """Feature bags of ``ids`` (columns from 0; empty rows for unknown ids)."""
        n_tok, n_num = len(self.tokens_), len(self.numeric_names_)
        index: list[IntArray] = []
        weight: list[FloatArray] = []
        text_rows: Any = None
        if self._tfidf is not None:
            text_rows = sp.csr_array(self._tfidf.transform([table.text.get(k, "") for k in ids]))
        same_numeric = list(table.numeric_names) == self.numeric_names_
        for r, key in enumerate(ids):
            cols: list[int] = []
            vals: list[float] = []
            found = [self.token_index_[t] for t in dict.fromkeys(table.tokens.get(key, ()))
                     if t in self.token_index_]  # fmt: skip
            if found:
                fields = Counter(self.tokens_[c].split(":", 1)[0] for c in found)
                cols += found
                vals += [1.0 / fields[self.tokens_[c].split(":", 1)[0]] for c in found]
            row = table.numeric.get(key) if same_numeric else None
            if row is not None and n_num:
                z = (np.asarray(row, dtype=np.float64) - self.mean_) / self.std_
                ok = np.flatnonzero(np.isfinite(z))
                cols += (n_tok + ok).tolist()
                vals += z[ok].tolist()
            c = np.asarray(cols, dtype=np.int64)
            v = np.asarray(vals, dtype=np.float64)
            if text_rows is not None:
                lo, hi = text_rows.indptr[r], text_rows.indptr[r + 1]
                c = np.concatenate([c, n_tok + n_num + text_rows.indices[lo:hi].astype(np.int64)])
                v = np.concatenate([v, text_rows.data[lo:hi].astype(np.float64)])
            index.append(c)
            weight.append(v)
        return FeatureBag.from_lists(index, weight) if ids else FeatureBag.empty(0)

    # -- persistence (plain arrays) --------------------------------------------------

    def arrays(self, prefix: str) -> dict[str, np.ndarray[Any, Any]]:
        return {
            f"{prefix}tokens": np.asarray(self.tokens_, dtype=np.str_),
            f"{prefix}numeric_names": np.asarray(self.numeric_names_, dtype=np.str_),
            f"{prefix}mean": self.mean_,
            f"{prefix}std": self.std_,
            f"{prefix}terms": np.asarray(self.terms_, dtype=np.str_),
            f"{prefix}idf": self.idf_,
        }

    @staticmethod
    def array_names(prefix: str) -> tuple[str, ...]:
        names = ("tokens", "numeric_names", "mean", "std", "terms", "idf")
        return tuple(prefix + n for n in names)

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray[Any, Any]], prefix: str, **params: int
    ) -> TableEncoder:
        enc = cls(**params)
        enc.tokens_ = [str(t) for t in arrays[f"{prefix}tokens"].tolist()]
        enc.numeric_names_ = [str(t) for t in arrays[f"{prefix}numeric_names"].tolist()]
        enc.mean_ = arrays[f"{prefix}mean"].astype(np.float64)
        enc.std_ = arrays[f"{prefix}std"].astype(np.float64)
        enc.terms_ = [str(t) for t in arrays[f"{prefix}terms"].tolist()]
        enc.idf_ = arrays[f"{prefix}idf"].astype(np.float64)
        enc._refresh()
        return enc
