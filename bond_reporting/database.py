"""PostgreSQL: connect (DATABASE_URL, PG* or embedded), apply the schema, replace tables, read tables.

All identifiers are quoted with ``psycopg2.sql``; nothing is formatted into SQL text.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd
import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from bond_reporting.errors import ConfigError, DatabaseError
from bond_reporting.logs import one_line
from bond_reporting.settings import Settings
from config import sources

log = logging.getLogger(__name__)

SCHEMA = sources.SCHEMA
CONNECT_TIMEOUT = 10  # seconds

_embedded: dict[Path, object] = {}  # one pgserver handle per data folder, for the process lifetime


def database_uri(settings: Settings) -> str:
    """libpq connection string: DATABASE_URL, else "" (libpq reads PG*), else the embedded server."""
    if settings.database_url:
        return settings.database_url
    if settings.pghost:
        return ""
    return embedded_uri(Path(settings.local_dir))


def embedded_uri(local_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL whose data lives in ``local_dir/pgdata``."""
    pgdata = (local_dir / "pgdata").resolve()
    if pgdata not in _embedded:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset in containers
                import pgserver
        except ImportError:
            raise DatabaseError(
                "no database configured (DATABASE_URL or PGHOST) and the embedded PostgreSQL "
                "(pgserver, requirements-dev.txt) is not installed"
            ) from None
        pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _embedded[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
        log.info("using the embedded PostgreSQL in %s (set DATABASE_URL or PGHOST to use another)", pgdata)
    return _embedded[pgdata].get_uri()  # type: ignore[attr-defined]


def connect(settings: Settings) -> Connection:
    """Open a connection (autocommit off); a failure is a one-line DatabaseError without secrets."""
    uri = database_uri(settings)
    try:
        conn = psycopg2.connect(uri, connect_timeout=CONNECT_TIMEOUT, application_name="atd-bond-reporting")
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {one_line(exc)}") from None
    return conn


@contextmanager
def transaction(settings: Settings) -> Iterator[Connection]:
    """A connection whose work is committed once at the end, or rolled back on any failure."""
    conn = connect(settings)
    try:
        yield conn
        conn.commit()
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        raise DatabaseError(f"PostgreSQL error, transaction rolled back: {one_line(exc)}") from None
    except BaseException:
        _rollback_quietly(conn)
        raise
    finally:
        conn.close()


def apply_schema(conn: Connection) -> list[str]:
    """Bring schema ``api`` up to the registry (config/sources.py), inside the caller's transaction.

    Creates missing tables and adds missing columns (new columns are NULL in the rows already
    there until the next load replaces them); columns the registry no longer has are left alone.
    A column whose type differs is never changed here: ConfigError (exit 2) naming it and the
    statement to run, before anything is altered. Returns what was changed, one line each.
    """
    wanted = sources.table_columns()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        cur.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s",
            (SCHEMA,),
        )
        existing: dict[str, dict[str, str]] = {}
        for table, column, data_type in cur.fetchall():
            existing.setdefault(table, {})[column] = data_type
        for table, columns in wanted.items():
            for column, sql_type in columns:
                found = existing.get(table, {}).get(column)
                if found is not None and found != _INFORMATION_SCHEMA_TYPES.get(sql_type, sql_type):
                    raise ConfigError(_type_change_message(table, column, found, sql_type))
        changes = []
        for table, columns in wanted.items():
            target = sql.Identifier(SCHEMA, table)
            if table not in existing:
                definition = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(sql_type)) for column, sql_type in columns
                )
                cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(target, definition))
                changes.append(f"created table {SCHEMA}.{table}")
                continue
            for column, sql_type in columns:
                if column not in existing[table]:
                    cur.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            target, sql.Identifier(column), sql.SQL(sql_type)
                        )
                    )
                    changes.append(f"added column {column} {sql_type} to {SCHEMA}.{table}")
    if changes:
        log.info("schema: %s", "; ".join(changes))
    return changes


# information_schema.columns.data_type of the registry's SQL types.
_INFORMATION_SCHEMA_TYPES = {"timestamp": "timestamp without time zone"}


def _type_change_message(table: str, column: str, found: str, sql_type: str) -> str:
    name = f"{SCHEMA}.{table}"
    return (
        f"column {name}.{column} is {found} in the database but {sql_type} in config/sources.py; "
        f"the load does not change column types: run ALTER TABLE {name} ALTER COLUMN {sources.quote(column)} "
        f"TYPE {sql_type} USING {sources.quote(column)}::{sql_type}; (or DROP TABLE {name}; the next load "
        "recreates and fills it), then load again"
    )


@dataclass(frozen=True)
class TableCopy:
    """One table to replace: its columns as the COPY stream lists them, and the CSV stream."""

    table: str
    columns: list[str]
    stream: IO[bytes]
    header: bool = False


def replace_tables(conn: Connection, copies: Iterable[TableCopy]) -> None:
    """Inside the caller's transaction, empty each table and COPY its new rows in.

    TRUNCATE (not DELETE) keeps the swap cheap and leaves no dead rows; until commit,
    readers keep seeing the previous rows (they wait on the lock rather than see a half table).
    """
    with conn.cursor() as cur:
        # Report CSVs carry M/D/YYYY dates that COPY may parse directly.
        cur.execute("SET LOCAL datestyle = 'ISO, MDY'")
        for copy in copies:
            target = sql.Identifier(SCHEMA, copy.table)
            cur.execute(sql.SQL("TRUNCATE {}").format(target))
            statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER {})").format(
                target,
                sql.SQL(", ").join(map(sql.Identifier, copy.columns)),
                sql.SQL("true" if copy.header else "false"),
            )
            cur.copy_expert(statement, copy.stream, size=1 << 20)


def read_tables(settings: Settings, tables: list[str]) -> dict[str, pd.DataFrame]:
    """Read whole tables with the value types of data contract §4, every row once, in load order.

    text → str, integer → int64, numeric → float64 (int64 for the columns config/sources.py
    declares "whole"), date → 'YYYY-MM-DD', timestamp → 'YYYY-MM-DDTHH:MM:SS.ffffff'.
    Rows come in physical order: each load TRUNCATEs and COPYs, so that is the source CSV order.
    """
    with transaction(settings) as conn:
        conn.set_session(readonly=True, isolation_level="REPEATABLE READ")  # one consistent snapshot
        _lock_for_reading(conn, tables)
        frames = {table: _read_table(conn, table) for table in tables}
    empty = [table for table, frame in frames.items() if frame.empty]
    if empty:
        # A load never leaves a table empty (empty sources are rejected), so this is not data to publish.
        raise DatabaseError(f"table(s) {', '.join(empty)} are empty; load them with bond_data.py first")
    return frames


def _lock_for_reading(conn: Connection, tables: list[str]) -> None:
    """Wait for a load in progress to commit before the snapshot is taken.

    TRUNCATE is not MVCC-safe: a snapshot taken before a load commits would see the new, empty
    files. LOCK takes no snapshot, so it must be the transaction's first statement.
    """
    statement = sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
        sql.SQL(", ").join(sql.Identifier(SCHEMA, table) for table in tables)
    )
    with conn.cursor() as cur:
        try:
            cur.execute(statement)
        except psycopg2.errors.UndefinedTable:
            raise DatabaseError(
                f"a table of {', '.join(tables)} does not exist in schema {SCHEMA}; run bond_data.py first"
            ) from None


def _read_table(conn: Connection, table: str) -> pd.DataFrame:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (SCHEMA, table),
        )
        found = dict(cur.fetchall())
        if not found:
            raise DatabaseError(f"table {SCHEMA}.{table} does not exist; run bond_data.py first")
        source = sources.BY_TABLE.get(table)
        kinds = source.kinds if source else {}
        # A registered table reads exactly the registry's columns, in its order.
        names = [*source.column_names, sources.UPDATED_AT] if source else list(found)
        missing = [name for name in names if name not in found]
        if missing:
            raise DatabaseError(
                f"table {SCHEMA}.{table} lacks column(s) {', '.join(missing)} of config/sources.py; "
                "run bond_data.py to add and load them"
            )
        types = {name: found[name] for name in names}
        select = sql.SQL("COPY (SELECT {} FROM {} ORDER BY ctid) TO STDOUT WITH (FORMAT csv, HEADER true)").format(
            sql.SQL(", ").join(map(sql.Identifier, types)), sql.Identifier(SCHEMA, table)
        )
        buffer = io.BytesIO()
        cur.copy_expert(select, buffer, size=1 << 20)
    buffer.seek(0)
    dtypes = {name: _read_dtype(sql_type, kinds.get(name)) for name, sql_type in types.items()}
    frame = pd.read_csv(buffer, dtype=dtypes, keep_default_na=False, na_values={n: [""] for n in types})
    for name, t in types.items():
        if dtypes[name] == "Int64" and not frame[name].isna().any():
            frame[name] = frame[name].astype("int64")
        elif t.startswith("timestamp"):
            frame[name] = frame[name].str.replace(" ", "T", n=1)
    return frame


def _read_dtype(sql_type: str, kind: str | None) -> str:
    """integer, and numeric columns the registry declares whole ("whole" kind) → Int64; other
    numeric → float64; everything else text."""
    if sql_type == "integer" or (sql_type == "numeric" and kind == "whole"):
        return "Int64"  # nullable while reading; plain int64 when the column has no nulls
    return "float64" if sql_type == "numeric" else "str"


def _rollback_quietly(conn: Connection) -> None:
    # If the connection is already gone the server rolls back on its own.
    with contextlib.suppress(psycopg2.Error):
        conn.rollback()
