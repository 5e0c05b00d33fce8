"""Exact reconciliation (issue 10 item 2): totals to the cent, and each calculate-hop check failing
when its hop is tampered with. Pure: frames in, lines or ReconciliationError out."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from bond_reporting import calculations, reconcile
from bond_reporting.errors import ReconciliationError
from bond_reporting.reconcile import Figures, exact_total
from config import datasets as cfg
from config.sources import SOURCES
from tests.support import ROOT


def test_exact_total_is_the_decimal_sum_of_the_values_as_written():
    values = np.array([0.1] * 10 + [64703.38, -5.05])
    assert sum(values.tolist()) != 64699.33  # float addition is off
    assert exact_total(values) == Decimal("64699.33")
    assert exact_total(pd.Series([0.1, np.nan, 0.2])) == Decimal("0.3")
    assert exact_total(np.array([], dtype=float)) == 0


def test_exact_total_beyond_cents_sums_each_shortest_repr():
    values = [0.125, 0.1 + 0.2, 1.005]
    expected = Decimal("0.125") + Decimal("0.30000000000000004") + Decimal("1.005")
    assert exact_total(values) == expected


def test_exact_total_of_whole_amounts_is_exact_beyond_float_precision():
    assert exact_total(np.array([2**53, 1, 1], dtype=np.int64)) == Decimal(2**53 + 2)


def test_a_one_cent_difference_is_a_difference():
    a = Figures(3, {"expenses": Decimal("10.00")})
    b = Figures(3, {"expenses": Decimal("9.99")})
    assert reconcile.differences(a, b) == ["expenses 10.00 vs 9.99"]
    with pytest.raises(ReconciliationError, match=r"^reconciliation failed at load: t: file vs db: expenses 10.00"):
        reconcile.check("load", "t", a, b, what=("file", "db"))
    assert reconcile.check("load", "t", a, Figures(3, {"expenses": Decimal("10")}), what=("file", "db")).startswith(
        "reconciled load: t: file = db (3 rows, expenses 10.00)"
    )


def test_money_columns_come_from_the_registry():
    columns = {s.table: s.money_columns for s in SOURCES}
    assert columns[cfg.EXPENSES_2020] == ("obligated", "expenses")
    assert columns[cfg.APPROPRIATIONS] == ("amount",)
    assert columns["bond_2020_program_names"] == ("funding_amount",)
    assert columns[cfg.LOOKUP_2020] == () and columns[cfg.PROGRAM_NAMES] == ()


# --- the calculate hop, on the sample data -------------------------------------------------------


def sample_tables() -> dict[str, pd.DataFrame]:
    """The sample CSVs as the calculation reads them (docs/data-contract.md §4 types)."""
    tables = {}
    for source in SOURCES:
        frame = pd.read_csv(ROOT / "sample_data" / f"{source.table}.csv", dtype=str, keep_default_na=False)
        frame = frame[list(source.field_maps)].rename(columns=source.field_maps)
        for name, column in source.schema.columns.items():
            dtype = str(column.dtype)
            if dtype.startswith("int"):
                frame[name] = frame[name].astype(np.int64)
            elif dtype.startswith("float"):
                frame[name] = frame[name].astype(np.float64)
            elif dtype.startswith("datetime"):
                frame[name] = pd.to_datetime(frame[name], format="%m/%d/%Y").dt.strftime("%Y-%m-%d")
        frame["updated_at"] = "2026-01-01T00:00:00"
        tables[source.table] = frame
    return tables


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return sample_tables()


@pytest.fixture(scope="module")
def payloads(tables) -> dict[str, pd.DataFrame]:
    return calculations.build_payloads(tables)


def test_sample_payloads_reconcile_with_the_raw_tables(tables, payloads):
    checked = reconcile.reconcile_payloads(tables, payloads)
    assert len(checked.lines) == 2
    raw = tables[cfg.EXPENSES_2020]
    for fy, part in raw.groupby("fiscal_year"):
        assert f"FY {fy} obligated {reconcile.money_text(exact_total(part['obligated']))}" in checked.lines[0]
    assert checked.dropped is not None and checked.dropped.rows == 0


def test_vs3t_tampered_fails_naming_the_fiscal_year_and_both_totals(tables, payloads):
    tampered = payloads["vs3t-h2aj"].copy()
    last = tampered.drop_duplicates([reconcile.AIMS, "fiscal_year"], keep="last").index[0]
    tampered.loc[last, "sum_expenses"] += 0.01
    fy = tampered.loc[last, "fiscal_year"]
    with pytest.raises(ReconciliationError) as failure:
        reconcile.reconcile_payloads(tables, {**payloads, "vs3t-h2aj": tampered})
    line = str(failure.value)
    assert line.startswith("reconciliation failed at calculate: vs3t-h2aj: raw 2020 totals vs sum of the last")
    assert f"FY {fy}: expenses " in line and "\n" not in line


def test_rrww_tampered_fails_and_q5_duplicates_are_explained(tables, payloads):
    raw = tables[cfg.EXPENSES_ALL_BONDS]
    doubled = pd.concat([raw, raw.iloc[[0]]], ignore_index=True)  # a later duplicate of (group, date)
    with_dup = {**tables, cfg.EXPENSES_ALL_BONDS: doubled}
    payload = calculations.build_payloads(with_dup, only=["rrww-ybw6"])
    checked = reconcile.reconcile_payloads(with_dup, payload)
    assert checked.dropped.rows == 1
    assert checked.dropped.money["expenses"] == exact_total([raw.iloc[0]["expenses"]])
    assert "raw all-bonds totals minus Q5 duplicates" in checked.lines[0]
    # a payload that lost one group's last running sum is not explained by anything
    tampered = payload["rrww-ybw6"].iloc[:-1]
    with pytest.raises(ReconciliationError, match=r"rrww-ybw6: raw all-bonds totals minus Q5 duplicates"):
        reconcile.reconcile_payloads(with_dup, {"rrww-ybw6": tampered})


def test_unmapped_groups_are_listed_with_fiscal_year_and_amount(tables, payloads):
    lookup = tables[cfg.LOOKUP_2020]
    removed = lookup.iloc[0][reconcile.AIMS]
    trimmed = {**tables, cfg.LOOKUP_2020: lookup.iloc[1:]}
    checked = reconcile.reconcile_payloads(trimmed, calculations.build_payloads(trimmed))
    groups = {u.group for u in checked.unmapped}
    before = {u.group for u in reconcile.reconcile_payloads(tables, payloads).unmapped}
    assert groups - before == {removed}
    raw = tables[cfg.EXPENSES_2020]
    aims = calculations.aims_group_id(raw["department"], raw["fund"], raw["division"], raw["group"])
    for u in checked.unmapped:
        if u.group == removed:
            part = raw[(aims == removed).to_numpy() & (raw["fiscal_year"] == u.fiscal_year).to_numpy()]
            assert u.expenses == exact_total(part["expenses"]) and u.rows == len(part)


def test_cents_only_compares_to_the_cent_when_inputs_are_not_whole_cents(tables):
    raw = tables[cfg.EXPENSES_2020].copy()
    raw["expenses"] = raw["expenses"] + 0.001
    payload = calculations.build_payloads({**tables, cfg.EXPENSES_2020: raw}, only=["vs3t-h2aj"])["vs3t-h2aj"]
    assert reconcile.reconcile_2020(raw, payload, cents_only=True)
