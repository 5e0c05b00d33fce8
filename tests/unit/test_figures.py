"""The figures a published dataset must show (socrata.payload_figures): exact decimal sums of the
numbers as their JSON text writes them, the way Socrata sums them."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from bond_reporting import socrata

amounts = st.one_of(
    st.integers(-(10**11), 10**11).map(lambda cents: cents / 100),  # money: whole cents
    st.floats(allow_infinity=False, min_value=-1e15, max_value=1e15),
    st.just(float("nan")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(amounts, max_size=40))
def test_money_sums_are_the_exact_decimal_sum_of_the_json_numbers(values: list[float]) -> None:
    frame = pd.DataFrame({"expenses": np.array(values, dtype=np.float64)})
    present = [v for v in values if not math.isnan(v)]
    total = socrata.payload_figures(frame)["total_expenses"]
    if not present:
        assert total is None  # Socrata leaves a sum of nothing out of its answer
    else:
        assert Decimal(total) == sum((Decimal(repr(v)) for v in present), Decimal(0))
    assert socrata.payload_figures(frame)["row_count"] == str(len(values))


def test_the_range_is_of_the_date_or_else_of_the_key() -> None:
    dated = pd.DataFrame({"date": ["2024-01-01T00:00:00.000", None, "2023-05-01T00:00:00.000"], "x": [1, 2, 3]})
    assert socrata.payload_figures(dated) == {
        "row_count": "3",
        "min_date": "2023-05-01T00:00:00.000",
        "max_date": "2024-01-01T00:00:00.000",
    }
    keyed = pd.DataFrame({"program_sort": [3, 1, 2], "name": ["c", "a", "b"]})
    assert socrata.payload_figures(keyed) == {"row_count": "3", "min_program_sort": "1", "max_program_sort": "3"}
    assert socrata.payload_figures(keyed.iloc[:0]) == {
        "row_count": "0",
        "min_program_sort": None,
        "max_program_sort": None,
    }
