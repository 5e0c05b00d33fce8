"""Load every configured CSV source into PostgreSQL: validated first, then replaced all-or-nothing.

    python bond_data.py                        # sources as configured (bucket + published sheets)
    python bond_data.py --from-dir sample_data # every source from DIR/<table>.csv
    python bond_data.py --only all_bonds_spend_plan bond_2020_program_names

Sources: config/sources.py. Exit codes: 0 loaded, 1 data/runtime failure, 2 usage/config error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from bond_reporting import cli, loader
from bond_reporting.settings import Settings
from config.sources import SOURCES

_DATABASE_VARIABLES = ("DATABASE_URL", "PGHOST", "BOND_LOCAL_DIR")


def run(
    *,
    from_dir: str | None = None,
    sheets_dir: str | None = None,
    only: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> dict:
    """Load the sources; returns {"tables": {table: rows}, "newest_dates": {...}, "seconds": s}."""
    started = time.perf_counter()
    loaded = loader.load_sources(
        settings or Settings.from_env(), SOURCES, from_dir=from_dir, sheets_dir=sheets_dir, only=only
    )
    return {
        "tables": {item.table: item.rows for item in loaded},
        "newest_dates": {item.table: item.newest_date for item in loaded if item.newest_date},
        "seconds": round(time.perf_counter() - started, 3),
    }


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
