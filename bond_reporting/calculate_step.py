"""The calculate-and-publish step that ``bond_calculations.py`` runs, top to bottom:

1. hold the publish lock of the destination (one publisher at a time: issue 9 §8), confirmed
   before each dataset's first write (a lost lock stops the publish there);
2. note datasets a killed run left half-published there: they are re-published first;
3. read the tables (PostgreSQL), check their freshness (``trust.check_freshness``);
4. compute every selected payload (``calculations.build_payloads``: pure), reconcile them with
   the raw tables, exactly (``trust.reconcile_calculation``);
5. compare each payload with what was last verified at the destination (``trust.change_guard``):
   a sudden drop stops here and nothing is published;
6. publish in publish order (``socrata.publish_all`` through ``history.PublishMarker``);
7. write the run report (``report.Delivery``: its charts are drawn while the step publishes);
   a report that cannot be built or written is a warning, never the step's outcome.

Everything is recorded in the run history (schema ``etl``), failed or not. A failure at any point
before 6 publishes nothing; a failure in 6 says which datasets were replaced and verified, which
may be partial and which are unchanged (``socrata.PublishFailed``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bond_reporting import calculations, database, guards, history, logs, report, socrata, trust
from bond_reporting.errors import ChangeGuardError, EtlError
from bond_reporting.settings import Settings
from config import datasets as cfg

__all__ = ["run"]

log = logging.getLogger("bond_calculations")  # the operator ran bond_calculations: its lines say so


def run(
    settings: Settings,
    sink: socrata.Sink,
    selected: Sequence[cfg.Dataset],
    delivery: report.Delivery,
    *,
    steps: Sequence[report.Step] = (),
    accept_changes: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Run the step for the ``selected`` datasets into ``sink``; the run report goes where
    ``delivery`` says. ``steps``: earlier steps of the same run (the flow's export and load), shown
    in the report's headline.

    Returns ``{"datasets": {id: rows}, "data_as_of": "YYYY-MM-DD" | None, "destination",
    "seconds", "report": [where the report was written], "report_markdown": its headline as
    Markdown or None, "run_id", "history": the step's run-history record as a plain dict,
    "trust": its sections for the run report}``. Raises EtlError subclasses: StaleDataError,
    ReconciliationError, ChangeGuardError, PublishError, DatabaseError (one line each).
    """
    started_at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    limits = guards.thresholds(
        settings.freshness_warn_days,
        settings.freshness_error_days,
        settings.freshness_unchanged_runs,
        settings.max_drop_pct,
    )
    charts_worker = report.ChartWorker.start()  # another process loads the chart library while we read
    record = history.StepRecord(run_id or history.current_run_id(), "calculate")
    destination = history.destination_of(sink)
    step = _Step(settings, sink, destination, record, delivery, _RunReport(delivery, started_at, sink, record))
    try:
        with database.publish_lock(settings, destination) as lock:
            step.lock = lock
            result = step.run(tuple(selected), limits, accept_changes, steps, charts_worker)
    except BaseException as exc:
        history.record_failure(settings, record, exc)
        raise
    finally:
        charts_worker.close()
    try:
        history.record_step(settings, record)
    except EtlError as exc:  # everything is published and verified; only the step's own row is missing
        log.warning("run history: could not record the calculate step: %s", exc)
    seconds = time.perf_counter() - started
    rows = result["datasets"]
    log.info(
        "done: %s, %s to %s in %.1f s (data as of %s)",
        _count(len(rows), "dataset"),
        _count(sum(rows.values()), "row"),
        sink.description,
        seconds,
        result["data_as_of"] or "unknown",
    )
    return {
        **result,
        "destination": sink.description,
        "seconds": round(seconds, 3),
        "run_id": record.run_id,
        "history": record.as_dict(),
        "trust": history.trust_sections([record.as_dict()]),
    }


class _RunReport:
    """The run report's facts as the step goes (``report.RunFacts``), and writing the page."""

    def __init__(
        self, delivery: report.Delivery, started_at: dt.datetime, sink: socrata.Sink, record: history.StepRecord
    ) -> None:
        self.delivery, self.record = delivery, record
        self.facts = report.RunFacts(
            started_at=started_at, destination=sink.description, datasets={}, run_id=record.run_id
        )
        self.payloads: Mapping[str, pd.DataFrame] = {}
        self.program_names: pd.DataFrame | None = None
        self.staged: list[report.RunReport] = []  # the page put into a folder sink's commit

    def computed(
        self,
        payloads: Mapping[str, pd.DataFrame],
        data_as_of: str | None,
        steps: Sequence[report.Step],
        program_names: pd.DataFrame | None,
        charts_worker: report.ChartWorker,
    ) -> None:
        """The payloads are known: the page's figures are prepared and its charts drawn meanwhile."""
        self.payloads, self.program_names = payloads, program_names
        self.facts.data_as_of = data_as_of
        self.facts.steps = list(steps)
        self.delivery.submit(charts_worker, payloads, program_names)

    def published(self, rows: Mapping[str, int], seconds: float) -> None:
        self.facts.datasets = dict(rows)
        self.facts.steps = [*self.facts.steps, report.Step("publish", "ok", seconds, _count(sum(rows.values()), "row"))]
        self.facts.finished_at = dt.datetime.now(dt.UTC)
        self.facts.trust = history.trust_sections([self.record.as_dict()])

    def failed(self, error: str, publish: report.Step) -> dict[str, Any]:
        """The step failed after computing: the page says so (and what was published), written."""
        self.facts.status, self.facts.error = "failed", error
        self.facts.steps = [*self.facts.steps, publish]
        self.facts.trust = history.trust_sections([self.record.as_dict()])
        return self.write()

    def write(self) -> dict[str, Any]:
        return self.delivery.write(self.facts, self.payloads, self.program_names)

    def page_at_commit(self, rows: Mapping[str, int], publish_started: float) -> Any:
        """For an all-or-nothing folder sink: a callable giving the page when the folder commits (every
        dataset staged), so the page is part of the same commit; ``staged`` then holds it."""

        def page() -> str:
            self.published(rows, time.perf_counter() - publish_started)
            rendered = self.delivery.render_or_none(self.facts, self.payloads, self.program_names)
            if rendered is None:
                return report.unavailable_page(self.facts)
            self.staged.append(rendered)
            return rendered.page

        return page


class _Step:
    """One calculate-and-publish run (see the module's docstring for the order)."""

    def __init__(
        self,
        settings: Settings,
        sink: socrata.Sink,
        destination: str,
        record: history.StepRecord,
        delivery: report.Delivery,
        page: _RunReport,
    ) -> None:
        self.settings, self.sink, self.destination, self.record = settings, sink, destination, record
        self.delivery, self.page = delivery, page
        self.lock: database.PublishLock | None = None  # confirmed before each dataset's first write

    def run(
        self,
        selected: tuple[cfg.Dataset, ...],
        limits: guards.Thresholds,
        accept_changes: bool,
        steps: Sequence[report.Step],
        charts_worker: report.ChartWorker,
    ) -> dict[str, Any]:
        settings, record = self.settings, self.record
        repair = trust.unfinished_publishes(settings, self.destination, record)
        if repair:
            selected = cfg.select(sorted({d.id for d in selected} | set(repair)))

        read_started = time.perf_counter()
        tables = database.read_tables(settings, cfg.tables_for(selected))
        read_seconds = time.perf_counter() - read_started
        log.info("read %s, %s, in %.1f s", _count(len(tables), "table"), _count(_rows(tables), "row"), read_seconds)
        data_as_of = calculations.newest_expense_date(tables)  # the newest date among the expense tables read
        log.info("data as of %s (newest expense date)", data_as_of or "unknown (no expense rows read)")
        trust.check_freshness(settings, tables, record, limits)

        compute_started = time.perf_counter()
        payloads = calculations.build_payloads(tables, only=[d.id for d in selected])
        compute_seconds = time.perf_counter() - compute_started
        computed = f"{_count(len(payloads), 'payload')}, {_count(_rows(payloads), 'row')}"
        log.info("computed %s, in %.1f s", computed, compute_seconds)
        trust.reconcile_calculation(tables, payloads, record)
        figures = {dataset_id: guards.payload_figures(frame) for dataset_id, frame in payloads.items()}
        for dataset_id, fig in figures.items():
            record.items.append(history.Item("dataset", dataset_id, "computed", fig.rows, dict(fig.money)))

        self.page.computed(
            payloads,
            data_as_of,
            [
                *steps,
                report.Step("read tables", "ok", read_seconds, _count(len(tables), "table")),
                report.Step("calculate", "ok", compute_seconds, _count(len(payloads), "payload")),
            ],
            _program_names(settings),
            charts_worker,
        )
        line = trust.change_guard(settings, self.destination, record, figures, limits.max_drop_pct, accept_changes)
        if line:
            self.page.failed(line, report.Step("publish", "not run", None, "stopped by the change guard"))
            raise ChangeGuardError(line)

        # Repairs first, then the publish order of config/datasets.py.
        ordered = {k: payloads[k] for k in [*repair, *(k for k in payloads if k not in repair)]}
        written = self.publish(ordered, figures)
        return {
            "datasets": written["rows"],
            "data_as_of": data_as_of,
            "report": written["report"]["written"],
            "report_markdown": written["report"]["markdown"],
        }

    def publish(self, ordered: dict[str, pd.DataFrame], figures: dict[str, Any]) -> dict[str, Any]:
        """Publish ``ordered`` with the history's markers, then write the report (with a folder sink:
        inside the folder's own all-or-nothing commit, so a failed run leaves it, page included, as it was)."""
        started = time.perf_counter()
        rows = {k: len(v) for k, v in ordered.items()}
        in_commit = self.delivery.destination_copy is not None and hasattr(self.sink, "add_file")
        if in_commit:
            self.sink.add_file(report.REPORT_NAME, self.page.page_at_commit(rows, started))  # type: ignore[attr-defined]
        try:
            with history.PublishMarker(self.settings, self.record.run_id, self.destination) as marker:
                rows = marker.publish_all(self.sink, ordered, figures, self.lock.confirm if self.lock else None)
        except EtlError as exc:
            self.page.failed(str(exc), report.Step("publish", "failed", time.perf_counter() - started))
            raise
        if in_commit and self.page.staged:  # already in the folder: the other places get the same page
            written = self.delivery.send(self.page.staged[0], self.page.facts, [str(self.delivery.destination_copy)])
        else:
            self.page.published(rows, time.perf_counter() - started)
            written = self.page.write()
        return {"rows": rows, "report": written}


def _program_names(settings: Settings) -> pd.DataFrame | None:
    """The 2020 program names for the report (not a calculation input: docs/data-contract.md §3.1 G10)."""
    try:
        return database.read_tables(settings, [cfg.PROGRAM_NAMES_2020])[cfg.PROGRAM_NAMES_2020]
    except EtlError as exc:
        log.warning("run report: 2020 program names unavailable (%s); programs are named by dashboard id", exc)
        return None


def _count(n: int, noun: str) -> str:
    return f"{n:,} {logs.plural(n, noun)}"


def _rows(frames: Mapping[str, pd.DataFrame]) -> int:
    return sum(len(frame) for frame in frames.values())
