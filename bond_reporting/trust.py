"""The checks around the calculate step before anything is published (issue 10), each recorded.

Every check writes what it found into the step's run-history record (``history.StepRecord``:
notes and items, shown in the run report's trust sections) and logs it:

* :func:`unfinished_publishes` — datasets a killed run left ``publishing`` (or ``partial``) at this
  destination: re-published first;
* :func:`check_freshness` — the age of the newest expense date and whether the raw tables have
  stopped changing (``FRESHNESS_*``); raises :class:`StaleDataError` on an error verdict;
* :func:`reconcile_calculation` — the payloads' running sums against the raw tables, exact
  (docs/data-contract.md §5, Q5, Q11); raises :class:`ReconciliationError`; also one WARNING per
  key repeated in a table read (``Source.key``; the load named its lines), and per AIMS group with
  several 2020 lookup entries, with the expenses counted again (Q11);
* :func:`change_guard` — each payload's rows and money totals against the figures last verified
  at the same destination (``MAX_DROP_PCT``); returns the stopping line, or None.

The verdicts themselves are pure (``guards``, ``reconcile``, ``keys``); this module reads the run
history and records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pandas as pd

from bond_reporting import calculations, database, guards, history, keys, reconcile
from bond_reporting.errors import StaleDataError
from bond_reporting.settings import Settings
from config import datasets as cfg
from config.sources import BY_TABLE

__all__ = ["change_guard", "check_freshness", "reconcile_calculation", "unfinished_publishes"]


def unfinished_publishes(settings: Settings, destination: str, record: history.StepRecord) -> list[str]:
    """Dataset ids a killed run left 'publishing' or 'partial' at ``destination`` (one WARNING
    note each): the step re-publishes them first."""
    with database.transaction(settings) as conn:
        unfinished = history.unfinished_publishes(conn, destination)
    repair = [u for u in unfinished if u["dataset"] in cfg.DATASET_IDS]
    for item in repair:
        state = (
            "'publishing' by run {run} at {since} (killed part-way?)"
            if item["state"] == "publishing"
            else "possibly partial by run {run} at {since}"
        )
        since = f"{item['since']:%Y-%m-%d %H:%M:%S %Z}"
        record.note(
            "WARNING",
            "repair",
            item["dataset"],
            f"{item['dataset']} at {destination} was left {state.format(run=item['run_id'], since=since)}"
            ": re-publishing it first",
        )
    return [u["dataset"] for u in repair]


def check_freshness(
    settings: Settings, tables: Mapping[str, pd.DataFrame], record: history.StepRecord, limits: guards.Thresholds
) -> None:
    """The freshness verdicts of each expense table read (age of its newest ``date``; unchanged
    sha256 over ``FRESHNESS_UNCHANGED_RUNS`` loads), logged and recorded. Raises StaleDataError
    naming every table with an error verdict (docs/operations.md, "Stale data")."""
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
                stuck = guards.unchanged(table, digests[0], digests[1:], limits) if digests else None
                if stuck:
                    verdicts.append(stuck)
    for verdict in verdicts:
        level = {"ok": "INFO", "warning": "WARNING", "error": "ERROR"}[verdict.level]
        detail = {"level": verdict.level, "newest_date": verdict.newest_date, "age_days": verdict.age_days}
        if verdict.level == "error":  # not logged here: the run's failure line says it
            record.notes.append(history.Note(level, verdict.kind, verdict.subject, verdict.message, detail))
        else:
            record.note(level, verdict.kind, verdict.subject, verdict.message, detail)
    errors = [v.message for v in verdicts if v.level == "error"]
    if errors:
        raise StaleDataError("; ".join(errors))


def reconcile_calculation(
    tables: Mapping[str, pd.DataFrame], payloads: Mapping[str, pd.DataFrame], record: history.StepRecord
) -> None:
    """The calculate hop (issue 10 item 2): record each reconciled total, the Q5 duplicates'
    amounts, one WARNING per unmapped AIMS group and fiscal year (Q11). Exact in cents or Decimal.
    Raises ReconciliationError when a running sum differs from the raw tables."""
    checked = reconcile.reconcile_payloads(tables, payloads, cents_only=not calculations.in_whole_cents(tables))
    for line in checked.lines:
        record.note("INFO", "reconcile", None, line)
    dropped = checked.dropped
    if dropped and dropped.rows:
        record.notes.append(  # calculations already logged the Q5 warning naming the pairs
            history.Note(
                "WARNING",
                "duplicates",
                cfg.EXPENSES_ALL_BONDS,
                f"rrww-ybw6: {dropped.rows} duplicate source row(s) of {dropped.pairs} (group, date) pair(s) dropped "
                "(docs/data-contract.md Q5): "
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
    _repeated_keys(tables, record)


def _repeated_keys(tables: Mapping[str, pd.DataFrame], record: history.StepRecord) -> None:
    """One WARNING per key repeated in a table read (published numbers unchanged: Q11), and for the
    2020 lookup, per AIMS group with several entries, the expenses its extra entries count again."""
    for table, frame in tables.items():
        source = BY_TABLE.get(table)
        if source is None or not source.key:
            continue
        if table == cfg.LOOKUP_2020 and cfg.EXPENSES_2020 in tables:
            raw = tables[cfg.EXPENSES_2020]
            aims = calculations.aims_group_id(raw["department"], raw["fund"], raw["division"], raw["group"])
            for again in keys.counted_again(raw, aims, frame):
                detail = {"group": again.group, "dashboards": again.dashboards, "expenses": again.expenses}
                record.note("WARNING", "repeated_key", table, again.describe(table), detail)
            continue
        for repeated in keys.repeated_keys(frame, source.key, source.money_columns):
            detail = {"key": repeated.key, "rows": len(repeated.positions), "money": repeated.money}
            record.note("WARNING", "repeated_key", table, repeated.describe(source.label), detail)


def change_guard(
    settings: Settings,
    destination: str,
    record: history.StepRecord,
    figures: Mapping[str, reconcile.Figures],
    max_drop_pct: float,
    accept_changes: bool,
) -> str | None:
    """Compare each payload's figures with those last verified at ``destination``; record every
    change. Returns the stopping line (rows or money fell by more than ``max_drop_pct`` percent,
    and not ``accept_changes``), else None."""
    with database.transaction(settings) as conn:
        last = history.last_verified(conn, destination, list(figures))
    old = {k: reconcile.Figures(v["rows"] or 0, v["money"]) for k, v in last.items()}
    changes = guards.compare(dict(figures), old, max_drop_pct)
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
    line = guards.guard_line(changes, destination, max_drop_pct)
    if line and not accept_changes:
        record.notes.append(history.Note("ERROR", "guard", None, line))
        return line
    if line:
        accepted = line.split("; nothing published")[0]
        record.note("WARNING", "guard", None, f"{accepted}; accepted (--accept-changes)")
        return None
    compared = [c for c in changes if c.old is not None]
    changed = sum(1 for c in compared if c.old != c.new)
    first = len(changes) - len(compared)
    record.note(
        "INFO",
        "guard",
        None,
        f"change guard passed: {len(compared)} of {len(changes)} dataset(s) compared with the last publish to "
        f"{destination} ({changed} changed), none fell by more than MAX_DROP_PCT={max_drop_pct}%"
        + (f"; {first} first publish(es) there" if first else ""),
    )
    return None


def _figures_dict(figures: reconcile.Figures) -> dict:
    return {"rows": figures.rows, "money": {k: format(v, "f") for k, v in figures.money.items()}}
