"""Load every configured CSV source into PostgreSQL: validated first, then replaced all-or-nothing.

    python bond_data.py                        # sources as configured (bucket + published sheets)
    python bond_data.py --from-dir sample_data # every source from DIR/<table>.csv
    python bond_data.py --only all_bonds_spend_plan bond_2020_program_names

Sources: config/sources.py. Exit codes: 0 loaded, 1 data/runtime failure, 2 usage/config error,
143 stopped by SIGTERM (nothing changed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from psycopg2.extensions import connection as Connection

from bond_reporting import cli, history, loader, reconcile
from bond_reporting.logs import plural
from bond_reporting.settings import Settings
from config.sources import SOURCES

_DATABASE_VARIABLES = ("DATABASE_URL", "PGHOST", "BOND_LOCAL_DIR")

log = logging.getLogger("bond_data")


def run(
    *,
    from_dir: str | None = None,
    sheets_dir: str | None = None,
    only: Sequence[str] | None = None,
    settings: Settings | None = None,
    run_id: str | None = None,
) -> dict:
    """Load the sources; returns {"tables": {table: rows}, "newest_dates": {...}, "seconds": s,
    "run_id", "history": the step's run-history record as a plain dict}.

    Inside the load transaction, before commit: every table's rows and money totals in PostgreSQL
    must equal the validated file's (exact, issue 10), and the run history's load records are
    written. A failure rolls the load back and is recorded in a transaction of its own.
    """
    started = time.perf_counter()
    settings = settings or Settings.from_env()
    record = history.StepRecord(run_id or history.current_run_id(), "load")
    try:
        loaded = loader.load_sources(
            settings,
            SOURCES,
            from_dir=from_dir,
            sheets_dir=sheets_dir,
            only=only,
            before_commit=lambda conn, loaded: reconcile_and_record(conn, loaded, record),
        )
    except BaseException as exc:
        history.record_failure(settings, record, exc)
        raise
    return {
        "tables": {item.table: item.rows for item in loaded},
        "newest_dates": {item.table: item.newest_date for item in loaded if item.newest_date},
        "seconds": round(time.perf_counter() - started, 3),
        "run_id": record.run_id,
        "history": record.as_dict(),
    }


def reconcile_and_record(conn: Connection, loaded: list[loader.LoadedTable], record: history.StepRecord) -> None:
    """Inside the load transaction: PostgreSQL = validated files (rows, exact money totals) for
    every table, then the step's history rows. Raises ReconciliationError (→ rollback)."""
    for item in loaded:
        for repeated in item.repeated:  # kept as they are; said once per key (docs/data-contract.md Q11)
            record.note(
                "WARNING",
                "repeated_key",
                item.table,
                repeated.describe(item.label),
                {"key": repeated.key, "lines": repeated.lines, "money": repeated.money},
            )
    for item in loaded:
        rows, money = history.table_figures(conn, item.table, list(item.money))
        line = reconcile.check(
            "load",
            item.table,
            reconcile.Figures(item.rows, item.money),
            reconcile.Figures(rows, money),
            what=("validated file", "PostgreSQL"),
        )
        log.debug("%s", line)
        record.items.append(
            history.Item("table", item.table, "loaded", item.rows, item.money, item.newest_date, item.sha256)
        )
    money_tables = sum(1 for item in loaded if item.money)
    total_rows = sum(i.rows for i in loaded)
    record.note(
        "INFO",
        "reconcile",
        None,
        f"reconciled load: {len(loaded)} table(s), {total_rows} {plural(total_rows, 'row')}, money totals of "
        f"{money_tables} table(s): PostgreSQL = validated files, exact to the cent (before commit)",
    )
    history.write_step(conn, record)


def build_parser() -> cli.ArgumentParser:
    parser = cli.parser(
        "bond_data.py",
        "Load every CSV source of config/sources.py into PostgreSQL (schema api): all are validated first, "
        "then every table is replaced in one transaction. A failed load changes nothing.",
        variables=(
            "BUCKET",
            "AWS_ACCESS_ID",
            "AWS_PASS",
            "AWS_ENDPOINT_URL",
            "DATABASE_URL",
            "PGHOST",
            "BOND_LOCAL_DIR",
            "DB_STALL_TIMEOUT",
            "LOCK_WAIT_SECONDS",
        ),
        choices={"tables (--only), in load order": {s.table: s.name for s in SOURCES}},
    )
    parser.add_argument("--from-dir", metavar="DIR", help="read every source from DIR/<table>.csv")
    parser.add_argument("--sheets-dir", metavar="DIR", help="read the published-sheet sources from DIR/<table>.csv")
    parser.add_argument(
        "--only", nargs="+", metavar="TABLE", choices=[s.table for s in SOURCES], help="load only these tables"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    def job(args: argparse.Namespace) -> dict:
        return run(from_dir=args.from_dir, sheets_dir=args.sheets_dir, only=args.only)

    return cli.main(build_parser(), job, argv)


if __name__ == "__main__":
    sys.exit(main())
