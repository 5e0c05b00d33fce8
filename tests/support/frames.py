"""Input frames shaped exactly like ``database.read_tables`` returns them (docs/data-contract.md §3.1, §4).

Text → str, int → int64, float-validated numeric → float64, int-validated numeric → int64,
date → 'YYYY-MM-DD' str, updated_at → ISO timestamp str; table columns in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

UPDATED_AT = "2024-03-31T06:00:00.123456"

S, I, F = "str", "int64", "float64"  # noqa: E741 (short type tags keep the table readable)
TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "expenses_obligated_2020_bond_raw": [
        ("fund", S),
        ("department", I),
        ("date", S),
        ("group", S),
        ("fiscal_year", I),
        ("division", S),
        ("obligated", F),
        ("expenses", F),
    ],
    "expenses_obligated_all_bonds_raw": [
        ("fund_code", S),
        ("fund_long_name", S),
        ("division_code", S),
        ("division_long_name", S),
        ("department", I),
        ("department_long_name", S),
        ("date", S),
        ("group_code", S),
        ("group_long_name", S),
        ("obligated", F),
        ("expenses", F),
    ],
    "bond_2020_aims_to_dashboard": [("aims_dept_prog_act", S), ("dashboard_deptfundprogact", S)],
    "bond_2020_baseline_spend": [("dashboard_deptfundprogact", S), ("date", S), ("amount", F)],
    "bond_2020_current_fy_spend_plan": [("dashboard_deptfundprogact", S), ("date", S), ("amount", F)],
    "bond_2020_previous_fy_spend_plan": [("dashboard_deptfundprogact", S), ("date", S), ("amount", F)],
    "all_bonds_appropriations": [("dashboard_deptfundprogact", S), ("date", S), ("amount", I)],
    "all_bonds_program_names": [
        ("dashboard_deptfundprogact", S),
        ("department_name", S),
        ("bond_year", I),
        ("program_name", S),
        ("sub_program_name", S),
        ("program_sort", I),
        ("sub_program_sort", I),
    ],
    "all_bonds_aims_to_dashboard": [("aims_dept_prog_act", S), ("dashboard_deptfundprogact", S)],
}


def table(name: str, rows: Iterable[Mapping[str, Any] | tuple]) -> pd.DataFrame:
    """A frame for table ``name`` from dicts or tuples (in column order, without updated_at)."""
    columns = TABLE_COLUMNS[name]
    names = [c for c, _ in columns]
    records = [dict(zip(names, r, strict=True)) if isinstance(r, tuple) else dict(r) for r in rows]
    data = {}
    for column, dtype in columns:
        values = [r[column] for r in records]
        data[column] = pd.Series(values, dtype=dtype) if values else pd.Series([], dtype=dtype)
    data["updated_at"] = pd.Series([UPDATED_AT] * len(records), dtype=str)
    frame = pd.DataFrame(data)
    for column, dtype in columns:
        kind = frame[column].dtype
        assert pd.api.types.is_string_dtype(kind) if dtype == S else kind == np.dtype(dtype), (column, kind)
    return frame


def empty_tables() -> dict[str, pd.DataFrame]:
    return {name: table(name, []) for name in TABLE_COLUMNS}
