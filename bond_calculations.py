"""Calculate the seven dashboard datasets from the database and publish them (or write them to a folder).

    python bond_calculations.py                     # publish to Socrata (SO_WEB, SO_KEY, SO_SECRET; SO_TOKEN optional)
    python bond_calculations.py --output-dir out    # write out/<dataset id>.json and .csv instead
    python bond_calculations.py --only hq9n-d77y 5ewg-ssu3 --chunk-size 5000 -v

Every payload is computed before anything is published: a failing calculation publishes nothing.
What each dataset holds: config/datasets.py and data-contract §5. Exit codes: 0 ok, 1 failure, 2 usage/config.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from bond_reporting import calculations, cli, socrata
from bond_reporting.errors import ConfigError
from bond_reporting.settings import Settings
from config import datasets as cfg

log = logging.getLogger("bond_calculations")
_SOCRATA_VARIABLES = ("SO_WEB", "SO_KEY", "SO_SECRET")  # required to publish (not with --output-dir)


def calculate_and_publish(
    tables: Mapping[str, pd.DataFrame], sink: socrata.Sink, *, only: Sequence[str] | None = None
) -> dict[str, int]:
    """Compute every selected payload, then publish them in publish order. Returns rows per dataset."""
    started = time.perf_counter()
    payloads = calculations.build_payloads(tables, only=only)
    log.info(
        "computed %d payload(s), %d rows, in %.1f s",
        len(payloads),
        sum(len(p) for p in payloads.values()),
        time.perf_counter() - started,
    )
    return socrata.publish_all(sink, payloads)


def run(
    *,
    output_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    chunk_size: int = socrata.DEFAULT_CHUNK_SIZE,
    settings: Settings | None = None,
) -> dict:
    """Read the tables, compute the payloads, publish them. Returns
    ``{"datasets": {id: rows}, "data_as_of": "YYYY-MM-DD" | None, "destination", "seconds"}``."""
    started = time.perf_counter()
    settings = settings or Settings.from_env()
    selected = cfg.select(only)
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, got {chunk_size}")

    # Choose (and check) the destination before any work, so a missing setting fails fast.
    sink: socrata.Sink
    if output_dir is not None:
        sink = socrata.FolderSink(Path(output_dir), chunk_size=chunk_size)
    else:
        domain, key_id, key_secret = settings.require(*_SOCRATA_VARIABLES)
        sink = socrata.SocrataPublisher(
            domain, app_token=settings.so_token, key_id=key_id, key_secret=key_secret, chunk_size=chunk_size
        )

    from bond_reporting import database  # imported here: the calculation itself never needs a driver

    read_started = time.perf_counter()
    tables = database.read_tables(settings, cfg.tables_for(selected))
    log.info(
        "read %d tables, %d rows, in %.1f s",
        len(tables),
        sum(len(t) for t in tables.values()),
        time.perf_counter() - read_started,
    )
    data_as_of = calculations.newest_expense_date(tables)
    # Freshness of what is published: the newest date among the expense tables that were read.
    log.info("data as of %s (newest expense date)", data_as_of or "unknown (no expense rows read)")

    rows = calculate_and_publish(tables, sink, only=[d.id for d in selected])
    seconds = time.perf_counter() - started
    log.info(
        "done: %d dataset(s), %d rows to %s in %.1f s (data as of %s)",
        len(rows),
        sum(rows.values()),
        sink.description,
        seconds,
        data_as_of or "unknown",
    )
    return {"datasets": rows, "data_as_of": data_as_of, "destination": sink.description, "seconds": round(seconds, 3)}


def build_parser() -> cli.ArgumentParser:
    parser = cli.parser(
        "bond_calculations.py",
        "Calculate the seven dashboard datasets from PostgreSQL and publish them to Socrata, or write them to a "
        "folder. Every payload is computed before anything is published.",
        variables=("DATABASE_URL", "PGHOST", "BOND_LOCAL_DIR", *_SOCRATA_VARIABLES, "SO_TOKEN"),
        required=_SOCRATA_VARIABLES,
        required_note="required unless --output-dir",
        choices={"datasets (--only), in publish order": {d.id: d.title for d in cfg.DATASETS}},
    )
    parser.add_argument(
        "--output-dir", metavar="DIR", help="write DIR/<id>.json and DIR/<id>.csv instead of publishing"
    )
    parser.add_argument("--only", nargs="+", metavar="ID", choices=cfg.DATASET_IDS, help="only these dataset ids")
    parser.add_argument(
        "--chunk-size",
        type=cli.positive_int,
        default=socrata.DEFAULT_CHUNK_SIZE,
        metavar="ROWS",
        help="rows per Socrata request (default %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    def job(args: argparse.Namespace) -> dict:
        return run(output_dir=args.output_dir, only=args.only, chunk_size=args.chunk_size)

    return cli.main(build_parser(), job, argv)


if __name__ == "__main__":
    sys.exit(main())
