"""Reconciliation, exact to the cent, at every hop (issue 10 item 2). Pure: frames and numbers in.

Money totals are exact decimals (``Decimal``), never float sums compared with a tolerance:

* a float amount counts as the exact decimal value of its shortest repr (``repr(12.34)`` is
  ``'12.34'``: the value the CSV text said and PostgreSQL's ``numeric`` stores). When every
  value of a column is a whole number of cents (as real amounts are), the total is an ``int64``
  sum of cents, which is exact and fast; otherwise each value's repr is summed as a ``Decimal``;
* PostgreSQL sums ``numeric`` exactly (``history.table_figures``).

Hops (docs/data-contract.md §5 for the calculations):

* export: the rows and money totals of the CSV written equal those of the pages received;
* load: per table, rows and money totals in PostgreSQL after COPY equal the validated file's,
  checked inside the load transaction, before commit;
* calculate: 2020 bond, per booked fiscal year: raw expenses/obligations = sum over AIMS groups of
  the last running sums of ``vs3t-h2aj`` (§5.2); all bonds: raw totals − the duplicates Q5 drops =
  ``rrww-ybw6``'s last running sums (§5.3). Expenses of AIMS groups without a lookup entry (Q11)
  do not reach the summary tables: ``unmapped_groups`` lists them (group, fiscal year, amount).

A difference that is not explained this way raises ``ReconciliationError`` (one line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pandas as pd

from bond_reporting.calculations import aims_group_id
from bond_reporting.errors import ReconciliationError
from bond_reporting.logs import plural
from config import datasets as cfg

CENT = Decimal("0.01")
_MAX_CENTS = 2**51  # below this, float64 resolves every cent: round(x * 100) is the exact cent count

AIMS = "aims_dept_prog_act"
DASH = "dashboard_deptfundprogact"


# ---------------------------------------------------------------------------------------------
# Exact totals
# ---------------------------------------------------------------------------------------------


def exact_total(values: pd.Series | np.ndarray | Sequence[float]) -> Decimal:
    """The exact decimal sum of a money column (floats as their shortest repr; ints exactly;
    missing values skipped). Fast path: whole cents summed as integers."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return Decimal(int(array.sum(dtype=np.int64))) if len(array) else Decimal(0)
    if array.dtype.kind != "f":
        array = pd.to_numeric(pd.Series(array), errors="raise").to_numpy(np.float64)
    array = array[~np.isnan(array)]
    if not len(array):
        return Decimal(0)
    cents = np.round(array * 100.0)
    if np.all(np.abs(cents) < _MAX_CENTS) and np.array_equal(cents / 100.0, array):
        as_int = cents.astype(np.int64)
        if len(array) * float(np.abs(cents).max()) < 2**62:
            return Decimal(int(as_int.sum())).scaleb(-2)
        return Decimal(sum(int(v) for v in as_int)).scaleb(-2)
    return sum((Decimal(repr(float(v))) for v in array), Decimal(0))


def money_totals(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, Decimal]:
    """``{column: exact total}`` for the money columns present in ``frame``."""
    return {column: exact_total(frame[column]) for column in columns if column in frame}


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def money_text(value: Decimal) -> str:
    """A total for a log line: 1,234,567.89 (to the cent, or exact if it has more digits)."""
    exact = value.normalize()
    if exact == to_cents(value):
        return f"{to_cents(value):,.2f}"
    return f"{value:,f}"


@dataclass(frozen=True)
class Figures:
    """Rows and exact money totals of one report, table or payload."""

    rows: int
    money: dict[str, Decimal] = field(default_factory=dict)

    def describe(self) -> str:
        money = ", ".join(f"{name} {money_text(total)}" for name, total in self.money.items())
        return f"{self.rows} {plural(self.rows, 'row')}" + (f", {money}" if money else "")


def differences(expected: Figures, actual: Figures) -> list[str]:
    """What differs between two sets of figures: ``'rows 10 vs 9'``, ``'expenses 1.00 vs 0.99'``."""
    out = []
    if expected.rows != actual.rows:
        out.append(f"rows {expected.rows} vs {actual.rows}")
    for name in dict.fromkeys([*expected.money, *actual.money]):
        want, got = expected.money.get(name), actual.money.get(name)
        if want is None or got is None or want != got:
            out.append(f"{name} {_text(want)} vs {_text(got)}")
    return out


def _text(value: Decimal | None) -> str:
    return "missing" if value is None else money_text(value)


def check(hop: str, subject: str, expected: Figures, actual: Figures, *, what: tuple[str, str]) -> str:
    """Raise ReconciliationError naming the hop, the subject and each difference; else return the
    'reconciled' line. ``what`` names the two sides, e.g. ``("pages received", "CSV written")``."""
    diffs = differences(expected, actual)
    if diffs:
        raise ReconciliationError(
            f"reconciliation failed at {hop}: {subject}: {what[0]} vs {what[1]}: {'; '.join(diffs)}"
        )
    return f"reconciled {hop}: {subject}: {what[0]} = {what[1]} ({actual.describe()})"


# ---------------------------------------------------------------------------------------------
# Calculate: the published running sums vs the raw tables
# ---------------------------------------------------------------------------------------------

EXPENSE_MONEY = ("obligated", "expenses")
_SUMS = {"obligated": "sum_obligated", "expenses": "sum_expenses"}


def last_running_sums(payload: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The last row (in payload order) of each ``keys`` group: its ``sum_*`` are the group's totals."""
    return payload.drop_duplicates(list(keys), keep="last")


def _totals_by(frame: pd.DataFrame, by: str | None, columns: Mapping[str, str]) -> dict[object, dict[str, Decimal]]:
    """``{key: {name: exact total of frame[column]}}`` grouped by ``by`` (one group ``None`` if no ``by``)."""
    if by is None:
        return {None: {name: exact_total(frame[column]) for name, column in columns.items()}}
    out: dict[object, dict[str, Decimal]] = {}
    for key, part in frame.groupby(by, sort=True):
        out[key] = {name: exact_total(part[column]) for name, column in columns.items()}
    return out


def _agree(left: Decimal, right: Decimal, cents_only: bool) -> bool:
    return to_cents(left) == to_cents(right) if cents_only else left == right


def reconcile_2020(raw: pd.DataFrame, payload: pd.DataFrame, *, cents_only: bool = False) -> list[str]:
    """2020 bond, per booked fiscal year: raw obligated/expenses totals = the sum over AIMS groups of
    the last ``sum_obligated``/``sum_expenses`` of ``vs3t-h2aj``. Returns one line per fiscal year;
    raises ReconciliationError on any difference. ``cents_only``: compare to the cent (inputs not in
    whole cents, so the float running sums carry noise below a cent)."""
    raw_totals = _totals_by(raw, "fiscal_year", {m: m for m in EXPENSE_MONEY})
    last = last_running_sums(payload, [AIMS, "fiscal_year"])
    published = _totals_by(last, "fiscal_year", {m: _SUMS[m] for m in EXPENSE_MONEY})
    lines, diffs = [], []
    for fy in sorted(set(raw_totals) | set(published)):
        want = raw_totals.get(fy, {m: Decimal(0) for m in EXPENSE_MONEY})
        got = published.get(fy, {m: Decimal(0) for m in EXPENSE_MONEY})
        bad = [
            f"{m} {money_text(want[m])} vs {money_text(got[m])}"
            for m in EXPENSE_MONEY
            if not _agree(want[m], got[m], cents_only)
        ]
        if bad:
            diffs.append(f"FY {fy}: {', '.join(bad)}")
        else:
            lines.append(f"FY {fy} obligated {money_text(want['obligated'])}, expenses {money_text(want['expenses'])}")
    if diffs:
        raise ReconciliationError(
            "reconciliation failed at calculate: vs3t-h2aj: raw 2020 totals vs sum of the last running sums "
            f"per group: {'; '.join(diffs)}"
        )
    return lines


@dataclass(frozen=True)
class DroppedDuplicates:
    """Rows Q5 drops from ``rrww-ybw6`` (later source rows of an already-seen (group, date))."""

    rows: int
    pairs: int
    money: dict[str, Decimal]
    examples: list[tuple[str, str, str, str]]  # (group, date, obligated, expenses) of the first few


def dropped_duplicates(raw: pd.DataFrame, aims: pd.Series, shown: int = 10) -> DroppedDuplicates:
    """The all-bonds source rows that §5.3 step 4 drops, with their exact totals."""
    keyed = pd.DataFrame({AIMS: aims.to_numpy(object), "date": raw["date"].to_numpy(object)})
    dropped = keyed.duplicated([AIMS, "date"], keep="first").to_numpy()
    rows = raw.loc[dropped]
    examples = [
        (str(g), str(d), money_text(exact_total([o])), money_text(exact_total([e])))
        for g, d, o, e in zip(
            keyed.loc[dropped, AIMS].head(shown),
            rows["date"].head(shown),
            rows["obligated"].head(shown),
            rows["expenses"].head(shown),
            strict=True,
        )
    ]
    pairs = int(keyed.loc[dropped].drop_duplicates().shape[0])
    return DroppedDuplicates(int(dropped.sum()), pairs, money_totals(rows, EXPENSE_MONEY), examples)


def reconcile_all_bonds(
    raw: pd.DataFrame, payload: pd.DataFrame, dropped: DroppedDuplicates, *, cents_only: bool = False
) -> str:
    """All bonds: raw totals − Q5's dropped duplicates = the sum over groups of ``rrww-ybw6``'s last
    running sums. Returns the line; raises ReconciliationError on a difference."""
    last = last_running_sums(payload, [AIMS])
    bad, parts = [], []
    for m in EXPENSE_MONEY:
        raw_total = exact_total(raw[m])
        want = raw_total - dropped.money.get(m, Decimal(0))
        got = exact_total(last[_SUMS[m]])
        if not _agree(want, got, cents_only):
            bad.append(
                f"{m} {money_text(raw_total)} − {money_text(dropped.money.get(m, Decimal(0)))} dropped "
                f"= {money_text(want)} vs {money_text(got)}"
            )
        parts.append(f"{m} {money_text(got)}")
    if bad:
        raise ReconciliationError(
            "reconciliation failed at calculate: rrww-ybw6: raw all-bonds totals minus Q5 duplicates vs sum of "
            f"the last running sums per group: {'; '.join(bad)}"
        )
    extra = f" after {dropped.rows} dropped duplicate row(s)" if dropped.rows else ""
    return ", ".join(parts) + extra


@dataclass(frozen=True)
class Unmapped:
    """Expenses of one AIMS group and booked fiscal year that no summary table shows (Q11)."""

    group: str
    fiscal_year: int
    rows: int
    expenses: Decimal
    obligated: Decimal


def unmapped_groups(raw: pd.DataFrame, aims: pd.Series, lookup: pd.DataFrame) -> list[Unmapped]:
    """2020 AIMS groups with no lookup entry (or only entries without a dashboard id), per booked
    fiscal year, with the expenses that therefore vanish from ``hq9n-d77y``/``5ewg-ssu3`` (§5.4.3)."""
    mapped = set(lookup.loc[lookup[DASH].notna(), AIMS].astype(str))
    missing = ~aims.astype(str).isin(mapped).to_numpy()
    if not missing.any():
        return []
    rows = raw.loc[missing, ["fiscal_year", "obligated", "expenses"]].assign(**{AIMS: aims[missing].to_numpy()})
    out = []
    for (group, fy), part in rows.groupby([AIMS, "fiscal_year"], sort=True):
        out.append(
            Unmapped(str(group), int(fy), len(part), exact_total(part["expenses"]), exact_total(part["obligated"]))
        )
    return out


# ---------------------------------------------------------------------------------------------
# Calculate: all checks over the payloads built
# ---------------------------------------------------------------------------------------------


@dataclass
class CalculationCheck:
    """What the calculate hop reconciled: lines to log, unmapped AIMS groups (Q11), Q5's duplicates."""

    lines: list[str] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    dropped: DroppedDuplicates | None = None


def reconcile_payloads(
    tables: Mapping[str, pd.DataFrame], payloads: Mapping[str, pd.DataFrame], *, cents_only: bool = False
) -> CalculationCheck:
    """Every calculate-hop check whose dataset was built: ``vs3t-h2aj`` against the 2020 table,
    ``rrww-ybw6`` against the all-bonds table (minus Q5's dropped duplicates), and the 2020
    expenses that no summary table shows (unmapped AIMS groups). Raises ReconciliationError."""
    out = CalculationCheck()
    if "vs3t-h2aj" in payloads and cfg.EXPENSES_2020 in tables:
        years = reconcile_2020(tables[cfg.EXPENSES_2020], payloads["vs3t-h2aj"], cents_only=cents_only)
        out.lines.append(
            "reconciled calculate: vs3t-h2aj: sum over groups of the last running sums = raw 2020 totals per "
            f"fiscal year ({'; '.join(years)})"
        )
    if "rrww-ybw6" in payloads and cfg.EXPENSES_ALL_BONDS in tables:
        raw = tables[cfg.EXPENSES_ALL_BONDS]
        aims = aims_group_id(raw["department"], raw["fund_code"], raw["division_code"], raw["group_code"])
        out.dropped = dropped_duplicates(raw, aims)
        line = reconcile_all_bonds(raw, payloads["rrww-ybw6"], out.dropped, cents_only=cents_only)
        out.lines.append(
            f"reconciled calculate: rrww-ybw6: sum over groups of the last running sums = raw all-bonds totals "
            f"minus Q5 duplicates ({line})"
        )
    summaries = {"hq9n-d77y", "5ewg-ssu3"} & set(payloads)
    if summaries and cfg.EXPENSES_2020 in tables and cfg.LOOKUP_2020 in tables:
        raw = tables[cfg.EXPENSES_2020]
        aims = aims_group_id(raw["department"], raw["fund"], raw["division"], raw["group"])
        out.unmapped = unmapped_groups(raw, aims, tables[cfg.LOOKUP_2020])
    return out
