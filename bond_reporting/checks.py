"""The checks a source's values must pass, and the pandera schema built from a source's column kinds.

A leaf module (pandas, pandera and pyarrow only): the registry (``config/sources.py``) builds each source's
schema here, validation runs it. Kinds and what they require: docs/data-contract.md §3.1, §4.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

EARLIEST_DATE = pd.Timestamp("2000-01-01")
HORIZON_YEARS = 10
INT32 = (-(2**31), 2**31 - 1)  # SQL `integer` columns (department, years, sorts)
# Largest plausible amount of one money cell, in dollars (exclusive). A city bond program is at most
# a few hundred million dollars, a single line far less; an amount of ten billion or more is a
# typo (or a pasted id), and far below 2**53 cents, where floats stop resolving cents (§2.3).
MAX_MONEY_DOLLARS = 10_000_000_000


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


def no_surrounding_space() -> pa.Check:
    """Codes and ids without leading or trailing blanks: ``' 7400-2020-P01 '`` would be a new id
    that matches nothing (docs/data-contract.md §5.4.3: ids are joined by exact text)."""
    return pa.Check(lambda s: s.str.strip() == s, name="no_surrounding_space", error="no leading or trailing spaces")


def plausible_money() -> pa.Check:
    """Amounts whose size is below ``MAX_MONEY_DOLLARS`` (either sign)."""
    return pa.Check(
        lambda s: s.abs() < MAX_MONEY_DOLLARS,
        name="plausible_money",
        error=f"amount below {MAX_MONEY_DOLLARS:,} dollars",
    )


def whole_cents() -> pa.Check:
    """Decimal amounts with at most two decimal places (the value the text said, as its shortest
    repr: ``12.34`` passes, ``12.345`` does not). Every sample and report amount is in cents."""
    return pa.Check(
        lambda s: (s.abs() >= MAX_MONEY_DOLLARS) | (np.round(s * 100.0) / 100.0 == s),  # (too large: said once)
        name="whole_cents",
        error="at most 2 decimal places",
    )


@dataclass(frozen=True)
class TextCheck:
    """A check on a column's CSV text itself, before parsing (what parsing would hide).

    ``failing(values)`` → per value, does it fail? ``requirement`` is what failure messages name.
    """

    requirement: str
    failing: Callable[[pyarrow.Array | pyarrow.ChunkedArray], np.ndarray]


def _exponent(values: pyarrow.Array | pyarrow.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.match_substring(values, "e", ignore_case=True).to_numpy(zero_copy_only=False), dtype=bool)


NO_EXPONENT = TextCheck("no exponent notation", _exponent)  # 1e-400 reads as 0.0 but PostgreSQL keeps it


def column(kind: str, money: bool = False) -> pa.Column:
    """The pandera column of a registry column kind (text, code, integer, fiscal_year, whole, number,
    date); ``money`` adds the amount checks. Checks on the CSV text are in ``metadata["text_checks"]``
    (see ``text_checks``)."""
    amount = [plausible_money()] if money else []
    if kind == "text":
        return pa.Column(str)
    if kind == "code":
        return pa.Column(str, no_surrounding_space())
    if kind == "integer":
        return pa.Column("int64", fits_integer_column())
    if kind == "fiscal_year":
        return pa.Column("int64", fiscal_year_is_plausible())
    if kind == "whole":  # whole-number amounts: SQL numeric, no 32-bit limit
        return pa.Column("int64", amount)  # (an exponent is no whole number: refused by parsing)
    if kind == "number":
        if not money:
            return pa.Column("float64")
        return pa.Column("float64", [*amount, whole_cents()], metadata={"text_checks": (NO_EXPONENT,)})
    if kind == "date":
        return pa.Column("datetime64[s]", is_plausible_date())
    raise ValueError(f"unknown column kind {kind!r}")


def text_checks(column: pa.Column) -> tuple[TextCheck, ...]:
    """The checks a column's CSV text must pass before parsing (none for most columns)."""
    return tuple((column.metadata or {}).get("text_checks", ()))


def frame_schema(kinds: Mapping[str, str], money: Collection[str] = ()) -> pa.DataFrameSchema:
    """Schema of a typed, renamed source frame: exactly these columns (strict), in this order;
    the columns named in ``money`` hold dollar amounts."""
    columns = {name: column(kind, name in money) for name, kind in kinds.items()}
    return pa.DataFrameSchema(columns, strict=True, ordered=True)
