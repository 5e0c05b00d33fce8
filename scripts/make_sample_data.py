"""Generate a realistic, mutually consistent set of all twelve source CSVs (seeded, sized by knobs).

    python scripts/make_sample_data.py --out sample_data                     # the committed sample
    python scripts/make_sample_data.py --out /tmp/big --groups 150 --dates 800 --fiscal-years 4
    python scripts/make_sample_data.py --out /tmp/1m --report-rows 1000000   # 1M-row 2020 export

Writes ``<out>/<table>.csv`` for every source of config/sources.py: the two MicroStrategy
report exports with their exact headers (zero-padded MM/DD/YYYY dates, metrics as float text)
and the published sheets (M/D/YYYY dates, some with an extra "Notes" column, as real sheets have).
Built-in edge cases of docs/data-contract.md §6: postings booked to a neighbouring fiscal year, an AIMS
group missing from the lookup, a planned-only program, a program without appropriation.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"  # the committed sample
DEPARTMENTS = {6200: "Transportation", 7400: "Public Works", 2400: "Corridor Program Office", 6800: "Parks"}


@dataclass(frozen=True)
class Size:
    groups: int = 12
    dates: int = 40
    fiscal_years: int = 3
    last_fiscal_year: int = 2026
    report_rows: int | None = None  # exact row count of the 2020 export (default: ~35% of group×date)


def generate_sample_data(
    out_dir: Path | str,
    *,
    groups: int = 12,
    dates: int = 40,
    fiscal_years: int = 3,
    seed: int = 2020,
    report_rows: int | None = None,
    last_fiscal_year: int = 2026,
) -> dict[str, int]:
    """Write every source CSV into ``out_dir``; returns {table: rows}.

    The twelve sources of the data contract are generated. A source added since (a registry entry
    plus its hand-made ``sample_data/<table>.csv``) is copied as it is, so every registered source
    is always present.
    """
    size = Size(groups, dates, fiscal_years, last_fiscal_year, report_rows)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = {**_bond_2020(size, rng), **_all_bonds(size, rng)}
    for table, frame in frames.items():
        frame.to_csv(out / f"{table}.csv", index=False, lineterminator="\n")
    counts = {table: len(frame) for table, frame in frames.items()}
    for path in sorted(SAMPLE.glob("*.csv")):
        if path.stem not in frames and path.resolve() != (out / path.name).resolve():
            shutil.copyfile(path, out / path.name)
            counts[path.stem] = sum(1 for _ in path.open(encoding="utf-8")) - 1
    return counts


def _business_days(size: Size, rng: np.random.Generator) -> pd.DatetimeIndex:
    start = pd.Timestamp(size.last_fiscal_year - size.fiscal_years, 10, 1)
    end = pd.Timestamp(size.last_fiscal_year, 9, 30)
    days = pd.bdate_range(start, end)
    if size.dates > len(days):
        days = pd.date_range(start, end + pd.Timedelta(days=size.dates), freq="D")
    return pd.DatetimeIndex(np.sort(rng.choice(days, size.dates, replace=False)))


def _fy(dates: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    dates = pd.DatetimeIndex(dates)
    return np.where(dates.month >= 10, dates.year + 1, dates.year)


def _mdy(dates: pd.Series, pad: bool) -> pd.Series:
    """Format dates M/D/YYYY (or MM/DD/YYYY) per distinct value: fast at a million rows."""
    codes, uniques = pd.factorize(dates)
    fmt = "%m/%d/%Y" if pad else "{d.month}/{d.day}/{d.year}"
    text = uniques.strftime(fmt) if pad else pd.Index([fmt.format(d=d) for d in uniques])
    return pd.Series(np.asarray(text, dtype=object)[codes], index=dates.index)


def _money(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return np.round(rng.gamma(1.5, scale, n), 2)


def _groups_2020(size: Size, rng: np.random.Generator) -> pd.DataFrame:
    depts = rng.choice(list(DEPARTMENTS), size.groups)
    frame = pd.DataFrame(
        {
            "department": depts,
            "fund": [f"86{'ABCDEF'[i % 6]}{i % 10}" for i in range(size.groups)],
            "division": [f"{str(d)[:2]}{'ABC'[i % 3]}{i % 7 + 1}" for i, d in enumerate(depts)],
            "group": [f"{i % 9 + 1}{chr(65 + i % 26)}{chr(65 + (i // 26) % 26)}" for i in range(size.groups)],
        }
    )
    frame["aims"] = frame["department"].astype(str) + frame["fund"] + frame["division"] + frame["group"]
    frame["dashboard"] = [f"{d}-2020-P{i // 3 + 1:02d}" for i, d in enumerate(frame["department"])]
    return frame


def _bond_2020(size: Size, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    groups = _groups_2020(size, rng)
    days = _business_days(size, rng)
    # Source rows: a (group, date) sample; every date is used so DATES has exactly `size.dates` values.
    n_pairs = size.groups * size.dates
    rows = size.report_rows or max(size.dates, int(n_pairs * 0.35))
    if size.report_rows is None:
        pairs = rng.choice(n_pairs, rows, replace=False)
    else:
        pairs = rng.integers(0, n_pairs, rows)
    pairs[: size.dates] = np.arange(size.dates) * size.groups + rng.integers(0, size.groups, size.dates)
    group_idx, date_idx = pairs % size.groups, pairs // size.groups
    order = np.argsort(date_idx, kind="stable")  # MicroStrategy returns rows by date
    group_idx, date_idx = group_idx[order], date_idx[order]
    dates = pd.Series(days[date_idx])
    booked = _fy(dates)
    # Late postings: early October rows booked to the FY that just ended.
    late = (dates.dt.month.to_numpy() == 10) & (dates.dt.day.to_numpy() <= 10) & (rng.random(rows) < 0.5)
    booked = np.where(late & (booked - 1 > size.last_fiscal_year - size.fiscal_years), booked - 1, booked)
    g = groups.iloc[group_idx].reset_index(drop=True)
    obligated = np.where(rng.random(rows) < 0.3, _money(rng, rows, 20_000.0), 0.0)
    expenses = _money(rng, rows, 8_000.0)
    refunds = rng.random(rows) < 0.02
    expenses = np.where(refunds, -expenses, expenses)
    report = pd.DataFrame(
        {
            "Fund": g["fund"],
            "Department": g["department"],
            "Date": _mdy(dates, pad=True),
            "Group": g["group"],
            "Fiscal Year": booked,
            "Division": g["division"],
            "Obligated": obligated,
            "Expenses": expenses,
        }
    )
    # Lookup: every AIMS group but the last maps to its dashboard program (an unmapped group, Q11).
    mapped = groups.iloc[:-1] if len(groups) > 1 else groups
    lookup = pd.DataFrame({"AIMS Dept Prog Act": mapped["aims"], "Dashboard DeptFundProgAct": mapped["dashboard"]})
    programs = groups["dashboard"].drop_duplicates().tolist()
    planned_only = f"{groups['department'].iloc[0]}-2020-PLANONLY"

    months_all = pd.date_range(
        pd.Timestamp(size.last_fiscal_year - size.fiscal_years, 10, 1),
        pd.Timestamp(size.last_fiscal_year + 1, 9, 1),
        freq="MS",
    )  # one future FY (Q9)
    cur = size.last_fiscal_year
    months_cur = months_all[_fy(months_all) == cur]
    months_prev = months_all[_fy(months_all) == cur - 1]

    def monthly(ids: list[str], months: pd.DatetimeIndex, scale: float, notes: bool) -> pd.DataFrame:
        grid = pd.MultiIndex.from_product([ids, months], names=["id", "date"]).to_frame(index=False)
        frame = pd.DataFrame(
            {
                "Dashboard DeptFundProgAct": grid["id"],
                "Date": _mdy(grid["date"], pad=False),
                "Amount": _money(rng, len(grid), scale),
            }
        )
        if notes:
            frame["Notes"] = np.where(rng.random(len(grid)) < 0.1, "revised, see memo", "")
        return frame

    names = pd.DataFrame(
        {
            "Dashboard DeptFundProgAct": programs,
            "Dashboard Dept Name": [DEPARTMENTS[int(p.split("-")[0])] for p in programs],
            "Dashboard Bond Year": 2020,
            "Dashboard Program Name": [f"Mobility Program {i // 2 + 1}" for i in range(len(programs))],
            "Dashboard Sub Program Name": [f"Sub Program {i + 1}" for i in range(len(programs))],
            "Bond Funding": rng.integers(1, 40, len(programs)) * 250_000,
            "Program Sort": [i // 2 + 1 for i in range(len(programs))],
            "Sub Program Sort": [i % 2 + 1 for i in range(len(programs))],
        }
    )
    return {
        "expenses_obligated_2020_bond_raw": report,
        "bond_2020_aims_to_dashboard": lookup,
        "bond_2020_baseline_spend": monthly(programs, months_all, 50_000.0, notes=True),
        "bond_2020_current_fy_spend_plan": monthly([*programs, planned_only], months_cur, 45_000.0, notes=False),
        "bond_2020_previous_fy_spend_plan": monthly(programs, months_prev, 45_000.0, notes=False),
        "bond_2020_program_names": names,
    }


def _all_bonds(size: Size, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    n = size.groups
    depts = rng.choice(list(DEPARTMENTS), n)
    bond_years = rng.choice([2012, 2016, 2018, 2020], n)
    fund_codes = [f"8{str(y)[2:]}{i % 10}" for i, y in enumerate(bond_years)]
    groups = pd.DataFrame(
        {
            "Fund@Code": fund_codes,
            "Fund@Long Name": [f"{y} Mobility Bond - Prop {'ABCD'[i % 4]}" for i, y in enumerate(bond_years)],
            "Division (As-Is)@Code": [f"{str(d)[:2]}K{i % 5 + 1}" for i, d in enumerate(depts)],
            "Division (As-Is)@Long Name": [f"Division {i % 5 + 1}" for i in range(n)],
            "Department@Dept": depts,
            "Department@Long Name": [DEPARTMENTS[int(d)] for d in depts],
            "Group (As-Is)@Code": [f"{i % 9 + 1}Q{chr(65 + i % 26)}{i:02d}" for i in range(n)],
            "Group (As-Is)@Long Name": [f"Project group {i + 1}" for i in range(n)],
        }
    )
    aims = (
        groups["Department@Dept"].astype(str)
        + groups["Fund@Code"]
        + groups["Division (As-Is)@Code"]
        + groups["Group (As-Is)@Code"]
    )
    dashboard = pd.Series(
        [f"{f}-{d}-A{i // 2 + 1:02d}" for i, (f, d) in enumerate(zip(fund_codes, depts, strict=True))]
    )
    days = _business_days(size, rng)
    pairs = rng.choice(n * size.dates, max(size.dates, int(n * size.dates * 0.3)), replace=False)
    pairs[: size.dates] = np.arange(size.dates) * n + rng.integers(0, n, size.dates)
    pairs = np.unique(pairs)  # one row per (group, date): duplicates would be dropped downstream (Q5)
    gi, di = pairs % n, pairs // n
    order = np.argsort(di, kind="stable")
    gi, di = gi[order], di[order]
    rows = len(gi)
    report = groups.iloc[gi].reset_index(drop=True)
    report.insert(6, "Date", _mdy(pd.Series(days[di]), pad=True))
    report["Obligated"] = np.where(rng.random(rows) < 0.3, _money(rng, rows, 30_000.0), 0.0)
    report["Expenses"] = _money(rng, rows, 9_000.0)

    programs = dashboard.drop_duplicates().tolist()
    unfunded = programs[-1]  # a program without appropriation: published with appropriated = null
    approp_ids = [p for p in programs if p != unfunded]
    approp = pd.DataFrame(
        {
            "Dashboard FundDeptProgAct": np.repeat(approp_ids, 2),
            "Date": [f"10/1/{size.last_fiscal_year - 1}", f"3/1/{size.last_fiscal_year}"] * len(approp_ids),
            "Appropriation": rng.integers(4, 200, 2 * len(approp_ids)) * 25_000,
            "Notes": "",
        }
    )
    names = pd.DataFrame(
        {
            "Dashboard FundDeptProgAct": programs,
            "Dashboard Dept Name": [DEPARTMENTS[int(p.split("-")[1])] for p in programs],
            "Dashboard Bond Year": [2000 + int(p[1:3]) for p in programs],
            "Dashboard Program Name": [f"Program {i // 3 + 1}" for i in range(len(programs))],
            "Dashboard Sub Program Name": [f"Sub Program {i + 1}" for i in range(len(programs))],
            "Program Sort": [i // 3 + 1 for i in range(len(programs))],
            "Sub Program Sort": [i % 3 + 1 for i in range(len(programs))],
        }
    )
    fys = list(range(size.last_fiscal_year - size.fiscal_years + 1, size.last_fiscal_year + 2))
    plan = pd.MultiIndex.from_product([programs, fys], names=["id", "fy"]).to_frame(index=False)
    months = pd.date_range(pd.Timestamp(fys[0] - 1, 10, 1), pd.Timestamp(fys[-1], 9, 1), freq="MS")
    base = pd.MultiIndex.from_product([programs, months], names=["id", "date"]).to_frame(index=False)
    return {
        "expenses_obligated_all_bonds_raw": report,
        "all_bonds_appropriations": approp,
        "all_bonds_program_names": names,
        "all_bonds_aims_to_dashboard": pd.DataFrame(
            {"AIMS Dept Prog Act": aims, "Dashboard FundDeptProgAct": dashboard}
        ),
        "all_bonds_spend_plan": pd.DataFrame(
            {
                "Dashboard FundDeptProgAct": plan["id"],
                "Fiscal Year": plan["fy"],
                "SpndPln-Bdgt": _money(rng, len(plan), 400_000.0),
            }
        ),
        "all_bonds_baseline_spend": pd.DataFrame(
            {
                "Dashboard FundDeptProgAct": base["id"],
                "Date": _mdy(base["date"], pad=False),
                "Amount": rng.integers(0, 400, len(base)) * 250,
            }
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--groups", type=int, default=12, help="AIMS groups per report (default 12)")
    parser.add_argument("--dates", type=int, default=40, help="distinct posting dates (default 40)")
    parser.add_argument("--fiscal-years", type=int, default=3, help="fiscal years of history (default 3)")
    parser.add_argument("--report-rows", type=int, help="exact row count of the 2020 export")
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    counts = generate_sample_data(
        args.out,
        groups=args.groups,
        dates=args.dates,
        fiscal_years=args.fiscal_years,
        seed=args.seed,
        report_rows=args.report_rows,
    )
    for table, rows in counts.items():
        print(f"{rows:>9} rows  {args.out}/{table}.csv")


if __name__ == "__main__":
    main()
