"""The run history in PostgreSQL, schema ``etl`` (issue 10): what every step did, appended.

Tables (``config/history.sql``, applied idempotently): ``etl.steps`` (one row per step
execution: run id, step, start, end, status, one-line error), ``etl.items`` (per report / table /
dataset: rows, exact money totals, newest date, sha256 of the source bytes, destination, state)
and ``etl.notes`` (reconciliation notes, freshness verdicts, guard results, unmapped AIMS groups,
dropped duplicates: one row per line logged).

Who writes what, and in which transaction:

* a load's step row and items are written in the load's own transaction, before its commit
  (``write_step``): the history says "loaded" exactly when the data is there;
* a failed step is written in a transaction of its own (``record_step`` with status ``failed``),
  so the rollback of the failed work never erases the record of the failure;
* publishing appends a ``publishing`` item for a dataset before its first write and a
  ``verified`` item after its check, each committed at once (``PublishMarker``); a dataset whose
  latest marker is ``publishing`` was left part-way, and the next run re-publishes it first.

The run id is the Prefect flow-run id inside the flow, else a new UUID (``current_run_id``).
Money totals are exact decimals (``Decimal``), stored as decimal text in ``jsonb``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json

from bond_reporting import database, logs, socrata
from bond_reporting.errors import ConfigError, EtlError
from bond_reporting.settings import Settings
from config.datasets import DATASET_IDS

log = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "config" / "history.sql"


def current_run_id() -> str:
    """The Prefect flow-run id when called inside a flow run, else a new UUID (as text).

    Prefect is consulted only when it is already imported: the scripts never import it themselves.
    """
    if "prefect" in sys.modules:
        with contextlib.suppress(Exception):
            from prefect.runtime import flow_run

            run_id = flow_run.id
            if run_id:
                return str(run_id)
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# What a step records
# ---------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One report, table or dataset as a step saw it. ``money``: column → exact total."""

    kind: str  # report | table | dataset
    name: str
    state: str  # exported | loaded | computed | publishing | verified
    rows: int | None = None
    money: dict[str, Decimal] = field(default_factory=dict)
    newest_date: str | None = None  # 'YYYY-MM-DD'
    sha256: str | None = None
    destination: str | None = None
    verified: dict[str, Any] | None = None


@dataclass
class Note:
    """One line the step logged about trust: level INFO/WARNING/ERROR, kind (see history.sql)."""

    level: str
    kind: str
    subject: str | None
    message: str
    detail: dict[str, Any] | None = None


@dataclass
class StepRecord:
    """What one step execution did, filled in as it goes; written by ``write_step``/``record_step``."""

    run_id: str
    step: str
    started_at: datetime = field(default_factory=utc_now)
    items: list[Item] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    status: str = "running"
    error: str | None = None

    def note(self, level: str, kind: str, subject: str | None, message: str, detail: dict | None = None) -> None:
        """Log ``message`` at ``level`` (logger of this module's caller) and keep it for the history."""
        self.notes.append(Note(level, kind, subject, message, detail))
        logging.getLogger(f"bond_reporting.{self.step}").log(logging.getLevelName(level), "%s", message)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready facts (decimals as text): for the flow's artifact and the run report."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def apply_schema(conn: Connection) -> None:
    """Create schema ``etl`` and its tables if they do not exist yet (idempotent)."""
    with conn.cursor() as cur:
        cur.execute(SCHEMA_FILE.read_text())


def write_step(conn: Connection, record: StepRecord, status: str = "ok", error: str | None = None) -> None:
    """Append the step row, its items and notes inside the caller's transaction (not committed here)."""
    record.status, record.error = status, error
    apply_schema(conn)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO etl.steps (run_id, step, started_at, ended_at, status, error) VALUES (%s, %s, %s, %s, %s, %s)",
            (record.run_id, record.step, record.started_at, utc_now(), status, error),
        )
        for item in record.items:
            _insert_item(cur, record.run_id, record.step, item)
        for note in record.notes:
            cur.execute(
                "INSERT INTO etl.notes (run_id, step, level, kind, subject, message, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    record.run_id,
                    record.step,
                    note.level,
                    note.kind,
                    note.subject,
                    note.message,
                    None if note.detail is None else Json(_jsonable(note.detail)),
                ),
            )


def _insert_item(cur: Any, run_id: str, step: str, item: Item) -> None:
    cur.execute(
        "INSERT INTO etl.items (run_id, step, kind, name, state, rows, money, newest_date, sha256, destination,"
        " verified) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run_id,
            step,
            item.kind,
            item.name,
            item.state,
            item.rows,
            Json(_jsonable(item.money)),
            item.newest_date,
            item.sha256,
            item.destination,
            None if item.verified is None else Json(_jsonable(item.verified)),
        ),
    )


# Concurrent exports (the flow's task threads) write their history one at a time: the first
# connection may start the embedded server, which must happen once.
_WRITE_LOCK = threading.Lock()


@contextlib.contextmanager
def _own_transaction(settings: Settings) -> Iterator[Connection]:
    with _WRITE_LOCK, database.transaction(settings) as conn:
        yield conn


def record_step(settings: Settings, record: StepRecord, status: str = "ok", error: str | None = None) -> None:
    """Write the step in a transaction of its own (used for failures and for steps without one)."""
    with _own_transaction(settings) as conn:
        write_step(conn, record, status, error)


def record_failure(settings: Settings, record: StepRecord, exc: BaseException, *, quiet: bool = False) -> None:
    """Record ``record`` as failed with the error's one line, in its own transaction.

    Never raises: a history that cannot be written (the database is the failure) is a warning,
    and the step's own error is what the caller re-raises. Usage and configuration errors (exit 2)
    are not recorded: the step never started, and its settings may not even reach a database.
    """
    if isinstance(exc, ConfigError):
        return
    line = logs.redact(" ".join(str(exc).split())) or type(exc).__name__
    if not isinstance(exc, EtlError):
        line = f"unexpected {type(exc).__name__}: {line}"
    try:
        record_step(settings, record, "failed", line)
    except Exception as history_exc:  # noqa: BLE001 - the step's own error matters more
        same = " ".join(str(history_exc).split()) == " ".join(str(exc).split())  # e.g. both "cannot connect"
        (log.debug if quiet or same else log.warning)(
            "run history: could not record the failed %s step: %s", record.step, history_exc
        )


def export_history_wanted(settings: Settings) -> bool:
    """Whether an export without an explicit choice records history: a database is configured
    (DATABASE_URL, PGHOST) or the embedded one already exists (the export needs no database itself)."""
    if not settings.uses_embedded_database:
        return True
    return (Path(settings.local_dir) / "pgdata" / "PG_VERSION").exists()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# Publishing markers
# ---------------------------------------------------------------------------------------------


# socrata.DatasetResult.state → the marker appended after the attempt.
_MARKER_STATE = {"replaced and verified": "verified", "possibly partial": "partial", "unchanged": "unchanged"}


class PublishMarker:
    """Appends ``publishing``/``verified`` items for one run and destination, each committed at once."""

    def __init__(self, settings: Settings, run_id: str, destination: str) -> None:
        self.run_id = run_id
        self.destination = destination
        self._conn = database.connect(settings)
        self._conn.autocommit = True
        apply_schema(self._conn)

    def mark(self, item: Item) -> None:
        item.destination = self.destination
        with self._conn.cursor() as cur:
            _insert_item(cur, self.run_id, "publish", item)

    def publish_all(
        self,
        sink: Any,
        payloads: dict[str, Any],
        figures: dict[str, Any],
        before_each: Callable[[], None] | None = None,
    ) -> dict[str, int]:
        """``socrata.publish_all`` with the markers: ``publishing`` before a dataset's first write,
        then what the publisher proved: ``verified`` (with the figures it verified), ``partial``
        (may hold part of the new rows) or ``unchanged`` (nothing written, e.g. an atomic folder
        sink that did not commit). A run killed in between leaves ``publishing``. ``before_each()``
        runs before each dataset is marked (the publish lock's ``confirm``): raising there stops
        the publish with that dataset and the rest unchanged."""
        started: set[str] = set()
        finished: set[str] = set()  # given to on_result

        def item(dataset_id: str, state: str, verified: dict[str, Any] | None = None) -> Item:
            fig = figures[dataset_id]
            return Item("dataset", dataset_id, state, fig.rows, dict(fig.money), verified=verified)

        def on_start(dataset_id: str, _figures: Any) -> None:
            if before_each is not None:
                before_each()
            started.add(dataset_id)
            self.mark(item(dataset_id, "publishing"))

        def on_result(result: Any) -> None:
            finished.add(result.dataset_id)
            state = _MARKER_STATE.get(result.state, "partial")
            self.mark(item(result.dataset_id, state, {"rows": result.rows, **dict(result.figures)}))

        try:
            return socrata.publish_all(sink, payloads, on_start=on_start, on_result=on_result)
        except socrata.PublishFailed as exc:
            for result in exc.results:
                if result.dataset_id in started - finished:  # the one that failed (or, atomic: all)
                    self.mark(item(result.dataset_id, _MARKER_STATE.get(result.state, "partial")))
            raise

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self._conn.close()

    def __enter__(self) -> PublishMarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _has_history(cur: Any) -> bool:
    cur.execute("SELECT to_regclass('etl.items') IS NOT NULL")
    return bool(cur.fetchone()[0])


def last_verified(conn: Connection, destination: str, datasets: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The figures last verified at ``destination`` per dataset: ``{id: {"rows", "money", "run_id",
    "recorded_at"}}`` (datasets never published there are absent)."""
    with conn.cursor() as cur:
        if not _has_history(cur):
            return {}
        cur.execute(
            "SELECT DISTINCT ON (name) name, rows, money, run_id, recorded_at FROM etl.items "
            "WHERE step = 'publish' AND state = 'verified' AND destination = %s AND name = ANY(%s) "
            "ORDER BY name, item_id DESC",
            (destination, list(datasets)),
        )
        return {
            name: {
                "rows": rows,
                "money": {k: Decimal(v) for k, v in (money or {}).items()},
                "run_id": run_id,
                "recorded_at": recorded_at,
            }
            for name, rows, money, run_id, recorded_at in cur.fetchall()
        }


def unfinished_publishes(conn: Connection, destination: str) -> list[dict[str, Any]]:
    """Datasets at ``destination`` whose latest marker is ``publishing`` (a publish killed part-way)
    or ``partial`` (a failed write may have been applied). ``[{"dataset", "state", "run_id", "since"}]``
    in dataset-id order."""
    with conn.cursor() as cur:
        if not _has_history(cur):
            return []
        cur.execute(
            "SELECT name, state, run_id, recorded_at FROM ("
            " SELECT DISTINCT ON (name) name, state, run_id, recorded_at FROM etl.items"
            " WHERE step = 'publish' AND destination = %s ORDER BY name, item_id DESC) latest "
            "WHERE state IN ('publishing', 'partial') ORDER BY name",
            (destination,),
        )
        return [{"dataset": n, "state": s, "run_id": r, "since": t} for n, s, r, t in cur.fetchall()]


def previous_digests(conn: Connection, table: str, runs: int, before_run: str | None = None) -> list[str | None]:
    """sha256 of ``table``'s source bytes in its last ``runs`` successful loads, newest first
    (excluding the run ``before_run``)."""
    with conn.cursor() as cur:
        if not _has_history(cur):
            return []
        cur.execute(
            "SELECT sha256 FROM etl.items WHERE step = 'load' AND kind = 'table' AND state = 'loaded' "
            "AND name = %s AND run_id IS DISTINCT FROM %s ORDER BY item_id DESC LIMIT %s",
            (table, before_run, runs),
        )
        return [row[0] for row in cur.fetchall()]


def publish_states(settings: Settings, run_id: str) -> dict[str, dict[str, str]]:
    """Per destination, per dataset, the latest marker state this run left: after a failed publish
    'verified' = replaced and verified, 'publishing' = may hold only part of the new rows; datasets
    absent still hold the previous run's rows."""
    with _own_transaction(settings) as conn, conn.cursor() as cur:
        if not _has_history(cur):
            return {}
        cur.execute(
            "SELECT DISTINCT ON (destination, name) destination, name, state FROM etl.items "
            "WHERE step = 'publish' AND run_id = %s ORDER BY destination, name, item_id DESC",
            (run_id,),
        )
        out: dict[str, dict[str, str]] = {}
        for destination, name, state in cur.fetchall():
            out.setdefault(destination, {})[name] = state
        return out


def table_figures(
    conn: Connection, table: str, money: list[str], schema: str = "api"
) -> tuple[int, dict[str, Decimal]]:
    """Rows and exact ``numeric`` sums of the ``money`` columns of ``schema.table``, as this
    transaction sees them (the load calls it after its COPYs, before commit)."""
    from psycopg2 import sql

    sums = [sql.SQL("coalesce(sum({}), 0)::text").format(sql.Identifier(column)) for column in money]
    statement = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join([sql.SQL("count(*)"), *sums]), sql.Identifier(schema, table)
    )
    with conn.cursor() as cur:
        cur.execute(statement)
        row = cur.fetchone()
    return int(row[0]), {column: Decimal(value) for column, value in zip(money, row[1:], strict=True)}


def destination_of(sink: Any) -> str:
    """The history's name for a publish destination: ``folder /absolute/path`` or the sink's
    description (``https://domain`` for Socrata)."""
    directory = getattr(sink, "directory", None)
    if directory is not None:
        return f"folder {Path(directory).resolve()}"
    return str(sink.description)


# ---------------------------------------------------------------------------------------------
# The facts for people: the run report's trust sections and the flow's artifact
# ---------------------------------------------------------------------------------------------

_LEVEL_VERDICT = {"INFO": "ok", "WARNING": "warning", "ERROR": "error", "DEBUG": "ok"}


def trust_sections(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The trust facts of step records (``StepRecord.as_dict()``) as flat rows, keyed like
    ``report.RunFacts.trust``: ``freshness``, ``reconciliation``, ``guard``, ``changes``,
    ``unmapped``, ``duplicates`` (lists of dicts) and ``warnings`` (every WARNING/ERROR line)."""
    out: dict[str, list[Any]] = {}
    for record in records:
        step = record.get("step")
        for note in record.get("notes", []):
            kind, detail = note["kind"], note.get("detail") or {}
            level = note["level"]
            if kind in ("freshness", "unchanged"):
                row = {
                    "report": note.get("subject"),
                    "verdict": detail.get("level") or _LEVEL_VERDICT[level],
                    "data as of": detail.get("newest_date"),
                    "age (days)": detail.get("age_days"),
                    "check": "age" if kind == "freshness" else "bytes unchanged",
                    "line": note["message"],
                }
                out.setdefault("freshness", []).append(row)
            elif kind == "reconcile":
                out.setdefault("reconciliation", []).append({"step": step, "result": "ok", "line": note["message"]})
            elif kind == "guard":
                result = {"INFO": "passed", "WARNING": "accepted", "ERROR": "stopped"}.get(level, level)
                out.setdefault("guard", []).append({"result": result, "line": note["message"]})
            elif kind == "change":
                old, new = detail.get("old") or {}, detail.get("new") or {}
                row = {"dataset": note.get("subject"), "old rows": old.get("rows"), "new rows": new.get("rows")}
                for name, value in (new.get("money") or {}).items():
                    row[f"old {name}"] = (old.get("money") or {}).get(name)
                    row[f"new {name}"] = value
                row["fell beyond the limit"] = "; ".join(detail.get("drops") or []) or None
                out.setdefault("changes", []).append(row)
            elif kind == "unmapped":
                out.setdefault("unmapped", []).append(
                    {
                        "AIMS group": detail.get("group"),
                        "fiscal year": detail.get("fiscal_year"),
                        "rows": detail.get("rows"),
                        "expenses": detail.get("expenses"),
                        "obligated": detail.get("obligated"),
                    }
                )
            elif kind == "duplicates":
                money = detail.get("money") or {}
                out.setdefault("duplicates", []).append(
                    {
                        "table": note.get("subject"),
                        "rows dropped": detail.get("rows"),
                        "(group, date) pairs": detail.get("pairs"),
                        **{name: value for name, value in money.items()},
                    }
                )
            if level in ("WARNING", "ERROR"):
                out.setdefault("warnings", []).append(note["message"])
        if record.get("status") == "failed" and record.get("error"):
            out.setdefault("warnings", []).append(f"{step} failed: {record['error']}")
    return out


def artifact_rows(settings: Settings | None, run_id: str | None = None) -> list[dict[str, Any]]:
    """Rows for the flow's summary artifact (step, item, rows, seconds, note) from this run's
    history: reconciliation lines, freshness verdicts, guard results, every warning (unmapped AIMS
    groups, dropped duplicates, repairs), each failed step's one line and, after a failed publish,
    which datasets were replaced and verified, which may be partial and which still hold the
    previous run's rows. Never raises: without a history the artifact simply has no such rows."""
    if settings is None:
        return []
    run_id = run_id or current_run_id()
    try:
        with _own_transaction(settings) as conn, conn.cursor() as cur:
            if not _has_history(cur):
                return []
            cur.execute(
                "SELECT step, level, kind, subject, message FROM etl.notes WHERE run_id = %s AND "
                "(level IN ('WARNING', 'ERROR') OR kind IN ('reconcile', 'guard', 'freshness', 'unchanged')) "
                "ORDER BY note_id",
                (run_id,),
            )
            notes = cur.fetchall()
            cur.execute(
                "SELECT step, error FROM etl.steps WHERE run_id = %s AND status = 'failed' ORDER BY step_id", (run_id,)
            )
            failed = cur.fetchall()
            cur.execute(
                "SELECT DISTINCT ON (destination, name) destination, name, state FROM etl.items "
                "WHERE step = 'publish' AND run_id = %s ORDER BY destination, name, item_id DESC",
                (run_id,),
            )
            states = cur.fetchall()
    except Exception as exc:  # noqa: BLE001 - the artifact must never hide the run's own outcome
        log.warning("run history unavailable for the summary artifact: %s", exc)
        return []
    rows = [
        {"step": step, "item": kind + (f": {subject}" if subject else ""), "rows": "", "seconds": "", "note": message}
        for step, _level, kind, subject, message in notes
    ]
    for step, error in failed:
        rows.append({"step": step, "item": "FAILED", "rows": "", "seconds": "", "note": error})
    if any(step == "calculate" for step, _ in failed):
        rows.extend(_publish_outcome(states))
    return rows


def _publish_outcome(states: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    if not states:
        note = "nothing published: every dataset still holds the previous run's rows"
        return [{"step": "publish", "item": "outcome", "rows": "", "seconds": "", "note": note}]
    out = []
    for destination in dict.fromkeys(d for d, _n, _s in states):
        mine = {name: state for d, name, state in states if d == destination}
        verified = [n for n in DATASET_IDS if mine.get(n) == "verified"]
        partial = [n for n in DATASET_IDS if mine.get(n) in ("publishing", "partial")]
        previous = [n for n in DATASET_IDS if mine.get(n, "unchanged") == "unchanged"]
        note = (
            f"at {destination}: replaced and verified: {', '.join(verified) or 'none'}; "
            f"may hold only part of the new rows (re-published first next run): {', '.join(partial) or 'none'}; "
            f"still the previous run's rows: {', '.join(previous) or 'none'}"
        )
        out.append({"step": "publish", "item": "outcome", "rows": "", "seconds": "", "note": note})
    return out
