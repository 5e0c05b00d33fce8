"""Calculate the seven dashboard datasets from the database and publish them (or write them to a folder).

    python bond_calculations.py                     # publish to Socrata (SO_WEB, SO_KEY, SO_SECRET; SO_TOKEN optional)
    python bond_calculations.py --output-dir out    # write out/<dataset id>.json and .csv instead
    python bond_calculations.py --only hq9n-d77y 5ewg-ssu3 --chunk-size 5000 -v
    python bond_calculations.py --output-dir out --report /tmp/run.html   # the run report there too

Every payload is computed before anything is published: a failing calculation publishes nothing.
Every run that computed its payloads writes the run report (bond_reporting/report.py, issue 11):
DIR/report.html with --output-dir; when publishing, run-reports/<UTC time>.html and
run-reports/latest.html in BUCKET; and --report PATH.
What each dataset holds: config/datasets.py and data-contract §5. Exit codes: 0 ok, 1 failure, 2 usage/config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from bond_reporting import calculations, cli, logs, report, socrata, storage
from bond_reporting.errors import ConfigError, EtlError
from bond_reporting.settings import REQUIRED_BY, Settings
from config import datasets as cfg

log = logging.getLogger("bond_calculations")
_SOCRATA_VARIABLES = REQUIRED_BY["publish"]  # required to publish (not with --output-dir)
_BUCKET_VARIABLES = ("BUCKET", "AWS_ACCESS_ID", "AWS_PASS", "AWS_ENDPOINT_URL")  # the run report, when publishing


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
    report_path: str | Path | None = None,
    steps: Sequence[report.Step] = (),
) -> dict:
    """Read the tables, compute the payloads, publish them, write the run report. Returns
    ``{"datasets": {id: rows}, "data_as_of": "YYYY-MM-DD" | None, "destination", "seconds",
    "report": [where the report was written]}``. ``steps``: earlier steps of the same run (the
    flow's export and load), shown in the report's headline."""
    started_at = dt.datetime.now(dt.UTC)
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
    report.warm_up()  # imports the chart library in the background while the tables are read

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
    read_seconds = time.perf_counter() - read_started

    compute_started = time.perf_counter()
    payloads = calculations.build_payloads(tables, only=[d.id for d in selected])
    compute_seconds = time.perf_counter() - compute_started
    log.info(
        "computed %d payload(s), %d rows, in %.1f s",
        len(payloads),
        sum(len(p) for p in payloads.values()),
        compute_seconds,
    )
    facts = report.RunFacts(
        started_at=started_at,
        destination=sink.description,
        datasets={},
        data_as_of=data_as_of,
        steps=[
            *steps,
            report.Step("read tables", "ok", read_seconds, f"{len(tables)} tables"),
            report.Step("calculate", "ok", compute_seconds, f"{len(payloads)} payloads"),
        ],
    )
    delivery = report.Delivery(
        paths=[Path(p) for p in (report_path, Path(output_dir) / report.REPORT_NAME if output_dir else None) if p],
        bucket=None if output_dir is not None else _report_bucket(settings),
    )
    program_names = _program_names(settings)

    publish_started = time.perf_counter()
    try:
        rows = socrata.publish_all(sink, payloads)
    except EtlError as exc:
        facts.status, facts.error = "failed", str(exc)
        facts.steps = [*facts.steps, report.Step("publish", "failed", time.perf_counter() - publish_started)]
        _write_report(facts, payloads, program_names, delivery)
        raise
    seconds = time.perf_counter() - started
    facts.datasets = rows
    facts.steps = [
        *facts.steps,
        report.Step("publish", "ok", time.perf_counter() - publish_started, f"{sum(rows.values()):,} rows"),
    ]
    facts.finished_at = dt.datetime.now(dt.UTC)
    written = _write_report(facts, payloads, program_names, delivery)
    log.info(
        "done: %d dataset(s), %d rows to %s in %.1f s (data as of %s)",
        len(rows),
        sum(rows.values()),
        sink.description,
        seconds,
        data_as_of or "unknown",
    )
    return {
        "datasets": rows,
        "data_as_of": data_as_of,
        "destination": sink.description,
        "seconds": round(seconds, 3),
        "report": written,
    }


def _program_names(settings: Settings) -> pd.DataFrame | None:
    """The 2020 program names for the report (not a calculation input: data-contract §3.1 G10)."""
    from bond_reporting import database

    try:
        return database.read_tables(settings, [cfg.PROGRAM_NAMES_2020])[cfg.PROGRAM_NAMES_2020]
    except EtlError as exc:
        log.warning("run report: 2020 program names unavailable (%s); programs are named by dashboard id", exc)
        return None


def _report_bucket(settings: Settings) -> storage.Bucket:
    return storage.open_bucket(settings.bucket, settings)


def _write_report(
    facts: report.RunFacts,
    payloads: Mapping[str, pd.DataFrame],
    program_names: pd.DataFrame | None,
    delivery: report.Delivery,
) -> list[str]:
    """Build and deliver the run report; a failure here is a warning (the data is already published)."""
    started = time.perf_counter()
    try:
        page = report.build_report(facts, payloads, program_names)
        written = report.deliver(page, delivery, facts.started_at)
    except Exception as exc:  # noqa: BLE001 - the report must never hide the run's own outcome
        log.warning("run report not written: %s: %s", type(exc).__name__, logs.one_line(exc))
        return []
    log.info(
        "run report: %d KB in %.2f s -> %s",
        len(page.encode()) // 1024,
        time.perf_counter() - started,
        ", ".join(written),
    )
    return written


def build_parser() -> cli.ArgumentParser:
    parser = cli.parser(
        "bond_calculations.py",
        "Calculate the seven dashboard datasets from PostgreSQL and publish them to Socrata, or write them to a "
        "folder. Every payload is computed before anything is published.",
        variables=("DATABASE_URL", "PGHOST", "BOND_LOCAL_DIR", *_SOCRATA_VARIABLES, "SO_TOKEN", *_BUCKET_VARIABLES),
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
    parser.add_argument("--report", metavar="PATH", help="also write the run report (HTML) to PATH")
    return parser


def main(argv: list[str] | None = None) -> int:
    def job(args: argparse.Namespace) -> dict:
        return run(output_dir=args.output_dir, only=args.only, chunk_size=args.chunk_size, report_path=args.report)

    return cli.main(build_parser(), job, argv)


if __name__ == "__main__":
    sys.exit(main())
