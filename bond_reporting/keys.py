"""Repeated keys in a source: rows that share the columns its registry entry declares as its key.

Pure (frames in, facts out). The load keeps such rows as they are, because the published numbers
must stay as docs/data-contract.md defines them (Q11: duplicate lookup entries double-count;
§5.4.4, §5.5: every baseline, plan and appropriation row is summed), and warns once per repeated
key, as Q5 does for the all-bonds duplicates: the table, the key, the physical lines, the amounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import pandas as pd

from bond_reporting.reconcile import exact_total, money_text

SHOWN_LINES = 10  # lines named per repeated key


@dataclass(frozen=True)
class RepeatedKey:
    """One key value found on more than one row: its values, the rows' positions (0-based, in file
    order) and lines (physical, once known), and the exact total of each money column over them."""

    key: dict[str, str]
    positions: list[int]
    money: dict[str, Decimal] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)

    def describe(self, label: str) -> str:
        """The warning line, e.g. ``G1 ... (table): key aims_dept_prog_act='X' is on 2 lines (3, 13): ...``."""
        key = ", ".join(f"{name}={value!r}" for name, value in self.key.items())
        count = len(self.positions)
        if self.lines:
            shown = ", ".join(map(str, self.lines[:SHOWN_LINES])) + (" …" if count > SHOWN_LINES else "")
            where = f"on {count} lines ({shown})"
        else:  # read back from the table: rows, not lines of a file
            where = f"on {count} rows of the table"
        if self.money:
            amounts = ", ".join(f"{name} {money_text(total)}" for name, total in self.money.items())
            effect = f"all {count} are summed: {amounts} in all"
        else:
            effect = f"each one counts: what the key maps is counted {count} times"
        return (
            f"{label}: key {key} is {where}: {effect} "
            "(loaded as is, published numbers as docs/data-contract.md defines them, Q11)"
        )


def repeated_keys(frame: pd.DataFrame, key: Sequence[str], money: Sequence[str] = ()) -> list[RepeatedKey]:
    """Every value of ``key`` on more than one row of ``frame``, in order of first appearance."""
    if not key or frame.empty:
        return []
    repeated = frame.duplicated(list(key), keep=False).to_numpy()
    if not repeated.any():
        return []
    rows = frame.loc[repeated].reset_index(drop=True).assign(_position=repeated.nonzero()[0])
    out = []
    for values, group in rows.groupby(list(key), sort=False):
        values = values if isinstance(values, tuple) else (values,)
        out.append(
            RepeatedKey(
                {name: _text(value) for name, value in zip(key, values, strict=True)},
                group["_position"].tolist(),
                {name: exact_total(group[name]) for name in money},
            )
        )
    return out


@dataclass(frozen=True)
class CountedAgain:
    """An AIMS group with more than one entry in the 2020 lookup: each of its expense rows reaches
    the summary tables once per entry (docs/data-contract.md §5.4.3 step 1, Q11)."""

    group: str
    dashboards: list[str]  # the entries' dashboard ids, in table order
    expenses: Decimal  # the group's raw 2020 expenses, every fiscal year, counted once
    rows: int

    def describe(self, table: str) -> str:
        n = len(self.dashboards)
        return (
            f"{table}: AIMS group {self.group} has {n} entries (dashboard ids {', '.join(self.dashboards)}): its "
            f"expenses {money_text(self.expenses)} ({self.rows} row(s), every fiscal year) count {n} times in "
            "hq9n-d77y and 5ewg-ssu3 (docs/data-contract.md Q11; published numbers unchanged)"
        )


def counted_again(raw: pd.DataFrame, aims: pd.Series, lookup: pd.DataFrame) -> list[CountedAgain]:
    """The 2020 AIMS groups with more than one lookup entry, with the raw expenses each entry counts.

    ``raw``: the 2020 expenses table; ``aims``: its rows' AIMS group ids (§5.1); ``lookup``: the
    ``bond_2020_aims_to_dashboard`` table (columns ``aims_dept_prog_act``, ``dashboard_deptfundprogact``)."""
    entries = lookup["aims_dept_prog_act"].astype(str)
    repeated = entries[entries.duplicated(keep=False)]
    if repeated.empty:
        return []
    groups = aims.astype(str).to_numpy()
    out = []
    for group in dict.fromkeys(repeated):
        mine = groups == group
        dashboards = lookup.loc[(entries == group).to_numpy(), "dashboard_deptfundprogact"].astype(str).tolist()
        out.append(CountedAgain(group, dashboards, exact_total(raw.loc[mine, "expenses"]), int(mine.sum())))
    return out


def _text(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    return str(value)
