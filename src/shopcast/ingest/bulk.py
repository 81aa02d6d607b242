"""Column-wise cleaning of event frames: the rules of ``shopcast.domain.Event``, vectorized.

``clean_events`` accepts a raw frame whose columns are ``Event`` fields (``timestamp``
for the time) and returns the rows ``Event`` would accept, normalized exactly as
``Event`` normalizes them, in the canonical ``EVENT_COLUMNS`` layout, plus the number
of rejected rows per reason. ``tests/ingest/test_bulk_agrees.py`` checks both paths
agree record by record.

A frame cannot tell an absent field from a null one, so a null is read as absent
(as the API does): a null ``timestamp`` is the time of the call, a null ``context``
is empty. ``context`` is JSON text of an object, or a struct column whose null
fields are dropped. A row is rejected for its first problem, in ``Event``'s field
order, then for the cross-field rules in ``Event``'s order.

Common shapes take vectorized fast paths (numbers, ISO 8601 ``YYYY-MM-DD[ HH:MM[:SS
[.ffffff]][Z| UTC|±HH:MM]]``); anything else is decided once per distinct value by
the very functions ``Event`` uses, so exotic inputs still agree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import pydantic

from shopcast.domain import (
    EVENT_TYPE_ALIASES,
    ITEM_EVENT_TYPES,
    MAX_ID_LENGTH,
    MAX_TS,
    MIN_TS,
    MS_THRESHOLD,
    Event,
    EventType,
    derive_event_id,
    parse_timestamp,
)
from shopcast.errors import ValidationError
from shopcast.storage import EVENT_COLUMNS

__all__ = ["CleanResult", "clean_events"]

#: Input columns, in ``Event``'s field order (which decides the reported reason).
FIELDS: tuple[str, ...] = tuple(Event.model_fields)
_ID_FIELDS = frozenset({"event_id", "user_id", "session_id", "item_id", "recommendation_id"})

#: Exactly the characters ``str.strip()`` removes (``str.isspace``), which differ from
#: Unicode White_Space (``\x1c``-``\x1f`` are Python whitespace).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_CONTROL = r"[\x00-\x1F\x7F-\x9F]"  # Unicode category Cc
_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_ISO = (
    r"^(?<date>[1-9][0-9]{3}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?<h>[01][0-9]|2[0-3]):(?<mi>[0-5][0-9])"
    r"(?::(?<s>[0-5][0-9])(?:\.(?<f>[0-9]{1,6}))?)?"
    r"(?<z>Z| UTC|(?<sign>[+-])(?<oh>[01][0-9]|2[0-3]):(?<om>[0-5][0-9]))?)?$"
)
_TYPES: dict[str, str] = {t.value: t.value for t in EventType} | {
    k: v.value for k, v in EVENT_TYPE_ALIASES.items()
}
_ITEM_TYPES = sorted(t.value for t in ITEM_EVENT_TYPES)
_NOT_ISO = "is not an ISO 8601 date-time or an epoch number"
_FLOAT = pydantic.TypeAdapter(float)
_US = 1_000_000


@dataclass(frozen=True, slots=True)
class CleanResult:
    """The accepted rows (``EVENT_COLUMNS``) and the count of rejected rows per reason."""

    frame: pl.DataFrame
    rejected: dict[str, int]

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


Cleaned = tuple[pl.Expr, pl.Expr]  # (value, reason or null)


def clean_events(df: pl.DataFrame, *, now: float | None = None) -> CleanResult:
    """Apply ``Event``'s rules to every row; ``now`` (default: the time of the call)
    stands in for missing timestamps. Unknown columns or a missing ``type`` column
    raise ``ValidationError`` (a mapping problem, not a row problem)."""
    unknown = [c for c in df.columns if c not in FIELDS]
    if unknown:
        raise ValidationError(
            f"unknown event column(s) {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(FIELDS)}"
        )
    if "type" not in df.columns:
        raise ValidationError("no 'type' column: map one or set a constant type")
    now = time.time() if now is None else now
    df = df.with_columns(pl.lit(None).alias(f) for f in FIELDS if f not in df.columns)

    cleaners: dict[str, Callable[[pl.Series], Cleaned]] = {
        "type": _type,
        "timestamp": lambda s: _timestamp(s, now),
        "value": lambda s: _number(s),
        "quantity": lambda s: _number(s, gt_zero=True),
        "price": lambda s: _number(s, ge_zero=True),
        "query": _text,
        "context": _context,
    }
    exprs: list[pl.Expr] = []
    for f in FIELDS:
        value, reason = _id(df[f]) if f in _ID_FIELDS else cleaners[f](df[f])
        exprs += [value.alias(f), (pl.lit(f + ": ") + reason).alias("?" + f)]
    out = df.select(exprs)

    t = pl.col("type")
    rules: list[pl.Expr] = [
        pl.when(pl.col("user_id").is_null() & pl.col("session_id").is_null()).then(
            pl.lit("user_id: one of user_id or session_id is required")
        ),
        pl.when(t.is_in(_ITEM_TYPES) & pl.col("item_id").is_null()).then(
            pl.format("item_id: is required for a {} event", t)
        ),
        pl.when(
            (t == EventType.SEARCH.value) & pl.col("query").is_null() & pl.col("item_id").is_null()
        ).then(pl.lit("query: is required for a search event")),
        pl.when((t == EventType.RATE.value) & pl.col("value").is_null()).then(
            pl.lit("value: is required for a rate event (the rating)")
        ),
    ]
    field_reasons = [pl.col("?" + f) for f in FIELDS]
    out = out.with_columns(pl.coalesce(field_reasons + rules).alias("?"))
    bad = out.filter(pl.col("?").is_not_null()).group_by("?").len()
    rejected = dict(zip(bad["?"].to_list(), bad["len"].to_list(), strict=True))

    good = out.filter(pl.col("?").is_null()).select(FIELDS)
    good = _with_derived_ids(good).rename({"timestamp": "ts"})
    return CleanResult(good.select(EVENT_COLUMNS), dict(sorted(rejected.items())))


def _null_reason() -> pl.Expr:
    return pl.lit(None, dtype=pl.String)


def _reject_non_null(s: pl.Series, reason: str, dtype: pl.DataType) -> Cleaned:
    """A column whose type ``Event`` refuses outright: every non-null value is an error."""
    c = pl.col(s.name)
    return pl.lit(None, dtype=dtype), pl.when(c.is_not_null()).then(pl.lit(reason))


def _id(s: pl.Series) -> Cleaned:
    """``clean_id``: ints become text; NFC, trimmed, non-empty, short, no control chars."""
    dt = s.dtype
    c = pl.col(s.name)
    if dt == pl.Boolean:
        return _reject_non_null(s, "must be a string or an integer, not a boolean", pl.String())
    if not (dt.is_integer() or dt in (pl.String, pl.Categorical, pl.Null) or dt == pl.Enum):
        return _reject_non_null(s, "must be a string or an integer", pl.String())
    v = _nfc(s, c.cast(pl.String)).str.strip_chars(PY_WHITESPACE)
    reason = (
        pl.when(v == "")
        .then(pl.lit("must not be empty"))
        .when(v.str.len_chars() > MAX_ID_LENGTH)
        .then(pl.lit(f"is longer than {MAX_ID_LENGTH} characters"))
        .when(v.str.contains(_CONTROL))
        .then(pl.lit("must not contain control characters"))
    )
    return v, reason


def _nfc(s: pl.Series, text: pl.Expr) -> pl.Expr:
    """NFC-normalized text; skipped when the column is all ASCII (already NFC)."""
    if s.dtype == pl.String and (s.str.len_bytes() == s.str.len_chars()).all():
        return text
    return text.str.normalize("NFC")


def _type(s: pl.Series) -> Cleaned:
    """``parse_event_type``: trimmed, lower-cased, aliases mapped; required."""
    dt = s.dtype
    c = pl.col(s.name)
    missing = pl.when(c.is_null()).then(pl.lit("is required"))
    if not (dt in (pl.String, pl.Categorical) or dt == pl.Enum):
        return pl.lit(None, dtype=pl.String), missing.otherwise(pl.lit("must be a string"))
    v = c.cast(pl.String).str.strip_chars(PY_WHITESPACE).str.to_lowercase()
    v = v.replace_strict(_TYPES, default=None, return_dtype=pl.String)
    allowed = ", ".join(t.value for t in EventType)
    unknown = pl.lit(f"unknown event type (expected one of: {allowed})")
    return v, missing.when(v.is_null()).then(unknown)


def _timestamp(s: pl.Series, now: float) -> Cleaned:
    """``parse_timestamp``: ISO 8601, epoch s or ms (> ``MS_THRESHOLD``); null is ``now``."""
    dt = s.dtype
    c = pl.col(s.name)
    if dt.is_integer() or dt.is_float() or isinstance(dt, pl.Datetime):
        seconds = _divide(c.dt.epoch("us"), _US) if isinstance(dt, pl.Datetime) else c
        value, reason = _epoch(seconds.cast(pl.Float64))
        return pl.when(c.is_null()).then(pl.lit(now)).otherwise(value), reason
    if dt == pl.Null:
        return pl.lit(now, dtype=pl.Float64), _null_reason()
    if dt != pl.String:
        wrong = "must be an ISO 8601 string or an epoch number"
        if dt == pl.Boolean:
            wrong += ", not a boolean"
        return _reject_non_null(s, wrong, pl.Float64())

    text = pl.col("raw").str.strip_chars(PY_WHITESPACE)
    frame = s.to_frame("raw").with_columns(
        number=pl.when(text.str.contains(_NUMBER)).then(text.cast(pl.Float64)),
        iso=_iso_epoch(text),
    )
    # Whatever the fast paths do not settle is decided by ``parse_timestamp`` itself.
    odd = frame.filter(
        pl.col("raw").is_not_null() & pl.col("number").is_null() & pl.col("iso").is_null()
    )
    slow_ts: dict[str, float | None] = {}
    slow_err: dict[str, str | None] = {}
    for raw in odd["raw"].unique().to_list():
        try:
            slow_ts[raw], slow_err[raw] = parse_timestamp(raw), None
        except ValueError as exc:
            msg = str(exc)
            slow_ts[raw], slow_err[raw] = None, _NOT_ISO if msg.startswith(repr(raw)) else msg
    number_value, number_reason = _epoch(pl.col("number"))
    raw_col = pl.col("raw")
    out = frame.select(
        value=pl.when(raw_col.is_null())
        .then(pl.lit(now))
        .otherwise(
            pl.coalesce(
                number_value,
                pl.col("iso"),
                raw_col.replace_strict(slow_ts, default=None, return_dtype=pl.Float64),
            )
        ),
        reason=pl.coalesce(
            number_reason,
            raw_col.replace_strict(slow_err, default=None, return_dtype=pl.String),
        ),
    )
    return pl.lit(out["value"]), pl.lit(out["reason"])


def _divide(numerator: pl.Expr, divisor: float) -> pl.Expr:
    """``numerator / divisor`` with true IEEE division, as Python computes it (polars
    multiplies by the reciprocal when dividing by a scalar, which can differ in the
    last bit)."""
    return numerator.cast(pl.Float64).map_batches(
        lambda s: s / pl.repeat(divisor, s.len(), dtype=pl.Float64, eager=True),
        return_dtype=pl.Float64,
    )


def _epoch(seconds: pl.Expr) -> Cleaned:
    """Epoch numbers: finite, milliseconds above the threshold, within the accepted range."""
    ts = pl.when(seconds.abs() > MS_THRESHOLD).then(_divide(seconds, 1000.0)).otherwise(seconds)
    reason = (
        pl.when(~seconds.is_finite())
        .then(pl.lit("must be a finite number"))
        .when((ts < MIN_TS) | (ts > MAX_TS))
        .then(pl.lit("is outside 1970-01-01 .. 2100-01-01"))
    )
    return pl.when(reason.is_null()).then(ts), reason


def _iso_epoch(text: pl.Expr) -> pl.Expr:
    """Epoch seconds of the common ISO 8601 shapes (null for anything else), computed as
    ``datetime.timestamp()`` does: integer microseconds divided by 10**6."""
    g = text.str.extract_groups(_ISO)
    day = g.struct["date"].str.to_date("%Y-%m-%d", strict=False).cast(pl.Int64)

    def part(name: str) -> pl.Expr:
        return g.struct[name].cast(pl.Int64).fill_null(0)

    offset = (part("oh") * 3600 + part("om") * 60) * pl.when(g.struct["sign"] == "-").then(
        -1
    ).otherwise(1)
    micros = (
        day * 86_400 + part("h") * 3600 + part("mi") * 60 + part("s") - offset
    ) * _US + g.struct["f"].str.pad_end(6, "0").cast(pl.Int64).fill_null(0)
    # A zone is only read after a time (``2020-01-01Z`` is left to the slow path).
    dated_zone = g.struct["z"].is_not_null() & g.struct["h"].is_null()
    ts = _divide(micros, _US)
    return pl.when(~dated_zone & (ts >= MIN_TS) & (ts <= MAX_TS)).then(ts)


def _number(s: pl.Series, *, gt_zero: bool = False, ge_zero: bool = False) -> Cleaned:
    """A pydantic ``float`` (numbers, bools, numeric text), then the field's bound, then
    finiteness, in pydantic's order."""
    dt = s.dtype
    c = pl.col(s.name)
    if dt.is_numeric() or dt in (pl.Boolean, pl.Null):
        v = c.cast(pl.Float64)
        reason = _null_reason()
    elif dt == pl.String:
        number = s.str.contains(_NUMBER).fill_null(False)
        slow: dict[str, float | None] = {}
        for raw in s.filter(s.is_not_null() & ~number).unique().to_list():
            try:
                slow[raw] = _FLOAT.validate_python(raw)
            except pydantic.ValidationError:
                slow[raw] = None
        v = (
            pl.when(c.str.contains(_NUMBER))
            .then(c.cast(pl.Float64, strict=False))
            .otherwise(c.replace_strict(slow, default=None, return_dtype=pl.Float64))
        )
        reason = pl.when(c.is_not_null() & v.is_null()).then(pl.lit("must be a number"))
    else:
        return _reject_non_null(s, "must be a number", pl.Float64())
    if gt_zero:
        reason = reason.fill_null(
            pl.when(v.is_nan() | (v <= 0)).then(pl.lit("must be greater than 0"))
        )
    if ge_zero:
        reason = reason.fill_null(
            pl.when(v.is_nan() | (v < 0)).then(pl.lit("must be greater than or equal to 0"))
        )
    reason = reason.fill_null(pl.when(~v.is_finite()).then(pl.lit("must be a finite number")))
    return v, reason


def _text(s: pl.Series) -> Cleaned:
    """``clean_text``: NFC, trimmed, empty is null."""
    dt = s.dtype
    if not (dt in (pl.String, pl.Categorical, pl.Null) or dt == pl.Enum):
        return _reject_non_null(s, "must be a string", pl.String())
    v = _nfc(s, pl.col(s.name).cast(pl.String)).str.strip_chars(PY_WHITESPACE)
    return pl.when(v != "").then(v), _null_reason()


def _context(s: pl.Series) -> Cleaned:
    """JSON text of an object of scalars (or a struct), re-encoded compactly; empty is null."""
    dt = s.dtype
    c = pl.col(s.name)
    if dt == pl.Null:
        return pl.lit(None, dtype=pl.String), _null_reason()
    if isinstance(dt, pl.Struct):
        text, drop_nulls = s.struct.json_encode(), True
        c = c.struct.json_encode()
    elif dt == pl.String:
        text, drop_nulls = s, False
    else:
        return _reject_non_null(s, "must be a JSON object", pl.String())
    canonical: dict[str, str | None] = {}
    problems: dict[str, str | None] = {}
    for raw in text.drop_nulls().unique().to_list():
        canonical[raw], problems[raw] = _context_text(raw, drop_nulls)
    return (
        c.replace_strict(canonical, default=None, return_dtype=pl.String),
        c.replace_strict(problems, default=None, return_dtype=pl.String),
    )


def _context_text(raw: str, drop_nulls: bool) -> tuple[str | None, str | None]:
    """(compact JSON or None when empty, None) or (None, reason)."""
    try:
        ctx = json.loads(raw)
    except ValueError:
        return None, "is not valid JSON"
    if not isinstance(ctx, dict):
        return None, "must be a JSON object"
    if drop_nulls:
        ctx = {k: v for k, v in ctx.items() if v is not None}
    if not all(v is None or isinstance(v, str | int | float) for v in ctx.values()):
        return None, "values must be strings, numbers, booleans or null"
    if not ctx:
        return None, None
    return json.dumps(ctx, separators=(",", ":")), None


def _with_derived_ids(good: pl.DataFrame) -> pl.DataFrame:
    """Fill missing ids with ``derive_event_id`` of ``Event.model_dump(mode="json")``."""
    missing = good["event_id"].is_null()
    if not missing.any():
        return good
    ids: list[str] = []
    for row in good.filter(missing).iter_rows(named=True):
        ctx = row["context"]
        ids.append(derive_event_id({**row, "context": json.loads(ctx) if ctx else {}}))
    return good.with_columns(good["event_id"].scatter(missing.arg_true(), ids))
