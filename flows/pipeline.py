"""The Prefect flow bond-reporting: export each report, load every source, calculate and publish.

Each task calls a script's ``run()`` (the same function its command line calls), in order:

1. ``microstrategy_to_s3.run(name)`` for every report, as concurrent task runs ``export <name>``;
2. ``bond_data.run()`` (``load sources``): every source validated, then all tables replaced in one
   transaction;
3. ``bond_calculations.run()`` (``calculate and publish``): the seven payloads, published to Socrata
   (or written to ``output_dir``).

A failed step fails the flow run with its one line as the state message, and nothing after it runs
(no publishing from a failed load). The table artifact ``bond-reporting-summary`` says what each
step did, also after a failure. Settings, log routing and retries: ``bond_reporting.prefect_support``.
Operations (deploying, the daily run, the runbook): docs/operations.md.

    python -m flows.pipeline [-r NAME ...] [--output-dir DIR] [--sheets-dir DIR] [--secrets-block NAME]
                             [--publish-only] [--accept-changes]
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # The command line checks its settings before Prefect (and pandas) are imported: a run that cannot
    # succeed fails in about a second, with one line, and touches nothing (flows/preflight.py).
    from flows.preflight import exit_unless_ready

    exit_unless_ready(sys.argv[1:])

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

import bond_calculations
import bond_data
import microstrategy_to_s3
from bond_reporting import history, selection
from bond_reporting.cli import run_main
from bond_reporting.errors import EtlError
from bond_reporting.prefect_support import (
    RunSummary,
    StepFailed,
    load_settings,
    local_run,
    report_artifacts,
    retry_unless_permanent,
    route_script_logs,
    run_step,
)
from bond_reporting.settings import Settings
from flows import preflight
from flows.preflight import FLOW_NAME

# Task options shared by the steps: results stay in memory (they hold nothing to cache or persist).
NO_RESULTS = {"cache_policy": NO_CACHE, "persist_result": False}


@task(
    name="export",
    task_run_name="export {report_name}",
    retries=2,
    retry_delay_seconds=[60, 300],
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=3600,
    **NO_RESULTS,
)
def export_report(report_name: str, settings: Settings) -> dict | State:
    """One MicroStrategy report → ``<report name>.csv`` in the bucket. A retry re-runs the report
    from scratch (the script never leaves a partial object)."""
    return run_step(microstrategy_to_s3.run, report_name, settings=settings, record_history=True)


@task(
    name="load sources",
    task_run_name="load sources",
    retries=1,
    retry_delay_seconds=120,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=1800,
    **NO_RESULTS,
)
def load_sources(settings: Settings, sheets_dir: str | None = None) -> dict | State:
    """Every source read and validated, then all tables replaced in one transaction (all or
    nothing), so a retry after a transient failure starts from a consistent database."""
    return run_step(bond_data.run, sheets_dir=sheets_dir, settings=settings)


@task(
    name="calculate and publish",
    task_run_name="calculate and publish",
    retries=0,  # the publisher retries its own requests; a whole re-publish is a human decision
    timeout_seconds=7200,
    **NO_RESULTS,
)
def calculate_and_publish(
    settings: Settings,
    output_dir: str | None = None,
    accept_changes: bool = False,
    steps: list | None = None,
) -> dict | State:
    """The seven payloads from the database, checked (freshness, reconciliation, change guard) and
    published in order, or written to ``output_dir``; ``steps``: the earlier steps, for the report."""
    return run_step(
        bond_calculations.run,
        output_dir=output_dir,
        settings=settings,
        accept_changes=accept_changes,
        steps=steps or (),
    )


@flow(name=FLOW_NAME, description="Export each report, load every source, calculate and publish.")
def bond_reporting(
    reports: list[str] | None = None,
    output_dir: str | None = None,
    sheets_dir: str | None = None,
    secrets_block: str | None = None,
    publish_only: bool = False,
    accept_changes: bool = False,
) -> dict | State:
    """Export ``reports`` (default: all of ``REPORTS``; ``[]``: none), load every source (sheets
    from ``sheets_dir`` if given), calculate and publish to Socrata, or write the seven payloads
    to ``output_dir``. ``publish_only``: skip export and load, re-publish what PostgreSQL holds
    (after a failed or partial publish). ``accept_changes``: publish although the change guard
    saw a drop (docs/operations.md). Returns the steps' summaries, or the failed step's state."""
    route_script_logs()
    summary = RunSummary()
    settings = None
    exports: list[dict] = []
    loaded: dict = {}
    try:
        settings, names = configure(secrets_block, reports, publish_only=publish_only, output_dir=output_dir)
        if not publish_only:
            exports = summary.exports(names, [export_report.submit(name, settings) for name in names])
            loaded = summary.load(load_sources(settings, sheets_dir, return_state=True))
        published = summary.publish(
            calculate_and_publish(settings, output_dir, accept_changes, summary.report_steps(), return_state=True)
        )
        report_artifacts(published)
    except StepFailed as failure:
        summary.fail(failure.step, str(failure))
        return failure.state()
    finally:
        # With the run history's reconciliation, freshness and guard lines (issue 10).
        summary.create_artifact(history.artifact_rows(settings))
    return {"exports": exports, "load": loaded, "publish": published}


def configure(
    secrets_block: str | None, reports: list[str] | None, *, publish_only: bool = False, output_dir: str | None = None
) -> tuple[Settings, list[str]]:
    """The settings (environment + Secret block) and the reports to export (default: all of
    ``REPORTS``). An unknown report name, or every setting the run's steps need and lack or cannot
    use (``preflight.steps``, ``Settings.require_for``: one line naming them all), fails the run
    before any task starts."""
    try:
        names = selection.select([] if publish_only else reports, list(microstrategy_to_s3.REPORTS), "report")
        settings = load_settings(secrets_block)
        settings.require_for(*preflight.steps(names, publish_only=publish_only, output_dir=output_dir))
        return settings, names
    except EtlError as exc:
        raise StepFailed("settings", exc) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.pipeline``: run the flow once; exit 0, 1 (failed) or 2 (usage, settings)."""
    parser = preflight.parser(list(microstrategy_to_s3.REPORTS))
    outcome = {"exit": 1}

    def job() -> None:
        args = parser.parse_args(argv)
        preflight.check(args)  # also when main() is called in-process: before the temporary server starts
        with local_run():
            state = bond_reporting(
                reports=args.reports,
                output_dir=args.output_dir,
                sheets_dir=args.sheets_dir,
                secrets_block=args.secrets_block,
                publish_only=args.publish_only,
                accept_changes=args.accept_changes,
                return_state=True,
            )
        # A failure was logged once, as its one line, by the run itself.
        error = None if state.is_completed() else state.result(raise_on_failure=False)
        outcome["exit"] = getattr(error, "exit_code", 1) if error is not None else 0

    return run_main(job, FLOW_NAME) or outcome["exit"]


if __name__ == "__main__":
    sys.exit(main())
