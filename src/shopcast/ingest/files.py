"""Reading event, item and user files (CSV, CSV.gz, JSONL, Parquet, XLSX) into polars.

CSV cells are read as text (``"007"`` stays an id, not the number 7); ``Event``,
``Item`` and ``User`` accept text for every field. A column mapping renames source
columns to fields (``{"CustomerID": "user_id"}``); mapping a column to ``""`` drops
it; ``attributes.<key>`` (items, users) and ``context.<key>`` (events) gather columns
into that dict. Constant columns (``{"type": "purchase"}``) are added to every row.
Unmapped columns must already be named after fields.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

import polars as pl
import pydantic

from shopcast.domain import Event, Item, User
from shopcast.errors import MissingDependencyError, NotFoundError, ValidationError

__all__ = [
    "FORMATS",
    "Records",
    "apply_mapping",
    "detect_format",
    "error_reason",
    "read_events",
    "read_items",
    "read_table",
    "read_users",
    "validate_records",
]

Format = Literal["csv", "jsonl", "parquet", "xlsx"]
FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
}
M = TypeVar("M", Item, User)


@dataclass(frozen=True, slots=True)
class Records(Generic[M]):
    """Validated records of a file, and the count of rejected rows per reason."""

    records: list[M]
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rows_read(self) -> int:
        return len(self.records) + sum(self.rejected.values())


def detect_format(path: Path, explicit: str | None = None) -> Format:
    """The format named explicitly, else from the extension (``.gz`` is looked through)."""
    if explicit is not None:
        name = explicit.lower().lstrip(".")
        known: dict[str, Format] = {v: v for v in FORMATS.values()} | {"ndjson": "jsonl"}
        if name not in known:
            raise ValidationError(
                f"unknown format {explicit!r}; expected one of: {', '.join(sorted(known))}"
            )
        return known[name]
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in FORMATS:
        return FORMATS[suffixes[-1]]
    raise ValidationError(
        f"cannot tell the format of {path.name!r} from its extension; "
        f"pass one of: csv, jsonl, parquet, xlsx"
    )


def read_table(path: Path | str, fmt: str | None = None) -> pl.DataFrame:
    """The file as a frame; CSV cells as text; ``.gz`` CSV and JSONL are decompressed."""
    path = Path(path)
    kind = detect_format(path, fmt)
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    try:
        if kind == "parquet":
            return pl.read_parquet(path)
        if kind == "xlsx":
            if importlib.util.find_spec("openpyxl") is None:
                raise MissingDependencyError("openpyxl", "excel")
            return pl.read_excel(path, engine="openpyxl")
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        if kind == "jsonl":
            return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        separator = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
        return pl.read_csv(io.BytesIO(data), infer_schema=False, separator=separator)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {path} as {kind}: {exc}") from None


def apply_mapping(
    df: pl.DataFrame,
    fields: tuple[str, ...],
    mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, str] | None = None,
    nested: str | None = None,
) -> pl.DataFrame:
    """Rename, drop and add columns so that every column is one of ``fields``.

    ``nested`` is the dict field (``attributes`` or ``context``) that ``<nested>.<key>``
    targets are gathered into, as a struct column.
    """
    mapping = dict(mapping or {})
    constants = dict(constants or {})
    missing = [src for src in mapping if src not in df.columns]
    if missing:
        raise ValidationError(
            f"mapped column(s) {', '.join(map(repr, missing))} not in the file; "
            f"its columns are: {', '.join(df.columns)}"
        )
    df = df.drop([src for src, dst in mapping.items() if not dst])
    df = df.rename({src: dst for src, dst in mapping.items() if dst})
    clash = [name for name in constants if name in df.columns]
    if clash:
        raise ValidationError(f"constant column(s) {', '.join(map(repr, clash))} already exist")
    df = df.with_columns(pl.lit(value).alias(name) for name, value in constants.items())

    prefix = f"{nested}." if nested else None
    inner = [c for c in df.columns if prefix and c.startswith(prefix)]
    if inner and nested:
        if nested in df.columns:
            raise ValidationError(f"both a {nested!r} column and {nested}.<key> columns")
        struct = pl.struct(pl.col(c).alias(c.removeprefix(f"{nested}.")) for c in inner)
        df = df.with_columns(struct.alias(nested)).drop(inner)
    unknown = [c for c in df.columns if c not in fields]
    if unknown:
        hint = f", {nested}.<key>" if nested else ""
        raise ValidationError(
            f"column(s) {', '.join(map(repr, unknown))} are not fields; map them to one of: "
            f"{', '.join(fields)}{hint} (or to '' to drop them)"
        )
    return df


def read_events(
    path: Path | str,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """A raw event frame (to clean with ``clean_events``) from a file."""
    fields = tuple(Event.model_fields)
    return apply_mapping(read_table(path, fmt), fields, mapping, constants, nested="context")


def read_items(
    path: Path | str,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, str] | None = None,
) -> Records[Item]:
    """Validated catalog items from a file (a category text is split on ``>``/``/``/``|``)."""
    df = apply_mapping(
        read_table(path, fmt), tuple(Item.model_fields), mapping, constants, "attributes"
    )
    return validate_records(df, Item)


def read_users(
    path: Path | str,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, str] | None = None,
) -> Records[User]:
    """Validated user profiles from a file."""
    df = apply_mapping(
        read_table(path, fmt), tuple(User.model_fields), mapping, constants, "attributes"
    )
    return validate_records(df, User)


def validate_records(df: pl.DataFrame, model: type[M]) -> Records[M]:
    """One ``model`` per row; nulls (also inside dicts) count as absent; a rejected row
    is counted under its first error, ``"<field>: <reason>"``."""
    records: list[M] = []
    rejected: dict[str, int] = {}
    for row in df.iter_rows(named=True):
        data = {
            k: {a: b for a, b in v.items() if b is not None} if isinstance(v, dict) else v
            for k, v in row.items()
            if v is not None
        }
        try:
            records.append(model.model_validate(data))
        except pydantic.ValidationError as exc:
            reason = error_reason(exc)
            rejected[reason] = rejected.get(reason, 0) + 1
    return Records(records, dict(sorted(rejected.items())))


def error_reason(exc: pydantic.ValidationError) -> str:
    """``"<field>: <reason>"`` of a pydantic error's first problem."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not loc and ": " in msg:
        return msg
    return f"{loc or 'record'}: {msg}"
