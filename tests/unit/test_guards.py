"""Freshness and the change guard (issue 10 items 3 and 4): pure verdicts from figures and dates."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pandas as pd
import pytest

from bond_reporting import guards
from bond_reporting.errors import ConfigError
from bond_reporting.reconcile import Figures

TODAY = date(2026, 11, 30)


def test_defaults_fit_a_report_that_posts_on_business_days():
    limits = guards.thresholds()
    assert (limits.warn_days, limits.error_days, limits.unchanged_runs, limits.max_drop_pct) == (7, None, 3, 10)
    assert guards.thresholds(" 3 ", "off", "0", "2.5") == guards.Thresholds(3, None, None, Decimal("2.5"))


@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("warn", "seven", "FRESHNESS_WARN_DAYS must be a whole number of days"),
        ("error", "-1", "FRESHNESS_ERROR_DAYS must be a whole number of days"),
        ("pct", "120", "MAX_DROP_PCT must be a percentage between 0 and 100, not '120'"),
        ("pct", "ten", "MAX_DROP_PCT must be a percentage"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_variable(setting, value, fragment):
    kwargs = {"warn": "warn_days", "error": "error_days", "pct": "max_drop_pct"}
    with pytest.raises(ConfigError, match=fragment):
        guards.thresholds(**{kwargs[setting]: value})


@pytest.mark.parametrize(
    ("newest", "warn", "error", "level"),
    [
        ("2026-11-27", "7", None, "ok"),
        ("2026-11-23", "7", None, "ok"),  # exactly 7 days: not older than the limit
        ("2026-11-22", "7", None, "warning"),
        ("2026-01-01", "7", None, "warning"),  # error is off by default
        ("2026-10-30", "7", "30", "error"),
        ("2026-10-31", "7", "30", "warning"),
        ("2026-01-01", "off", None, "ok"),
    ],
)
def test_freshness_verdict_by_the_settings(newest, warn, error, level):
    verdict = guards.freshness("t", newest, TODAY, guards.thresholds(warn, error))
    assert verdict.level == level
    assert verdict.age_days == (TODAY - date.fromisoformat(newest)).days
    assert f"data as of {newest}" in verdict.message


def test_freshness_lines_say_what_and_how_old():
    warning = guards.freshness("expenses_x", "2026-11-01", TODAY, guards.thresholds())
    assert warning.message == (
        "freshness: expenses_x data as of 2026-11-01 is 29 days old, more than FRESHNESS_WARN_DAYS=7 "
        "(is the report still updating?)"
    )
    error = guards.freshness("expenses_x", "2026-11-01", TODAY, guards.thresholds(error_days="14"))
    assert error.message.endswith("more than FRESHNESS_ERROR_DAYS=14: nothing published")


def test_identical_bytes_for_n_previous_runs_warns():
    limits = guards.thresholds(unchanged_runs="3")
    assert guards.unchanged("t", "abc", ["abc", "abc"], limits) is None  # only two previous loads
    assert guards.unchanged("t", "abc", ["abc", "abc", "xyz"], limits) is None
    verdict = guards.unchanged("t", "abc", ["abc", "abc", "abc", "xyz"], limits)
    assert verdict is not None and verdict.level == "warning" and verdict.kind == "unchanged"
    assert "identical to those of the previous 3 successful load(s)" in verdict.message
    assert guards.unchanged("t", "abc", ["abc"] * 5, guards.thresholds(unchanged_runs="off")) is None


def figures(rows: int, **money: str) -> Figures:
    return Figures(rows, {k: Decimal(v) for k, v in money.items()})


def test_guard_stops_on_a_drop_beyond_the_limit_and_names_old_and_new():
    old = {"a": figures(1000, expenses="100.00"), "b": figures(10, appropriated="50")}
    new = {"a": figures(500, expenses="89.99"), "b": figures(10, appropriated="50"), "c": figures(1)}
    changes = guards.compare(new, {**old, "c": None}, Decimal(10))
    assert [c.drops for c in changes] == [
        ("rows 1,000 → 500 (-50.0%)", "expenses 100.00 → 89.99 (-10.0%)"),
        (),
        (),
    ]
    line = guards.guard_line(changes, "folder /out", Decimal(10))
    assert line == (
        "change guard: 1 dataset(s) fell by more than MAX_DROP_PCT=10% since the last publish to folder /out: "
        "a rows 1,000 → 500 (-50.0%), expenses 100.00 → 89.99 (-10.0%); nothing published "
        "(check the source; --accept-changes publishes anyway)"
    )
    assert "\n" not in line


def test_guard_passes_exactly_at_the_limit_on_growth_and_on_a_first_publish():
    old = {"a": figures(100, expenses="100.00")}
    assert (
        guards.guard_line(guards.compare({"a": figures(90, expenses="90.00")}, old, Decimal(10)), "d", Decimal(10))
        is None
    )
    assert (
        guards.guard_line(guards.compare({"a": figures(200, expenses="1e6")}, old, Decimal(10)), "d", Decimal(10))
        is None
    )
    assert guards.guard_line(guards.compare({"a": figures(1)}, {}, Decimal(10)), "d", Decimal(10)) is None
    # a total that was zero or negative has no meaningful percentage: rows still count
    negative = {"a": figures(100, expenses="-5.00")}
    assert guards.compare({"a": figures(100, expenses="-500.00")}, negative, Decimal(10))[0].drops == ()


def test_payload_figures_of_expense_tables_are_the_sums_of_the_last_running_sums():
    frame = pd.DataFrame(
        {
            "aims_dept_prog_act": ["G1", "G2", "G1", "G2"],
            "fiscal_year": [2024, 2024, 2024, 2024],
            "sum_expenses": [1.10, 2.20, 3.30, 2.20],
            "sum_obligated": [0.0, 0.0, 0.5, 0.25],
        }
    )
    assert guards.payload_figures(frame) == figures(4, expenses="5.50", obligated="0.75")
    summary = pd.DataFrame({"Expenses": [1.0, None], "Baseline": [2.5, 2.5], "Planned": [None, None], "x": [9, 9]})
    assert guards.payload_figures(summary) == figures(2, Expenses="1", Baseline="5", Planned="0")
    assert guards.payload_figures(pd.DataFrame({"aims_dept_prog_act": ["a"]})) == figures(1)


def test_freshness_lines_say_one_day_not_one_days():
    verdict = guards.freshness("expenses_x", "2026-11-29", TODAY, guards.thresholds(warn_days="1", error_days="1"))
    assert verdict.message == (
        "freshness: expenses_x data as of 2026-11-29, 1 day old (warn after 1 day, error after 1 day)"
    )
    late = guards.freshness("expenses_x", "2026-11-28", TODAY, guards.thresholds(warn_days="1"))
    assert late.message.startswith("freshness: expenses_x data as of 2026-11-28 is 2 days old, more than")
