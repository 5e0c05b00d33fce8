"""Invariants of the seven payloads on generated inputs (hypothesis)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bond_reporting import calculations as calc
from bond_reporting import socrata
from config import datasets as cfg
from tests.support.frames import table

GROUPS = [
    (6200, "86A0", "62A1", "1AB"),
    (7400, "8640", "74C1", "2EG"),
    (2400, "8620", "24K3", "7QX15"),
    (62, "0086", "A", "B"),
]
DASHBOARDS = ["D1", "D2", "D3"]
LABEL_SHAPE = re.compile(r"^\d{4} \d{2}$|^0FY \d{2}$")

# Mostly a small pool around fiscal-year boundaries (so duplicates and clamping happen often), sometimes any day.
DATE_POOL = [f"{y}-{md}" for y in range(2020, 2025) for md in ("01-15", "09-30", "10-01", "11-15")]
dates = st.one_of(
    st.sampled_from(DATE_POOL),
    st.dates(min_value=dt.date(2020, 6, 1), max_value=dt.date(2024, 12, 31)).map(dt.date.isoformat),
)
money = st.integers(min_value=-(10**9), max_value=10**9).map(lambda cents: cents / 100)


@st.composite
def expense_rows_2020(draw):
    return draw(
        st.lists(
            st.tuples(st.sampled_from(GROUPS), st.integers(2021, 2025), dates, money, money), min_size=0, max_size=25
        )
    )


@st.composite
def all_tables(draw) -> dict[str, pd.DataFrame]:
    rows_2020 = draw(expense_rows_2020())
    rows_all = draw(st.lists(st.tuples(st.sampled_from(GROUPS), dates, money, money), max_size=25))
    aims_ids = ["620086A062A11AB", "7400864074C12EG", "2400862024K37QX15", "620086AB", "unmapped"]
    lookup = draw(st.lists(st.tuples(st.sampled_from(aims_ids), st.sampled_from(DASHBOARDS)), max_size=6))
    plan_row = st.tuples(st.sampled_from(DASHBOARDS), dates, money)
    return {
        cfg.EXPENSES_2020: table(
            cfg.EXPENSES_2020, [(f, d, date, g, fy, v, o, e) for (d, f, v, g), fy, date, o, e in rows_2020]
        ),
        cfg.EXPENSES_ALL_BONDS: table(
            cfg.EXPENSES_ALL_BONDS,
            [(f, "FN", v, "DN", d, "DepN", date, g, "GN", o, e) for (d, f, v, g), date, o, e in rows_all],
        ),
        cfg.LOOKUP_2020: table(cfg.LOOKUP_2020, lookup),
        cfg.BASELINE_2020: table(cfg.BASELINE_2020, draw(st.lists(plan_row, max_size=10))),
        cfg.CURRENT_PLAN_2020: table(cfg.CURRENT_PLAN_2020, draw(st.lists(plan_row, min_size=1, max_size=10))),
        cfg.PREVIOUS_PLAN_2020: table(cfg.PREVIOUS_PLAN_2020, draw(st.lists(plan_row, max_size=10))),
        cfg.APPROPRIATIONS: table(
            cfg.APPROPRIATIONS,
            draw(st.lists(st.tuples(st.sampled_from(DASHBOARDS), dates, st.integers(0, 10**9)), max_size=6)),
        ),
        cfg.PROGRAM_NAMES: table(
            cfg.PROGRAM_NAMES,
            [(d, "Dept", 2018, "P", "S", i, i) for i, d in enumerate(draw(st.lists(st.sampled_from(DASHBOARDS))))],
        ),
        cfg.LOOKUP_ALL_BONDS: table(cfg.LOOKUP_ALL_BONDS, lookup),
    }


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-6)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(all_tables())
def test_2020_row_counts_are_the_cross_product_and_last_sums_are_group_totals(tables) -> None:
    raw = tables[cfg.EXPENSES_2020]
    payloads = calc.build_payloads(tables, only=["vs3t-h2aj", "jdna-s8qn"])
    out = payloads["vs3t-h2aj"]
    aims = calc.aims_group_id(raw["department"], raw["fund"], raw["division"], raw["group"])
    keyed = raw.assign(aims=aims)
    keys = keyed[["fiscal_year", "date", "aims"]]
    duplicates = len(keys) - len(keys.drop_duplicates())
    cross = raw["fiscal_year"].nunique() * raw["date"].nunique() * aims.nunique()
    assert len(out) == cross + duplicates
    assert out["date"].str.match(r"^\d{4}-\d{2}-\d{2}T00:00:00\.000$").all()
    assert out["date"].tolist() == sorted(out["date"])
    for (group, fy), rows in out.groupby(["aims_dept_prog_act", "fiscal_year"], sort=False):
        source = keyed[(keyed["aims"] == group) & (keyed["fiscal_year"] == fy)]
        assert close(rows["sum_expenses"].iloc[-1], source["expenses"].sum())
        assert close(rows["sum_obligated"].iloc[-1], source["obligated"].sum())
    previous = payloads["jdna-s8qn"]
    latest = raw["fiscal_year"].max() if len(raw) else None
    assert len(previous) == (0 if latest is None else int((out["fiscal_year"] < latest).sum()))


@SETTINGS
@given(all_tables())
def test_all_bonds_one_row_per_date_and_group_and_last_sum_is_the_first_rows_total(tables) -> None:
    raw = tables[cfg.EXPENSES_ALL_BONDS]
    out = calc.build_payloads(tables, only=["rrww-ybw6"])["rrww-ybw6"]
    aims = calc.aims_group_id(raw["department"], raw["fund_code"], raw["division_code"], raw["group_code"])
    assert len(out) == raw["date"].nunique() * aims.nunique()
    assert not out.duplicated(["aims_dept_prog_act", "date"]).any()
    kept = raw.assign(aims=aims).drop_duplicates(["aims", "date"], keep="first")
    for group, rows in out.groupby("aims_dept_prog_act", sort=False):
        assert close(rows["sum_expenses"].iloc[-1], kept.loc[kept["aims"] == group, "expenses"].sum())


@SETTINGS
@given(all_tables())
def test_summary_labels_order_and_running_sums(tables) -> None:
    payloads = calc.build_payloads(tables, only=["hq9n-d77y", "5ewg-ssu3"])
    current = calc.current_fiscal_year(tables[cfg.CURRENT_PLAN_2020])
    assert f"0FY {current - 2000}" not in set(payloads["5ewg-ssu3"]["table_col"])
    for frame in payloads.values():
        assert frame["table_col"].map(lambda label: bool(LABEL_SHAPE.match(label))).all()
        keys = list(zip(frame["table_col"], frame["dashboard_deptfundprogact"], strict=True))
        assert keys == sorted(set(keys))  # unique and in string order
        assert (frame["Expenses"].notna() | frame["Baseline"].notna()).all()  # plan-only keys dropped
        for column in ("Expenses", "Baseline", "Planned"):
            running = f"Sum_{column.lower()}"
            assert (frame[running].isna() == frame[column].isna()).all()
            for _, rows in frame.groupby("dashboard_deptfundprogact", sort=False):
                values = rows[column].dropna()
                if len(values):
                    assert close(rows[running].dropna().iloc[-1], values.sum())


@SETTINGS
@given(all_tables())
def test_rendered_json_never_holds_nan_and_round_trips(tables) -> None:
    for dataset_id, frame in calc.build_payloads(tables).items():
        records = socrata.render_records(frame)
        text = json.dumps(records, allow_nan=False)  # raises on NaN/Infinity
        assert json.loads(text) == records, dataset_id
        assert "".join(socrata.payload_json(frame, chunk_size=3)) == text
        assert all(list(r) == list(frame.columns) for r in records)


# ---------------------------------------------------------------------------------------------- reference
# A second, deliberately naive implementation written straight from docs/data-contract.md §5.2 and §5.4
# (plain Python, row by row). The vectorised one must agree with it on every generated input.


def ref_fy(date: str) -> int:
    year, month = int(date[:4]), int(date[5:7])
    return year + 1 if month >= 10 else year


def ref_label_expense(booked: int, date: str, target: int) -> str:
    if booked != target:
        return f"0FY {str(booked)[-2:]}"
    if ref_fy(date) > target:
        return f"{target} 09"
    if ref_fy(date) < target:
        return f"{target - 1} 10"
    return f"{date[:4]} {date[5:7]}"


def ref_label_plan(date: str, target: int) -> str:
    return f"{date[:4]} {date[5:7]}" if ref_fy(date) == target else f"0FY {str(ref_fy(date))[-2:]}"


def ref_filled_2020(raw: pd.DataFrame) -> list[dict]:
    rows = []
    for r in raw.to_dict("records"):
        aims = f"{r['department']}{r['fund']}{r['division']}{r['group']}"
        rows.append(
            {"fy": r["fiscal_year"], "date": r["date"], "aims": aims, "obl": r["obligated"], "exp": r["expenses"]}
        )
    present = {(r["fy"], r["date"], r["aims"]) for r in rows}
    fys, dates, groups = {r["fy"] for r in rows}, {r["date"] for r in rows}, {r["aims"] for r in rows}
    for fy in fys:
        for date in dates:
            for aims in groups:
                if (fy, date, aims) not in present:
                    rows.append({"fy": fy, "date": date, "aims": aims, "obl": 0.0, "exp": 0.0})
    rows.sort(key=lambda r: (r["date"], r["aims"], r["fy"]))  # stable: duplicates keep source order
    running: dict[tuple, list[float]] = {}
    for r in rows:
        sums = running.setdefault((r["aims"], r["fy"]), [0.0, 0.0])
        sums[0] += r["obl"]
        sums[1] += r["exp"]
        r["sum_obl"], r["sum_exp"] = sums
    return rows


def ref_summary(tables: dict[str, pd.DataFrame], target: int, plan_table: str, drop: str | None) -> list[tuple]:
    lookup = tables[cfg.LOOKUP_2020].to_dict("records")
    expenses: dict[tuple, float] = {}
    for r in ref_filled_2020(tables[cfg.EXPENSES_2020]):
        for entry in lookup:
            if entry["aims_dept_prog_act"] == r["aims"]:
                key = (ref_label_expense(r["fy"], r["date"], target), entry["dashboard_deptfundprogact"])
                expenses[key] = expenses.get(key, 0.0) + r["exp"]

    def plan_side(name: str) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for r in tables[name].to_dict("records"):
            key = (ref_label_plan(r["date"], target), r["dashboard_deptfundprogact"])
            out[key] = out.get(key, 0.0) + r["amount"]
        return out

    baseline, planned = plan_side(cfg.BASELINE_2020), plan_side(plan_table)
    rows, totals = [], {}
    for key in sorted((set(expenses) | set(baseline)) - {k for k in set(expenses) | set(baseline) if k[0] == drop}):
        values = [expenses.get(key), baseline.get(key), planned.get(key)]
        sums = totals.setdefault(key[1], [0.0, 0.0, 0.0])
        running = []
        for i, v in enumerate(values):
            if v is not None:
                sums[i] += v
            running.append(None if v is None else sums[i])
        rows.append((*key, *values, *running))
    return rows


def same(a, b) -> bool:
    if a is None or b is None or isinstance(a, str):
        return a == b
    return close(a, b)


@SETTINGS
@given(all_tables())
def test_vectorised_results_match_a_naive_reference_implementation(tables) -> None:
    payloads = calc.build_payloads(tables, only=["vs3t-h2aj", "hq9n-d77y", "5ewg-ssu3"])
    expected = [
        (r["fy"], r["aims"], r["date"] + "T00:00:00.000", r["obl"], r["exp"], r["sum_obl"], r["sum_exp"])
        for r in ref_filled_2020(tables[cfg.EXPENSES_2020])
    ]
    got = payloads["vs3t-h2aj"][
        ["fiscal_year", "aims_dept_prog_act", "date", "obligated", "expenses", "sum_obligated", "sum_expenses"]
    ].itertuples(index=False)
    got = list(got)
    assert len(got) == len(expected)
    assert all(all(same(x, y) for x, y in zip(g, e, strict=True)) for g, e in zip(got, expected, strict=True))

    current = max(ref_fy(d) for d in tables[cfg.CURRENT_PLAN_2020]["date"])
    for dataset_id, target, plan, drop in (
        ("hq9n-d77y", current, cfg.CURRENT_PLAN_2020, None),
        ("5ewg-ssu3", current - 1, cfg.PREVIOUS_PLAN_2020, f"0FY {current - 2000}"),
    ):
        frame = payloads[dataset_id].astype(object).where(payloads[dataset_id].notna(), None)
        got = list(frame.itertuples(index=False, name=None))
        expected = ref_summary(tables, target, plan, drop)
        assert len(got) == len(expected), dataset_id
        for g, e in zip(got, expected, strict=True):
            assert all(same(x, y) for x, y in zip(g, e, strict=True)), (dataset_id, g, e)
