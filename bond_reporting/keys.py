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
        where = self.lines or [p + 2 for p in self.positions]  # (header = line 1, no blank lines)
        shown = ", ".join(map(str, where[:SHOWN_LINES])) + (" …" if len(where) > SHOWN_LINES else "")
        if self.money:
            amounts = ", ".join(f"{name} {money_text(total)}" for name, total in self.money.items())
            effect = f"all {len(where)} are summed: {amounts} in all"
        else:
            effect = f"each line counts: what the key maps is counted {len(where)} times"
        return (
            f"{label}: key {key} is on {len(where)} lines ({shown}): {effect} "
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


def _text(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    return str(value)
