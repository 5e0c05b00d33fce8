"""Repeated keys of a source (``Source.key``, bond_reporting/keys.py): pure logic."""

from decimal import Decimal

import pandas as pd

from bond_reporting import keys
from config.sources import SOURCES


def test_each_repeated_key_lists_its_rows_and_the_total_of_its_amounts():
    frame = pd.DataFrame(
        {
            "id": ["P1", "P2", "P1", "P3", "P1", "P2"],
            "date": pd.to_datetime(
                ["2024-10-01", "2024-10-01", "2024-10-01", "2024-11-01", "2024-11-01", "2024-10-01"]
            ),
            "amount": [1.1, 2.0, 1.1, 4.0, 5.0, 0.01],
        }
    )
    found = keys.repeated_keys(frame, ("id", "date"), ("amount",))
    assert [(r.key, r.positions, r.money) for r in found] == [
        ({"id": "P1", "date": "2024-10-01"}, [0, 2], {"amount": Decimal("2.20")}),
        ({"id": "P2", "date": "2024-10-01"}, [1, 5], {"amount": Decimal("2.01")}),
    ]
    line = keys.RepeatedKey(found[0].key, found[0].positions, found[0].money, [2, 9]).describe("G2 x (t)")
    assert line.startswith(
        "G2 x (t): key id='P1', date='2024-10-01' is on 2 lines (2, 9): all 2 are summed: amount 2.20"
    )


def test_no_key_or_no_repeat_finds_nothing():
    frame = pd.DataFrame({"id": ["A", "B"], "to": ["X", "X"]})
    assert keys.repeated_keys(frame, ("id",)) == []
    assert keys.repeated_keys(frame, ()) == []
    assert keys.repeated_keys(frame.iloc[:0], ("id",)) == []


def test_a_key_without_money_says_what_it_maps_counts_again():
    frame = pd.DataFrame({"id": ["A", "B", "A", "A"], "to": ["X", "Y", "X", "Z"]})
    (found,) = keys.repeated_keys(frame, ("id",))
    assert found.positions == [0, 2, 3] and found.money == {}
    assert "is on 3 lines (2, 4, 5): each line counts: what the key maps is counted 3 times" in found.describe("L")


def test_every_sheet_source_declares_a_key_and_the_expense_reports_do_not():
    """S1 repeats are normal (Q4) and S2's are warned about by the calculation (Q5): no key there."""
    assert {s.table for s in SOURCES if not s.key} == {
        "expenses_obligated_2020_bond_raw",
        "expenses_obligated_all_bonds_raw",
    }
