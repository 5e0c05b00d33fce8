"""The seven published tables, computed with pandas: DataFrames in, DataFrames out, no I/O.

Specification: docs/data-contract.md §5 (what each dataset holds) and §6 (the original's quirks, kept
on purpose because the published numbers depend on them). Inputs are the frames
``database.read_tables`` returns: the table columns of §3.1 in order, text as ``str``, ints as
int64, float-validated numerics as float64, int-validated numerics as int64, dates as ISO
``YYYY-MM-DD`` strings and ``updated_at`` as an ISO string.

Outputs are payload frames: exactly the published fields in order, one row per record, in
publish order, with dtypes that decide the JSON kinds (float64 → float, int64 → int, NaN → null;
see ``socrata.render_records``). Money is float64 throughout (§2.3).

Everything is vectorised: zero-fills are cross products built from factorized codes, running sums
are group-wise cumulative sums, labels are built column-wise. The original re-scanned the table
once per (fiscal year, date, group) triple (Q23); this does one pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property

import numpy as np
import pandas as pd

from bond_reporting.errors import ValidationError
from bond_reporting.logs import plural
from config import datasets as cfg
from config import sources

log = logging.getLogger(__name__)

AIMS = "aims_dept_prog_act"
DASH = "dashboard_deptfundprogact"
LABEL = "table_col"
# Published expense dates are floating timestamps with a literal zero time (§2.2).
SOCRATA_TIME_SUFFIX = "T00:00:00.000"

# Input columns of the expense calculations: the registry's table columns (docs/data-contract.md §3.1).
COLUMNS_2020 = (*sources.EXPENSES_2020.column_names, sources.UPDATED_AT)
COLUMNS_ALL_BONDS = (*sources.EXPENSES_ALL_BONDS.column_names, sources.UPDATED_AT)

# Published fields, in order (docs/data-contract.md §5.2–§5.6).
FIELDS_EXPENSES_2020 = (*COLUMNS_2020, AIMS, "sum_obligated", "sum_expenses")
FIELDS_ALL_BONDS = (*COLUMNS_ALL_BONDS, AIMS, "sum_obligated", "sum_expenses")
FIELDS_SUMMARY = (LABEL, DASH, "Expenses", "Baseline", "Planned", "Sum_expenses", "Sum_baseline", "Sum_planned")
FIELDS_METADATA = (
    DASH,
    "department_name",
    "bond_year",
    "program_name",
    "sub_program_name",
    "program_sort",
    "sub_program_sort",
    "updated_at",
    "appropriated",
)
FIELDS_LOOKUP = (AIMS, DASH, "updated_at")

# How many duplicate (group, date) pairs a Q5 warning spells out before summarising the rest.
_WARN_PAIRS_SHOWN = 10


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _date_parts(dates: pd.Series, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Factorize ISO date strings → (codes, year per unique date, month per unique date).

    Parsing only the distinct dates keeps this cheap on large frames.
    """
    codes, uniques = pd.factorize(dates, sort=True)
    if len(uniques) == 0:
        empty = np.array([], dtype=np.int64)
        return codes, empty, empty
    parsed = pd.to_datetime(pd.Index(uniques, dtype=object), format="%Y-%m-%d", errors="coerce")
    if parsed.isna().any():
        bad = pd.Index(uniques)[parsed.isna()][0]
        raise ValidationError(f"{what}: date {bad!r} is not an ISO date YYYY-MM-DD")
    return codes, parsed.year.to_numpy(np.int64), parsed.month.to_numpy(np.int64)


def fiscal_year_from_parts(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    """City fiscal year (§2.1): October–December belong to the next calendar year's FY."""
    return np.asarray(year, dtype=np.int64) + (np.asarray(month, dtype=np.int64) >= 10)


def fiscal_year_of(dates: pd.Series) -> pd.Series:
    """City fiscal year (int64) of each ISO date string, e.g. '2021-10-01' → 2022 (§2.1)."""
    codes, years, months = _date_parts(pd.Series(dates), "fiscal_year_of")
    per_date = fiscal_year_from_parts(years, months)
    index = dates.index if isinstance(dates, pd.Series) else None
    return pd.Series(per_date[codes], index=index, dtype=np.int64, name="fiscal_year")


def aims_group_id(department: pd.Series, *parts: pd.Series) -> pd.Series:
    """AIMS group id (§5.1): integer department as decimal text + the text parts, no separators.

    ``aims_group_id(6200, '86A0', '62A1', '1AB')`` → ``'620086A062A11AB'``. The department must be
    a whole number: formatting it as a float (``6200.0``) would silently break every lookup (Q17).
    """
    numbers = pd.to_numeric(department)
    whole = numbers.notna() & (numbers == np.floor(numbers))
    if not whole.all():
        bad = department[~whole].iloc[0]
        raise ValidationError(f"department {bad!r} is not a whole number; AIMS group ids need integers")
    out = numbers.astype(np.int64).astype(str)
    for part in parts:
        out = out + part.astype(str)
    return out.rename(AIMS)


def _month_labels(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    """'YYYY MM' labels (4-digit calendar year, 2-digit month)."""
    return (pd.Series(year, dtype=np.int64).astype(str) + " " + pd.Series(month).astype(str).str.zfill(2)).to_numpy(
        object
    )


def _fiscal_year_labels(fiscal_year: np.ndarray) -> np.ndarray:
    """'0FY yy' labels, yy = the last two digits of the fiscal year."""
    return ("0FY " + pd.Series(fiscal_year, dtype=np.int64).astype(str).str[-2:]).to_numpy(object)


def label_expense(booked_fy: np.ndarray, year: np.ndarray, month: np.ndarray, target_fy: int) -> np.ndarray:
    """``table_col`` of expense rows for target fiscal year T (§5.4.2).

    Booked FY = T: the date's month if the date lies in FY T, else clamped to ``'T 09'`` (posted
    after FY T ended) or ``'T-1 10'`` (posted before it began). Booked FY ≠ T: ``'0FY yy'`` of the
    booked FY (no clamping).
    """
    booked = np.asarray(booked_fy, dtype=np.int64)
    year, month = np.asarray(year, dtype=np.int64), np.asarray(month, dtype=np.int64)
    date_fy = fiscal_year_from_parts(year, month)
    in_target = np.where(
        date_fy > target_fy,
        f"{target_fy} 09",
        np.where(date_fy < target_fy, f"{target_fy - 1} 10", _month_labels(year, month)),
    )
    return np.where(booked == target_fy, in_target, _fiscal_year_labels(booked)).astype(object)


def label_plan(year: np.ndarray, month: np.ndarray, target_fy: int) -> np.ndarray:
    """``table_col`` of baseline and spend-plan rows (§5.4.2): the month inside FY T, else '0FY yy'
    of the date's own fiscal year."""
    year, month = np.asarray(year, dtype=np.int64), np.asarray(month, dtype=np.int64)
    date_fy = fiscal_year_from_parts(year, month)
    return np.where(date_fy == target_fy, _month_labels(year, month), _fiscal_year_labels(date_fy)).astype(object)


def socrata_dates(dates: pd.Series) -> pd.Series:
    """ISO dates → Socrata floating timestamps 'YYYY-MM-DDT00:00:00.000' (formats each distinct date once)."""
    codes, uniques = pd.factorize(dates)
    formatted = np.asarray([f"{d}{SOCRATA_TIME_SUFFIX}" for d in uniques], dtype=object)
    return pd.Series(formatted[codes] if len(codes) else np.array([], dtype=object), index=dates.index, dtype=str)


def _require(frame: pd.DataFrame, table: str, columns: Sequence[str]) -> pd.DataFrame:
    """The frame with a fresh RangeIndex, or a ValidationError naming the missing columns."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValidationError(f"table {table} lacks column(s) {', '.join(missing)}")
    return frame.reset_index(drop=True)


def _zero_fill(src: pd.DataFrame, keys: Sequence[str], *, sums_per: Sequence[str]) -> pd.DataFrame:
    """Source rows + one zero filler per cell of the cross product of the distinct ``keys`` values
    that has no source row (obligated = expenses = 0.0, the other columns null); sorted by ``keys``
    (stable: source duplicates keep their order); ``sum_obligated``/``sum_expenses`` running per
    ``sums_per`` (a subset of ``keys``) in that order. Shared by §5.2 and §5.3."""
    codes, values = [], []
    for key in keys:
        key_codes, uniques = pd.factorize(src[key], sort=True)
        codes.append(key_codes.astype(np.int64))
        array = np.asarray(uniques)
        values.append(array if array.dtype.kind in "iu" else np.asarray(uniques, dtype=object))
    sizes = [len(v) for v in values]
    present = np.zeros(int(np.prod(sizes, dtype=np.int64)), dtype=bool)
    present[_cell(codes, sizes)] = True
    missing = np.flatnonzero(~present)
    fill_codes = []
    for size in reversed(sizes):  # decode cell numbers, last key fastest
        missing, code = np.divmod(missing, max(size, 1))
        fill_codes.insert(0, code)
    fillers = pd.DataFrame({key: values[i][fill_codes[i]] for i, key in enumerate(keys)})
    fillers["obligated"], fillers["expenses"] = 0.0, 0.0
    filled = pd.concat([src, fillers], ignore_index=True)

    all_codes = [np.concatenate([c, f]).astype(np.int64) for c, f in zip(codes, fill_codes, strict=True)]
    order = np.argsort(_cell(all_codes, sizes), kind="stable")
    filled = filled.take(order).reset_index(drop=True)
    per = [keys.index(key) for key in sums_per]
    groups = _cell([all_codes[i][order] for i in per], [sizes[i] for i in per])
    sums = _running_sums(filled[["obligated", "expenses"]], groups)
    filled["sum_obligated"] = sums["obligated"].to_numpy()
    filled["sum_expenses"] = sums["expenses"].to_numpy()
    return filled


def _cell(codes: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray:
    """One number per row for its combination of codes (mixed radix, the first code slowest)."""
    cell = np.zeros(len(codes[0]) if codes else 0, dtype=np.int64)
    for key_codes, size in zip(codes, sizes, strict=True):
        cell = cell * size + key_codes
    return cell


def _running_sums(values: pd.DataFrame, group_codes: np.ndarray) -> pd.DataFrame:
    """Running totals per group, in row order; NaN rows stay NaN and are skipped (§5.4.5 step 5)."""
    return values.groupby(group_codes, sort=False).cumsum()


# ---------------------------------------------------------------------------------------------
# 2020 bond expenses: vs3t-h2aj, jdna-s8qn (§5.2)
# ---------------------------------------------------------------------------------------------


def zero_fill_2020(raw: pd.DataFrame) -> pd.DataFrame:
    """Source rows + zero fillers for the full FY × date × AIMS group cross product, with running sums.

    A filler is added for every (fiscal_year, date, group) with no source row — including dates
    outside that FY (Q3) — with obligated = expenses = 0.0 and null fund/department/group/
    division/updated_at. Source duplicates are kept (Q4). Rows are sorted by date, then group,
    then fiscal year (stable, so duplicates stay in source order; Q6 allows any order within a
    date). ``sum_obligated``/``sum_expenses`` run per (group, fiscal_year) in that order.

    Returns the table columns (``date`` still ISO, ``department`` float) + aims id + the two sums.
    """
    src = _require(raw, cfg.EXPENSES_2020, COLUMNS_2020)[list(COLUMNS_2020)]
    src[AIMS] = aims_group_id(src["department"], src["fund"], src["division"], src["group"])
    filled = _zero_fill(src, ("date", AIMS, "fiscal_year"), sums_per=(AIMS, "fiscal_year"))
    filled["fiscal_year"] = filled["fiscal_year"].astype(np.int64)
    filled["department"] = filled["department"].astype(np.float64)  # Q7: published as float, null on fillers
    return filled


def latest_booked_fiscal_year(raw: pd.DataFrame) -> int | None:
    """The 'latest' FY of §5.2 step 6: the maximum booked ``fiscal_year`` of the 2020 source rows."""
    if raw.empty:
        return None
    return int(raw["fiscal_year"].max())


def expenses_2020_payload(filled: pd.DataFrame) -> pd.DataFrame:
    """The published 2020 expense records (§5.2) from ``zero_fill_2020`` rows: dates as Socrata timestamps."""
    out = filled.loc[:, list(FIELDS_EXPENSES_2020)].copy()
    out["date"] = socrata_dates(out["date"])
    return out.reset_index(drop=True)


def expenses_2020_before(filled: pd.DataFrame, latest_fy: int | None) -> pd.DataFrame:
    """jdna-s8qn (§5.2 step 7): the rows booked to any FY before the latest (Q1), same order."""
    if latest_fy is None:
        return expenses_2020_payload(filled.iloc[:0])
    return expenses_2020_payload(filled[filled["fiscal_year"].to_numpy() < latest_fy])


# ---------------------------------------------------------------------------------------------
# All-bonds expenses: rrww-ybw6 (§5.3)
# ---------------------------------------------------------------------------------------------


def zero_fill_all_bonds(raw: pd.DataFrame) -> pd.DataFrame:
    """All-bonds payload (§5.3): first source row per (group, date), zero fillers, running sums per group.

    Later source rows for an already-seen (group, date) are dropped, not summed (Q5); a warning
    names how many and which. Exactly one row per (date, group) of the DATES × GROUPS cross
    product, sorted by date then group; ``sum_*`` run per AIMS group over all dates.
    """
    src = _require(raw, cfg.EXPENSES_ALL_BONDS, COLUMNS_ALL_BONDS)[list(COLUMNS_ALL_BONDS)]
    src[AIMS] = aims_group_id(src["department"], src["fund_code"], src["division_code"], src["group_code"])

    duplicated = src.duplicated([AIMS, "date"], keep="first").to_numpy()
    if duplicated.any():
        _warn_dropped_duplicates(src.loc[duplicated, [AIMS, "date"]])
        src = src.loc[~duplicated].reset_index(drop=True)

    # After dropping duplicates each (date, group) cell has at most one source row.
    filled = _zero_fill(src, ("date", AIMS), sums_per=(AIMS,))
    filled["department"] = filled["department"].astype(np.float64)  # Q7
    filled["date"] = socrata_dates(filled["date"])
    return filled.loc[:, list(FIELDS_ALL_BONDS)]


def _warn_dropped_duplicates(dropped: pd.DataFrame) -> None:
    pairs = dropped.drop_duplicates()
    shown = ", ".join(f"({group}, {date})" for group, date in pairs.head(_WARN_PAIRS_SHOWN).itertuples(index=False))
    more = f" and {len(pairs) - _WARN_PAIRS_SHOWN} more" if len(pairs) > _WARN_PAIRS_SHOWN else ""
    log.warning(
        "%s: dropped %d duplicate row(s) of %d (group, date) pair(s), keeping the first source row of each "
        "as the original did (docs/data-contract.md Q5): %s%s",
        cfg.EXPENSES_ALL_BONDS,
        len(dropped),
        len(pairs),
        shown,
        more,
    )


# ---------------------------------------------------------------------------------------------
# Summary tables: hq9n-d77y, 5ewg-ssu3 (§5.4)
# ---------------------------------------------------------------------------------------------


def current_fiscal_year(current_plan: pd.DataFrame) -> int:
    """CUR (§5.4.1): the latest City fiscal year of any date in the current-FY spend plan (Q2)."""
    plan = _require(current_plan, cfg.CURRENT_PLAN_2020, ("date",))
    if plan.empty:
        raise ValidationError(
            f"table {cfg.CURRENT_PLAN_2020} is empty: the current fiscal year of the summary tables "
            "is the latest fiscal year of its dates"
        )
    _codes, years, months = _date_parts(plan["date"], cfg.CURRENT_PLAN_2020)
    return int(fiscal_year_from_parts(years, months).max())


def expense_month_totals(filled: pd.DataFrame) -> pd.DataFrame:
    """Filled 2020 expenses summed per (AIMS group, booked FY, calendar month): the expense side's input.

    Labels depend only on these three (§5.4.2), so summing first keeps the label work small.
    Fillers count: a month/FY a filler lands on gets an entry of 0.0 rather than null (Q13).
    """
    codes, years, months = _date_parts(filled["date"], cfg.EXPENSES_2020)
    month_key = (years * 100 + months)[codes] if len(codes) else np.array([], dtype=np.int64)
    keyed = pd.DataFrame(
        {
            AIMS: filled[AIMS].to_numpy(object),
            "fiscal_year": filled["fiscal_year"].to_numpy(np.int64),
            "month_key": month_key,
            "expenses": filled["expenses"].to_numpy(np.float64),
        }
    )
    totals = keyed.groupby([AIMS, "fiscal_year", "month_key"], sort=False, as_index=False)["expenses"].sum()
    totals["year"], totals["month"] = np.divmod(totals["month_key"].to_numpy(np.int64), 100)
    return totals


def _expense_side(month_totals: pd.DataFrame, lookup: pd.DataFrame, target_fy: int) -> pd.Series:
    """Expenses(label, dashboard id), §5.4.3: inner join on the lookup (duplicates double-count,
    unmapped groups vanish: Q11), labelled with the booked FY (Q12)."""
    mapped = month_totals.merge(lookup[[AIMS, DASH]].dropna(), on=AIMS, how="inner")
    mapped[LABEL] = label_expense(mapped["fiscal_year"], mapped["year"], mapped["month"], target_fy)
    return mapped.groupby([LABEL, DASH])["expenses"].sum().astype(np.float64).rename("Expenses")


def _plan_side(frame: pd.DataFrame, table: str, target_fy: int, name: str) -> pd.Series:
    """Baseline or Planned(label, dashboard id), §5.4.4: amounts labelled by their date's own FY."""
    rows = _require(frame, table, (DASH, "date", "amount"))
    codes, years, months = _date_parts(rows["date"], table)
    labels = label_plan(years, months, target_fy)[codes] if len(codes) else np.array([], dtype=object)
    keyed = pd.DataFrame({LABEL: labels, DASH: rows[DASH].to_numpy(object), name: rows["amount"].to_numpy(np.float64)})
    return keyed.groupby([LABEL, DASH])[name].sum().astype(np.float64)


def summary_table(
    month_totals: pd.DataFrame,
    lookup: pd.DataFrame,
    baseline: pd.DataFrame,
    plan: pd.DataFrame,
    target_fy: int,
    *,
    plan_table: str,
    drop_label: str | None = None,
) -> pd.DataFrame:
    """A summary table (§5.4.5) for target fiscal year ``target_fy``.

    Rows: the union of (label, dashboard id) keys having an expense or a baseline entry; plan-only
    keys are dropped (Q11). Missing sides are null. ``drop_label`` removes one label (the
    previous-FY table drops ``'0FY <CUR-2000>'``: Q10). Rows sorted by (label, dashboard id) as
    strings, so every '0FY' label precedes the months (Q9); ``Sum_*`` are running totals per
    dashboard id in that order, null where the value is null.
    """
    lookup = _require(lookup, cfg.LOOKUP_2020, (AIMS, DASH))
    expenses = _expense_side(month_totals, lookup, target_fy)
    baselines = _plan_side(baseline, cfg.BASELINE_2020, target_fy, "Baseline")
    planned = _plan_side(plan, plan_table, target_fy, "Planned")

    keys = expenses.index.union(baselines.index)
    table = pd.DataFrame(
        {
            "Expenses": expenses.reindex(keys),
            "Baseline": baselines.reindex(keys),
            "Planned": planned.reindex(keys),
        },
        index=keys,
    ).astype(np.float64)
    table.index.names = [LABEL, DASH]
    table = table.reset_index()
    if drop_label is not None:
        table = table[table[LABEL] != drop_label]
    table = table.sort_values([LABEL, DASH], kind="stable").reset_index(drop=True)

    group_codes, _ = pd.factorize(table[DASH])
    sums = _running_sums(table[["Expenses", "Baseline", "Planned"]], group_codes)
    table["Sum_expenses"] = sums["Expenses"].to_numpy()
    table["Sum_baseline"] = sums["Baseline"].to_numpy()
    table["Sum_planned"] = sums["Planned"].to_numpy()
    table[LABEL] = table[LABEL].astype(str)
    table[DASH] = table[DASH].astype(str)
    return table.loc[:, list(FIELDS_SUMMARY)]


def previous_year_drop_label(current_fy: int) -> str:
    """The label the previous-FY table removes: built as '0FY ' + (CUR − 2000), as the original did
    (so it only matches the two-digit labels for CUR in 2010–2099: Q22)."""
    return f"0FY {current_fy - 2000}"


# ---------------------------------------------------------------------------------------------
# All-bonds metadata and lookup: 9ufs-k2md, mri6-eexh (§5.5, §5.6)
# ---------------------------------------------------------------------------------------------


def all_bonds_metadata(programs: pd.DataFrame, appropriations: pd.DataFrame) -> pd.DataFrame:
    """One record per program-names row, source order, with ``appropriated`` = the sum of all its
    appropriation amounts (any date). Programs without appropriations get null, which makes the
    whole column float (Q14); otherwise it stays int. Appropriations of unknown ids are not published.
    """
    programs = _require(programs, cfg.PROGRAM_NAMES, FIELDS_METADATA[:-1])
    appropriations = _require(appropriations, cfg.APPROPRIATIONS, (DASH, "amount"))
    totals = appropriations.groupby(DASH, sort=False)["amount"].sum()
    out = programs.loc[:, list(FIELDS_METADATA[:-1])].copy()
    appropriated = out[DASH].map(totals)
    if appropriated.isna().any() or appropriated.dtype == object:
        appropriated = appropriated.astype(np.float64)
    out["appropriated"] = appropriated
    return out


def all_bonds_lookup(lookup: pd.DataFrame) -> pd.DataFrame:
    """mri6-eexh (§5.6): the all-bonds lookup rows unchanged, in source order."""
    return _require(lookup, cfg.LOOKUP_ALL_BONDS, FIELDS_LOOKUP).loc[:, list(FIELDS_LOOKUP)]


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


class _Inputs:
    """The input tables plus the intermediate results several datasets share, each computed once."""

    def __init__(self, tables: Mapping[str, pd.DataFrame]) -> None:
        self._tables = tables

    def table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            raise ValidationError(f"table {name} was not read; the calculation needs it")
        return self._tables[name]

    @cached_property
    def filled_2020(self) -> pd.DataFrame:
        return zero_fill_2020(self.table(cfg.EXPENSES_2020))

    @cached_property
    def month_totals_2020(self) -> pd.DataFrame:
        return expense_month_totals(self.filled_2020)

    @cached_property
    def current_fy(self) -> int:
        return current_fiscal_year(self.table(cfg.CURRENT_PLAN_2020))

    def summary(self, target_fy: int, plan_table: str, drop_label: str | None) -> pd.DataFrame:
        return summary_table(
            self.month_totals_2020,
            self.table(cfg.LOOKUP_2020),
            self.table(cfg.BASELINE_2020),
            self.table(plan_table),
            target_fy,
            plan_table=plan_table,
            drop_label=drop_label,
        )


BUILDERS: dict[str, Callable[[_Inputs], pd.DataFrame]] = {
    "expenses_2020_all_years": lambda i: expenses_2020_payload(i.filled_2020),
    "expenses_2020_before_latest_year": lambda i: expenses_2020_before(
        i.filled_2020, latest_booked_fiscal_year(i.table(cfg.EXPENSES_2020))
    ),
    "expenses_all_bonds": lambda i: zero_fill_all_bonds(i.table(cfg.EXPENSES_ALL_BONDS)),
    "summary_current_year": lambda i: i.summary(i.current_fy, cfg.CURRENT_PLAN_2020, None),
    "summary_previous_year": lambda i: i.summary(
        i.current_fy - 1, cfg.PREVIOUS_PLAN_2020, previous_year_drop_label(i.current_fy)
    ),
    "all_bonds_metadata": lambda i: all_bonds_metadata(i.table(cfg.PROGRAM_NAMES), i.table(cfg.APPROPRIATIONS)),
    "all_bonds_lookup": lambda i: all_bonds_lookup(i.table(cfg.LOOKUP_ALL_BONDS)),
}
assert set(BUILDERS) == {d.builder for d in cfg.DATASETS}, "config/datasets.py and BUILDERS disagree"


# Money inputs (table → money columns, config/sources.py) and the published fields derived from them by additions.
MONEY_INPUTS = {source.table: source.money_columns for source in sources.SOURCES if source.money_columns}
MONEY_FIELDS = frozenset(
    {"obligated", "expenses", "sum_obligated", "sum_expenses", "Expenses", "Baseline", "Planned"}
    | {"Sum_expenses", "Sum_baseline", "Sum_planned"}
)


def in_whole_cents(tables: Mapping[str, pd.DataFrame]) -> bool:
    """True when every money input present is a whole number of cents (as real amounts are)."""
    for table, columns in MONEY_INPUTS.items():
        if table in tables:
            for column in columns:
                cents = tables[table][column].to_numpy(np.float64) * 100
                if not np.all(np.abs(cents - np.round(cents)) < 1e-6):
                    return False
    return True


def round_money_to_cents(payload: pd.DataFrame) -> pd.DataFrame:
    """Money fields rounded to cents: removes float-addition noise (64703.37999999999 → 64703.38).

    Only valid when every input was whole cents: the exact sum is then a whole number of cents and
    the float error is far below half a cent, so this yields the exact decimal sum (well within the
    contract's 1e-6 tolerance). ``+ 0.0`` turns a rounded -0.0 into 0.0.
    """
    columns = [c for c in payload.columns if c in MONEY_FIELDS]
    if columns:
        payload = payload.copy()
        payload[columns] = payload[columns].round(2) + 0.0
    return payload


def build_payloads(tables: Mapping[str, pd.DataFrame], only: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Compute the payload frame of every dataset (or of those in ``only``), keyed by dataset id,
    in publish order. Money is exact to the cent when the inputs are (see ``round_money_to_cents``).
    Raises ValidationError (nothing partial is returned) when an input is unusable."""
    inputs = _Inputs(tables)
    cents = in_whole_cents(tables)
    payloads: dict[str, pd.DataFrame] = {}
    for dataset in cfg.select(only):
        started = time.perf_counter()
        payload = BUILDERS[dataset.builder](inputs).reset_index(drop=True)
        payloads[dataset.id] = round_money_to_cents(payload) if cents else payload
        log.debug(
            "computed %s: %d %s in %.2f s",
            dataset.id,
            len(payloads[dataset.id]),
            plural(len(payloads[dataset.id]), "row"),
            time.perf_counter() - started,
        )
    return payloads


def newest_expense_date(tables: Mapping[str, pd.DataFrame]) -> str | None:
    """The newest ``date`` across the expense tables present ('YYYY-MM-DD'), for the freshness line."""
    newest = [str(tables[name]["date"].max()) for name in cfg.EXPENSE_TABLES if name in tables and len(tables[name])]
    return max(newest) if newest else None
