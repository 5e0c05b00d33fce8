"""Input frames shaped exactly like ``database.read_tables`` returns them (docs/data-contract.md §3.1, §4).

Text → str, integer → int64, "number" numeric → float64, "whole" numeric → int64,
date → 'YYYY-MM-DD' str, updated_at → ISO timestamp str; the registry's table columns in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from config.datasets import DATASETS, tables_for
from config.sources import SOURCES

UPDATED_AT = "2024-03-31T06:00:00.123456"

# What database.read_tables returns per registry column kind (docs/data-contract.md §4).
READ_DTYPES = {
    "text": "str",
    "code": "str",
    "date": "str",
    "integer": "int64",
    "fiscal_year": "int64",
    "whole": "int64",
    "number": "float64",
}
S = READ_DTYPES["text"]

# The tables the calculations read, in load order, with their columns (config/sources.py) and dtypes.
_READ = set(tables_for(DATASETS))
TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    source.table: [(column.name, READ_DTYPES[column.kind]) for column in source.columns]
    for source in SOURCES
    if source.table in _READ
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
