"""Export a MicroStrategy report as CSV to the report bucket (``BUCKET``), or to a local file.

    python microstrategy_to_s3.py -r "2020 Bond Expenses Obligated"
    python microstrategy_to_s3.py -r "All bonds Expenses Obligated" --output out.csv

The object key is ``<report name>.csv``. The CSV is written to a temporary file page by page and
published only when complete (row count = the server's total, rows and exact metric totals of the
CSV = those of the pages): one S3 put, or temporary file + rename for ``--output``. On any failure,
Ctrl-C or SIGTERM nothing is written and the previous object/file stays.
Settings: BASE_URL, PROJECT_ID, MSTRO_USERNAME, MSTRO_PASSWORD, MSTR_RUN_TIMEOUT, MSTR_CALL_TIMEOUT;
BUCKET, AWS_* for the upload.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from bond_reporting import cli, history, microstrategy, selection, storage
from bond_reporting.errors import ConfigError, EtlError, ValidationError
from bond_reporting.logs import plural
from bond_reporting.settings import REQUIRED_BY, Settings, refuse_credentials, seconds
from config import sources

# Report name (= S3 key without ".csv") → MicroStrategy report id, from the registry: add a report
# with one Source(..., report=Report(name, id)) in config/sources.py (README, "Common changes").
REPORTS: dict[str, str] = sources.REPORTS

_MSTR_VARIABLES = REQUIRED_BY["export"]

log = logging.getLogger("microstrategy_to_s3")


def run(
    report_name: str,
    *,
    output: str | None = None,
    page_size: int = microstrategy.DEFAULT_PAGE_SIZE,
    allow_empty: bool = False,
    settings: Settings | None = None,
    run_id: str | None = None,
    record_history: bool | None = None,
) -> dict:
    """Export one report; returns ``{"report", "rows", "destination", "seconds", "received", "written",
    "sha256", "run_id"}``.

    The step is appended to the run history (schema etl: rows, the totals written, the sha256 of
    the CSV bytes; a failure with its one line) when ``record_history`` is True, or when it is None
    and a database is configured or the embedded one exists; a history that cannot be written is a
    warning, never the export's failure.

    ``received``/``written``: rows and exact metric totals (decimal text) of the pages received and
    of the CSV written, which are checked equal before anything is published
    (:class:`bond_reporting.reconcile.Figures` as
    :func:`bond_reporting.microstrategy.figures_dict`). Raises EtlError, whose message names the report;
    on Ctrl-C or SIGTERM adds a note of what was and was not done (the CLI's one line) and re-raises.
    """
    selection.select([report_name], list(REPORTS), "report")  # an unknown name: ConfigError listing them
    report_id = REPORTS[report_name]
    if page_size < 1:
        raise ConfigError(f"--page-size must be at least 1, not {page_size}")
    label = f"report {report_name!r}"
    settings = settings or Settings.from_env()
    record = history.StepRecord(run_id or history.current_run_id(), "export")
    keep = history.export_history_wanted(settings) if record_history is None else record_history
    try:
        result = _export(report_name, report_id, label, output, page_size, allow_empty, settings)
    except EtlError as exc:
        error = exc if report_name in str(exc) else exc.prefixed(label)
        if keep:
            history.record_failure(settings, record, error, quiet=True)
        raise error from None
    except BaseException as exc:
        if keep:
            history.record_failure(settings, record, exc, quiet=True)
        raise
    written = result["written"]
    record.items.append(
        history.Item(
            "report",
            report_name,
            "exported",
            written["rows"],
            {name: Decimal(value) for name, value in written["money"].items()},
            sha256=result["sha256"],
            destination=result["destination"],
        )
    )
    record.notes.append(  # the export already logged the line saying so
        history.Note(
            "INFO",
            "reconcile",
            report_name,
            f"reconciled export: {report_name}: pages received = CSV written "
            f"({written['rows']} {plural(written['rows'], 'row')}, "
            + ", ".join(f"{name} {value}" for name, value in written["money"].items())
            + ")",
        )
    )
    if keep:
        try:
            history.record_step(settings, record)
        except EtlError as exc:
            log.warning("run history: could not record the export of %s: %s", label, exc)
    return {**result, "run_id": record.run_id}


def _export(
    report_name: str,
    report_id: str,
    label: str,
    output: str | None,
    page_size: int,
    allow_empty: bool,
    settings: Settings,
) -> dict:
    base_url, project_id, username, password = settings.require(*_MSTR_VARIABLES)
    refuse_credentials("BASE_URL", base_url)
    if settings.aws_endpoint_url:
        refuse_credentials("AWS_ENDPOINT_URL", settings.aws_endpoint_url)
    policy = replace(
        microstrategy.DEFAULT_POLICY,
        run_timeout=seconds("MSTR_RUN_TIMEOUT", settings.mstr_run_timeout, microstrategy.DEFAULT_POLICY.run_timeout),
        read_timeout=seconds(
            "MSTR_CALL_TIMEOUT", settings.mstr_call_timeout, microstrategy.DEFAULT_POLICY.read_timeout
        ),
    )
    key = f"{report_name}.csv"
    target = Path(output) if output else None
    bucket = None if target else storage.open_bucket(settings.bucket, settings)
    if isinstance(bucket, storage.S3Bucket):
        bucket.check()  # a missing bucket fails now, in one line, not after the download
    # The CSV is written to a temporary file: beside --output (renamed over it when complete), or in
    # TMPDIR for the bucket. Leftovers of killed runs there are removed first (only ours, by name).
    folder = target.parent if target else Path(tempfile.gettempdir())
    storage.remove_stale_temp_files(folder, *dict.fromkeys([target.name if target else key, report_name]))
    if isinstance(bucket, storage.LocalBucket):
        storage.remove_stale_temp_files(bucket.root, key)
    where = str(target) if target else f"{bucket.description}/{key}"
    started = time.monotonic()
    try:
        with storage.atomic_file(target) if target else storage.temp_file(folder, key) as tmp:
            client = microstrategy.Client(base_url, username, password, project_id, policy=policy)
            download = microstrategy.download_report(client, report_id, tmp, page_size=page_size, label=label)
            digest = history.file_sha256(tmp)
            if download.rows == 0 and not allow_empty:
                raise ValidationError(
                    f"{label} has 0 rows; nothing written, because an empty CSV would blank the dashboard "
                    "(use --allow-empty to write a header-only file)"
                )
            if bucket is not None:
                log.info("%s: uploading %d %s to %s", label, download.rows, plural(download.rows, "row"), where)
                bucket.upload(tmp, key)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (bond_reporting/signals.py): say what is known
        exc.add_note(
            f"{label}: nothing written after {time.monotonic() - started:.1f} s, {where} is unchanged, "
            "temporary files removed and any unfinished upload aborted"
        )
        raise
    seconds_taken = time.monotonic() - started
    log.info("%s: %s written to %s in %.1f s", label, download.written.describe(), where, seconds_taken)
    return {
        "report": report_name,
        "rows": download.rows,
        "destination": where,
        "seconds": seconds_taken,
        "received": microstrategy.figures_dict(download.received),
        "written": microstrategy.figures_dict(download.written),
        "sha256": digest,
    }


def build_parser() -> cli.ArgumentParser:
    parser = cli.parser(
        "microstrategy_to_s3.py",
        "Export a MicroStrategy report as CSV to the report bucket (key: <report name>.csv) or to a local "
        "file. Nothing is written unless the whole report arrived.",
        variables=(
            *_MSTR_VARIABLES,
            "MSTR_RUN_TIMEOUT",
            "MSTR_CALL_TIMEOUT",
            "BUCKET",
            "AWS_ACCESS_ID",
            "AWS_PASS",
            "AWS_ENDPOINT_URL",
        ),
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

    return cli.main(build_parser(), job, argv)  # SIGTERM is handled like Ctrl-C there (exit 143)


if __name__ == "__main__":
    sys.exit(main())
