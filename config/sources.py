"""The registry: every source the ETL reads, its table and its typed columns (docs/data-contract.md §3.1).

One entry per source, loaded in this order. Everything else is derived from here: the pandera
schemas (``Source.schema``), the tables and their SQL (``schema_sql()``, applied before every
load), the MicroStrategy ``REPORTS`` and their bucket keys, the table names of
``config/datasets.py``, the column lists of the calculations and the tests' frames.

Adding a published-sheet source: one ``Source(...)`` below plus its sample file
``sample_data/<table>.csv`` (made by ``scripts/make_sample_data.py``). Adding a MicroStrategy
report: one ``Source(..., report=Report(name, id))``; its CSV is read from the bucket key
``<report name>.csv``. See the README's "Common changes".

Column kinds (what a CSV cell must hold → the SQL type → what ``database.read_tables`` returns):

kind           CSV cell                                SQL type   read back as
text           anything non-empty (names, free text)   text       str
code           an id or code: non-empty, no leading    text       str
               or trailing blanks (ids are joined by
               exact text, docs/data-contract.md §5.4.3)
integer        whole number fitting 32 bits            integer    int64
fiscal_year    whole number, > 2000, ≤ 10 years ahead  integer    int64
whole          whole number (e.g. whole-dollar money)  numeric    int64
number         decimal number                          numeric    float64
date           M/D/YYYY, 2000-01-01 … 10 years ahead   date       'YYYY-MM-DD' str

Money columns (``money=True``) also need: no exponent notation, at most 2 decimal places (number
kind), and a size below ``checks.MAX_MONEY_DOLLARS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from bond_reporting import checks

if TYPE_CHECKING:
    import pandera.pandas as pa

Kind = Literal["text", "code", "integer", "fiscal_year", "whole", "number", "date"]

SCHEMA = "api"  # the PostgreSQL schema of every table
UPDATED_AT = "updated_at"  # added to every table: the load time (UTC) of its rows

SQL_TYPES: dict[str, str] = {
    "text": "text",
    "code": "text",
    "integer": "integer",
    "fiscal_year": "integer",
    "whole": "numeric",
    "number": "numeric",
    "date": "date",
}


@dataclass(frozen=True)
class Column:
    """One column: its CSV header, its table column, its kind (see the module table), money or not."""

    header: str
    name: str
    kind: Kind = "text"
    money: bool = False  # an amount of dollars (totals of it are reconciled)

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.kind]


@dataclass(frozen=True)
class Report:
    """A MicroStrategy report: its name (the bucket key is ``<name>.csv``) and its 32-hex object id."""

    name: str
    id: str

    @property
    def bucket_key(self) -> str:
        return f"{self.name}.csv"


@dataclass(frozen=True)
class Source:
    """One CSV source and the table it replaces on every load.

    ``url``: an http(s) URL (published Google Sheet) or a local path; report sources leave it out
    and are read from the bucket (``bucket:<report name>.csv``). ``date_field``: the column whose
    newest value is reported after the load (None if the source has no date).

    ``key``: the columns that identify a row (one lookup entry, one amount per id and date). Rows
    repeating a key are loaded as they are (published numbers stay as docs/data-contract.md
    defines them: Q11 "duplicate lookup entries double-count — keep"), and the load warns once per
    repeated key, naming its lines and amounts (``bond_reporting.keys``). No key: repeats are
    normal (S1, Q4) or already warned about (S2, Q5).
    """

    name: str
    table: str
    columns: tuple[Column, ...]
    url: str = ""
    report: Report | None = None
    date_field: str | None = None
    key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.url) == bool(self.report):
            raise ValueError(f"source {self.name!r}: give exactly one of url= and report=")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names) or len({c.header for c in self.columns}) != len(names):
            raise ValueError(f"source {self.name!r}: duplicate column header or name")
        if self.date_field is not None and self.date_field not in names:
            raise ValueError(f"source {self.name!r}: date_field {self.date_field!r} is not a column")
        if not set(self.key) <= set(names):
            raise ValueError(f"source {self.name!r}: key {self.key!r} names a column it does not have")
        if self.report:
            object.__setattr__(self, "url", f"bucket:{self.report.bucket_key}")

    @property
    def field_maps(self) -> dict[str, str]:
        """CSV header → table column, in table column order (other CSV columns are ignored)."""
        return {c.header: c.name for c in self.columns}

    @property
    def column_names(self) -> tuple[str, ...]:
        """The table columns in order, without ``updated_at``."""
        return tuple(c.name for c in self.columns)

    @property
    def money_columns(self) -> tuple[str, ...]:
        """The table columns holding dollar amounts."""
        return tuple(c.name for c in self.columns if c.money)

    @property
    def kinds(self) -> dict[str, str]:
        """Table column → kind."""
        return {c.name: c.kind for c in self.columns}

    @cached_property
    def schema(self) -> pa.DataFrameSchema:
        """The pandera schema of the typed, renamed frame: exactly these columns, in order."""
        return checks.frame_schema({c.name: c.kind for c in self.columns}, self.money_columns)

    @property
    def label(self) -> str:
        """How messages name the source: ``name (table)``."""
        return f"{self.name} ({self.table})"


# ---------------------------------------------------------------------------------------------
# The sources (docs/data-contract.md §3.1). Shapes shared by several sheets are small functions.

_SHEETS_2020 = "https://docs.google.com/spreadsheets/d/e/2PACX-1vSGZb6KRHwiSgxxsIrmxzDtEFR8Dg1QFfQ65dybwBv_EvZRCh3Fi1YqOP3vYI1uOe8M5ZZVFVuvUkZ-/pub"
_SHEETS_ALL = "https://docs.google.com/spreadsheets/d/e/2PACX-1vRhT8BEVrEMi3ISFPiz8ujKqmIkBgX9kvEQCdTU3eneG46cCr1-Cf1KJ5wovsej6gNPYx9UBEGN4VKi/pub"
_ID_2020, _ID_ALL = "Dashboard DeptFundProgAct", "Dashboard FundDeptProgAct"


def _dated_amount(name: str, table: str, url: str, id_header: str, amount_header: str, kind: Kind) -> Source:
    columns = (
        Column(id_header, "dashboard_deptfundprogact", "code"),
        Column("Date", "date", "date"),
        Column(amount_header, "amount", kind, money=True),
    )
    return Source(name, table, columns, url=url, date_field="date", key=("dashboard_deptfundprogact", "date"))


def _lookup(name: str, table: str, url: str, id_header: str) -> Source:
    columns = (
        Column("AIMS Dept Prog Act", "aims_dept_prog_act", "code"),
        Column(id_header, "dashboard_deptfundprogact", "code"),
    )
    return Source(name, table, columns, url=url, key=("aims_dept_prog_act",))


def _program_names(name: str, table: str, url: str, id_header: str, *, funding: bool) -> Source:
    columns = (
        Column(id_header, "dashboard_deptfundprogact", "code"),
        Column("Dashboard Dept Name", "department_name"),
        Column("Dashboard Bond Year", "bond_year", "integer"),
        Column("Dashboard Program Name", "program_name"),
        Column("Dashboard Sub Program Name", "sub_program_name"),
        *([Column("Bond Funding", "funding_amount", "whole", money=True)] if funding else []),
        Column("Program Sort", "program_sort", "integer"),
        Column("Sub Program Sort", "sub_program_sort", "integer"),
    )
    return Source(name, table, columns, url=url, key=("dashboard_deptfundprogact",))


EXPENSES_2020 = Source(
    "S1 2020 Bond Expenses Obligated",
    "expenses_obligated_2020_bond_raw",
    (
        Column("Fund", "fund", "code"),
        Column("Department", "department", "integer"),
        Column("Date", "date", "date"),
        Column("Group", "group", "code"),
        Column("Fiscal Year", "fiscal_year", "fiscal_year"),
        Column("Division", "division", "code"),
        Column("Obligated", "obligated", "number", money=True),
        Column("Expenses", "expenses", "number", money=True),
    ),
    report=Report("2020 Bond Expenses Obligated", "D6BC5BD13143FF3129F3318F589EBD51"),
    date_field="date",
)
EXPENSES_ALL_BONDS = Source(
    "S2 All bonds Expenses Obligated",
    "expenses_obligated_all_bonds_raw",
    (
        Column("Fund@Code", "fund_code", "code"),
        Column("Fund@Long Name", "fund_long_name"),
        Column("Division (As-Is)@Code", "division_code", "code"),
        Column("Division (As-Is)@Long Name", "division_long_name"),
        Column("Department@Dept", "department", "integer"),
        Column("Department@Long Name", "department_long_name"),
        Column("Date", "date", "date"),
        Column("Group (As-Is)@Code", "group_code", "code"),
        Column("Group (As-Is)@Long Name", "group_long_name"),
        Column("Obligated", "obligated", "number", money=True),
        Column("Expenses", "expenses", "number", money=True),
    ),
    report=Report("All bonds Expenses Obligated", "077C066E6C4BF56B081F96A3E405D83C"),
    date_field="date",
)
LOOKUP_2020 = _lookup(
    "G1 2020 AIMS to dashboard lookup",
    "bond_2020_aims_to_dashboard",
    f"{_SHEETS_2020}?gid=202806724&single=true&output=csv",
    _ID_2020,
)
BASELINE_2020 = _dated_amount(
    "G2 2020 baseline spend", "bond_2020_baseline_spend", f"{_SHEETS_2020}?output=csv", _ID_2020, "Amount", "number"
)
CURRENT_PLAN_2020 = _dated_amount(
    "G3 2020 current-FY spend plan",
    "bond_2020_current_fy_spend_plan",
    f"{_SHEETS_2020}?gid=1856896414&single=true&output=csv",
    _ID_2020,
    "Amount",
    "number",
)
PREVIOUS_PLAN_2020 = _dated_amount(
    "G4 2020 previous-FY spend plan",
    "bond_2020_previous_fy_spend_plan",
    f"{_SHEETS_2020}?gid=1042748786&single=true&output=csv",
    _ID_2020,
    "Amount",
    "number",
)
APPROPRIATIONS = _dated_amount(
    "G5 all-bonds appropriations",
    "all_bonds_appropriations",
    f"{_SHEETS_ALL}?gid=20835862&single=true&output=csv",
    _ID_ALL,
    "Appropriation",
    "whole",
)
PROGRAM_NAMES = _program_names(
    "G6 all-bonds program names",
    "all_bonds_program_names",
    f"{_SHEETS_ALL}?gid=1889713154&single=true&output=csv",
    _ID_ALL,
    funding=False,
)
LOOKUP_ALL_BONDS = _lookup(
    "G7 all-bonds AIMS to dashboard lookup",
    "all_bonds_aims_to_dashboard",
    f"{_SHEETS_ALL}?gid=811620554&single=true&output=csv",
    _ID_ALL,
)
SPEND_PLAN_ALL_BONDS = Source(
    "G8 all-bonds spend plan",
    "all_bonds_spend_plan",
    (
        Column(_ID_ALL, "dashboard_deptfundprogact", "code"),
        Column("Fiscal Year", "fiscal_year", "fiscal_year"),
        Column("SpndPln-Bdgt", "amount", "number", money=True),
    ),
    url=f"{_SHEETS_ALL}?gid=1092895732&single=true&output=csv",
    key=("dashboard_deptfundprogact", "fiscal_year"),
)
BASELINE_ALL_BONDS = _dated_amount(
    "G9 all-bonds baseline spend",
    "all_bonds_baseline_spend",
    f"{_SHEETS_ALL}?gid=0&single=true&output=csv",
    _ID_ALL,
    "Amount",
    "whole",
)
PROGRAM_NAMES_2020 = _program_names(
    "G10 2020 program names",
    "bond_2020_program_names",
    f"{_SHEETS_2020}?gid=215255456&single=true&output=csv",
    _ID_2020,
    funding=True,
)

SOURCES: tuple[Source, ...] = (
    EXPENSES_2020,
    EXPENSES_ALL_BONDS,
    LOOKUP_2020,
    BASELINE_2020,
    CURRENT_PLAN_2020,
    PREVIOUS_PLAN_2020,
    APPROPRIATIONS,
    PROGRAM_NAMES,
    LOOKUP_ALL_BONDS,
    SPEND_PLAN_ALL_BONDS,
    BASELINE_ALL_BONDS,
    PROGRAM_NAMES_2020,
)
"""Every source, in load order."""

# Defined by the original, loaded and read by nothing any more; kept so Power BI queries still resolve.
LEGACY_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "fdus_2020_bond": (
        ("subproject_number", "numeric"),
        ("subproject_name", "text"),
        ("subproject_status", "text"),
        ("unit_code", "text"),
        ("unit_name", "text"),
        ("appropriated", "numeric"),
    )
}

BY_TABLE: dict[str, Source] = {source.table: source for source in SOURCES}
REPORT_SOURCES: tuple[Source, ...] = tuple(source for source in SOURCES if source.report)
REPORTS: dict[str, str] = {source.report.name: source.report.id for source in REPORT_SOURCES}  # type: ignore[union-attr]
"""MicroStrategy report name (= bucket key without ".csv") → report id."""

assert len(BY_TABLE) == len(SOURCES), "two sources load the same table"
assert not set(LEGACY_TABLES) & set(BY_TABLE), "a legacy table is also a source's table"


def table_columns() -> dict[str, tuple[tuple[str, str], ...]]:
    """Every table of schema ``api`` → its (column, SQL type) pairs in order, ``updated_at`` last."""
    tables = {s.table: tuple((c.name, c.sql_type) for c in s.columns) for s in SOURCES}
    tables.update(LEGACY_TABLES)
    return {table: (*columns, (UPDATED_AT, "timestamp")) for table, columns in tables.items()}


def schema_sql() -> str:
    """The DDL of every table (``CREATE TABLE IF NOT EXISTS``), as applied to a new database."""
    parts = [f"CREATE SCHEMA IF NOT EXISTS {SCHEMA};"]
    for table, columns in table_columns().items():
        body = ",\n".join(f"    {quote(name)} {sql_type}" for name, sql_type in columns)
        parts.append(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{quote(table)} (\n{body}\n);")
    return "\n\n".join(parts) + "\n"


def quote(identifier: str) -> str:
    """An SQL identifier, always double-quoted (``group`` is a reserved word)."""
    return '"' + identifier.replace('"', '""') + '"'


if __name__ == "__main__":
    print(schema_sql(), end="")
