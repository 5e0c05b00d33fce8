"""The load step: read every source, validate all of them, replace every table in one transaction.

Order of work:
1. download every selected source to a local file (network first, before any database lock);
2. open one transaction; for each source, validate it and COPY it into its (truncated) table;
3. commit once, after every source has validated and every COPY has finished.

A source whose file can go to PostgreSQL as it is (exactly the mapped columns, no quoting) starts
streaming to COPY on a background thread *while* it is being validated; the uncommitted rows are
invisible to everyone, and any failure (validation, COPY, lost connection) rolls the whole
transaction back, so every table keeps its previous rows. Other sources are re-serialised from
the validated frame after validation.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO

import pandas as pd
from psycopg2.extensions import connection as Connection

from bond_reporting import database, reconcile, storage
from bond_reporting.errors import ConfigError, DatabaseError, EtlError
from bond_reporting.settings import Settings
from bond_reporting.validation import read_header, validate_file

log = logging.getLogger(__name__)


@dataclass
class LoadedTable:
    """What one source put into its table; ``frame`` holds the validated rows until they are staged."""

    name: str
    table: str
    rows: int
    newest_date: str | None
    seconds: float  # validation (download excluded)
    frame: pd.DataFrame | None = field(default=None, repr=False)
    money: dict[str, Decimal] = field(default_factory=dict)  # exact totals of the validated money columns
    sha256: str | None = None  # of the source bytes as downloaded


def select_sources(sources: Sequence[dict], only: Sequence[str] | None) -> list[dict]:
    """The configured sources, or those whose table is named in ``only`` (unknown names: exit 2)."""
    if not only:
        return list(sources)
    known = [source["table"] for source in sources]
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown}; configured tables: {', '.join(known)}")
    return [source for source in sources if source["table"] in only]


def source_location(source: dict, from_dir: str | None, sheets_dir: str | None) -> str:
    """Where to read ``source``: ``from_dir`` overrides all, ``sheets_dir`` the http(s) sheets."""
    if from_dir:
        return str(Path(from_dir) / f"{source['table']}.csv")
    if sheets_dir and source["url"].startswith(("http://", "https://")):
        return str(Path(sheets_dir) / f"{source['table']}.csv")
    return source["url"]


def label_of(source: dict) -> str:
    return f"{source['name']} ({source['table']})"


def fetch_source(source: dict, location: str, workdir: Path, settings: Settings) -> Path:
    """The source as a local file; errors name the source."""
    try:
        return storage.fetch_to_file(location, workdir / f"{source['table']}.download", settings)
    except EtlError as exc:
        raise exc.prefixed(label_of(source)) from None


def load_sources(
    settings: Settings,
    sources: Sequence[dict],
    *,
    from_dir: str | None = None,
    sheets_dir: str | None = None,
    only: Sequence[str] | None = None,
    before_commit: Callable[[Connection, list[LoadedTable]], None] | None = None,
) -> list[LoadedTable]:
    """Validate every selected source and replace their tables atomically. Returns what was loaded.

    ``before_commit(conn, loaded)`` runs inside the transaction after every COPY, before commit
    (reconciliation and the run history's load records); raising there rolls everything back.
    """
    selected = select_sources(sources, only)
    with tempfile.TemporaryDirectory(prefix="bond-load-") as tmp:
        workdir = Path(tmp)
        files = [fetch_source(s, source_location(s, from_dir, sheets_dir), workdir, settings) for s in selected]
        loaded_at = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        suffix = f",{loaded_at}".encode()
        loaded = []
        started = time.perf_counter()
        with database.transaction(settings) as conn:
            database.apply_schema(conn)
            with CopyPipeline(conn) as pipeline:
                for source, path in zip(selected, files, strict=True):
                    columns = raw_copy_columns(source, path)
                    if columns:  # stream the file's own bytes while validating it
                        pipeline.submit(source["table"], [*columns, "updated_at"], path, suffix, header=True)
                    loaded.append(item := validate_source(source, path))
                    log.debug("validated %s: %d rows in %.2f s", item.table, item.rows, item.seconds)
                    if not columns:
                        staged = workdir / f"{source['table']}.copy.csv"
                        write_copy_csv(item.frame, source.get("date_field"), loaded_at, staged)
                        pipeline.submit(source["table"], [*item.frame.columns, "updated_at"], staged)
                    item.frame = None  # free it: memory stays bounded by one source
                pipeline.finish()
            if before_commit is not None:
                before_commit(conn, loaded)
        seconds = time.perf_counter() - started
    for table in loaded:
        newest = f", newest date {table.newest_date}" if table.newest_date else ""
        log.info("loaded %s: %d rows%s (validated in %.2f s)", table.table, table.rows, newest, table.seconds)
    log.info(
        "load committed: %d tables, %d rows, updated_at %s UTC, validate + COPY + commit %.2f s",
        len(loaded),
        sum(t.rows for t in loaded),
        loaded_at,
        seconds,
    )
    return loaded


def validate_source(source: dict, path: Path) -> LoadedTable:
    """Validate one downloaded source; raises ValidationError naming it."""
    started = time.perf_counter()
    frame = validate_file(path, source, label_of(source))
    date_field = source.get("date_field")
    newest = frame[date_field].max().strftime("%Y-%m-%d") if date_field else None
    money = reconcile.money_totals(frame, reconcile.money_columns(source))
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return LoadedTable(
        source["name"], source["table"], len(frame), newest, time.perf_counter() - started, frame, money, digest
    )


def raw_copy_columns(source: dict, path: Path) -> list[str] | None:
    """Table columns in the file's header order if its bytes can go to COPY as they are, else None.

    That needs exactly the mapped columns (nothing to drop) and plain bytes: no quoting, no CR,
    no blank lines. Values themselves need no rewriting: validation accepts only what
    PostgreSQL parses to the same value (M/D/YYYY dates under datestyle MDY, plain numbers).
    """
    header = read_header(path)
    maps = source["field_maps"]
    if sorted(header) != sorted(maps) or not _plain_bytes(path):
        return None
    return [maps[name] for name in header]


def _plain_bytes(path: Path) -> bool:
    previous = b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            if b'"' in chunk or b"\r" in chunk or b"\n\n" in previous + chunk:
                return False
            previous = chunk[-1:]
    return True


def write_copy_csv(frame: pd.DataFrame, date_field: str | None, loaded_at: str, path: Path) -> None:
    """The validated frame + ``updated_at`` as COPY input (ISO dates, repr-exact floats, CSV quoting
    for text with commas, quotes or line breaks; no header)."""
    out = frame.assign(updated_at=loaded_at)
    if date_field:
        out[date_field] = frame[date_field].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False, header=False, lineterminator="\n")


class CopyPipeline:
    """Runs the COPYs of one transaction, in submission order, on a background thread.

    The caller keeps validating while PostgreSQL ingests. ``finish`` waits and re-raises a COPY
    failure; leaving the ``with`` block on an exception cancels the running COPY so the
    transaction can roll back at once.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._jobs: queue.Queue[tuple | None] = queue.Queue()
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._work, name="copy-pipeline", daemon=True)

    def __enter__(self) -> CopyPipeline:
        self._thread.start()
        return self

    def submit(
        self, table: str, columns: list[str], path: Path, suffix: bytes | None = None, *, header: bool = False
    ) -> None:
        """Queue a COPY of ``path``; ``suffix`` (the raw path only) is appended to every line."""
        self._jobs.put((table, columns, path, suffix, header))

    def finish(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._thread.is_alive():
            self._aborted = True
            self._conn.cancel()  # thread-safe: aborts a COPY in progress
            self._jobs.put(None)
            self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is not None or self._aborted:
                continue  # drain: the transaction is doomed, just wait for the end
            table, columns, path, suffix, header = job
            try:
                with open(path, "rb") as handle:
                    stream = AppendColumn(handle, suffix) if suffix else handle
                    database.replace_tables(self._conn, [database.TableCopy(table, columns, stream, header)])
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread by finish()
                self._error = (
                    exc
                    if isinstance(exc, EtlError)
                    else DatabaseError(f"COPY into {table} failed, transaction rolled back: {database.one_line(exc)}")
                )


class AppendColumn:
    """A binary reader yielding the wrapped file with ``suffix`` inserted before every newline
    (and after a last line that has none): adds the ``updated_at`` column without parsing the CSV."""

    def __init__(self, handle: IO[bytes], suffix: bytes) -> None:
        self._handle = handle
        self._newline = suffix + b"\n"
        self._ended_with_newline = True
        self._done = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size if size and size > 0 else 1 << 20)
        if chunk:
            self._ended_with_newline = chunk.endswith(b"\n")
            return chunk.replace(b"\n", self._newline)
        if not self._done and not self._ended_with_newline:
            self._done = True
            return self._newline
        return b""
