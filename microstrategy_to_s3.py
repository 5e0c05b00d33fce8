"""Export a MicroStrategy report as CSV to the report bucket (``BUCKET``), or to a local file.

    python microstrategy_to_s3.py -r "2020 Bond Expenses Obligated"
    python microstrategy_to_s3.py -r "All bonds Expenses Obligated" --output out.csv

The object key is ``<report name>.csv``. The CSV is written to a temporary file page by page and
published only when complete (row count = the server's total): one S3 put, or temporary file +
rename for ``--output``. On any failure nothing is written and the previous object/file stays.
Settings: BASE_URL, PROJECT_ID, MSTRO_USERNAME, MSTRO_PASSWORD; BUCKET, AWS_* for the upload.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from bond_reporting import cli, microstrategy, selection, storage
from bond_reporting.errors import ConfigError, ValidationError
from bond_reporting.settings import Settings
from config import sources

# Report name (= S3 key without ".csv") → MicroStrategy report id, from the registry: add a report
# with one Source(..., report=Report(name, id)) in config/sources.py (README, "Common changes").
REPORTS: dict[str, str] = sources.REPORTS

_MSTR_VARIABLES = ("BASE_URL", "PROJECT_ID", "MSTRO_USERNAME", "MSTRO_PASSWORD")

log = logging.getLogger("microstrategy_to_s3")


def run(
    report_name: str,
    *,
    output: str | None = None,
    page_size: int = microstrategy.DEFAULT_PAGE_SIZE,
    allow_empty: bool = False,
    settings: Settings | None = None,
) -> dict:
    """Export one report; returns ``{"report", "rows", "destination", "seconds"}``. Raises EtlError."""
    selection.select([report_name], list(REPORTS), "report")  # an unknown name: ConfigError listing them
    report_id = REPORTS[report_name]
    if page_size < 1:
        raise ConfigError(f"--page-size must be at least 1, not {page_size}")
    settings = settings or Settings.from_env()
    base_url, project_id, username, password = settings.require(*_MSTR_VARIABLES)
    started = time.monotonic()
    target = Path(output) if output else None
    if target:
        # The temporary file sits next to the target so that the final rename is atomic.
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{report_name}.", suffix=".csv.tmp", dir=target.parent if target else None)
    os.close(fd)
    tmp = Path(name)
    label = f"report {report_name!r}"
    try:
        client = microstrategy.Client(base_url, username, password, project_id)
        rows = microstrategy.download_report(client, report_id, tmp, page_size=page_size, label=label)
        if rows == 0 and not allow_empty:
            raise ValidationError(
                f"{label} has 0 rows; nothing written, because an empty CSV would blank the dashboard "
                "(use --allow-empty to write a header-only file)"
            )
        if target:
            os.replace(tmp, target)
            destination = str(target)
        else:
            bucket = storage.open_bucket(settings.bucket, settings)
            key = f"{report_name}.csv"
            bucket.upload(tmp, key)
            destination = f"{bucket.description}/{key}"
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    log.info("%s: %d rows written to %s in %.1f s", label, rows, destination, seconds)
    return {"report": report_name, "rows": rows, "destination": destination, "seconds": seconds}


def build_parser() -> cli.ArgumentParser:
    parser = cli.parser(
        "microstrategy_to_s3.py",
        "Export a MicroStrategy report as CSV to the report bucket (key: <report name>.csv) or to a local "
        "file. Nothing is written unless the whole report arrived.",
        variables=(*_MSTR_VARIABLES, "BUCKET", "AWS_ACCESS_ID", "AWS_PASS", "AWS_ENDPOINT_URL"),
        required=_MSTR_VARIABLES,
        choices={"reports (-r), from config/sources.py": {name: f"report id {id_}" for name, id_ in REPORTS.items()}},
    )
    parser.add_argument("-r", "--report-name", required=True, choices=REPORTS, metavar="NAME", help="the report")
    parser.add_argument("--output", metavar="PATH", help="write this local CSV file instead of uploading")
    parser.add_argument(
        "--page-size",
        type=cli.positive_int,
        default=microstrategy.DEFAULT_PAGE_SIZE,
        metavar="ROWS",
        help="rows per request (default %(default)s)",
    )
    parser.add_argument(
        "--allow-empty", action="store_true", help="publish a header-only CSV when the report has no rows"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    def job(args: argparse.Namespace) -> dict:
        return run(args.report_name, output=args.output, page_size=args.page_size, allow_empty=args.allow_empty)

    return cli.main(build_parser(), job, argv)


if __name__ == "__main__":
    sys.exit(main())
