"""Calculate the seven dashboard datasets from the database and publish them (or write them to a folder).

    python bond_calculations.py                     # publish to Socrata (SO_WEB, SO_KEY, SO_SECRET; SO_TOKEN optional)
    python bond_calculations.py --output-dir out    # write out/<dataset id>.json and .csv instead
    python bond_calculations.py --only hq9n-d77y 5ewg-ssu3 --chunk-size 5000 -v

Every payload is computed before anything is published: a failing calculation publishes nothing.
What each dataset holds: config/datasets.py and data-contract §5. Exit codes: 0 ok, 1 failure, 2 usage/config.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bond_reporting import calculations, cli, guards, history, logs, reconcile, socrata
from bond_reporting.errors import ChangeGuardError, ConfigError, EtlError, StaleDataError
from bond_reporting.settings import Settings
from config import datasets as cfg

log = logging.getLogger("bond_calculations")
SCRIPT = "bond_calculations"


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
    accept_changes: bool = False,
    run_id: str | None = None,
) -> dict:
    """Read the tables, check freshness, compute and reconcile the payloads, guard against sudden
    drops, publish. Returns ``{"datasets": {id: rows}, "data_as_of": "YYYY-MM-DD" | None,
    "destination", "seconds", "run_id", "history": the step's record (notes: reconciliation,
    freshness, guard, changes, unmapped groups, duplicates) as a plain dict}``.

    Before anything is published (issue 10): freshness (``FRESHNESS_*``), reconciliation of the
    running sums with the raw tables, and the change guard against the figures last verified at
    the same destination (``MAX_DROP_PCT``; ``accept_changes`` lets the drop through). A dataset
    left "publishing" by a killed run is re-published first.
    """
    started = time.perf_counter()
    settings = settings or Settings.from_env()
    try:
        selected = cfg.select(only)
    except KeyError as exc:
        raise ConfigError(f"unknown dataset id {exc.args[0]!r}; known: {', '.join(cfg.DATASET_IDS)}") from None
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
        domain, key_id, key_secret = settings.require("SO_WEB", "SO_KEY", "SO_SECRET")
        sink = socrata.SocrataPublisher(
            domain, app_token=settings.so_token, key_id=key_id, key_secret=key_secret, chunk_size=chunk_size
        )
    destination = history.destination_of(sink)
    record = history.StepRecord(run_id or history.current_run_id(), "calculate")
    try:
        result = _run_checked(settings, sink, destination, selected, record, limits, accept_changes)
    except BaseException as exc:
        history.record_failure(settings, record, exc)
        raise
    try:
        history.record_step(settings, record)
    except EtlError as exc:  # everything is published and verified; only the summary row is missing
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
    }


def _run_checked(
    settings: Settings,
    sink: socrata.Sink,
    destination: str,
    selected: tuple[cfg.Dataset, ...],
    record: history.StepRecord,
    limits: guards.Thresholds,
    accept_changes: bool,
) -> dict:
    from bond_reporting import database  # imported here: the calculation itself never needs a driver

    with database.transaction(settings) as conn:
        unfinished = history.unfinished_publishes(conn, destination)
    repair = [u for u in unfinished if u["dataset"] in cfg.DATASET_IDS]
    if repair:
        ids = {d.id for d in selected} | {u["dataset"] for u in repair}
        selected = cfg.select(sorted(ids))
        for item in repair:
            record.note(
                "WARNING",
                "repair",
                item["dataset"],
                f"{item['dataset']} at {destination} was left 'publishing' by run {item['run_id']} at "
                f"{item['since']:%Y-%m-%d %H:%M:%S %Z} (killed part-way?): re-publishing it first",
            )

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
    check_freshness(settings, tables, record, limits)

    compute_started = time.perf_counter()
    payloads = calculations.build_payloads(tables, only=[d.id for d in selected])
    log.info(
        "computed %d payload(s), %d rows, in %.1f s",
        len(payloads),
        sum(len(p) for p in payloads.values()),
        time.perf_counter() - compute_started,
    )
    reconcile_calculation(tables, payloads, record)

    figures = {dataset_id: guards.payload_figures(frame) for dataset_id, frame in payloads.items()}
    for dataset_id, fig in figures.items():
        record.items.append(history.Item("dataset", dataset_id, "computed", fig.rows, dict(fig.money)))
    with database.transaction(settings) as conn:
        last = history.last_verified(conn, destination, list(payloads))
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
        raise ChangeGuardError(line)
    if line:
        record.note("WARNING", "guard", None, f"{line.split('; nothing published')[0]}; accepted (--accept-changes)")
    else:
        compared = [c for c in changes if c.old is not None]
        changed = sum(1 for c in compared if c.old != c.new)
        record.note(
            "INFO",
            "guard",
            None,
            f"change guard passed: {len(compared)} of {len(changes)} dataset(s) compared with the last publish to "
            f"{destination} ({changed} changed), none fell by more than MAX_DROP_PCT={limits.max_drop_pct}%"
            + (f"; {len(changes) - len(compared)} first publish(es) there" if len(compared) < len(changes) else ""),
        )

    # Repairs first, then the publish order of config/datasets.py.
    first = [u["dataset"] for u in repair]
    ordered = {k: payloads[k] for k in [*first, *(k for k in payloads if k not in first)]}
    with history.PublishMarker(settings, record.run_id, destination) as marker:
        rows = socrata.publish_all(history.MarkingSink(sink, marker, figures), ordered)
    return {"datasets": rows, "data_as_of": data_as_of}


def _figures_dict(figures: reconcile.Figures) -> dict:
    return {"rows": figures.rows, "money": {k: format(v, "f") for k, v in figures.money.items()}}


def check_freshness(
    settings: Settings, tables: Mapping[str, pd.DataFrame], record: history.StepRecord, limits: guards.Thresholds
) -> None:
    """Freshness verdicts of each expense table read (log, history); StaleDataError on an error."""
    from bond_reporting import database

    today = datetime.now(UTC).date()
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
                f"(data-contract Q5): " + ", ".join(f"{k} {reconcile.money_text(v)}" for k, v in dropped.money.items()),
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
            "(data-contract Q11; published numbers unchanged)",
            {
                "group": group.group,
                "fiscal_year": group.fiscal_year,
                "rows": group.rows,
                "expenses": group.expenses,
                "obligated": group.obligated,
            },
        )


def main(argv: list[str] | None = None) -> int:
    logs.setup_logging()
    parser = cli.ArgumentParser(prog=SCRIPT, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", metavar="DIR", help="write DIR/<id>.json and DIR/<id>.csv instead of publishing"
    )
    parser.add_argument("--only", nargs="+", metavar="ID", choices=cfg.DATASET_IDS, help="only these dataset ids")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=socrata.DEFAULT_CHUNK_SIZE,
        metavar="ROWS",
        help="rows per Socrata request (default %(default)s)",
    )
    parser.add_argument(
        "--accept-changes",
        action="store_true",
        help="publish even when rows or money fell by more than MAX_DROP_PCT since the last publish there",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    def job() -> None:
        args = parser.parse_args(argv)
        if args.verbose:
            logs.setup_logging(verbose=True)
        run(output_dir=args.output_dir, only=args.only, chunk_size=args.chunk_size, accept_changes=args.accept_changes)

    return cli.run_main(job, SCRIPT)


if __name__ == "__main__":
    sys.exit(main())
