"""Calculate the seven dashboard datasets from the database and publish them (or write them to a folder).

    python bond_calculations.py                     # publish to Socrata (SO_WEB, SO_KEY, SO_SECRET; SO_TOKEN optional)
    python bond_calculations.py --output-dir out    # write out/<dataset id>.json and .csv instead
    python bond_calculations.py --only hq9n-d77y 5ewg-ssu3 --chunk-size 5000 -v
    python bond_calculations.py --output-dir out --report /tmp/run.html   # the run report there too

Every payload is computed before anything is published: a failing calculation publishes nothing.
Every run that computed its payloads writes the run report (bond_reporting/report.py, issue 11):
DIR/report.html with --output-dir; when publishing, run-reports/<UTC time>.html and
run-reports/latest.html in BUCKET; and --report PATH.
What each dataset holds: config/datasets.py and docs/data-contract.md §5. Exit codes: 0 ok, 1 failure, 2 usage/config,
143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bond_reporting import calculate_step, cli, report, socrata, storage
from bond_reporting.errors import ConfigError
from bond_reporting.settings import REQUIRED_BY, Settings
from config import datasets as cfg

_SOCRATA_VARIABLES = REQUIRED_BY["publish"]  # required to publish (not with --output-dir)
_BUCKET_VARIABLES = ("BUCKET", "AWS_ACCESS_ID", "AWS_PASS", "AWS_ENDPOINT_URL")  # the run report, when publishing


def run(
    *,
    output_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    chunk_size: int = socrata.DEFAULT_CHUNK_SIZE,
    settings: Settings | None = None,
    report_path: str | Path | None = None,
    steps: Sequence[report.Step] = (),
    accept_changes: bool = False,
    run_id: str | None = None,
) -> dict:
    """Choose the destination and where the run report goes, then run the step
    (``bond_reporting.calculate_step.run``: read, check freshness, compute, reconcile, guard
    against sudden drops, publish, write the run report). Returns the step's summary dict
    (``datasets``, ``data_as_of``, ``destination``, ``seconds``, ``report``, ``run_id``, …).

    ``steps``: earlier steps of the same run (the flow's export and load), for the report's
    headline; ``accept_changes`` lets a drop beyond ``MAX_DROP_PCT`` through. Raises ConfigError
    (exit 2) for a missing setting before any work, else the step's EtlError (exit 1).
    """
    settings = settings or Settings.from_env()
    selected = cfg.select(only)
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, got {chunk_size}")
    # The destination is chosen (and its settings checked) before any work: a missing one fails fast.
    sink: socrata.Sink
    if output_dir is not None:
        sink = socrata.FolderSink(Path(output_dir), chunk_size=chunk_size)
    else:
        domain, key_id, key_secret = settings.require(*_SOCRATA_VARIABLES)
        sink = socrata.SocrataPublisher(
            domain, app_token=settings.so_token, key_id=key_id, key_secret=key_secret, chunk_size=chunk_size
        )
    delivery = report.Delivery(  # with --output-dir the page is part of the folder's all-or-nothing commit
        paths=[Path(report_path)] if report_path else [],
        bucket=None if output_dir is not None else storage.open_bucket(settings.bucket, settings),
        destination_copy=Path(output_dir) / report.REPORT_NAME if output_dir is not None else None,
    )
    return calculate_step.run(
        settings, sink, selected, delivery, steps=steps, accept_changes=accept_changes, run_id=run_id
    )


def build_parser() -> cli.ArgumentParser:
    parser = cli.parser(
        "bond_calculations.py",
        "Calculate the seven dashboard datasets from PostgreSQL and publish them to Socrata, or write them to a "
        "folder. Every payload is computed before anything is published.",
        variables=(
            "DATABASE_URL",
            "PGHOST",
            "BOND_LOCAL_DIR",
            "DB_STALL_TIMEOUT",
            "LOCK_WAIT_SECONDS",
            *_SOCRATA_VARIABLES,
            "SO_TOKEN",
            *_BUCKET_VARIABLES,
            "FRESHNESS_WARN_DAYS",
            "FRESHNESS_ERROR_DAYS",
            "FRESHNESS_UNCHANGED_RUNS",
            "MAX_DROP_PCT",
        ),
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
    parser.add_argument(
        "--accept-changes",
        action="store_true",
        help="publish even when rows or money fell by more than MAX_DROP_PCT since the last publish there",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    def job(args: argparse.Namespace) -> dict:
        return run(
            output_dir=args.output_dir,
            only=args.only,
            chunk_size=args.chunk_size,
            report_path=args.report,
            accept_changes=args.accept_changes,
        )

    return cli.main(build_parser(), job, argv)


if __name__ == "__main__":
    sys.exit(main())
