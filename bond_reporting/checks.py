"""The checks a source's values must pass, and the pandera schema built from a source's column kinds.

A leaf module (pandas and pandera only): the registry (``config/sources.py``) builds each source's
schema here, validation runs it. Kinds and what they require: docs/data-contract.md §3.1, §4.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import pandas as pd
import pandera.pandas as pa

EARLIEST_DATE = pd.Timestamp("2000-01-01")
HORIZON_YEARS = 10
INT32 = (-(2**31), 2**31 - 1)  # SQL `integer` columns (department, years, sorts)


def horizon() -> pd.Timestamp:
    """Latest plausible date: ten years from today."""
    return pd.Timestamp(date.today()) + pd.DateOffset(years=HORIZON_YEARS)


def is_plausible_date() -> pa.Check:
    """Dates between 2000-01-01 and ten years from today (a typed 3028 must not pass)."""
    return pa.Check(
        lambda s: s.between(EARLIEST_DATE, horizon()),
        name="plausible_date",
        error="date between 2000-01-01 and ten years from today",
    )


def fiscal_year_is_plausible() -> pa.Check:
    """Fiscal years after 2000 and at most ten years from today."""
    return pa.Check(
        lambda s: (s > 2000) & (s <= date.today().year + HORIZON_YEARS),
        name="plausible_fiscal_year",
        error="fiscal year > 2000 and at most ten years from today",
    )


def fits_integer_column() -> pa.Check:
    """Whole numbers that fit PostgreSQL's 32-bit ``integer``."""
    return pa.Check.in_range(*INT32, error="fits a 32-bit integer column")


def column(kind: str) -> pa.Column:
    """The pandera column of a registry column kind (text, integer, fiscal_year, whole, number, date)."""
    if kind == "text":
        return pa.Column(str)
    if kind == "integer":
        return pa.Column("int64", fits_integer_column())
    if kind == "fiscal_year":
        return pa.Column("int64", fiscal_year_is_plausible())
    if kind == "whole":  # whole-number amounts: SQL numeric, no 32-bit limit
        return pa.Column("int64")
    if kind == "number":
        return pa.Column("float64")
    if kind == "date":
        return pa.Column("datetime64[s]", is_plausible_date())
    raise ValueError(f"unknown column kind {kind!r}")


def frame_schema(kinds: Mapping[str, str]) -> pa.DataFrameSchema:
    """Schema of a typed, renamed source frame: exactly these columns (strict), in this order."""
    return pa.DataFrameSchema({name: column(kind) for name, kind in kinds.items()}, strict=True, ordered=True)
