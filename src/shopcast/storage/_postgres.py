"""The PostgreSQL backend (``postgresql://user@host:port/db?options=...``), psycopg 3.

Connections come from a pool (``psycopg_pool``) that checks a connection before lending
it and replaces broken ones by itself, so a server restart costs the requests in flight
at that moment a ``StorageUnavailableError`` (HTTP 503 + ``Retry-After``) and nothing
else. Every write is one transaction committed before the call returns; with the
server's default ``synchronous_commit = on`` an acknowledged append survives a crash.

Appends to the event log take ``LOCK TABLE events IN EXCLUSIVE MODE`` (readers are not
blocked): writers are serialized as in SQLite, so ``seq`` grows in commit order and a
reader catching up with ``after_seq`` never misses an event committed later with a
smaller ``seq``. Bulk appends (``append_frame``) stream CSV through ``COPY``.

The schema is migrated by Alembic on open (``_pg_migrate``). Besides the URL's libpq
parameters, the query may hold ``schema`` (the tables' schema, created when missing;
tenants get ``<schema>_<tenant>``), ``pool_min_size``, ``pool_max_size`` and
``pool_timeout`` (seconds a caller waits for a connection before the 503).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import polars as pl
import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from shopcast.domain import Event, Item, User
from shopcast.errors import StorageError, StorageUnavailableError, ValidationError
from shopcast.storage._pg_migrate import ensure_schema
from shopcast.storage._protocols import EVENT_COLUMNS, AppendResult, Catalog, EventLog, Profiles, T
from shopcast.storage._rows import (
    FRAME_SCHEMA,
    check_limit,
    clean_frame,
    event_row,
    row_event,
    subject_filter,
)

CONNECT_TIMEOUT_S = 5
RETRY_AFTER_S = 2.0
_POOL_PARAMS = {"pool_min_size": 1, "pool_max_size": 8, "pool_timeout": 5.0}
_ROWS_PER_INSERT = 500  # rows per multi-row INSERT in append
_BATCH_ROWS = 65536  # rows per CSV chunk sent to COPY
_FRAME_CHUNK_BYTES = 32 << 20  # CSV bytes parsed into a frame at a time when reading
_KEYS_PER_QUERY = 5000  # keys per = ANY(...) in get_many
_IDS_PER_LOOKUP = 100_000  # event ids per = ANY(...) when a bulk load skips known ones
_DOCS_PER_PAGE = 1000  # records per query while a repository is scanned
_SCHEMA_NAME = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,62}$")
_COLUMNS = ", ".join(EVENT_COLUMNS)
_ONE_ROW = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
_LOCK_EVENTS = "LOCK TABLE events IN EXCLUSIVE MODE"
_LAST_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM events"
_CSV_COLUMNS = [c for c in FRAME_SCHEMA if c != "seq"]

R = TypeVar("R")


def split_url(url: str) -> tuple[str, dict[str, float]]:
    """The libpq connection string and the pool's settings taken out of the URL.

    ``schema=NAME`` becomes ``-csearch_path=NAME`` in libpq's ``options`` (the schema is
    created on open when missing, see ``url_schema``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StorageError(f"bad PostgreSQL URL {url!r}; use postgresql://user@host:port/db")
    pool: dict[str, float] = dict(_POOL_PARAMS)
    kept = []
    schema = url_schema(url)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in pool:
            try:
                pool[name] = float(value)
            except ValueError:
                raise StorageError(f"PostgreSQL URL: {name}={value!r} is not a number") from None
        elif name == "options" and schema is not None:
            kept.append((name, f"{value} -csearch_path={schema}"))
            schema = None
        elif name != "schema":
            kept.append((name, value))
    if schema is not None:
        kept.append(("options", f"-csearch_path={schema}"))
    conninfo = urlunsplit(
        parts._replace(scheme="postgresql", query=urlencode(kept, quote_via=quote))
    )
    if pool["pool_min_size"] < 1 or pool["pool_max_size"] < pool["pool_min_size"]:
        raise StorageError("PostgreSQL URL: need 1 <= pool_min_size <= pool_max_size")
    return conninfo, pool


def url_schema(url: str) -> str | None:
    """The ``schema=`` of a PostgreSQL URL (checked: lower-case letters, digits, ``_``,
    ``-``; at most 63 characters), or None."""
    found = [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == "schema"]
    if not found:
        return None
    if len(found) > 1 or not _SCHEMA_NAME.match(found[-1]):
        raise StorageError(
            f"PostgreSQL URL: schema={found[-1]!r} must be 1-63 lower-case letters, digits, "
            "'_' or '-' (once)"
        )
    return found[-1]


def tenant_url(url: str, tenant: str) -> str:
    """The URL of ``tenant``'s store: the same database, schema ``<schema>_<tenant>``, where
    ``<schema>`` is the URL's ``schema=``, else the first of its ``-csearch_path``, else
    ``shopcast``."""
    base = url_schema(url)
    if base is None:
        options = " ".join(v for k, v in parse_qsl(urlsplit(url).query) if k == "options")
        paths = [o.split("=", 1)[1] for o in options.split() if o.startswith("-csearch_path=")]
        base = paths[-1].split(",")[0].strip() if paths else "shopcast"
    name = f"{base}_{tenant}"
    if not _SCHEMA_NAME.match(name):
        raise StorageError(
            f"tenant {tenant!r}: schema name {name!r} is not usable (at most 63 characters)"
        )
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("schema", name)], quote_via=quote)))


def _redacted(conninfo: str) -> str:
    """The connection string without its password, for messages."""
    parts = urlsplit(conninfo)
    if parts.password is None:
        return conninfo
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class PgDatabase:
    """The pool, transactions, and psycopg errors turned into Shopcast errors."""

    def __init__(self, url: str) -> None:
        self.conninfo, settings = split_url(url)
        self.name = _redacted(self.conninfo)
        with self.errors_of(self.conninfo):
            ensure_schema(self.conninfo, create=url_schema(url))
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=int(settings["pool_min_size"]),
            max_size=int(settings["pool_max_size"]),
            timeout=settings["pool_timeout"],
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
            check=ConnectionPool.check_connection,
            name="shopcast",
            open=False,
        )
        try:
            with self.errors_of(self.conninfo):
                self._pool.open(wait=True, timeout=float(CONNECT_TIMEOUT_S))
        except BaseException:
            self._pool.close()  # no reconnecting in the background for a store never opened
            raise

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in one transaction, committed when the block ends normally."""
        with self.errors_of(self.conninfo), self._pool.connection() as conn:
            yield conn

    def read(self, fn: Callable[[psycopg.Connection[Any]], R]) -> R:
        """``fn(conn)`` in a transaction; retried once on a broken connection (reads only)."""
        try:
            with self.transaction() as conn:
                return fn(conn)
        except StorageUnavailableError as exc:
            if isinstance(exc.__cause__, PoolTimeout):
                raise  # no connection to be had: retrying would only double the wait
        with self.transaction() as conn:
            return fn(conn)

    @staticmethod
    @contextmanager
    def errors_of(conninfo: str) -> Iterator[None]:
        """psycopg's errors as ``StorageUnavailableError`` (the server cannot be reached,
        or gave up on the connection: retry), ``ValidationError`` (a value it refuses)
        or ``StorageError``."""
        name = _redacted(conninfo)
        try:
            yield
        except PoolClosed as exc:
            raise StorageError(f"PostgreSQL store {name} is closed") from exc
        except psycopg.DataError as exc:
            raise ValidationError(f"PostgreSQL refused a value: {_first_line(exc)}") from exc
        except psycopg.OperationalError as exc:
            raise StorageUnavailableError(
                f"PostgreSQL at {name} is unavailable ({_first_line(exc)}); retry later",
                RETRY_AFTER_S,
            ) from exc
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL at {name}: {_first_line(exc)}") from exc

    def close(self) -> None:
        self._pool.close()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _last_seq(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_LAST_SEQ).fetchone()
    return int(row[0]) if row else 0


def _csv_chunks(frame: pl.DataFrame) -> Iterator[bytes]:
    """The frame as headerless CSV (null unquoted-empty, empty string quoted), in slices."""
    for part in frame.iter_slices(_BATCH_ROWS):
        yield part.write_csv(include_header=False).encode()


def _read_csv(data: bytes) -> pl.DataFrame:
    return pl.read_csv(
        io.BytesIO(data), has_header=False, new_columns=list(FRAME_SCHEMA), schema=FRAME_SCHEMA
    )


class PgEventLog:
    """The event log in table ``events``; ``seq`` is an identity column (gaps, no reuse)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def append(self, events: Sequence[Event]) -> AppendResult:
        """Insert new events in one transaction; ``last_seq`` is the log's highest seq."""
        return self.append_batches([events])[0]

    def append_batches(self, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
        """Several appends in ONE transaction (one commit): a group commit.

        Each result is what ``append`` would have returned had the batches been appended
        one after the other (the first occurrence of an event id in the group is the one
        stored); ``last_seq`` is the log's highest seq after the group.
        """
        rows = [[event_row(e) for e in batch] for batch in batches]
        first: dict[str, tuple[int, int]] = {}  # event id -> (batch, position)
        for b, batch in enumerate(rows):
            for position, row in enumerate(batch):
                first.setdefault(row[0], (b, position))
        unique = [rows[b][p] for b, p in first.values()]
        inserted: set[str] = set()
        with self._db.transaction() as conn:
            if not unique:
                last_seq = _last_seq(conn)
            else:
                with conn.pipeline():  # one round trip for the lock, the inserts and the seq
                    conn.execute(_LOCK_EVENTS)
                    cursors = [
                        conn.execute(
                            f"INSERT INTO events ({_COLUMNS}) VALUES "
                            + ", ".join([_ONE_ROW] * len(chunk))
                            + " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                            [value for row in chunk for value in row],
                        )
                        for chunk in (
                            unique[i : i + _ROWS_PER_INSERT]
                            for i in range(0, len(unique), _ROWS_PER_INSERT)
                        )
                    ]
                    last = conn.execute(_LAST_SEQ)
                    inserted = {r[0] for cursor in cursors for r in cursor.fetchall()}
                    found = last.fetchone()
                last_seq = int(found[0]) if found else 0
        stored: list[list[int]] = [[] for _ in rows]
        for event_id, (b, position) in first.items():
            if event_id in inserted:
                stored[b].append(position)
        for new in stored:
            new.sort()
        return [
            AppendResult(len(new), len(batch) - len(new), new, last_seq)
            for batch, new in zip(rows, stored, strict=True)
        ]

    def append_frame(self, frame: pl.DataFrame) -> AppendResult:
        """Insert new rows of a clean frame with ``COPY``; ``stored`` is left empty.

        Into an empty log the rows (deduplicated first) are copied straight into the table
        with its indexes but the primary key dropped and rebuilt afterwards (the table is
        locked against readers meanwhile); into a non-empty log the
        rows with ids not yet stored are copied in order (``_load_more``).
        """
        clean = clean_frame(frame)
        with self._db.transaction() as conn:
            conn.execute(_LOCK_EVENTS)
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()
            load = self._load_more if row and row[0] else self._load_empty
            accepted = load(conn, clean)
            last_seq = _last_seq(conn)
        return AppendResult(accepted, clean.height - accepted, [], last_seq)

    @staticmethod
    def _load_empty(conn: psycopg.Connection[Any], clean: pl.DataFrame) -> int:
        unique = clean.unique("event_id", keep="first", maintain_order=True)
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "JOIN pg_index x "
            "ON x.indexrelid = format('%I.%I', i.schemaname, i.indexname)::regclass "
            "WHERE i.schemaname = current_schema() AND i.tablename = 'events' "
            "AND NOT x.indisprimary"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        sql = f"COPY events ({_COLUMNS}) FROM STDIN (FORMAT csv)"
        with conn.cursor() as cursor, cursor.copy(sql) as copy:
            for chunk in _csv_chunks(unique):
                copy.write(chunk)
        for _, definition in indexes:
            conn.execute(definition)
        return unique.height

    @staticmethod
    def _load_more(conn: psycopg.Connection[Any], clean: pl.DataFrame) -> int:
        """The rows whose ids the log lacks, copied in order. The ids are looked up first
        and the rest copied straight into the table: no staging table, no sort, no
        per-row conflict check. The table lock keeps other writers out in between."""
        unique = clean.unique("event_id", keep="first", maintain_order=True)
        ids = unique["event_id"].to_list()
        known: list[str] = []
        for i in range(0, len(ids), _IDS_PER_LOOKUP):
            known += [
                r[0]
                for r in conn.execute(
                    "SELECT event_id FROM events WHERE event_id = ANY(%s)",
                    [ids[i : i + _IDS_PER_LOOKUP]],
                ).fetchall()
            ]
        new = unique.filter(~pl.col("event_id").is_in(known)) if known else unique
        if new.height:
            sql = f"COPY events ({_COLUMNS}) FROM STDIN (FORMAT csv)"
            with conn.cursor() as cursor, cursor.copy(sql) as copy:
                for chunk in _csv_chunks(new):
                    copy.write(chunk)
        return new.height

    def scan(
        self,
        *,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
        types: Collection[str] | None = None,
    ) -> list[tuple[int, Event]]:
        """``(seq, event)`` pairs after ``after_seq`` ordered by ``(ts, seq)``."""
        check_limit(limit)
        where = "seq > %s"
        params: list[object] = [after_seq]
        if subject is not None:
            column, key = subject_filter(subject)
            where += f" AND {column} = %s"
            params.append(key)
        if types is not None:
            where += " AND type = ANY(%s)"
            params.append(sorted({str(t) for t in types}))
        order = "ts DESC, seq DESC" if newest_first else "ts, seq"
        sql = f"SELECT seq, {_COLUMNS} FROM events WHERE {where} ORDER BY {order} LIMIT %s"
        rows = self._db.read(lambda conn: conn.execute(sql, [*params, limit]).fetchall())
        return [(row[0], row_event(row[1:])) for row in rows]

    def frame(self, *, after_seq: int = 0) -> pl.DataFrame:
        """Events after ``after_seq`` as a ``seq`` + ``EVENT_COLUMNS`` frame, in seq order."""
        sql = (
            f"COPY (SELECT seq, {_COLUMNS} FROM events WHERE seq > {int(after_seq)} "
            "ORDER BY seq) TO STDOUT (FORMAT csv)"
        )

        def read(conn: psycopg.Connection[Any]) -> list[pl.DataFrame]:
            parts: list[pl.DataFrame] = []
            buffer = bytearray()
            with conn.cursor() as cursor, cursor.copy(sql) as copy:
                for row in copy:  # one CSV row per chunk
                    buffer += row
                    if len(buffer) >= _FRAME_CHUNK_BYTES:
                        parts.append(_read_csv(bytes(buffer)))
                        buffer.clear()
            if buffer:
                parts.append(_read_csv(bytes(buffer)))
            return parts

        parts = self._db.read(read)
        return pl.concat(parts) if parts else pl.DataFrame(schema=FRAME_SCHEMA)

    def _write(self, sql: str, params: Sequence[object]) -> int:
        with self._db.transaction() as conn:
            return max(conn.execute(sql, params).rowcount, 0)

    def delete_user(self, user_id: str) -> int:
        return self._write("DELETE FROM events WHERE user_id = %s", [user_id])

    def delete_before(self, ts: float) -> int:
        return self._write("DELETE FROM events WHERE ts < %s", [ts])

    def assign_session(self, session_id: str, user_id: str) -> int:
        sql = "UPDATE events SET user_id = %s WHERE session_id = %s AND user_id IS NULL"
        return self._write(sql, [user_id, session_id])

    def count(self) -> int:
        return self._db.read(
            lambda conn: int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])  # type: ignore[index]
        )


class PgRepository(Generic[T]):
    """Records of one model kept as JSON documents in a ``(key, doc)`` table."""

    def __init__(self, db: PgDatabase, table: str, key: str, model: type[T]) -> None:
        self._db = db
        self._table = table
        self._key = key
        self._model: type[T] = model

    def upsert(self, records: Sequence[T]) -> int:
        """Insert or replace every record (the last one of a key wins); returns how many."""
        docs = {getattr(r, self._key): r.model_dump_json() for r in records}
        if docs:
            with self._db.transaction() as conn, conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {self._table} VALUES (%s, %s) "
                    f"ON CONFLICT ({self._key}) DO UPDATE SET doc = EXCLUDED.doc",
                    list(docs.items()),
                )
        return len(records)

    def get(self, key: str) -> T | None:
        sql = f"SELECT doc FROM {self._table} WHERE {self._key} = %s"
        row = self._db.read(lambda conn: conn.execute(sql, [key]).fetchone())
        return None if row is None else self._model.model_validate_json(row[0])

    def get_many(self, keys: Sequence[str]) -> dict[str, T]:
        """The records found, by key; unknown keys are left out."""
        unique = list(dict.fromkeys(keys))
        sql = f"SELECT {self._key}, doc FROM {self._table} WHERE {self._key} = ANY(%s)"

        def read(conn: psycopg.Connection[Any]) -> list[Any]:
            found: list[Any] = []
            for i in range(0, len(unique), _KEYS_PER_QUERY):
                found += conn.execute(sql, [unique[i : i + _KEYS_PER_QUERY]]).fetchall()
            return found

        found = self._db.read(read) if unique else []
        return {key: self._model.model_validate_json(doc) for key, doc in found}

    def scan(self) -> Iterator[T]:
        """Every record in key order (byte-wise), read a page at a time."""
        after = ""  # ids are never empty
        sql = (
            f"SELECT {self._key}, doc FROM {self._table} "
            f"WHERE {self._key} > %s ORDER BY {self._key} LIMIT {_DOCS_PER_PAGE}"
        )

        def page(after: str) -> Callable[[psycopg.Connection[Any]], list[Any]]:
            return lambda conn: conn.execute(sql, [after]).fetchall()

        while True:
            rows = self._db.read(page(after))
            yield from (self._model.model_validate_json(doc) for _, doc in rows)
            if len(rows) < _DOCS_PER_PAGE:
                return
            after = rows[-1][0]

    def delete(self, key: str) -> bool:
        with self._db.transaction() as conn:
            sql = f"DELETE FROM {self._table} WHERE {self._key} = %s"
            return conn.execute(sql, [key]).rowcount > 0

    def count(self) -> int:
        sql = f"SELECT COUNT(*) FROM {self._table}"
        return self._db.read(lambda conn: int(conn.execute(sql).fetchone()[0]))  # type: ignore[index]


class PostgresStore:
    """Events, items and users in one PostgreSQL schema named by a ``postgresql://`` URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = PgDatabase(url)
        self.events: EventLog = PgEventLog(self.db)
        self.items: Catalog = PgRepository(self.db, "items", "item_id", Item)
        self.users: Profiles = PgRepository(self.db, "users", "user_id", User)

    def close(self) -> None:
        self.db.close()
