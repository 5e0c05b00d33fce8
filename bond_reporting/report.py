"""The run report: one self-contained HTML page per ``bond_calculations`` run (issue 11).

``build_report(facts, payloads, program_names)`` → the page's HTML text; ``write_report`` puts it
in a file atomically. The page needs nothing but itself: inline CSS, inline SVG charts
(``bond_reporting.charts``), no script, no external URL (a Content-Security-Policy forbids any),
so it opens from disk or an e-mail attachment and prints. Top to bottom:

1. the headline: run time, "data as of", freshness, the status of each step, the key figures and
   the datasets with their rows and destination;
2. 2020 bond, current fiscal year (``hq9n-d77y``, docs/data-contract.md §5.4): Expenses against
   Baseline and Planned of that fiscal year only, cumulative from its first month, all programs and
   per program (names from ``bond_2020_program_names``), and how they add up to the dashboard's
   running totals, which also carry other fiscal years (Q9); the previous fiscal year
   (``5ewg-ssu3``), smaller;
3. all bonds: per bond year and program, spent (the final running sums of ``rrww-ybw6``, mapped
   through ``mri6-eexh``) against appropriated (``9ufs-k2md``);
4. what changed since the last publish and the data notes, when the run's facts carry them
   (``RunFacts.trust``, issue 10).

Every chart has a table with the same numbers in the page's text. The figures are computed here
from the payloads (pure pandas, aggregated before charting: the page never embeds a payload).
Sections whose payloads were not computed (``--only``) are left out.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bond_reporting import charts, storage
from bond_reporting.calculations import AIMS, DASH, LABEL
from bond_reporting.logs import one_line
from config import datasets as cfg

log = logging.getLogger(__name__)

# Dataset ids by what their builder computes (config/datasets.py is the one place they are spelled).
_ID = {d.builder: d.id for d in cfg.DATASETS}
SUMMARY_CURRENT = _ID["summary_current_year"]
SUMMARY_PREVIOUS = _ID["summary_previous_year"]
EXPENSES_ALL_BONDS = _ID["expenses_all_bonds"]
METADATA_ALL_BONDS = _ID["all_bonds_metadata"]
LOOKUP_ALL_BONDS = _ID["all_bonds_lookup"]

# Programs charted one by one (the rest are in the table): keeps the page small and quick at any size.
MAX_PROGRAM_CHARTS = 12
# Bars in the all-bonds chart: the largest programs by appropriation (all are in the table).
MAX_BARS = 30
SUMS = {"expenses": "Sum_expenses", "baseline": "Sum_baseline", "planned": "Sum_planned"}
REPORT_NAME = "report.html"
BUCKET_FOLDER = "run-reports"
LATEST_KEY = f"{BUCKET_FOLDER}/latest.html"
TEMPLATES = Path(__file__).with_name("templates")


# ---------------------------------------------------------------------------------------------
# The run's facts (the plain input structure)
# ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of the run: ``status`` is 'ok', 'warning', 'failed' or 'not run'."""

    name: str
    status: str
    seconds: float | None = None
    note: str = ""


@dataclass
class RunFacts:
    """What the page says about the run, apart from the payloads.

    ``datasets``: rows per dataset id as written or published (publish order). ``trust``: optional
    sections from the run history (issue 10); each key present is rendered, any other key is shown
    as a generic table: ``freshness``, ``reconciliation``, ``guard``, ``unmapped``, ``duplicates``,
    ``changes``, ``programs_moved`` (lists of flat dicts) and ``warnings`` (list of str).
    """

    started_at: dt.datetime
    destination: str
    datasets: Mapping[str, int]
    data_as_of: str | None = None
    status: str = "completed"
    finished_at: dt.datetime | None = None
    steps: Sequence[Step] = ()
    error: str | None = None
    run_id: str | None = None
    trust: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Figures: 2020 bond summary tables (docs/data-contract.md §5.4)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthlySeries:
    """Dollars of one fiscal year only, cumulative from its first month, for one program (or all).

    ``months``: the 12 'YYYY MM' labels, October to September. Each value is the fiscal year's own
    amount from October to the end of that month: the published running total (``Sum_*``) at that
    month, carried forward over months without an entry and summed over the program's dashboard
    ids, minus ``carry_in``. ``carry_in`` (expenses, baseline, planned) is what the running totals
    hold before the first month: the '0FY' rows of the other fiscal years, earlier **and later**
    ones, which sort before the months (docs/data-contract.md §5.4.5, Q9); ``published`` adds it
    back. ``expenses`` is None after the last month that has any expense entry (the future of the
    current year); "to date" means through that month.
    """

    name: str
    members: tuple[str, ...]
    months: tuple[str, ...]
    expenses: tuple[float | None, ...]
    baseline: tuple[float, ...]
    planned: tuple[float, ...]
    carry_in: tuple[float, float, float]

    @property
    def last_expense_index(self) -> int | None:
        known = [i for i, v in enumerate(self.expenses) if v is not None]
        return known[-1] if known else None

    @property
    def to_date_month(self) -> str | None:
        """The last month with any expense entry ('YYYY MM'), None when there is none."""
        index = self.last_expense_index
        return None if index is None else self.months[index]

    @property
    def expenses_to_date(self) -> float:
        """Expenses of the fiscal year through ``to_date_month`` (0 when none)."""
        index = self.last_expense_index
        return 0.0 if index is None else float(self.expenses[index])  # type: ignore[arg-type]

    @property
    def baseline_to_date(self) -> float:
        """Baseline of the fiscal year through ``to_date_month`` (0 when no month has expenses)."""
        index = self.last_expense_index
        return 0.0 if index is None else self.baseline[index]

    @property
    def planned_to_date(self) -> float:
        """Planned of the fiscal year through ``to_date_month`` (0 when no month has expenses)."""
        index = self.last_expense_index
        return 0.0 if index is None else self.planned[index]

    @property
    def published_to_date(self) -> tuple[float, float, float]:
        """The dashboard's running totals (expenses, baseline, planned) at ``to_date_month``:
        the fiscal year to date plus ``carry_in`` (before the first month: ``carry_in`` alone)."""
        fy = (self.expenses_to_date, self.baseline_to_date, self.planned_to_date)
        return (fy[0] + self.carry_in[0], fy[1] + self.carry_in[1], fy[2] + self.carry_in[2])


def summary_fiscal_year(summary: pd.DataFrame) -> int | None:
    """The target fiscal year of a summary payload: the FY of its month labels (§5.4.2), None if none."""
    months = summary[LABEL][~summary[LABEL].str.startswith("0FY")]
    if months.empty:
        return None
    year, month = (int(part) for part in months.iloc[0].split())
    return year + (month >= 10)


def fiscal_year_months(fiscal_year: int) -> tuple[str, ...]:
    """The 12 month labels of a City fiscal year: 'FY-1 10' … 'FY 09' (§2.1)."""
    return tuple(f"{fiscal_year - 1} {m:02d}" for m in (10, 11, 12)) + tuple(
        f"{fiscal_year} {m:02d}" for m in range(1, 10)
    )


def cumulative_by_dashboard(summary: pd.DataFrame, fiscal_year: int) -> pd.DataFrame:
    """Per dashboard id: the running totals at the end of each month of ``fiscal_year``.

    Returns a frame indexed by (dashboard id, position) with columns expenses/baseline/planned;
    position 0 is the carry-in (the '0FY' rows), 1–12 the months October–September. A month
    without an entry keeps the previous total; before the first entry the total is 0.
    """
    months = fiscal_year_months(fiscal_year)
    position_of = {label: i + 1 for i, label in enumerate(months)}
    labels = summary[LABEL].astype(str)
    positions = labels.map(position_of)
    # '0FY' labels sort first (carry-in); a month label outside the year (not produced by §5.4.2) is
    # clamped to the nearer end so no published amount is lost.
    positions = positions.where(~labels.str.startswith("0FY"), 0)
    positions = positions.where(positions.notna(), np.where(labels < months[0], 0, len(months)))
    keyed = pd.DataFrame({DASH: summary[DASH].astype(str), "position": positions.astype(np.int64)})
    for name, column in SUMS.items():
        keyed[name] = summary[column].to_numpy(np.float64)
    # The last non-null running total per (id, position): rows are in label order within an id.
    last = keyed.groupby([DASH, "position"], sort=True)[list(SUMS)].last()
    ids = last.index.get_level_values(0).unique()
    grid = pd.MultiIndex.from_product([ids, range(len(months) + 1)], names=[DASH, "position"])
    return last.reindex(grid).groupby(level=0).ffill().fillna(0.0)


def last_expense_position(summary: pd.DataFrame, fiscal_year: int) -> int | None:
    """The position (1–12) of the last month with any expense entry, None when there is none."""
    months = fiscal_year_months(fiscal_year)
    has = summary.loc[summary["Expenses"].notna(), LABEL].astype(str)
    present = [i + 1 for i, label in enumerate(months) if label in set(has)]
    return max(present) if present else None


def program_series(
    summary: pd.DataFrame, program_names: pd.DataFrame | None
) -> tuple[MonthlySeries, list[tuple[MonthlySeries, list[MonthlySeries]]]] | None:
    """(all programs, [(program, [its sub-programs])]) cumulative series of a summary payload.

    Programs and sub-programs are named by ``bond_2020_program_names`` (sorted by its sort
    columns); a dashboard id without a names row is its own program, named by its id.
    None when the payload has no month label (nothing to chart).
    """
    fiscal_year = summary_fiscal_year(summary)
    if fiscal_year is None:
        return None
    months = fiscal_year_months(fiscal_year)
    cumulative = cumulative_by_dashboard(summary, fiscal_year)
    last = last_expense_position(summary, fiscal_year)
    names = _names_2020(program_names, cumulative.index.get_level_values(0).unique())

    # One array (dashboard id × carry-in + 12 months × expenses/baseline/planned): sums are numpy sums.
    ids = cumulative.index.get_level_values(0).unique()
    values = cumulative[list(SUMS)].to_numpy(np.float64).reshape(len(ids), len(months) + 1, len(SUMS))
    row_of = {dashboard_id: i for i, dashboard_id in enumerate(ids)}

    def series(name: str, members_ids: list[str], members: tuple[str, ...]) -> MonthlySeries:
        part = values[[row_of[i] for i in members_ids]].sum(axis=0)  # (13, 3)
        part[1:] -= part[0]  # the fiscal year's own amounts: the running totals less their carry-in (Q9)
        expenses = tuple(float(v) if last is not None and i + 1 <= last else None for i, v in enumerate(part[1:, 0]))
        return MonthlySeries(
            name=name,
            members=members,
            months=months,
            expenses=expenses,
            baseline=tuple(float(v) for v in part[1:, 1]),
            planned=tuple(float(v) for v in part[1:, 2]),
            carry_in=(float(part[0, 0]), float(part[0, 1]), float(part[0, 2])),
        )

    total = series("All programs", list(names[DASH]), tuple(names["program_name"].drop_duplicates()))
    programs = [
        (
            series(program, list(rows[DASH]), tuple(rows["sub_program_name"])),
            [
                series(r.sub_program_name, [r.dashboard_deptfundprogact], (r.dashboard_deptfundprogact,))
                for r in rows.itertuples()
            ],
        )
        for program, rows in names.groupby("program_name", sort=False)
    ]
    return total, programs


def carry_in_by_year(summary: pd.DataFrame) -> pd.DataFrame:
    """What the running totals carry in before the first month, per fiscal year: the sums of
    ``Expenses``, ``Baseline``, ``Planned`` over the '0FY yy' rows (nulls skipped), all dashboard ids.

    Returns a frame indexed by ``fiscal_year`` (2000 + yy, ascending) with columns expenses,
    baseline, planned; empty when the payload has no '0FY' row (docs/data-contract.md §5.4.2, Q9).
    """
    rows = summary[summary[LABEL].astype(str).str.startswith("0FY")]
    amounts = pd.DataFrame(
        {
            "fiscal_year": 2000 + rows[LABEL].astype(str).str[4:].astype(np.int64),
            **{name: rows[name.capitalize()].to_numpy(np.float64) for name in SUMS},
        }
    )
    return amounts.groupby("fiscal_year", sort=True)[list(SUMS)].sum()


def carry_in_text(carried: pd.DataFrame, fiscal_year: int) -> str:
    """'cumulative since FY 2024, includes FY 2027's baseline': what the running totals of a
    summary for ``fiscal_year`` span. ``carried``: ``carry_in_by_year``. Years with '0FY' rows
    count; a year missing in between is named ('leaves out FY 2026': the previous-FY table drops
    the current year's rows, Q10), and so is each later year with its non-zero sides."""
    years = {int(y) for y in carried.index} | {fiscal_year}
    first = min(years)
    text = f"cumulative since FY {first}"
    missing = [f"FY {y}" for y in range(first, max(years) + 1) if y not in years]
    if missing:
        text += ", leaves out " + " and ".join(missing)
    present = carried[(carried != 0).any(axis=1)]
    later = []
    for year, row in present[present.index > fiscal_year].iterrows():
        sides = [name for name in SUMS if row[name] != 0]
        later.append(f"FY {year}'s " + " and ".join(sides))
    return text + (", includes " + "; ".join(later) if later else "")


def _names_2020(program_names: pd.DataFrame | None, ids: pd.Index) -> pd.DataFrame:
    """One row per dashboard id of the summary: id, program_name, sub_program_name, in sort order."""
    if program_names is not None and not program_names.empty:
        names = program_names.drop_duplicates(DASH)
        names = names[names[DASH].isin(ids)]
        names = names.sort_values(["program_sort", "sub_program_sort", DASH], kind="stable")
        names = names.loc[:, [DASH, "program_name", "sub_program_name"]].astype(str)
    else:
        names = pd.DataFrame(columns=[DASH, "program_name", "sub_program_name"], dtype=str)
    unnamed = sorted(set(ids) - set(names[DASH]))
    extra = pd.DataFrame({DASH: unnamed, "program_name": unnamed, "sub_program_name": unnamed}, dtype=str)
    return pd.concat([names, extra], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Figures: all bonds (docs/data-contract.md §5.3, §5.5, §5.6)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllBondsFigures:
    """Spent against appropriated per program: ``programs`` has bond_year, program_name, spent,
    obligated, appropriated (NaN when no sub-program has one), sub_programs; ``sub_programs`` the
    same per dashboard id. ``unmapped``: the final sums of AIMS groups with no lookup entry;
    ``unnamed``: those mapped to a dashboard id that ``9ufs-k2md`` does not list."""

    programs: pd.DataFrame
    sub_programs: pd.DataFrame
    unmapped: pd.DataFrame
    unnamed: pd.DataFrame


def all_bonds_figures(expenses: pd.DataFrame, lookup: pd.DataFrame, metadata: pd.DataFrame) -> AllBondsFigures:
    """Spent (the final ``sum_expenses``/``sum_obligated`` of each AIMS group in ``rrww-ybw6``,
    mapped to dashboard ids through ``mri6-eexh``) against ``appropriated`` of ``9ufs-k2md``.

    A group mapped to several ids counts for each (as a join in Power BI would); metadata rows are
    taken once per id (the first).
    """
    final = expenses.groupby(AIMS, sort=False)[["sum_expenses", "sum_obligated"]].last()
    final = final.rename(columns={"sum_expenses": "spent", "sum_obligated": "obligated"}).reset_index()
    pairs = lookup[[AIMS, DASH]].dropna().drop_duplicates()
    mapped = final.merge(pairs, on=AIMS, how="inner")
    unmapped = final[~final[AIMS].isin(pairs[AIMS])].reset_index(drop=True)
    per_id = mapped.groupby(DASH, sort=False)[["spent", "obligated"]].sum()

    meta = metadata.drop_duplicates(DASH).set_index(DASH)
    unnamed = per_id[~per_id.index.isin(meta.index)].reset_index()
    subs = meta[["bond_year", "program_name", "sub_program_name", "program_sort", "sub_program_sort"]].copy()
    subs["appropriated"] = meta["appropriated"].astype(np.float64)
    subs = subs.join(per_id, how="left").fillna({"spent": 0.0, "obligated": 0.0}).reset_index()
    subs = subs.sort_values(["bond_year", "program_sort", "sub_program_sort"], kind="stable").reset_index(drop=True)
    programs = (
        subs.groupby(["bond_year", "program_name"], sort=False)
        .agg(
            spent=("spent", "sum"),
            obligated=("obligated", "sum"),
            appropriated=("appropriated", lambda s: s.sum(min_count=1)),
            sub_programs=("sub_program_name", "count"),
        )
        .reset_index()
    )
    return AllBondsFigures(programs, subs, unmapped, unnamed)


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def money(value: float | None, cents: bool = True) -> str:
    """'$1,234,567.89' ('−$12.00' when negative, '—' when missing): the page's one money format."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "\u2014"
    sign = "\u2212" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}" if cents else f"{sign}${abs(value):,.0f}"


def percent(part: float | None, whole: float | None) -> str:
    if part is None or whole is None or not whole or np.isnan(whole):
        return "\u2014"
    return f"{100 * part / whole:.0f}%"


@dataclass(frozen=True)
class RunReport:
    """The page's HTML text and its key figures (label, value, key), e.g. for a Prefect artifact."""

    page: str
    headline: list[dict[str, str]]

    def markdown(self, status: str, where: Sequence[str]) -> str:
        """The headline as Markdown: status, key figures, where the page is."""
        lines = [
            f"**Bond reporting run {status}.** Run report: " + (", ".join(f"`{w}`" for w in where) or "not written")
        ]
        lines += ["", "| figure | value |", "|---|---|"]
        lines += [f"| {f['label']} | {f['value']} |" for f in self.headline]
        return "\n".join(lines)


def build_report(
    facts: RunFacts,
    payloads: Mapping[str, pd.DataFrame],
    program_names: pd.DataFrame | None = None,
) -> str:
    """The page's HTML text (see ``render_report``)."""
    return render_report(facts, payloads, program_names).page


@dataclass
class Prepared:
    """The page's figures, computed from the payloads, and the charts still to draw (``specs``)."""

    sections: dict[str, Any]

    @property
    def specs(self) -> list[charts.Spec]:
        return [spec for section in self.sections.values() if section for spec in section["specs"]]

    def attach(self, svgs: Sequence[Any]) -> None:
        """Put the drawn charts (one result per spec, in ``specs`` order) into their sections."""
        position = 0
        for name, section in self.sections.items():
            if not section:
                continue
            mine = list(svgs[position : position + len(section["specs"])])
            position += len(section["specs"])
            if name == "all_bonds":
                section["chart"] = mine[0]
            else:
                _attach_fy_charts(section, mine)


def prepare(payloads: Mapping[str, pd.DataFrame], program_names: pd.DataFrame | None = None) -> Prepared:
    """The figures of every section whose payloads are present (pure pandas, small results)."""
    return Prepared(
        {
            "fy": _fy_section(payloads, program_names, SUMMARY_CURRENT, "current", charts_per_program=True),
            "previous_fy": _fy_section(payloads, program_names, SUMMARY_PREVIOUS, "previous", charts_per_program=False),
            "all_bonds": _all_bonds_section(payloads),
        }
    )


def program_totals(prepared: Prepared) -> dict[str, float]:
    """The totals the page shows per program, by a name that stays the same from run to run:
    2020 expenses in the current FY to date per program (that year only, no carry-in), all-bonds
    spent per bond year and program."""
    totals: dict[str, float] = {}
    fy = prepared.sections.get("fy")
    if fy:
        for series, _subs in fy["programs"]:
            totals[f"{FY_PREFIX}{fy['year']} expenses: {series.name}"] = series.expenses_to_date
    bonds = prepared.sections.get("all_bonds")
    if bonds:
        for row in bonds["figures"].programs.itertuples():
            totals[f"{row.bond_year} bond spent: {row.program_name}"] = float(row.spent)
    return totals


_TOTAL = re.compile(r'<tr data-total="([^"]*)" data-value="(-?[0-9.eE+-]+)"')
# Pages whose 2020-bond program totals are the fiscal year's own (earlier pages showed the running
# totals, which carry other fiscal years: Q9). The two are not compared.
FY_ONLY_MARK = 'data-basis="fiscal-year-only"'
FY_PREFIX = "2020 bond FY "
_FIGURE = re.compile(r'data-figure="(run-status|destination)">([^<]*)<')


def totals_in_page(page: str) -> tuple[dict[str, str], dict[str, float]]:
    """(run-status and destination, program totals) as written in a report page."""
    facts = {key: html.unescape(value) for key, value in _FIGURE.findall(page)}
    return facts, {html.unescape(key): float(value) for key, value in _TOTAL.findall(page)}


def programs_moved(
    previous_page: str | None, facts: RunFacts, totals: Mapping[str, float], limit: int = 5
) -> list[dict[str, Any]]:
    """The ``limit`` program totals that moved most since the last completed run to the same
    destination (its report page), largest absolute change first; [] when there is none."""
    if not previous_page:
        return []
    before_facts, before = totals_in_page(previous_page)
    if before_facts.get("run-status") != "completed" or before_facts.get("destination") != facts.destination:
        return []
    if FY_ONLY_MARK not in previous_page:  # a page from before the fiscal-year-only figures
        before = {k: v for k, v in before.items() if not k.startswith(FY_PREFIX)}
        totals = {k: v for k, v in totals.items() if not k.startswith(FY_PREFIX)}
    changes = [
        (key, before.get(key), after)
        for key, after in totals.items()
        if before.get(key) is None or round(after - before[key], 2) != 0
    ]
    changes += [(key, value, None) for key, value in before.items() if key not in totals]
    changes.sort(key=lambda c: -abs((c[2] or 0.0) - (c[1] or 0.0)))
    return [
        {
            "program": key,
            "last publish": money(old),
            "this run": money(new),
            "change": money((new or 0.0) - (old or 0.0)),
        }
        for key, old, new in changes[:limit]
    ]


def render_report(
    facts: RunFacts,
    payloads: Mapping[str, pd.DataFrame],
    program_names: pd.DataFrame | None = None,
) -> RunReport:
    """The page and its key figures, charts drawn in this process. ``payloads``: the computed
    payload frames by dataset id (any subset); ``program_names``: the ``bond_2020_program_names``
    table (docs/data-contract.md §3.1 G10), optional."""
    prepared = prepare(payloads, program_names)
    prepared.attach(charts.draw(prepared.specs))
    return render_prepared(facts, prepared)


def render_prepared(facts: RunFacts, prepared: Prepared) -> RunReport:
    """The page from prepared figures whose charts are attached."""
    started = time.perf_counter()
    sections = prepared.sections
    headline = _headline(facts, sections)
    page = _template().render(
        facts=facts,
        steps=list(facts.steps),
        datasets=_dataset_rows(facts),
        headline=headline,
        trust=_trust_sections(facts.trust),
        generated_at=_utc_text(dt.datetime.now(dt.UTC)),
        started_at=_utc_text(facts.started_at),
        finished_at=_utc_text(facts.finished_at) if facts.finished_at else None,
        freshness=_freshness_line(facts),
        money=money,
        percent=percent,
        **sections,
    )
    log.debug("report: page rendered in %.2f s, %d bytes", time.perf_counter() - started, len(page))
    return RunReport(page, headline)


def unavailable_page(facts: RunFacts) -> str:
    """A minimal page for when the report itself could not be built (the reason is in the run log)."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Bond reporting run</title></head>"
        f"<body><h1>Bond reporting run {html.escape(facts.status)}</h1><p>Run started {_utc_text(facts.started_at)}; "
        "the run report could not be built (see the run log).</p></body></html>"
    )


def write_report(page: str, path: str | Path) -> Path:
    """Write the page to ``path`` atomically (``storage.open_atomic``: readers see the old or the new file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with storage.open_atomic(target, "w", encoding="utf-8") as out:
        out.write(page)
    return target


@dataclass
class Delivery:
    """Where a run's report goes: local ``paths`` and, when publishing, the report ``bucket``
    (``run-reports/<UTC start time>.html`` and ``run-reports/latest.html``); and, once ``submit``
    was called, its figures and charts being drawn by ``worker`` while the run publishes."""

    paths: Sequence[Path] = ()
    bucket: storage.Bucket | None = None
    worker: ChartWorker | None = None
    prepared: Prepared | None = None
    # The destination's own copy (DIR/report.html), read before it is replaced; else the bucket's latest.
    destination_copy: Path | None = None

    def previous_page(self) -> str | None:
        """The report of the last run to this destination (None when there is none or it is unreadable)."""
        try:
            if self.destination_copy is not None:
                return self.destination_copy.read_text(encoding="utf-8") if self.destination_copy.is_file() else None
            if self.bucket is not None:
                with tempfile.TemporaryDirectory(prefix="bond-report-") as tmp:
                    self.bucket.download(LATEST_KEY, Path(tmp) / REPORT_NAME)
                    return (Path(tmp) / REPORT_NAME).read_text(encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - no previous report is not an error (first run, new bucket)
            log.debug("no previous run report: %s", exc)
        return None

    def submit(
        self, worker: ChartWorker, payloads: Mapping[str, pd.DataFrame], program_names: pd.DataFrame | None
    ) -> None:
        """Compute the page's figures now and let ``worker`` draw the charts meanwhile. Never raises:
        a problem is one warning line, and the page is then built in ``render`` as a whole."""
        self.worker = worker
        try:
            self.prepared = prepare(payloads, program_names)
            worker.submit(self.prepared.specs)
        except Exception as exc:  # noqa: BLE001 - the report must never stop the run
            log.warning("run report: figures not prepared: %s: %s", type(exc).__name__, exc)
            self.prepared = None

    def render(
        self, facts: RunFacts, payloads: Mapping[str, pd.DataFrame], program_names: pd.DataFrame | None
    ) -> RunReport:
        """The page: from the submitted figures and the worker's charts, else built here."""
        try:
            prepared = self.prepared if self.prepared is not None else prepare(payloads, program_names)
            if self.prepared is not None and self.worker is not None:
                prepared.attach(self.worker.results())
            else:
                prepared.attach(charts.draw(prepared.specs))
            moved = programs_moved(self.previous_page(), facts, program_totals(prepared))
            if moved:
                facts.trust = {**facts.trust, "programs_moved": moved}
            return render_prepared(facts, prepared)
        finally:
            if self.worker is not None:
                self.worker.close()

    def write(
        self, facts: RunFacts, payloads: Mapping[str, pd.DataFrame], program_names: pd.DataFrame | None
    ) -> dict[str, Any]:
        """Build and deliver the page: ``{"written": [where], "markdown": headline or None}``. Never raises."""
        rendered = self.render_or_none(facts, payloads, program_names)
        if rendered is None:
            return {"written": [], "markdown": None}
        return self.send(rendered, facts)

    def render_or_none(
        self, facts: RunFacts, payloads: Mapping[str, pd.DataFrame], program_names: pd.DataFrame | None
    ) -> RunReport | None:
        """The page, or None with one warning line: the report never fails the run (nor hides its outcome)."""
        try:
            return self.render(facts, payloads, program_names)
        except Exception as exc:  # noqa: BLE001
            log.warning("run report not built: %s: %s", type(exc).__name__, one_line(exc))
            return None

    def send(self, rendered: RunReport, facts: RunFacts, already: Sequence[str] = ()) -> dict[str, Any]:
        """Write the page to every place of this delivery (``already``: where it is written); one
        log line. Returns ``{"written": [where], "markdown": headline}``. Never raises."""
        try:
            written = [*already, *deliver(rendered.page, self, facts.started_at)]
        except Exception as exc:  # noqa: BLE001 - the data is published; the report is not the run's outcome
            log.warning("run report not written: %s: %s", type(exc).__name__, one_line(exc))
            written = list(already)
        log.info("run report: %d KB -> %s", len(rendered.page.encode()) // 1024, ", ".join(written) or NOT_WRITTEN)
        return {"written": written, "markdown": rendered.markdown(facts.status, written)}


# A failed --output-dir run leaves DIR as it was, report included (README "The run report").
NOT_WRITTEN = "not written (a failed --output-dir run leaves DIR as it was; --report PATH keeps a copy)"


def bucket_key(started_at: dt.datetime) -> str:
    """``run-reports/2026-11-30T081500Z.html``: sorts by time, no characters S3 or a shell dislike."""
    return f"{BUCKET_FOLDER}/{started_at.astimezone(dt.UTC):%Y-%m-%dT%H%M%SZ}.html"


def deliver(page: str, delivery: Delivery, started_at: dt.datetime) -> list[str]:
    """Write the page to every path and bucket key of ``delivery``; returns where it went."""
    written = [str(write_report(page, path)) for path in delivery.paths]
    if delivery.bucket is not None:
        with tempfile.TemporaryDirectory(prefix="bond-report-") as tmp:
            source = write_report(page, Path(tmp) / REPORT_NAME)
            for key in (bucket_key(started_at), LATEST_KEY):
                delivery.bucket.upload(source, key)
                written.append(f"{delivery.bucket.description}/{key}")
    return written


def link_of(location: str) -> str:
    """A link for a place ``deliver`` returned: ``s3://…`` as is, a folder bucket's or a local path as ``file://``."""
    if location.startswith(("s3://", "http://", "https://")):
        return location
    path = location.removeprefix("folder ")
    return Path(path).resolve().as_uri()


ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 300.0  # seconds the chart worker may take once it has its specs


class ChartWorker:
    """Draws the report's charts in a child process (``python -m bond_reporting.charts``), so the
    chart library's import and the drawing run beside this process's own work (reading tables,
    publishing) instead of adding to it. When the child cannot start or fails, the charts are
    drawn here instead (one warning line): the report never depends on the worker.

    ``start()`` at the beginning of a run; ``submit(specs)`` once the figures are known;
    ``results()`` when the page is assembled; ``close()`` always (a ``with`` block does it).
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: Any = None
        self._specs: list[charts.Spec] = []
        self._submitted = False

    @classmethod
    def start(cls) -> ChartWorker:
        worker = cls()
        try:
            worker._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
            worker._process = subprocess.Popen(
                [sys.executable, "-m", "bond_reporting.charts"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=worker._errors,
                env={**os.environ, "PYTHONPATH": path},
            )
        except OSError as exc:
            log.debug("chart worker not started (%s): charts are drawn in this process", exc)
            worker._process = None
        weakref.finalize(worker, _stop_quietly, worker._process)  # a run that failed early: no orphan
        return worker

    def submit(self, specs: Sequence[charts.Spec]) -> None:
        """Hand the charts to the worker (returns at once)."""
        self._specs = list(specs)
        if self._process is None:
            return
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(self._specs).encode() + b"\n")
            self._process.stdin.flush()
            self._submitted = True
        except OSError as exc:
            self._give_up(f"could not hand it the charts: {exc}")

    def results(self) -> list[Any]:
        """The drawn charts, in ``submit`` order: from the worker, else drawn here."""
        if self._process is not None and self._submitted:
            try:
                out, _ = self._process.communicate(timeout=WORKER_TIMEOUT)
                if self._process.returncode == 0:
                    results = json.loads(out)
                    if isinstance(results, list) and len(results) == len(self._specs):
                        return results
                self._give_up(f"exit code {self._process.returncode}: {self._error_text()}")
            except (subprocess.TimeoutExpired, OSError, ValueError) as exc:
                self._give_up(f"{type(exc).__name__}: {exc}")
        return charts.draw(self._specs)

    def close(self) -> None:
        """Stop the worker if it is still running (e.g. the run failed before its report)."""
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.communicate(timeout=5)  # closes its stdin: an idle worker exits at once
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._errors is not None:
            self._errors.close()
            self._errors = None

    def __enter__(self) -> ChartWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _give_up(self, why: str) -> None:
        log.warning("run report: the chart worker failed (%s); drawing the charts in this process", why)
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._submitted = False

    def _error_text(self) -> str:
        if self._errors is None:
            return ""
        self._errors.seek(0)
        lines = self._errors.read().decode(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else "no message"


def _stop_quietly(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


def _utc_text(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _freshness_line(facts: RunFacts) -> dict[str, str] | None:
    """The data's age on the run's day; the verdict of the freshness check when the run has one."""
    if not facts.data_as_of:
        return None
    age = (facts.started_at.date() - dt.date.fromisoformat(str(facts.data_as_of)[:10])).days
    verdicts = facts.trust.get("freshness") or []
    worst = "ok"
    for verdict in verdicts:
        status = str(verdict.get("verdict") or verdict.get("status") or "ok").lower()
        if status in ("error", "failed"):
            worst = "error"
        elif status in ("warn", "warning") and worst == "ok":
            worst = "warning"
    text = f"{age} day{'s' if age != 1 else ''} before the run"
    return {"age": text, "verdict": worst if verdicts else "", "days": str(age)}


def _dataset_rows(facts: RunFacts) -> list[dict[str, Any]]:
    titles = {d.id: d.title for d in cfg.DATASETS}
    return [
        {"id": dataset_id, "title": titles.get(dataset_id, ""), "rows": rows, "destination": facts.destination}
        for dataset_id, rows in facts.datasets.items()
    ]


def _headline(facts: RunFacts, sections: Mapping[str, Any]) -> list[dict[str, str]]:
    """Key figures: label, text, and a stable ``key`` (``data-figure`` in the page, used by tests)."""
    figures = []
    fy = sections.get("fy")
    if fy:
        # The fiscal year's own amounts, one basis for all three (the running totals, which also
        # carry other fiscal years, are in the FY section with their exact span: Q9).
        total: MonthlySeries = fy["total"]
        year = fy["year"]
        through = f" (through {total.to_date_month})" if total.to_date_month else ""
        figures += [
            {
                "key": "fy-expenses",
                "label": f"2020 bond expenses in FY {year} to date{through}",
                "value": money(total.expenses_to_date),
            },
            {
                "key": "fy-baseline-to-date",
                "label": f"2020 bond baseline for FY {year} to date{through}",
                "value": money(total.baseline_to_date),
            },
            {
                "key": "fy-planned",
                "label": f"2020 bond planned for FY {year} (whole year)",
                "value": money(total.planned[-1]),
            },
        ]
    bonds = sections.get("all_bonds")
    if bonds:
        figures += [
            {"key": "all-bonds-spent", "label": "All bonds spent", "value": money(bonds["spent"])},
            {"key": "all-bonds-appropriated", "label": "All bonds appropriated", "value": money(bonds["appropriated"])},
        ]
    figures.append({"key": "rows-published", "label": "Rows published", "value": f"{sum(facts.datasets.values()):,}"})
    return figures


def _fy_section(
    payloads: Mapping[str, pd.DataFrame],
    program_names: pd.DataFrame | None,
    dataset_id: str,
    which: str,
    *,
    charts_per_program: bool,
) -> dict[str, Any] | None:
    summary = payloads.get(dataset_id)
    if summary is None:
        return None
    result = program_series(summary, program_names)
    if result is None:
        return None
    total, programs = result
    year = summary_fiscal_year(summary)
    assert year is not None  # program_series found month labels
    size = (7.2, 3.0) if which == "current" else (6.0, 2.4)
    specs = [
        charts.Spec(
            "cumulative_chart",
            (
                f"{dataset_id}-total",
                f"FY {year} only, all programs: expenses, baseline and plan, cumulative from {total.months[0]}",
                total.months,
                total.expenses,
                total.baseline,
                total.planned,
            ),
            {"size": size},
        )
    ]
    charted = [series for series, _subs in programs[:MAX_PROGRAM_CHARTS]] if charts_per_program else []
    if charted:
        specs.append(
            charts.Spec(
                "small_cumulative_charts",
                (f"{dataset_id}-p", total.months, [(s.name, s.expenses, s.baseline, s.planned) for s in charted]),
            )
        )
    carried = carry_in_by_year(summary)
    return {
        "id": dataset_id,
        "which": which,
        "year": year,
        "total": total,
        "carried": [
            {"year": int(y), "later": y > year, "values": tuple(float(v) for v in row)}
            for y, row in zip(carried.index, carried.to_numpy(np.float64), strict=True)
        ],
        "span": carry_in_text(carried, year),
        "specs": specs,
        "charted": charted,
        "programs": programs,
        "not_charted": max(0, len(programs) - len(charted)) if charts_per_program else 0,
    }


def _attach_fy_charts(section: dict[str, Any], svgs: list[Any]) -> None:
    section["total_chart"] = svgs[0]
    smalls = svgs[1] if len(svgs) > 1 else []
    section["program_charts"] = [{"series": s, "svg": svg} for s, svg in zip(section["charted"], smalls, strict=True)]


def _all_bonds_section(payloads: Mapping[str, pd.DataFrame]) -> dict[str, Any] | None:
    needed = (EXPENSES_ALL_BONDS, LOOKUP_ALL_BONDS, METADATA_ALL_BONDS)
    if any(payloads.get(i) is None for i in needed):
        return None
    figures = all_bonds_figures(*(payloads[i] for i in needed))
    years = [
        {
            "year": int(year),
            "rows": rows,
            "spent": float(rows["spent"].sum()),
            "appropriated": float(rows["appropriated"].sum()) if rows["appropriated"].notna().any() else None,
        }
        for year, rows in figures.programs.groupby("bond_year", sort=True)
    ]
    programs = figures.programs
    if len(programs) > MAX_BARS:
        largest = programs[["appropriated", "spent"]].fillna(0.0).max(axis=1).nlargest(MAX_BARS).index
        programs = programs.loc[sorted(largest)]
    programs = programs.sort_values("bond_year", kind="stable")
    spec = charts.Spec(
        "spent_bars",
        (
            "all-bonds",
            "Spent against appropriated, per bond year and program"
            + (f" (the {MAX_BARS} largest)" if len(programs) < len(figures.programs) else ""),
            [f"{year} · {name}" for year, name in zip(programs["bond_year"], programs["program_name"], strict=True)],
            [float(v) for v in programs["spent"]],
            [None if np.isnan(v) else float(v) for v in programs["appropriated"]],
        ),
    )
    return {
        "years": years,
        "specs": [spec],
        "not_charted": len(figures.programs) - len(programs),
        "figures": figures,
        "spent": float(figures.programs["spent"].sum()),
        "appropriated": float(figures.programs["appropriated"].sum()),
        "unmapped_spent": float(figures.unmapped["spent"].sum()),
        "unnamed_spent": float(figures.unnamed["spent"].sum()) if len(figures.unnamed) else 0.0,
    }


# Trust sections (issue 10) the page knows by name, in page order, with their headings.
TRUST_SECTIONS = {
    "changes": "What changed since the last publish to this destination",
    "programs_moved": "Programs whose totals moved most",
    "guard": "Change guard",
    "freshness": "Freshness",
    "reconciliation": "Reconciliation per hop",
    "unmapped": "AIMS groups without a lookup entry (not in the summary tables)",
    "duplicates": "Duplicate rows dropped (docs/data-contract.md Q5)",
}


# Shown under "What changed since the last publish"; the others under "Data notes".
CHANGE_SECTIONS = ("changes", "programs_moved", "guard")


def _trust_sections(trust: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each present section as a heading + a table (columns = the keys of its records), known ones first."""
    order = [k for k in TRUST_SECTIONS if k in trust] + [
        k for k in trust if k not in TRUST_SECTIONS and k != "warnings"
    ]
    sections = []
    for key in order:
        records = trust[key]
        if isinstance(records, Mapping):
            records = [records]
        records = [r if isinstance(r, Mapping) else {"": r} for r in records or []]
        if key == "changes":
            records = _changes_long(records)
        columns = list(dict.fromkeys(c for r in records for c in r))
        sections.append(
            {
                "group": "changes" if key in CHANGE_SECTIONS else "notes",
                "key": key,
                "title": TRUST_SECTIONS.get(key, key.replace("_", " ").capitalize()),
                "columns": columns,
                "rows": [[_cell(r.get(c), c) for c in columns] for r in records],
            }
        )
    return sections


_DECIMAL_TEXT = re.compile(r"-?\d+\.\d+")


def _changes_long(records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-dataset change rows (``dataset``, ``old rows``/``new rows``, ``old X``/``new X`` per money
    figure, anything else) as one row per dataset and figure: last publish → this run."""
    out: list[dict[str, Any]] = []
    for record in records:
        figures = [k[4:] for k in record if k.startswith("new ")]
        for figure in figures:
            old, new = record.get(f"old {figure}"), record.get(f"new {figure}")
            if old is None and new is None:
                continue
            out.append(
                {
                    "dataset": record.get("dataset"),
                    "figure": figure,
                    "last publish": old,
                    "this run": new,
                    "change": _difference(old, new),
                }
            )
        rest = {k: v for k, v in record.items() if k != "dataset" and not k.startswith(("old ", "new ")) and v}
        for name, value in rest.items():
            out.append({"dataset": record.get("dataset"), "figure": name, "this run": value})
    return out


def _difference(old: Any, new: Any) -> str | None:
    try:
        if old is None or new is None:
            return None
        return format(Decimal(str(new)) - Decimal(str(old)), "+,")
    except ArithmeticError:
        return None


def _cell(value: Any, column: str = "") -> str:
    """A trust table cell: numbers with thousands separators (exact decimal text stays exact),
    except years."""
    if value is None:
        return "\u2014"
    if "year" in column.lower():
        return str(value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
        return f"{Decimal(value):,}"
    return str(value)


@cache
def _template():
    import jinja2
    import markupsafe

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    # Our own files and our own matplotlib output: inserted as they are (escaping would break them).
    env.globals["inline_css"] = markupsafe.Markup((TEMPLATES / "report.css").read_text(encoding="utf-8"))
    env.filters["svg"] = markupsafe.Markup
    return env.get_template("report.html.j2")
