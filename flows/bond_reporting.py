"""The Prefect flow ``bond-reporting``: export each report → load every source → calculate & publish.

Each task calls a script's importable ``run()`` (the same function its CLI calls), in order:

1. ``microstrategy_to_s3.run(name)`` for every report, as concurrent task runs;
2. ``bond_data.run()``: every source validated, then all tables replaced in one transaction;
3. ``bond_calculations.run()``: the seven payloads, published to Socrata (or ``output_dir``).

A failed step fails the flow and nothing after it runs (no publishing from a failed load).
Settings come from the environment at run time, optionally completed by a Prefect Secret block
(``secrets_block``, a JSON object ``{"VARIABLE": "value"}``); secrets are never flow parameters.
The scripts' log lines go to the Prefect run log, redacted. A table artifact
(``bond-reporting-summary``) records rows per report, table and dataset, "data as of", and
seconds per step.

``python flows/bond_reporting.py [--report NAME ...] [--output-dir DIR] [--sheets-dir DIR]`` runs
it once.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file shares its stem with the `bond_reporting` package. Run as a script, Python puts
# flows/ first on sys.path; loaded by path (Prefect's `flows/bond_reporting.py:...`), the module
# is registered as `bond_reporting`. Either way `import bond_reporting` would find this file:
# put the repo root first, take flows/ off the path and give the name back to the package.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "flows"]
if str(_ROOT) in sys.path:
    sys.path.remove(str(_ROOT))
sys.path.insert(0, str(_ROOT))
if __name__ == "bond_reporting":
    del sys.modules[__name__]

import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import wait  # noqa: E402
from prefect.logging.handlers import APILogHandler  # noqa: E402

import bond_calculations  # noqa: E402
import bond_data  # noqa: E402
import microstrategy_to_s3  # noqa: E402
from bond_reporting import logs, report  # noqa: E402
from bond_reporting.cli import ArgumentParser, run_main  # noqa: E402
from bond_reporting.errors import ConfigError, EtlError  # noqa: E402
from bond_reporting.settings import VARIABLES, Settings  # noqa: E402

FLOW_NAME = "bond-reporting"
ARTIFACT_KEY = "bond-reporting-summary"
REPORT_LINK_KEY = "bond-reporting-run-report"  # a link to the run's report.html (issue 11)
HEADLINE_KEY = "bond-reporting-headline"  # the report's headline numbers, as Markdown
# Loggers of the scripts and the shared modules: their records go to the Prefect run log.
SCRIPT_LOGGERS = ("bond_reporting", "config", "microstrategy_to_s3", "bond_data", "bond_calculations")

log = logging.getLogger("bond_reporting.flow")


# --- retries -------------------------------------------------------------------------------------


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures (network, database, time-out),
    never a ConfigError, a ValidationError or a refused request (``EtlError.retryable`` is False),
    which would fail the same way; repeated failed logins could lock the MicroStrategy account.
    The clients have already retried 429/5xx themselves."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, EtlError) and not error.retryable)


@contextmanager
def _redacted_errors() -> Iterator[None]:
    """Re-raise an error whose message holds a registered secret with that secret masked: the
    message becomes the task's state message in the Prefect API."""
    try:
        yield
    except Exception as exc:
        text = str(exc)
        clean = logs.redact(text)
        if clean == text:
            raise
        try:
            masked = (
                type(exc)(clean, retryable=exc.retryable)
                if isinstance(exc, EtlError)
                else EtlError(f"{type(exc).__name__}: {clean}")
            )
        except TypeError:
            masked = EtlError(f"{type(exc).__name__}: {clean}")
        raise masked from None


# --- tasks: one per step, each calling a script's run() -------------------------------------------


@task(
    name="export-report",
    task_run_name="export {report_name}",
    retries=2,
    retry_delay_seconds=[60, 300],
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def export_report(report_name: str, settings: Settings) -> dict:
    """One MicroStrategy report → ``<report name>.csv`` in the bucket. A retry re-runs the report
    from scratch (the script never leaves a partial object)."""
    with _redacted_errors():
        return microstrategy_to_s3.run(report_name, settings=settings)


@task(
    name="load-sources",
    retries=1,
    retry_delay_seconds=120,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=1800,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def load_sources(settings: Settings, sheets_dir: str | None = None) -> dict:
    """Every source read and validated, then all tables replaced in one transaction (all or
    nothing), so a retry after a transient failure starts from a consistent database."""
    with _redacted_errors():
        return bond_data.run(sheets_dir=sheets_dir, settings=settings)


@task(
    name="calculate-and-publish",
    retries=0,  # the publisher retries its own requests; a whole re-publish is a human decision
    timeout_seconds=7200,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def calculate_and_publish(
    settings: Settings, output_dir: str | None = None, steps: list[report.Step] | None = None
) -> dict:
    """The seven payloads from the database, published in order (or written to ``output_dir``),
    and the run report, whose headline shows ``steps`` (the run's export and load)."""
    with _redacted_errors():
        return bond_calculations.run(output_dir=output_dir, settings=settings, steps=steps or ())


# --- settings and logging -------------------------------------------------------------------------


def load_settings(secrets_block: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, with variables it lacks taken from the Prefect Secret block
    ``secrets_block`` (a JSON object of variable → value), if given and present.

    The environment wins over the block. A missing block is a warning (the environment may hold
    everything); a block that is not a JSON object, or names an unknown variable, is a ConfigError.
    """
    env = dict(os.environ if environ is None else environ)
    if secrets_block:
        values = _read_secret_block(secrets_block)
        unknown = sorted(set(values) - set(VARIABLES))
        if unknown:
            raise ConfigError(f"Secret block {secrets_block!r}: unknown variable(s) {', '.join(unknown)}")
        for name, value in values.items():
            if not (env.get(name) or "").strip():
                env[name] = str(value)
    return Settings.from_env(env)


def _read_secret_block(name: str) -> dict[str, Any]:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name, _sync=True).get()
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        log.warning("no Secret block %r: settings come from the environment only", name)
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"Secret block {name!r} must hold a JSON object of variable names to values")
    return value


@contextmanager
def script_logs_to_prefect(level: int = logging.INFO) -> Iterator[None]:
    """Send the scripts' log records to the Prefect run log while the flow runs, redacted.

    One API handler on the scripts' top-level loggers (Prefect's handler finds the flow or task
    run from the emitting thread's context). A ``RedactingFilter`` on it rewrites each record
    before any later handler (Prefect's console) sees it; the same filter also goes on Prefect's
    own handlers, so a secret in an exception's traceback is masked as well.
    """
    redactor = logs.RedactingFilter()
    handler = APILogHandler()
    handler.setLevel(level)
    handler.addFilter(redactor)
    saved_levels: dict[str, int] = {}
    attached: list[logging.Logger] = []
    for name in SCRIPT_LOGGERS:
        logger = logging.getLogger(name)
        saved_levels[name] = logger.level
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
        # PREFECT_LOGGING_EXTRA_LOGGERS may already have attached Prefect's API handler.
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            logger.addHandler(handler)
            attached.append(logger)
    task_runs = logging.getLogger("prefect.task_runs")
    task_runs.addFilter(_drop_thread_timeout_warning)
    filtered = []
    for name in (*SCRIPT_LOGGERS, "prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for existing in logging.getLogger(name or None).handlers:
            if existing is not handler and redactor not in existing.filters:
                existing.addFilter(redactor)
                filtered.append(existing)
    try:
        yield
    finally:
        for logger in attached:
            logger.removeHandler(handler)
        for name, saved in saved_levels.items():
            logging.getLogger(name).setLevel(saved)
        for existing in filtered:
            existing.removeFilter(redactor)
        task_runs.removeFilter(_drop_thread_timeout_warning)


def _drop_thread_timeout_warning(record: logging.LogRecord) -> bool:
    """Drop Prefect's per-task warning that a timeout in a worker thread (the concurrent exports)
    cannot interrupt a blocking call: known and accepted here. The scripts bound every request
    with their own time-outs, and the task timeout still fails the task when the call returns."""
    return not str(record.msg).startswith("Timeout of %s seconds configured for this task, but the task is running")


# --- the run summary ------------------------------------------------------------------------------


class RunSummary:
    """Rows of the summary artifact, filled in as the steps complete."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.data_as_of: str | None = None
        self.failed: str | None = None

    def add(self, step: str, item: str, rows: int | None, seconds: float | None, note: str = "") -> None:
        self.rows.append(
            {
                "step": step,
                "item": item,
                "rows": "" if rows is None else int(rows),
                "seconds": "" if seconds is None else round(float(seconds), 1),
                "note": note,
            }
        )

    def markdown(self) -> str:
        status = f"FAILED at {self.failed}" if self.failed else "completed"
        return f"Bond reporting run {status}; data as of {self.data_as_of or 'unknown'}."

    def publish(self) -> None:
        create_table_artifact(table=self.rows, key=ARTIFACT_KEY, description=self.markdown())


def publish_report_artifacts(published: Mapping[str, Any]) -> None:
    """A link artifact to the run report (where it was written first) and a Markdown artifact with
    its headline numbers."""
    where = list(published.get("report") or [])
    if where:
        create_link_artifact(
            key=REPORT_LINK_KEY,
            link=report.link_of(where[0]),
            link_text="Run report (report.html)",
            description="The run report: headline, charts, data notes; one self-contained HTML file.",
        )
    if published.get("report_markdown"):
        create_markdown_artifact(
            key=HEADLINE_KEY, markdown=published["report_markdown"], description="Run report headline"
        )


# --- the flow -------------------------------------------------------------------------------------


def report_names(reports: list[str] | None) -> list[str]:
    """The reports to export: all of ``REPORTS`` by default; unknown names are a ConfigError."""
    if reports is None:
        return list(microstrategy_to_s3.REPORTS)
    unknown = [name for name in reports if name not in microstrategy_to_s3.REPORTS]
    if unknown:
        known = ", ".join(repr(n) for n in microstrategy_to_s3.REPORTS)
        raise ConfigError(f"unknown report(s) {', '.join(map(repr, unknown))}; known: {known}")
    return list(dict.fromkeys(reports))


@flow(name=FLOW_NAME, description=__doc__.splitlines()[0], validate_parameters=True)
def bond_reporting(
    reports: list[str] | None = None,
    output_dir: str | None = None,
    sheets_dir: str | None = None,
    secrets_block: str | None = None,
) -> dict:
    """Export ``reports`` (default: all of ``REPORTS``; ``[]``: none), load every source (sheets
    from ``sheets_dir`` if given), calculate and publish to Socrata, or write the seven payloads
    to ``output_dir``. Returns the three steps' summaries; raises the first step failure."""
    run_log = get_run_logger()
    summary = RunSummary()
    with script_logs_to_prefect():
        try:
            summary.failed = "settings"
            settings = load_settings(secrets_block)
            names = report_names(reports)

            summary.failed = "export"
            started = time.monotonic()
            futures = [export_report.submit(name, settings) for name in names]
            wait(futures)
            exports, errors = [], []
            for name, future in zip(names, futures, strict=True):
                result = future.result(raise_on_failure=False)
                if isinstance(result, BaseException):
                    run_log.error("export of %r failed: %s", name, logs.redact(str(result)))
                    summary.add("export", name, None, None, f"FAILED: {logs.redact(str(result))}")
                    errors.append(result)
                    continue
                exports.append(result)
                summary.add("export", name, result["rows"], result["seconds"], str(result.get("destination", "")))
            if errors:
                raise errors[0]  # every export has finished: the first failure fails the flow
            total = total_exported = sum(int(r["rows"]) for r in exports)
            export_seconds = time.monotonic() - started
            summary.add("export", f"{len(names)} report(s)", total, export_seconds)

            summary.failed = "load"
            started = time.monotonic()
            loaded = load_sources(settings, sheets_dir)
            newest = loaded.get("newest_dates", {})
            for table, rows in loaded["tables"].items():
                summary.add("load", table, rows, None, f"newest date {newest[table]}" if table in newest else "")
            total = sum(loaded["tables"].values())
            summary.add("load", f"{len(loaded['tables'])} table(s)", total, time.monotonic() - started)

            summary.failed = "publish"
            steps = [
                report.Step("export", "ok", export_seconds, f"{len(exports)} report(s), {total_exported:,} rows"),
                report.Step("load", "ok", loaded.get("seconds"), f"{len(loaded['tables'])} tables, {total:,} rows"),
            ]
            started = time.monotonic()
            published = calculate_and_publish(settings, output_dir, steps)
            summary.data_as_of = published.get("data_as_of")
            for dataset, rows in published["datasets"].items():
                summary.add("publish", dataset, rows, None)
            summary.add(
                "publish",
                f"{len(published['datasets'])} dataset(s)",
                sum(published["datasets"].values()),
                time.monotonic() - started,
                f"data as of {summary.data_as_of}; to {published.get('destination')}",
            )
            summary.failed = None
        except BaseException:
            # Still leave the summary of what ran; the step's own error is what the flow raises.
            summary.add(summary.failed or "?", "(step failed: later steps did not run)", None, None, "FAILED")
            try:
                summary.publish()
            except Exception as exc:  # noqa: BLE001 (the step's own error is the one to raise)
                run_log.warning("could not create the summary artifact: %s", logs.redact(str(exc)))
            raise
        summary.publish()
        publish_report_artifacts(published)
    run_log.info("%s", summary.markdown())
    return {"exports": exports, "load": loaded, "publish": published}


def main(argv: list[str] | None = None) -> int:
    """``python flows/bond_reporting.py``: run the flow once; exit 0, 1 (failed) or 2 (usage)."""

    def job() -> None:
        parser = ArgumentParser(prog="flows/bond_reporting.py", description=__doc__.splitlines()[0])
        parser.add_argument("-r", "--report", action="append", dest="reports", help="report name (repeatable)")
        parser.add_argument("--output-dir", help="write the seven payloads here instead of publishing to Socrata")
        parser.add_argument("--sheets-dir", help="read the Google-Sheets sources from this folder")
        parser.add_argument("--secrets-block", help="Prefect Secret block completing the environment")
        args = parser.parse_args(argv)
        bond_reporting(
            reports=args.reports,
            output_dir=args.output_dir,
            sheets_dir=args.sheets_dir,
            secrets_block=args.secrets_block,
        )

    return run_main(job, "bond-reporting")


if __name__ == "__main__":
    sys.exit(main())
