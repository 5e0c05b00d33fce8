"""Freshness and the change guard (issue 10 items 3 and 4). Pure: figures and dates in, verdicts out.

* Freshness, after dbt's ``source freshness`` (warn_after / error_after): the newest expense date
  of each report ("data as of") against the run's date. Older than ``FRESHNESS_WARN_DAYS`` → a
  warning; older than ``FRESHNESS_ERROR_DAYS`` → the run fails before anything is published.
  Defaults fit a report that posts on business days: warn after 7 days, error off. A report whose
  source bytes equal those of the previous ``FRESHNESS_UNCHANGED_RUNS`` successful loads (default
  3) gets a warning too: the export succeeds but the report stopped moving.
* Change guard: before publishing, each dataset's new figures (rows; money: for the expense
  tables the sum over groups of the last running sums, for the summaries and metadata the sums of
  their money columns) against those last verified at the same destination. A fall of more than
  ``MAX_DROP_PCT`` (default 10) in any of them stops the publish (``ChangeGuardError``, one line
  naming each dataset with its old and new figures) unless changes are accepted. A destination
  with nothing published before passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pandas as pd

from bond_reporting.errors import ConfigError
from bond_reporting.logs import plural
from bond_reporting.reconcile import AIMS, Figures, exact_total, last_running_sums, money_text

DEFAULT_WARN_DAYS = 7
DEFAULT_UNCHANGED_RUNS = 3
DEFAULT_MAX_DROP_PCT = Decimal(10)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The four settings, parsed. ``None`` days: that check is off."""

    warn_days: int | None = DEFAULT_WARN_DAYS
    error_days: int | None = None
    unchanged_runs: int | None = DEFAULT_UNCHANGED_RUNS
    max_drop_pct: Decimal = DEFAULT_MAX_DROP_PCT


_OFF = {"off", "none", "never", "disabled"}


def _days(name: str, value: str | None, default: int | None) -> int | None:
    if value is None or not value.strip():
        return default
    text = value.strip().lower()
    if text in _OFF:
        return None
    if not text.isdigit():
        raise ConfigError(f"{name} must be a whole number of days (or 'off'), not {value!r}")
    return int(text)


def thresholds(
    warn_days: str | None = None,
    error_days: str | None = None,
    unchanged_runs: str | None = None,
    max_drop_pct: str | None = None,
) -> Thresholds:
    """Parse the settings' text (unset → default); a bad value is a ConfigError (exit 2) naming it."""
    runs = _days("FRESHNESS_UNCHANGED_RUNS", unchanged_runs, DEFAULT_UNCHANGED_RUNS)
    if runs == 0:
        runs = None
    pct = DEFAULT_MAX_DROP_PCT
    if max_drop_pct is not None and max_drop_pct.strip():
        try:
            pct = Decimal(max_drop_pct.strip())
        except ArithmeticError:
            pct = Decimal(-1)
        if not pct.is_finite() or pct < 0 or pct > 100:
            raise ConfigError(f"MAX_DROP_PCT must be a percentage between 0 and 100, not {max_drop_pct!r}")
    return Thresholds(
        _days("FRESHNESS_WARN_DAYS", warn_days, DEFAULT_WARN_DAYS),
        _days("FRESHNESS_ERROR_DAYS", error_days, None),
        runs,
        pct,
    )


# ---------------------------------------------------------------------------------------------
# Freshness
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Freshness of one report: level ``ok``/``warning``/``error`` and the line that says so."""

    subject: str
    level: str
    newest_date: str | None
    age_days: int | None
    message: str
    kind: str = "freshness"  # or "unchanged"


def freshness(subject: str, newest: str | None, today: date, limits: Thresholds) -> Verdict:
    """ "Data as of" ``newest`` ('YYYY-MM-DD') of ``subject`` against ``today``."""
    if newest is None:
        return Verdict(
            subject,
            "error" if limits.error_days is not None else "warning",
            None,
            None,
            f"freshness: {subject} has no dates: data as of unknown",
        )
    age = (today - date.fromisoformat(newest)).days
    limit_text = f"warn after {_day_count(limits.warn_days)}" if limits.warn_days is not None else "warning off"
    limit_text += f", error after {_day_count(limits.error_days)}" if limits.error_days is not None else ", error off"
    if limits.error_days is not None and age > limits.error_days:
        return Verdict(
            subject,
            "error",
            newest,
            age,
            f"freshness: {subject} data as of {newest} is {_day_count(age)} old, more than "
            f"FRESHNESS_ERROR_DAYS={limits.error_days}: nothing published",
        )
    if limits.warn_days is not None and age > limits.warn_days:
        return Verdict(
            subject,
            "warning",
            newest,
            age,
            f"freshness: {subject} data as of {newest} is {_day_count(age)} old, more than "
            f"FRESHNESS_WARN_DAYS={limits.warn_days} (is the report still updating?)",
        )
    return Verdict(
        subject, "ok", newest, age, f"freshness: {subject} data as of {newest}, {_day_count(age)} old ({limit_text})"
    )


def _day_count(count: int) -> str:
    """A count of days: 1 day, 7 days."""
    return f"{count} {plural(count, 'day')}"


def unchanged(subject: str, current: str | None, previous: list[str | None], limits: Thresholds) -> Verdict | None:
    """A warning when ``current`` (sha256 of the source bytes) equals each of the previous
    ``unchanged_runs`` successful loads' digests (``previous``, newest first); else None."""
    runs = limits.unchanged_runs
    if runs is None or current is None or len(previous) < runs:
        return None
    if all(digest == current for digest in previous[:runs]):
        return Verdict(
            subject,
            "warning",
            None,
            None,
            f"freshness: {subject} bytes are identical to those of the previous {runs} successful "
            f"load(s) (sha256 {current[:12]}…): the export succeeds but the report is not moving",
            kind="unchanged",
        )
    return None


# ---------------------------------------------------------------------------------------------
# The change guard
# ---------------------------------------------------------------------------------------------

# Money columns of the summary and metadata payloads (docs/data-contract.md §5.4.5, §5.5); the expense
# payloads carry running sums instead.
_SUMMED_MONEY = ("Expenses", "Baseline", "Planned", "appropriated")
_RUNNING = {"expenses": "sum_expenses", "obligated": "sum_obligated"}


def payload_figures(frame: pd.DataFrame) -> Figures:
    """The figures a dataset carries: rows, and for the expense tables (``sum_expenses`` present)
    the sum over groups of the last running sums (per AIMS group and, for 2020, fiscal year); for
    the summaries and metadata the exact sums of their money columns."""
    if "sum_expenses" in frame:
        keys = [AIMS, "fiscal_year"] if "fiscal_year" in frame else [AIMS]
        last = last_running_sums(frame, keys)
        money = {name: exact_total(last[column]) for name, column in _RUNNING.items() if column in last}
    else:
        money = {column: exact_total(frame[column]) for column in _SUMMED_MONEY if column in frame}
    return Figures(len(frame), money)


@dataclass(frozen=True)
class Change:
    """One dataset's figures now and at its last verified publish to the same destination."""

    dataset: str
    old: Figures | None
    new: Figures
    drops: tuple[str, ...]  # e.g. "rows 1,454 → 727 (−50.0%)" for each fall beyond the limit

    def describe(self) -> str:
        if self.old is None:
            return f"{self.dataset}: first publish to this destination ({self.new.describe()})"
        parts = [_delta("rows", Decimal(self.old.rows), Decimal(self.new.rows), whole=True)]
        for name in self.new.money:
            if name in self.old.money:
                parts.append(_delta(name, self.old.money[name], self.new.money[name]))
        return f"{self.dataset}: " + ", ".join(parts)


def _pct(old: Decimal, new: Decimal) -> Decimal | None:
    if old == 0:
        return None
    return (new - old) / abs(old) * 100


def _delta(name: str, old: Decimal, new: Decimal, whole: bool = False) -> str:
    text = (lambda v: f"{int(v):,}") if whole else money_text
    pct = _pct(old, new)
    change = "" if pct is None else f" ({pct:+.1f}%)"
    return f"{name} {text(old)} → {text(new)}{change}"


def compare(new: Mapping[str, Figures], old: Mapping[str, Figures | None], max_drop_pct: Decimal) -> list[Change]:
    """Each dataset's change since its last verified publish; ``drops`` lists the figures that fell
    by more than ``max_drop_pct`` percent (rows, or a money total that was positive)."""
    out = []
    for dataset, figures in new.items():
        before = old.get(dataset)
        drops: list[str] = []
        if before is not None:
            if before.rows > 0 and _falls(Decimal(before.rows), Decimal(figures.rows), max_drop_pct):
                drops.append(_delta("rows", Decimal(before.rows), Decimal(figures.rows), whole=True))
            for name, value in figures.money.items():
                previous = before.money.get(name)
                if previous is not None and previous > 0 and _falls(previous, value, max_drop_pct):
                    drops.append(_delta(name, previous, value))
        out.append(Change(dataset, before, figures, tuple(drops)))
    return out


def _falls(old: Decimal, new: Decimal, max_drop_pct: Decimal) -> bool:
    return (old - new) * 100 > max_drop_pct * old


def guard_line(changes: list[Change], destination: str, max_drop_pct: Decimal) -> str | None:
    """The one line that stops a publish, or None when no dataset fell beyond the limit."""
    stopped = [c for c in changes if c.drops]
    if not stopped:
        return None
    named = "; ".join(f"{c.dataset} {', '.join(c.drops)}" for c in stopped)
    return (
        f"change guard: {len(stopped)} dataset(s) fell by more than MAX_DROP_PCT={max_drop_pct}% since the last "
        f"publish to {destination}: {named}; nothing published (check the source; --accept-changes publishes anyway)"
    )
