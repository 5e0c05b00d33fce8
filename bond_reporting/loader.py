"""The load step: read every source, validate all of them, replace every table in one transaction.

Order of work:
1. download every selected source to a local file (network first, before any database lock);
2. open one transaction; for each source, validate it and COPY it into its (emptied) table;
3. commit once, after every source has validated and every COPY has finished.

A source whose file can go to PostgreSQL as it is (exactly the mapped columns, no quoting) starts
streaming to COPY on a background thread *while* it is being validated; the uncommitted rows are
invisible to everyone, and any failure (validation, COPY, lost connection) rolls the whole
transaction back, so every table keeps its previous rows. Other sources are re-serialised from
the validated frame after validation.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO

import pandas as pd
from psycopg2.extensions import connection as Connection

from bond_reporting import database, keys, reconcile, selection, storage
from bond_reporting.errors import DatabaseError, EtlError, ValidationError
from bond_reporting.logs import one_line, plural
from bond_reporting.settings import Settings
from bond_reporting.validation import read_csv_as_text, read_header, validate_file
from config.sources import Source

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
    repeated: list[keys.RepeatedKey] = field(default_factory=list)  # rows sharing the source's key
    label: str = ""  # how messages name the source


def select_sources(sources: Sequence[Source], only: Sequence[str] | None) -> list[Source]:
    """The configured sources, or those whose table is named in ``only`` (unknown names: exit 2)."""
    wanted = set(selection.select(only or None, [source.table for source in sources], "table"))
    return [source for source in sources if source.table in wanted]


def source_location(source: Source, from_dir: str | None, sheets_dir: str | None) -> str:
    """Where to read ``source``: ``from_dir`` overrides all, ``sheets_dir`` the http(s) sheets."""
    if from_dir:
        return str(Path(from_dir) / f"{source.table}.csv")
    if sheets_dir and source.url.startswith(("http://", "https://")):
        return str(Path(sheets_dir) / f"{source.table}.csv")
    return source.url


def fetch_source(source: Source, location: str, workdir: Path, settings: Settings) -> Path:
    """The source as a local file; errors name the source."""
    try:
        return storage.fetch_to_file(location, workdir / f"{source.table}.download", settings)
    except EtlError as exc:
        raise exc.prefixed(source.label) from None


def load_sources(
    settings: Settings,
    sources: Sequence[Source],
    *,
    from_dir: str | None = None,
    sheets_dir: str | None = None,
    only: Sequence[str] | None = None,
    before_commit: Callable[[Connection, list[LoadedTable]], None] | None = None,
) -> list[LoadedTable]:
    """Validate every selected source and replace their tables atomically. Returns what was loaded.

    A refused source refuses the load; the sources after it are still validated (not copied), so
    the one ValidationError names every bad source of this run (``every_refusal``).

    ``before_commit(conn, loaded)`` runs inside the transaction after every COPY, before commit
    (reconciliation and the run history's load records); raising there rolls everything back.
    """
    selected = select_sources(sources, only)
    _ = (settings.stall_timeout, settings.lock_wait)  # a bad setting fails before any work
    remove_stale_workdirs()
    try:
        return _load(settings, selected, from_dir, sheets_dir, before_commit)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (bond_reporting/signals.py)
        if not getattr(exc, "__notes__", None):  # (a stop during the commit says what it knows)
            exc.add_note("nothing was loaded: the transaction was rolled back, every table keeps its previous rows")
        raise


def _load(
    settings: Settings,
    selected: list[dict],
    from_dir: str | None,
    sheets_dir: str | None,
    before_commit: Callable[[Connection, list[LoadedTable]], None] | None,
) -> list[LoadedTable]:
    with workdir_of_this_run() as workdir:
        files = [fetch_source(s, source_location(s, from_dir, sheets_dir), workdir, settings) for s in selected]
        loaded_at = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        suffix = f",{loaded_at}".encode()
        loaded = []
        started = time.perf_counter()
        with database.transaction(settings) as conn, database.load_lock(conn, settings.lock_wait):
            database.apply_schema(conn)  # after the lock: two loads never create the schema at once
            refused: list[ValidationError] = []
            with CopyPipeline(conn) as pipeline:
                for source, path in zip(selected, files, strict=True):
                    # Once the load is lost, the rest are validated only, to name every bad source at once.
                    columns = None if refused else raw_copy_columns(source, path)
                    if columns:  # stream the file's own bytes while validating it
                        pipeline.submit(source.table, [*columns, "updated_at"], path, suffix, header=True)
                    try:
                        item = validate_source(source, path)
                    except ValidationError as exc:
                        refused.append(exc)
                        continue
                    if refused:
                        continue
                    loaded.append(item)
                    log.debug(
                        "validated %s: %d %s in %.2f s", item.table, item.rows, plural(item.rows, "row"), item.seconds
                    )
                    if not columns:
                        staged = workdir / f"{source.table}.copy.csv"
                        write_copy_csv(item.frame, source.date_field, loaded_at, staged)
                        pipeline.submit(source.table, [*item.frame.columns, "updated_at"], staged)
                    item.frame = None  # free it: memory stays bounded by one source
                if refused:  # leaving the block cancels the COPYs; the transaction rolls back
                    raise refused[0] if len(refused) == 1 else every_refusal(refused)
                pipeline.finish()
            if before_commit is not None:
                before_commit(conn, loaded)
        seconds = time.perf_counter() - started
    for table in loaded:
        newest = f", newest date {table.newest_date}" if table.newest_date else ""
        log.info(
            "loaded %s: %d %s%s (validated in %.2f s)",
            table.table,
            table.rows,
            plural(table.rows, "row"),
            newest,
            table.seconds,
        )
    rows = sum(t.rows for t in loaded)
    log.info(
        "load committed: %d %s, %d %s, updated_at %s UTC, validate + COPY + commit %.2f s",
        len(loaded),
        plural(len(loaded), "table"),
        rows,
        plural(rows, "row"),
        loaded_at,
        seconds,
    )
    return loaded


WORKDIR_PREFIX = "bond-load-"
_LOCK_NAME = ".in-use"


@contextmanager
def workdir_of_this_run() -> Iterator[Path]:
    """A ``bond-load-*`` folder in TMPDIR for the downloads, removed at the end (also on Ctrl-C
    and SIGTERM); it holds an flock on ``.in-use`` while the load runs, so that
    :func:`remove_stale_workdirs` of another load never takes a live one."""
    # Made under a hidden name, locked, then renamed: a cleaner never sees it unlocked.
    folder = Path(tempfile.mkdtemp(prefix=f".{WORKDIR_PREFIX}"))
    try:
        with open(folder / _LOCK_NAME, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            folder = folder.rename(folder.with_name(folder.name.removeprefix(".")))
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_workdirs(parent: Path | None = None, *, min_age: float = 60.0) -> int:
    """Remove the ``bond-load-*`` folders of loads that were killed (issue 13 §3): those in TMPDIR
    whose ``.in-use`` lock nobody holds (and, for folders without one, older than ``min_age`` s).
    Only this step's own pattern, only in TMPDIR. Returns how many were removed."""
    parent = parent or Path(tempfile.gettempdir())
    removed, freed = 0, 0
    for folder in parent.glob(f"{WORKDIR_PREFIX}*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            if not _unused(folder, min_age):
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder)
        except OSError:
            continue  # raced with its owner or another cleaner: leave it
        removed, freed = removed + 1, freed + size
    if removed:
        log.info(
            "removed %d stale %s* folder(s) (%.0f MB) left in %s by stopped loads",
            removed,
            WORKDIR_PREFIX,
            freed / 1e6,
            parent,
        )
    return removed


def _unused(folder: Path, min_age: float) -> bool:
    lock_path = folder / _LOCK_NAME
    if not lock_path.exists():
        return time.time() - folder.stat().st_mtime > min_age
    with open(lock_path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a load is using it
    return True


def validate_source(source: Source, path: Path) -> LoadedTable:
    """Validate one downloaded source; raises ValidationError naming it."""
    started = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
        digest = hasher.submit(_sha256, path)  # the run history's fingerprint, hashed while validating
        frame = validate_file(path, source, source.label)
        date_field = source.date_field
        newest = frame[date_field].max().strftime("%Y-%m-%d") if date_field else None
        money = reconcile.money_totals(frame, source.money_columns)
        repeated = repeated_keys(source, path, frame)
    return LoadedTable(
        source.name,
        source.table,
        len(frame),
        newest,
        time.perf_counter() - started,
        frame,
        money,
        digest.result(),
        repeated,
        source.label,
    )


def every_refusal(refused: Sequence[ValidationError]) -> ValidationError:
    """One error for several refused sources: ``N sources refused: <first line> | <second line> …``
    (each line as its source's own ValidationError says it; nothing is loaded)."""
    return ValidationError(f"{len(refused)} sources refused: " + " | ".join(str(exc) for exc in refused))


def repeated_keys(source: Source, path: Path, frame: pd.DataFrame) -> list[keys.RepeatedKey]:
    """The keys (``Source.key``) on more than one row of the validated ``frame``, with their physical
    lines (only then is the file re-read as text: row i of the frame is record i of the file)."""
    repeated = keys.repeated_keys(frame, source.key, source.money_columns)
    if repeated:
        lines = read_csv_as_text(path, source.label, mapped=source.field_maps).frame.index
        repeated = [
            keys.RepeatedKey(r.key, r.positions, r.money, [int(lines[p]) for p in r.positions]) for r in repeated
        ]
    return repeated


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def raw_copy_columns(source: Source, path: Path) -> list[str] | None:
    """Table columns in the file's header order if its bytes can go to COPY as they are, else None.

    That needs exactly the mapped columns (nothing to drop) and plain bytes: no quoting, no CR,
    no blank lines. Values themselves need no rewriting: validation accepts only what
    PostgreSQL parses to the same value (M/D/YYYY dates under datestyle MDY, plain numbers).
    """
    header = read_header(path)
    maps = source.field_maps
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
        self._done = threading.Event()

    def __enter__(self) -> CopyPipeline:
        self._thread.start()
        return self

    def submit(
        self, table: str, columns: list[str], path: Path, suffix: bytes | None = None, *, header: bool = False
    ) -> None:
        """Queue a COPY of ``path``; ``suffix`` (the raw path only) is appended to every line."""
        self._jobs.put((table, columns, path, suffix, header))

    def finish(self) -> None:
        """Wait for the queued COPYs (in short joins: SIGTERM and time-outs get through; a stalled
        COPY is ended by the connection's Guard) and re-raise the first failure."""
        self._jobs.put(None)
        while not self._done.wait(0.2):  # an Event: see database.Guard.call
            pass
        if self._error is not None:
            raise self._error

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._done.is_set():
            self._aborted = True
            self._jobs.put(None)
            self._conn.guard.stop(self._done)  # cancel the COPY; cut the connection if that is not enough

    def _work(self) -> None:
        try:
            self._run_jobs()
        finally:
            self._done.set()

    def _run_jobs(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is not None or self._aborted:
                continue  # drain: the transaction is doomed, just wait for the end
            table, columns, path, suffix, header = job
            try:
                with open(path, "rb") as handle:
                    stream = AppendColumn(handle, suffix) if suffix else handle
                    database.replace_tables(self._conn, [database.TableCopy(table, columns, stream, header)])
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread by finish()
                stalled = self._conn.guard.failure
                self._error = (
                    exc
                    if isinstance(exc, EtlError)
                    else DatabaseError(stalled)
                    if stalled
                    else DatabaseError(f"COPY into {table} failed, transaction rolled back: {one_line(exc)}")
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
