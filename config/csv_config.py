"""Every CSV source the load step reads: one entry each, loaded in this order (docs/data-contract.md §3.1).

Entry keys:
  url         where it is read from: ``bucket:<key>`` (the report bucket, ``BUCKET``),
              an http(s) URL (published Google Sheet), or a local path
  table       target table in schema ``api``
  date_field  the M/D/YYYY column parsed to a date (None if the source has none)
  field_maps  CSV header → table column, in table column order (other CSV columns are ignored)
  schema      pandera schema of the typed, renamed frame (dtype per column + range checks)

Adding a source is one entry here plus its table in ``schema.sql``.
"""

from __future__ import annotations

import pandera.pandas as pa

from bond_reporting.validation import fiscal_year_is_plausible, is_plausible_date

TEXT = pa.Column(str)
# SQL `integer` columns (department, years, sorts) hold 32 bits; whole-number amounts are `numeric`.
INT = pa.Column("int64", pa.Check.in_range(-(2**31), 2**31 - 1, error="fits a 32-bit integer column"))
WHOLE_AMOUNT = pa.Column("int64")
FLOAT = pa.Column("float64")
DATE = pa.Column("datetime64[s]", is_plausible_date())
FISCAL_YEAR = pa.Column("int64", fiscal_year_is_plausible())

_SHEETS_2020 = "https://docs.google.com/spreadsheets/d/e/2PACX-1vSGZb6KRHwiSgxxsIrmxzDtEFR8Dg1QFfQ65dybwBv_EvZRCh3Fi1YqOP3vYI1uOe8M5ZZVFVuvUkZ-/pub"
_SHEETS_ALL = "https://docs.google.com/spreadsheets/d/e/2PACX-1vRhT8BEVrEMi3ISFPiz8ujKqmIkBgX9kvEQCdTU3eneG46cCr1-Cf1KJ5wovsej6gNPYx9UBEGN4VKi/pub"


def _schema(columns: dict[str, pa.Column]) -> pa.DataFrameSchema:
    # strict: exactly the mapped columns; ordered: in table order.
    return pa.DataFrameSchema(columns, strict=True, ordered=True)


def _dated_amount(id_header: str, amount_header: str, amount: pa.Column) -> dict:
    return {
        "date_field": "date",
        "field_maps": {id_header: "dashboard_deptfundprogact", "Date": "date", amount_header: "amount"},
        "schema": _schema({"dashboard_deptfundprogact": TEXT, "date": DATE, "amount": amount}),
    }


def _lookup(id_header: str) -> dict:
    return {
        "date_field": None,
        "field_maps": {"AIMS Dept Prog Act": "aims_dept_prog_act", id_header: "dashboard_deptfundprogact"},
        "schema": _schema({"aims_dept_prog_act": TEXT, "dashboard_deptfundprogact": TEXT}),
    }


def _program_names(id_header: str, funding: bool) -> dict:
    maps = {
        id_header: "dashboard_deptfundprogact",
        "Dashboard Dept Name": "department_name",
        "Dashboard Bond Year": "bond_year",
        "Dashboard Program Name": "program_name",
        "Dashboard Sub Program Name": "sub_program_name",
        **({"Bond Funding": "funding_amount"} if funding else {}),
        "Program Sort": "program_sort",
        "Sub Program Sort": "sub_program_sort",
    }
    types = {"bond_year": INT, "funding_amount": WHOLE_AMOUNT, "program_sort": INT, "sub_program_sort": INT}
    return {
        "date_field": None,
        "field_maps": maps,
        "schema": _schema({column: types.get(column, TEXT) for column in maps.values()}),
    }


CSVS: list[dict] = [
    {
        "name": "S1 2020 Bond Expenses Obligated",
        "url": "bucket:2020 Bond Expenses Obligated.csv",
        "table": "expenses_obligated_2020_bond_raw",
        "date_field": "date",
        "field_maps": {
            "Fund": "fund",
            "Department": "department",
            "Date": "date",
            "Group": "group",
            "Fiscal Year": "fiscal_year",
            "Division": "division",
            "Obligated": "obligated",
            "Expenses": "expenses",
        },
        "schema": _schema(
            {
                "fund": TEXT,
                "department": INT,
                "date": DATE,
                "group": TEXT,
                "fiscal_year": FISCAL_YEAR,
                "division": TEXT,
                "obligated": FLOAT,
                "expenses": FLOAT,
            }
        ),
    },
    {
        "name": "S2 All bonds Expenses Obligated",
        "url": "bucket:All bonds Expenses Obligated.csv",
        "table": "expenses_obligated_all_bonds_raw",
        "date_field": "date",
        "field_maps": {
            "Fund@Code": "fund_code",
            "Fund@Long Name": "fund_long_name",
            "Division (As-Is)@Code": "division_code",
            "Division (As-Is)@Long Name": "division_long_name",
            "Department@Dept": "department",
            "Department@Long Name": "department_long_name",
            "Date": "date",
            "Group (As-Is)@Code": "group_code",
            "Group (As-Is)@Long Name": "group_long_name",
            "Obligated": "obligated",
            "Expenses": "expenses",
        },
        "schema": _schema(
            {
                "fund_code": TEXT,
                "fund_long_name": TEXT,
                "division_code": TEXT,
                "division_long_name": TEXT,
                "department": INT,
                "department_long_name": TEXT,
                "date": DATE,
                "group_code": TEXT,
                "group_long_name": TEXT,
                "obligated": FLOAT,
                "expenses": FLOAT,
            }
        ),
    },
    {
        "name": "G1 2020 AIMS to dashboard lookup",
        "url": f"{_SHEETS_2020}?gid=202806724&single=true&output=csv",
        "table": "bond_2020_aims_to_dashboard",
        **_lookup("Dashboard DeptFundProgAct"),
    },
    {
        "name": "G2 2020 baseline spend",
        "url": f"{_SHEETS_2020}?output=csv",
        "table": "bond_2020_baseline_spend",
        **_dated_amount("Dashboard DeptFundProgAct", "Amount", FLOAT),
    },
    {
        "name": "G3 2020 current-FY spend plan",
        "url": f"{_SHEETS_2020}?gid=1856896414&single=true&output=csv",
        "table": "bond_2020_current_fy_spend_plan",
        **_dated_amount("Dashboard DeptFundProgAct", "Amount", FLOAT),
    },
    {
        "name": "G4 2020 previous-FY spend plan",
        "url": f"{_SHEETS_2020}?gid=1042748786&single=true&output=csv",
        "table": "bond_2020_previous_fy_spend_plan",
        **_dated_amount("Dashboard DeptFundProgAct", "Amount", FLOAT),
    },
    {
        "name": "G5 all-bonds appropriations",
        "url": f"{_SHEETS_ALL}?gid=20835862&single=true&output=csv",
        "table": "all_bonds_appropriations",
        **_dated_amount("Dashboard FundDeptProgAct", "Appropriation", WHOLE_AMOUNT),
    },
    {
        "name": "G6 all-bonds program names",
        "url": f"{_SHEETS_ALL}?gid=1889713154&single=true&output=csv",
        "table": "all_bonds_program_names",
        **_program_names("Dashboard FundDeptProgAct", funding=False),
    },
    {
        "name": "G7 all-bonds AIMS to dashboard lookup",
        "url": f"{_SHEETS_ALL}?gid=811620554&single=true&output=csv",
        "table": "all_bonds_aims_to_dashboard",
        **_lookup("Dashboard FundDeptProgAct"),
    },
    {
        "name": "G8 all-bonds spend plan",
        "url": f"{_SHEETS_ALL}?gid=1092895732&single=true&output=csv",
        "table": "all_bonds_spend_plan",
        "date_field": None,
        "field_maps": {
            "Dashboard FundDeptProgAct": "dashboard_deptfundprogact",
            "Fiscal Year": "fiscal_year",
            "SpndPln-Bdgt": "amount",
        },
        "schema": _schema({"dashboard_deptfundprogact": TEXT, "fiscal_year": FISCAL_YEAR, "amount": FLOAT}),
    },
    {
        "name": "G9 all-bonds baseline spend",
        "url": f"{_SHEETS_ALL}?gid=0&single=true&output=csv",
        "table": "all_bonds_baseline_spend",
        **_dated_amount("Dashboard FundDeptProgAct", "Amount", WHOLE_AMOUNT),
    },
    {
        "name": "G10 2020 program names",
        "url": f"{_SHEETS_2020}?gid=215255456&single=true&output=csv",
        "table": "bond_2020_program_names",
        **_program_names("Dashboard DeptFundProgAct", funding=True),
    },
]
