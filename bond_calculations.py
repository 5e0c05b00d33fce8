"""Calculate the seven dashboard datasets from the database and publish them (or write them to a folder).

    python bond_calculations.py                     # publish to Socrata (SO_WEB, SO_KEY, SO_SECRET; SO_TOKEN optional)
    python bond_calculations.py --output-dir out    # write out/<dataset id>.json and .csv instead
    python bond_calculations.py --only hq9n-d77y 5ewg-ssu3 --chunk-size 5000 -v
    python bond_calculations.py --output-dir out --report /tmp/run.html   # the run report there too

Every payload is computed before anything is published: a failing calculation publishes nothing.
Every run that computed its payloads writes the run report (bond_reporting/report.py, issue 11):
DIR/report.html with --output-dir; when publishing, run-reports/<UTC time>.html and
run-reports/latest.html in BUCKET; and --report PATH.
What each dataset holds: config/datasets.py and docs/data-contract.md §5. Exit codes: 0 ok, 1 failure, 2 usage/config.
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

from bond_reporting import calculations, cli, guards, history, logs, reconcile, report, socrata, storage
from bond_reporting.errors import ChangeGuardError, ConfigError, EtlError, StaleDataError
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
    accept_changes: bool = False,
    run_id: str | None = None,
) -> dict:
    """Read the tables, check freshness, compute and reconcile the payloads, guard against sudden
    drops, publish, write the run report. Returns ``{"datasets": {id: rows}, "data_as_of":
    "YYYY-MM-DD" | None, "destination", "seconds", "report": [where the report was written],
    "report_markdown": its headline as Markdown, "run_id", "history": the step's run-history
    record as a plain dict, "trust": its sections for the run report}``. ``steps``: earlier steps
    of the same run (the flow's export and load), shown in the report's headline.

    Before anything is published (issue 10): freshness (``FRESHNESS_*``), reconciliation of the
    running sums with the raw tables, and the change guard against the figures last verified at
    the same destination (``MAX_DROP_PCT``; ``accept_changes`` lets the drop through). A dataset
    left "publishing" by a killed run is re-published first. The step is recorded in the run
    history (schema etl), failed or not.
    """
    started_at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    settings = settings or Settings.from_env()
    selected = cfg.select(only)
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, got {chunk_size}")
    limits = guards.thresholds(
        settings.freshness_warn_days,
        settings.freshness_error_days,
        settings.freshness_unchanged_runs,
        settings.max_drop_pct,
    )

    # Choose (and check) the destination before any work, so a missing setting fails fast.
    sink: socrata.Sink
    if output_dir is not None:
        sink = socrata.FolderSink(Path(output_dir), chunk_size=chunk_size)
    else:
        domain, key_id, key_secret = settings.require(*_SOCRATA_VARIABLES)
        sink = socrata.SocrataPublisher(
            domain, app_token=settings.so_token, key_id=key_id, key_secret=key_secret, chunk_size=chunk_size
        )
    # The report's charts are drawn by another process (it loads the chart library while we read).
    charts_worker = report.ChartWorker.start()
    # With --output-dir the page goes into the folder's own all-or-nothing commit (see _Checked.run).
    delivery = report.Delivery(
        paths=[Path(report_path)] if report_path else [],
        bucket=None if output_dir is not None else _report_bucket(settings),
        destination_copy=Path(output_dir) / report.REPORT_NAME if output_dir is not None else None,
    )
    record = history.StepRecord(run_id or history.current_run_id(), "calculate")
    checked = _Checked(settings, sink, history.destination_of(sink), record, limits)
    from bond_reporting import database

    try:
        # One publisher per destination (issue 9 §4), from the repair check to the run report;
        # a second run waits LOCK_WAIT_SECONDS, then fails with one line.
        with database.publish_lock(settings, history.destination_of(sink)):
            result = checked.run(selected, accept_changes, started_at, steps, delivery, charts_worker)
    except BaseException as exc:
        history.record_failure(settings, record, exc)
        raise
    try:
        history.record_step(settings, record)
    except EtlError as exc:  # everything is published and verified; only the step's own row is missing
        log.warning("run history: could not record the calculate step: %s", exc)
    seconds = time.perf_counter() - started
    rows, data_as_of = result["datasets"], result["data_as_of"]
    log.info(
        "done: %d dataset(s), %d rows to %s in %.1f s (data as of %s)",
        len(rows),
        sum(rows.values()),
        sink.description,
        seconds,
        data_as_of or "unknown",
    )
    return {
        **result,
        "destination": sink.description,
        "seconds": round(seconds, 3),
        "run_id": record.run_id,
        "history": record.as_dict(),
        "trust": history.trust_sections([record.as_dict()]),
    }


class _Checked:
    """The calculate step with the checks of issue 10 around it (one run)."""

    def __init__(
        self,
        settings: Settings,
        sink: socrata.Sink,
        destination: str,
        record: history.StepRecord,
        limits: guards.Thresholds,
    ) -> None:
        self.settings, self.sink, self.destination, self.record, self.limits = (
            settings,
            sink,
            destination,
            record,
            limits,
        )

    def run(
        self,
        selected: tuple[cfg.Dataset, ...],
        accept_changes: bool,
        started_at: dt.datetime,
        steps: Sequence[report.Step],
        delivery: report.Delivery,
        charts_worker: report.ChartWorker,
    ) -> dict:
        from bond_reporting import database  # imported here: the calculation itself never needs a driver

        settings, record, destination = self.settings, self.record, self.destination
        repair = self.unfinished_publishes()
        if repair:
            selected = cfg.select(sorted({d.id for d in selected} | set(repair)))

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
        check_freshness(settings, tables, record, self.limits)

        compute_started = time.perf_counter()
        payloads = calculations.build_payloads(tables, only=[d.id for d in selected])
        compute_seconds = time.perf_counter() - compute_started
        log.info(
            "computed %d payload(s), %d rows, in %.1f s",
            len(payloads),
            sum(len(p) for p in payloads.values()),
            compute_seconds,
        )
        reconcile_calculation(tables, payloads, record)
        figures = {dataset_id: guards.payload_figures(frame) for dataset_id, frame in payloads.items()}
        for dataset_id, fig in figures.items():
            record.items.append(history.Item("dataset", dataset_id, "computed", fig.rows, dict(fig.money)))

        facts = report.RunFacts(
            started_at=started_at,
            destination=self.sink.description,
            datasets={},
            data_as_of=data_as_of,
            run_id=record.run_id,
            steps=[
                *steps,
                report.Step("read tables", "ok", read_seconds, f"{len(tables)} tables"),
                report.Step("calculate", "ok", compute_seconds, f"{len(payloads)} payloads"),
            ],
        )
        program_names = _program_names(settings)
        delivery.submit(charts_worker, payloads, program_names)  # the charts are drawn while we publish

        line = self.guard(figures, accept_changes)
        if line:
            facts.status, facts.error = "failed", line
            facts.steps = [*facts.steps, report.Step("publish", "not run", None, "stopped by the change guard")]
            facts.trust = history.trust_sections([record.as_dict()])
            _write_report(facts, payloads, program_names, delivery)
            raise ChangeGuardError(line)

        # Repairs first, then the publish order of config/datasets.py.
        ordered = {k: payloads[k] for k in [*repair, *(k for k in payloads if k not in repair)]}
        publish_started = time.perf_counter()
        done_steps = facts.steps

        def completed() -> None:
            """The facts of a completed publish (rows per dataset as written)."""
            rows = {k: len(v) for k, v in ordered.items()}
            facts.datasets = rows
            facts.steps = [
                *done_steps,
                report.Step("publish", "ok", time.perf_counter() - publish_started, f"{sum(rows.values()):,} rows"),
            ]
            facts.finished_at = dt.datetime.now(dt.UTC)
            facts.trust = history.trust_sections([record.as_dict()])

        # An all-or-nothing folder sink puts the page into the same commit as the payloads: built once
        # every dataset is staged (a failed run leaves the folder, report included, as it was).
        staged: list[report.RunReport] = []
        if delivery.destination_copy is not None and hasattr(self.sink, "add_file"):

            def page_at_commit() -> str:
                completed()
                rendered = _render_report(facts, payloads, program_names, delivery)
                if rendered is None:
                    return report.unavailable_page(facts)
                staged.append(rendered)
                return rendered.page

            self.sink.add_file(report.REPORT_NAME, page_at_commit)
        try:
            with history.PublishMarker(settings, record.run_id, destination) as marker:
                rows = marker.publish_all(self.sink, ordered, figures)
        except EtlError as exc:
            facts.status, facts.error = "failed", str(exc)
            facts.steps = [*facts.steps, report.Step("publish", "failed", time.perf_counter() - publish_started)]
            facts.trust = history.trust_sections([record.as_dict()])
            _write_report(facts, payloads, program_names, delivery)
            raise
        if staged:  # already in the folder: the other places get the same page
            in_folder = [str(delivery.destination_copy)]
            written = _deliver_report(staged[0], facts, delivery, in_folder)
        else:
            completed()
            facts.datasets = rows
            written = _write_report(facts, payloads, program_names, delivery)
        return {
            "datasets": rows,
            "data_as_of": data_as_of,
            "report": written["written"],
            "report_markdown": written["markdown"],
        }

    def unfinished_publishes(self) -> list[str]:
        """Datasets a killed run left 'publishing' at this destination: said, and re-published first."""
        from bond_reporting import database

        with database.transaction(self.settings) as conn:
            unfinished = history.unfinished_publishes(conn, self.destination)
        repair = [u for u in unfinished if u["dataset"] in cfg.DATASET_IDS]
        for item in repair:
            self.record.note(
                "WARNING",
                "repair",
                item["dataset"],
                f"{item['dataset']} at {self.destination} was left "
                + (
                    "'publishing' by run {run} at {since} (killed part-way?)"
                    if item["state"] == "publishing"
                    else "possibly partial by run {run} at {since}"
                ).format(run=item["run_id"], since=f"{item['since']:%Y-%m-%d %H:%M:%S %Z}")
                + ": re-publishing it first",
            )
        return [u["dataset"] for u in repair]

    def guard(self, figures: dict[str, reconcile.Figures], accept_changes: bool) -> str | None:
        """Compare with the figures last verified at the destination; the stopping line, or None."""
        from bond_reporting import database

        record, destination, limits = self.record, self.destination, self.limits
        with database.transaction(self.settings) as conn:
            last = history.last_verified(conn, destination, list(figures))
        old = {k: reconcile.Figures(v["rows"] or 0, v["money"]) for k, v in last.items()}
        changes = guards.compare(figures, old, limits.max_drop_pct)
        for change in changes:
            same = change.old is not None and change.old == change.new
            record.note(
                "INFO" if change.old is not None and not same else "DEBUG",
                "change",
                change.dataset,
                f"since the last publish to {destination}: {change.describe()}",
                {
                    "old": None if change.old is None else _figures_dict(change.old),
                    "new": _figures_dict(change.new),
                    "drops": list(change.drops),
                },
            )
        line = guards.guard_line(changes, destination, limits.max_drop_pct)
        if line and not accept_changes:
            record.notes.append(history.Note("ERROR", "guard", None, line))
            return line
        if line:
            record.note(
                "WARNING", "guard", None, f"{line.split('; nothing published')[0]}; accepted (--accept-changes)"
            )
            return None
        compared = [c for c in changes if c.old is not None]
        changed = sum(1 for c in compared if c.old != c.new)
        first = len(changes) - len(compared)
        record.note(
            "INFO",
            "guard",
            None,
            f"change guard passed: {len(compared)} of {len(changes)} dataset(s) compared with the last publish to "
            f"{destination} ({changed} changed), none fell by more than MAX_DROP_PCT={limits.max_drop_pct}%"
            + (f"; {first} first publish(es) there" if first else ""),
        )
        return None


def _figures_dict(figures: reconcile.Figures) -> dict:
    return {"rows": figures.rows, "money": {k: format(v, "f") for k, v in figures.money.items()}}


def check_freshness(
    settings: Settings, tables: Mapping[str, pd.DataFrame], record: history.StepRecord, limits: guards.Thresholds
) -> None:
    """Freshness verdicts of each expense table read (log, history); StaleDataError on an error."""
    from bond_reporting import database

    today = dt.datetime.now(dt.UTC).date()
    verdicts = []
    with database.transaction(settings) as conn:
        for table in cfg.EXPENSE_TABLES:
            if table not in tables:
                continue
            frame = tables[table]
            newest = str(frame["date"].max()) if len(frame) else None
            verdicts.append(guards.freshness(table, newest, today, limits))
            if limits.unchanged_runs:
                digests = history.previous_digests(conn, table, limits.unchanged_runs + 1)
                if digests:
                    stuck = guards.unchanged(table, digests[0], digests[1:], limits)
                    if stuck:
                        verdicts.append(stuck)
    for verdict in verdicts:
        level = {"ok": "INFO", "warning": "WARNING", "error": "ERROR"}[verdict.level]
        detail = {"level": verdict.level, "newest_date": verdict.newest_date, "age_days": verdict.age_days}
        if verdict.level == "error":
            record.notes.append(history.Note(level, verdict.kind, verdict.subject, verdict.message, detail))
        else:
            record.note(level, verdict.kind, verdict.subject, verdict.message, detail)
    errors = [v.message for v in verdicts if v.level == "error"]
    if errors:
        raise StaleDataError("; ".join(errors))


def reconcile_calculation(
    tables: Mapping[str, pd.DataFrame], payloads: Mapping[str, pd.DataFrame], record: history.StepRecord
) -> None:
    """The calculate hop (issue 10 item 2): log and record each reconciled total, one WARNING per
    unmapped AIMS group and fiscal year (Q11), the Q5 duplicates' amounts. Raises ReconciliationError."""
    checked = reconcile.reconcile_payloads(tables, payloads, cents_only=not calculations.in_whole_cents(tables))
    for line in checked.lines:
        record.note("INFO", "reconcile", None, line)
    if checked.dropped and checked.dropped.rows:
        dropped = checked.dropped
        record.notes.append(  # calculations already logged the Q5 warning naming the pairs
            history.Note(
                "WARNING",
                "duplicates",
                cfg.EXPENSES_ALL_BONDS,
                f"rrww-ybw6: {dropped.rows} duplicate source row(s) of {dropped.pairs} (group, date) pair(s) dropped "
                f"(docs/data-contract.md Q5): "
                + ", ".join(f"{k} {reconcile.money_text(v)}" for k, v in dropped.money.items()),
                {"rows": dropped.rows, "pairs": dropped.pairs, "money": dropped.money, "examples": dropped.examples},
            )
        )
    for group in checked.unmapped:
        record.note(
            "WARNING",
            "unmapped",
            group.group,
            f"unmapped AIMS group {group.group} (no entry in {cfg.LOOKUP_2020}): FY {group.fiscal_year} expenses "
            f"{reconcile.money_text(group.expenses)} ({group.rows} row(s)) do not reach the summary tables "
            "(docs/data-contract.md Q11; published numbers unchanged)",
            {
                "group": group.group,
                "fiscal_year": group.fiscal_year,
                "rows": group.rows,
                "expenses": group.expenses,
                "obligated": group.obligated,
            },
        )


def _program_names(settings: Settings) -> pd.DataFrame | None:
    """The 2020 program names for the report (not a calculation input: docs/data-contract.md §3.1 G10)."""
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
) -> dict:
    """Build and deliver the run report: ``{"written": [where], "markdown": headline}``."""
    rendered = _render_report(facts, payloads, program_names, delivery)
    if rendered is None:
        return {"written": [], "markdown": None}
    return _deliver_report(rendered, facts, delivery)


def _render_report(
    facts: report.RunFacts,
    payloads: Mapping[str, pd.DataFrame],
    program_names: pd.DataFrame | None,
    delivery: report.Delivery,
) -> report.RunReport | None:
    """The page, or None with one warning line: the report never fails the run (nor hides its outcome)."""
    try:
        return delivery.render(facts, payloads, program_names)
    except Exception as exc:  # noqa: BLE001
        log.warning("run report not built: %s: %s", type(exc).__name__, logs.one_line(exc))
        return None


# A failed --output-dir run leaves DIR as it was, report included (README "The run report").
NOT_WRITTEN = "not written (a failed --output-dir run leaves DIR as it was; --report PATH keeps a copy)"


def _deliver_report(
    rendered: report.RunReport, facts: report.RunFacts, delivery: report.Delivery, already: Sequence[str] = ()
) -> dict:
    """Write the page where ``delivery`` says (``already``: where it is written); one log line."""
    try:
        written = [*already, *report.deliver(rendered.page, delivery, facts.started_at)]
    except Exception as exc:  # noqa: BLE001 - the data is published; the report is not the run's outcome
        log.warning("run report not written: %s: %s", type(exc).__name__, logs.one_line(exc))
        written = list(already)
    log.info("run report: %d KB -> %s", len(rendered.page.encode()) // 1024, ", ".join(written) or NOT_WRITTEN)
    return {"written": written, "markdown": rendered.markdown(facts.status, written)}


def build_parser() -> cli.ArgumentParser:
    parser = cli.parser(
        "bond_calculations.py",
        "Calculate the seven dashboard datasets from PostgreSQL and publish them to Socrata, or write them to a "
        "folder. Every payload is computed before anything is published.",
        variables=(
            "DATABASE_URL",
            "PGHOST",
            "BOND_LOCAL_DIR",
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
