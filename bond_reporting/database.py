"""PostgreSQL: connect (DATABASE_URL, PG* or embedded), apply the schema, replace tables, read tables.

All identifiers are quoted with ``psycopg2.sql``; nothing is formatted into SQL text.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import pandas as pd
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from bond_reporting.errors import ConfigError, DatabaseError
from bond_reporting.logs import one_line
from bond_reporting.settings import Settings
from config import sources

log = logging.getLogger(__name__)

SCHEMA = sources.SCHEMA
CONNECT_TIMEOUT = 10  # seconds
APPLICATION_NAME = "atd-bond-reporting"
# Advisory-lock keys (issue 9 §4): (class, object), class = "bond" as an int4.
LOCK_CLASS = 0x626F6E64
LOAD_LOCK = (LOCK_CLASS, 1)
PUBLISH_LOCK_CLASS = LOCK_CLASS + 1
FIRST_TRY_MS = 500  # a table lock busy for longer than this is logged as a wait
T = TypeVar("T")

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


# TCP keepalives: a peer that vanished (host down, partition) is noticed in about a minute even
# when no data is in flight; a frozen backend still ACKs, which is what the stall limit is for.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
NOT_LIBPQ = "DATABASE_URL is not a valid libpq URI or key=value string (see docs/operations.md)"
# libpq's words for a connection option it cannot use (before any connection is tried).
_BAD_OPTION = re.compile(r'invalid (\w+ )?(value|integer value) .*|invalid \w+ value: ".*')
GRACE = 3.0  # seconds a cancelled (then a cut) call gets to return before it is abandoned


def check_database_url(value: str) -> None:
    """Refuse (ConfigError, exit 2, the value never echoed) a DATABASE_URL libpq cannot parse,
    or one it would parse differently from what was meant: a raw ``@`` or ``/`` in the password
    makes libpq read the rest as the host or the port (and quote it in its error)."""
    try:
        psycopg2.extensions.parse_dsn(value)
    except psycopg2.Error:
        raise ConfigError(NOT_LIBPQ) from None
    _scheme, sep, rest = value.partition("://")
    if sep:
        authority, _slash, path = rest.partition("?")[0].partition("/")
        if authority.count("@") > 1 or "@" in path:
            raise ConfigError(
                f"{NOT_LIBPQ}: a raw '@' or '/' in the user name or password; write them %40 and %2F"
            ) from None


def connect(settings: Settings) -> Connection:
    """Open a guarded connection (autocommit off; see :class:`Guard`); a failure is a one-line
    DatabaseError without secrets; an unparsable DATABASE_URL is a ConfigError (exit 2)."""
    uri = database_uri(settings)
    if settings.database_url:
        check_database_url(uri)
    stall = settings.stall_timeout
    try:
        conn = psycopg2.connect(
            uri,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=APPLICATION_NAME,
            connection_factory=GuardedConnection,
            **KEEPALIVES,
        )
    except psycopg2.ProgrammingError:  # libpq refused the string itself
        raise ConfigError(NOT_LIBPQ) from None
    except psycopg2.Error as exc:
        if _BAD_OPTION.match(str(exc)):  # e.g. sslmode=bogus, a port that is not a number: the setting
            raise ConfigError(f"DATABASE_URL or PG* settings: {one_line(exc)}") from None
        raise DatabaseError(f"cannot connect to PostgreSQL: {one_line(exc)}") from None
    conn.guard = Guard(conn, stall)
    if conn.server_version >= 140000:  # the server notices a vanished client even while it waits
        with conn.cursor() as cur:
            cur.execute("SET client_connection_check_interval = '5s'")
        conn.commit()
    return conn


class GuardedConnection(psycopg2.extensions.connection):
    """A psycopg2 connection carrying its :class:`Guard` (whose watchdog ends when it closes)."""

    guard: Guard

    def close(self) -> None:
        guard = getattr(self, "guard", None)
        if guard is not None:
            guard.close()
        super().close()


class Guard:
    """Bounds every wait on one connection (issue 13 §2): nothing waits on PostgreSQL for ever.

    Work on the connection is announced with ``doing(what)``; streams report progress with
    ``touch()``. A watchdog thread logs once when PostgreSQL has not answered for a while, and
    when nothing has moved for ``stall_timeout`` seconds (DB_STALL_TIMEOUT) it *cuts* the
    connection: cancels the statement and shuts the socket down, so a call blocked in the
    driver returns at once with an error, which :meth:`check` turns into one line naming the
    table and what was being done. PostgreSQL rolls the transaction back when the backend sees
    the closed socket (at once, or when a frozen backend resumes).

    ``call(what, fn)`` runs a blocking call on a helper thread while the calling thread waits in
    short joins: SIGTERM, Ctrl-C and a Prefect task time-out (an exception delivered to the
    waiting thread) are seen at once; the connection is then cut, the helper gets ``GRACE``
    seconds to return and is otherwise abandoned (``stuck``: nobody touches the connection again).
    """

    def __init__(self, conn: Connection, stall_timeout: float) -> None:
        self.stall_timeout = stall_timeout
        self.failure: str | None = None
        self.stuck = False
        self.interrupted: str | None = None  # how the call an interrupt stopped ended: done/failed/unknown
        self._conn = conn
        self._fd = conn.fileno()
        self._what: str | None = None
        self._limit = stall_timeout
        self._moved = time.monotonic()
        self._said = False
        self._closed = threading.Event()
        self._tick = min(1.0, stall_timeout / 10)
        threading.Thread(target=self._watch, name="db-watchdog", daemon=True).start()

    @contextmanager
    def doing(self, what: str, *, limit: float | None = None) -> Iterator[None]:
        """Announce ``what`` the connection is busy with (bounded by ``limit``, default the stall limit)."""
        previous = (self._what, self._limit)
        self._what, self._limit = what, limit or self.stall_timeout
        self.touch()
        try:
            yield
        finally:
            self._what, self._limit = previous
            self.touch()

    def touch(self) -> None:
        """Progress was made (a chunk streamed, a row read)."""
        self._moved = time.monotonic()
        self._said = False

    def call(self, what: str, fn: Callable[..., T], *args: object, limit: float | None = None) -> T:
        """``fn(*args)`` on a helper thread, waited for interruptibly; bounded like ``doing``."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        # An Event, not Thread.join: on Python 3.11 a join interrupted by an exception leaves the
        # thread looking finished (CPython gh-90882).
        done = threading.Event()
        helper = threading.Thread(target=target, name=f"db: {what}", daemon=True)
        with self.doing(what, limit=limit):
            helper.start()
            try:
                while not done.wait(0.2):  # short waits: signals and async exceptions get through
                    pass
            except BaseException:
                self.stop(done)
                self.interrupted = "done" if "value" in box else "failed" if "error" in box else "unknown"
                raise
        if "error" in box:
            self.check()
            raise box["error"]
        return box["value"]

    def stop(self, done: threading.Event) -> None:
        """Make the call whose end sets ``done`` return: cancel it (a live server answers at once,
        and the connection stays usable for the rollback); if it has not returned after GRACE
        seconds, cut the connection and wait GRACE more at most."""
        self.cancel()
        if not done.wait(GRACE):
            self.cut(None)
            self.wait_for(done)

    def wait_for(self, done: threading.Event) -> None:
        """Wait at most GRACE seconds for ``done`` after a cut; if the call is still blocked, mark
        the connection stuck (never waited on, never used again)."""
        if not done.wait(GRACE):
            self.stuck = True
            log.warning("a PostgreSQL call did not return %.0f s after its connection was cut; abandoned", GRACE)

    def check(self) -> None:
        """Raise the stall failure, if the watchdog cut the connection."""
        if self.failure:
            raise DatabaseError(self.failure)

    def cut(self, failure: str | None) -> None:
        """Cancel the statement and shut the socket down (thread-safe, idempotent)."""
        if failure and not self.failure:
            self.failure = failure
        if self._closed.is_set():
            return
        self._closed.set()
        self.cancel()
        with contextlib.suppress(OSError):
            dup = socket.socket(fileno=os.dup(self._fd))
            try:
                dup.shutdown(socket.SHUT_RDWR)
            finally:
                dup.close()

    def cancel(self, timeout: float = 2.0) -> None:
        """Cancel the running statement (the connection stays usable); never waits longer than
        ``timeout`` (the postmaster may be unreachable)."""
        canceller = threading.Thread(target=self._cancel, daemon=True)
        canceller.start()
        canceller.join(timeout)

    def close(self) -> None:
        self._closed.set()

    def _cancel(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self._conn.cancel()

    def _watch(self) -> None:
        while not self._closed.wait(self._tick):
            what, limit = self._what, self._limit
            if what is None:
                continue
            quiet = time.monotonic() - self._moved
            if quiet >= limit:
                outcome = (
                    "the commit may still take effect if the server resumes (check the tables' updated_at)"
                    if what == "committing"
                    else "the server rolls the transaction back"
                )
                self.cut(
                    f"PostgreSQL made no progress for {quiet:.0f} s while {what} "
                    f"(limit {limit:g} s, DB_STALL_TIMEOUT); connection closed, {outcome}"
                )
                return
            if not self._said and quiet >= min(10.0, limit / 2):
                self._said = True
                log.warning("no answer from PostgreSQL for %.0f s while %s; giving up after %g s", quiet, what, limit)


class Progress(io.RawIOBase):
    """A binary stream wrapper that reports every chunk read or written to a Guard."""

    def __init__(self, inner: IO[bytes], guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    def read(self, size: int = -1) -> bytes:
        chunk = self._inner.read(size)
        self._guard.touch()
        return chunk

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._guard.touch()
        return self._inner.write(data)


@contextmanager
def transaction(settings: Settings) -> Iterator[Connection]:
    """A guarded connection whose work is committed once at the end, or rolled back on any failure.

    A stall (DB_STALL_TIMEOUT) becomes its one-line DatabaseError.
    """
    conn = connect(settings)
    guard = conn.guard
    try:
        yield conn
        try:
            guard.call("committing", conn.commit)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM during the commit: say what is known
            exc.add_note(
                "the transaction had been committed when the stop arrived"
                if guard.interrupted == "done"
                else "nothing was committed (the commit was cancelled): every table keeps its previous rows"
                if guard.interrupted == "failed"
                else "stopped while committing: whether the commit took effect is unknown (check updated_at)"
            )
            raise
    except psycopg2.Error as exc:
        guard.check()
        _rollback_quietly(conn)
        raise DatabaseError(f"PostgreSQL error, transaction rolled back: {one_line(exc)}") from None
    except BaseException:
        _rollback_quietly(conn)
        raise
    finally:
        guard.close()
        if not guard.stuck:
            with contextlib.suppress(psycopg2.Error):
                conn.close()


@contextmanager
def advisory_lock(
    conn: Connection,
    key: tuple[int, int],
    holder: str,
    wait: float,
    *,
    session: bool,
    shared: bool = False,
) -> Iterator[None]:
    """Hold the advisory lock ``key`` (issue 9 §4): taken at once, or after logging that it is
    waited for and waiting at most ``wait`` seconds; then a DatabaseError (exit 1). ``session``:
    released when the connection closes, else at the end of the transaction. ``shared``: a
    reader's share (readers do not exclude each other; the load excludes them all).
    """
    scope, mode = ("" if session else "_xact"), ("_shared" if shared else "")
    guard = conn.guard

    def take(blocking: bool) -> bool:
        with conn.cursor() as cur:
            if not blocking:
                cur.execute(f"SELECT pg_try_advisory{scope}_lock{mode}(%s, %s)", key)
                return bool(cur.fetchone()[0])
            cur.execute("SET lock_timeout = %s", (max(1, int(wait * 1000)),))
            try:
                cur.execute(f"SELECT pg_advisory{scope}_lock{mode}(%s, %s)", key)
            finally:
                with contextlib.suppress(psycopg2.Error):
                    cur.execute("SET lock_timeout = 0")
            return True

    if not guard.call(f"taking the lock of {holder}", take, False):
        if shared:
            log.info("waiting for %s to commit; giving up after %g s (DB_STALL_TIMEOUT)", holder, wait)
        else:
            log.info("waiting up to %g s for %s (another run holds its lock; LOCK_WAIT_SECONDS)", wait, holder)
        started = time.monotonic()
        try:
            guard.call(f"waiting for {holder}", take, True, limit=wait + guard.stall_timeout)
        except psycopg2.errors.LockNotAvailable:
            if shared:
                raise DatabaseError(
                    f"gave up after {time.monotonic() - started:.0f} s (DB_STALL_TIMEOUT) waiting for {holder}; "
                    "nothing was read"
                ) from None
            raise DatabaseError(
                f"another run holds the lock of {holder} (waited {wait:g} s, LOCK_WAIT_SECONDS); nothing was done"
            ) from None
    yield


@dataclass
class PublishLock:
    """The held lock of one publish destination (``publish_lock``), on a connection of its own.

    An advisory lock lives as long as its connection: if that connection ends mid-publish (killed
    by an administrator, a network cut, a server restart) the lock is gone and a second publisher
    may start. ``confirm()`` tells the holder: call it before each dataset's first write.
    """

    conn: Connection
    key: tuple[int, int]
    holder: str  # "publishing to <destination>"

    def confirm(self) -> None:
        """One query on the lock's connection (milliseconds): is the lock still held by it? Else a
        one-line DatabaseError (exit 1) saying that another publisher may have started and that
        nothing more should be published by this run."""

        def held() -> bool:
            with self.conn.cursor() as cur:
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND objsubid = 2 AND classid::int8 = %s AND objid::int8 = %s)",
                    tuple(part & 0xFFFFFFFF for part in self.key),  # oid: the int4 keys read unsigned
                )
                return bool(cur.fetchone()[0])

        lost = f"lost the lock of {self.holder}"
        after = "another publisher may have started; this run publishes nothing more"
        try:
            still_held = self.conn.guard.call(f"confirming the lock of {self.holder}", held)
        except psycopg2.Error as exc:
            raise DatabaseError(f"{lost}: its PostgreSQL connection ended ({one_line(exc, 160)}); {after}") from None
        if not still_held:
            raise DatabaseError(f"{lost}: its PostgreSQL session no longer holds it; {after}")


@contextmanager
def publish_lock(settings: Settings, destination: str) -> Iterator[PublishLock]:
    """The lock of one publish destination (Socrata domain or folder), held on a connection of its
    own for the whole publish; a second publisher to the same destination waits LOCK_WAIT_SECONDS
    and then fails with one line (exit 1). Yields the :class:`PublishLock`, whose ``confirm()``
    the holder calls before each dataset's first write."""
    conn = connect(settings)
    conn.autocommit = True
    try:
        holder = f"publishing to {destination}"
        key = publish_key(destination)
        with advisory_lock(conn, key, holder, settings.lock_wait, session=True):
            yield PublishLock(conn, key, holder)
    finally:
        conn.guard.close()
        if not conn.guard.stuck:
            with contextlib.suppress(psycopg2.Error):
                conn.close()


def publish_key(destination: str) -> tuple[int, int]:
    """Advisory-lock key of a publish destination: (project, crc32 of the destination)."""
    return PUBLISH_LOCK_CLASS, _int4(zlib.crc32(destination.encode()))


def _int4(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def apply_schema(conn: Connection) -> list[str]:
    """Bring schema ``api`` up to the registry (config/sources.py), inside the caller's transaction.

    Creates missing tables and adds missing columns (new columns are NULL in the rows already
    there until the next load replaces them); columns the registry no longer has are left alone.
    A column whose type differs is never changed here: ConfigError (exit 2) naming it and the
    statement to run, before anything is altered. Returns what was changed, one line each.
    """
    wanted = sources.table_columns()
    changes: list[str] = []

    def run() -> None:
        with conn.cursor() as cur:
            _apply(cur, wanted, changes)

    conn.guard.call("applying the schema of config/sources.py", run)
    if changes:
        log.info("schema: %s", "; ".join(changes))
    return changes


def _apply(cur: psycopg2.extensions.cursor, wanted: dict, changes: list[str]) -> None:
    """Check every column type first (nothing altered on a mismatch), then create and add."""
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


@contextmanager
def load_lock(conn: Connection, wait: float) -> Iterator[None]:
    """The load's advisory lock, for the rest of the caller's transaction (one load at a time)."""
    with advisory_lock(conn, LOAD_LOCK, "the load (bond_data)", wait, session=False):
        yield


def in_load_order(tables: Iterable[str]) -> list[str]:
    """``tables`` in the order a load replaces them (config/sources.py; unknown names last).

    Every table lock, the load's and the readers', is taken in this one order (issue 13 §1), so
    a reader and a load can wait for each other but never deadlock.
    """
    rank = {source.table: index for index, source in enumerate(sources.SOURCES)}
    return sorted(dict.fromkeys(tables), key=lambda table: (rank.get(table, len(rank)), table))


@dataclass(frozen=True)
class TableCopy:
    """One table to replace: its columns as the COPY stream lists them, and the CSV stream."""

    table: str
    columns: list[str]
    stream: IO[bytes]
    header: bool = False


def replace_tables(conn: Connection, copies: Iterable[TableCopy]) -> None:
    """Inside the caller's transaction, empty each table and COPY its new rows in.

    DELETE + COPY, not TRUNCATE (issue 13 §7, measured in benchmarks/bench_load.py): MVCC-safe,
    so a reader whose snapshot predates the commit keeps seeing the previous rows (with TRUNCATE
    a REPEATABLE READ reader saw the table empty), and it takes only ROW EXCLUSIVE, which no
    reader's lock conflicts with. The deleted rows are dead tuples until (auto)VACUUM reclaims
    them (docs/operations.md, "Direct readers and VACUUM"). The caller passes tables in
    :func:`in_load_order`. A lock wait (a schema change holds the table) is bounded by
    DB_STALL_TIMEOUT, like every COPY.
    """
    guard = conn.guard
    with conn.cursor() as cur:
        # Report CSVs carry M/D/YYYY dates that COPY may parse directly.
        cur.execute("SET LOCAL datestyle = 'ISO, MDY'")
        cur.execute("SET LOCAL lock_timeout = %s", (int(guard.stall_timeout * 1000),))
        for copy in copies:
            target = sql.Identifier(SCHEMA, copy.table)
            try:
                with guard.doing(f"emptying {SCHEMA}.{copy.table} (DELETE)", limit=guard.stall_timeout + GRACE):
                    cur.execute(sql.SQL("DELETE FROM {}").format(target))
            except psycopg2.errors.LockNotAvailable:
                raise DatabaseError(
                    f"gave up after {guard.stall_timeout:g} s (DB_STALL_TIMEOUT) waiting for a lock on "
                    f"{SCHEMA}.{copy.table} held by another session; transaction rolled back"
                ) from None
            statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER {})").format(
                target,
                sql.SQL(", ").join(map(sql.Identifier, copy.columns)),
                sql.SQL("true" if copy.header else "false"),
            )
            with guard.doing(f"copying rows into {SCHEMA}.{copy.table} (COPY)"):
                cur.copy_expert(statement, Progress(copy.stream, guard), size=1 << 20)


def read_tables(settings: Settings, tables: list[str]) -> dict[str, pd.DataFrame]:
    """Read whole tables with the value types of docs/data-contract.md §4, every row once, in load order.

    text → str, integer → int64, numeric → float64 (int64 for the columns config/sources.py
    declares "whole"), date → 'YYYY-MM-DD', timestamp → 'YYYY-MM-DDTHH:MM:SS.ffffff'.
    Rows come in physical order: each load deletes the old rows and COPYs the new ones after
    them (or into space VACUUM freed, from the first page on), so that is the source CSV order.
    Waits for a load in progress to commit, so what is read is the newest data (logged; at most
    DB_STALL_TIMEOUT, then a DatabaseError).
    """
    with _no_load_in_progress(settings), transaction(settings) as conn:
        conn.set_session(readonly=True, isolation_level="REPEATABLE READ")  # one consistent snapshot
        _lock_for_reading(conn, tables, settings.stall_timeout)
        frames = {table: conn.guard.call(f"reading {SCHEMA}.{table}", _read_table, conn, table) for table in tables}
    empty = [table for table, frame in frames.items() if frame.empty]
    if empty:
        # A load never leaves a table empty (empty sources are rejected), so this is not data to publish.
        raise DatabaseError(f"table(s) {', '.join(empty)} are empty; load them with bond_data.py first")
    return frames


@contextmanager
def _no_load_in_progress(settings: Settings) -> Iterator[None]:
    """The load's lock in shared mode, on a connection of its own, while the tables are read:
    a load in progress is waited for ("waiting for the load in progress"; DB_STALL_TIMEOUT),
    and no load starts until the read is done (readers share the lock)."""
    conn = connect(settings)
    conn.autocommit = True
    try:
        with advisory_lock(conn, LOAD_LOCK, "the load in progress", settings.stall_timeout, session=True, shared=True):
            yield
    finally:
        conn.close()


def _lock_for_reading(conn: Connection, tables: list[str], wait: float) -> None:
    """Lock the tables before the snapshot is taken (LOCK, SAVEPOINT and SET take none), in
    :func:`in_load_order`, so that a reader never holds a table another session is about to
    change under an exclusive lock (a schema change); a busy lock is logged and given up after
    ``wait`` seconds (DB_STALL_TIMEOUT).
    """
    ordered = in_load_order(tables)
    statement = sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
        sql.SQL(", ").join(sql.Identifier(SCHEMA, table) for table in ordered)
    )

    def attempt(timeout_ms: int) -> bool:
        with conn.cursor() as cur:
            cur.execute("SAVEPOINT bond_read_lock")
            cur.execute("SET LOCAL lock_timeout = %s", (timeout_ms,))
            try:
                cur.execute(statement)
            except psycopg2.errors.LockNotAvailable:
                cur.execute("ROLLBACK TO SAVEPOINT bond_read_lock")
                return False
            except psycopg2.errors.UndefinedTable:
                raise DatabaseError(
                    f"a table of {', '.join(ordered)} does not exist in schema {SCHEMA}; run bond_data.py first"
                ) from None
            cur.execute("SET LOCAL lock_timeout = 0")
            cur.execute("RELEASE SAVEPOINT bond_read_lock")
            return True

    guard = conn.guard
    if guard.call("locking the tables to read", attempt, FIRST_TRY_MS):
        return
    names = ", ".join(f"{SCHEMA}.{table}" for table in ordered)
    log.info("waiting for %s (another session holds a lock on them); giving up after %g s", names, wait)
    started = time.monotonic()
    if not guard.call(f"waiting for a lock on {names}", attempt, int(wait * 1000), limit=wait + GRACE):
        raise DatabaseError(
            f"gave up after {time.monotonic() - started:.0f} s (DB_STALL_TIMEOUT) waiting for a lock on {names} "
            "(held by another session); nothing was read"
        )


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
        cur.copy_expert(select, Progress(buffer, conn.guard), size=1 << 20)
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
    # If the connection is already gone (or cut) the server rolls back on its own.
    guard = getattr(conn, "guard", None)
    if guard is not None and (guard.stuck or guard.failure):
        return
    with contextlib.suppress(psycopg2.Error):
        if guard is None:
            conn.rollback()
        else:
            guard.call("rolling back", conn.rollback, limit=GRACE * 2)
