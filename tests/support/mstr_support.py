"""Shared data for the MicroStrategy tests: the doc's worked example and a tricky all-bonds CSV."""

from __future__ import annotations

from bond_reporting.microstrategy import Policy
from scripts.mstr_server import ALL_BONDS_ID, Report

PASSWORD = "Pa55-word-never-printed"
USERNAME = "etl-user"
PROJECT_ID = "0D2E5F8A11E9B6C700000080EF15C0C2"

# Short time-outs and backoffs so that retry tests take milliseconds.


def use_server(monkeypatch, base_url: str) -> None:
    """Set the MicroStrategy settings (BASE_URL, PROJECT_ID, MSTRO_*) for a test server started with
    USERNAME, PASSWORD and PROJECT_ID, as an operator would."""
    for name, value in {
        "BASE_URL": base_url,
        "PROJECT_ID": PROJECT_ID,
        "MSTRO_USERNAME": USERNAME,
        "MSTRO_PASSWORD": PASSWORD,
    }.items():
        monkeypatch.setenv(name, value)


FAST = Policy(
    connect_timeout=2.0, read_timeout=5.0, run_timeout=5.0, call_window=10.0, attempts=3, backoff=0.01, restarts=2
)

# docs/microstrategy-rest.md §7: the rows and the resulting CSV, byte for byte.
EXAMPLE_ROWS = [
    ("8526", "2020 Mobility Bond - Prop B", "10/01/2022", 1250.5, 0),
    ("8526", "2020 Mobility Bond - Prop B", "10/03/2022", 0, 310.25),
    ("8113", "2016 Mobility Bond - Prop 1", "10/03/2022", -75, 1200),
]
EXAMPLE_CSV = (
    "Fund@Code,Fund@Long Name,Date,Obligated,Expenses\n"
    "8526,2020 Mobility Bond - Prop B,10/01/2022,1250.5,0.0\n"
    "8526,2020 Mobility Bond - Prop B,10/03/2022,0.0,310.25\n"
    "8113,2016 Mobility Bond - Prop 1,10/03/2022,-75.0,1200.0\n"
)


def example_report(report_id: str = "4C5C0F7E4D5A4B1F9E3A2B1C0D9E8F7A") -> Report:
    return Report.from_rows(
        report_id,
        "Worked example",
        [("Fund", ["Code", "Long Name"]), ("Date", ["ID"])],
        ["Obligated", "Expenses"],
        EXAMPLE_ROWS,
    )


ALL_BONDS_HEADER = (
    "Fund@Code,Fund@Long Name,Division (As-Is)@Code,Division (As-Is)@Long Name,Department@Dept,"
    "Department@Long Name,Date,Group (As-Is)@Code,Group (As-Is)@Long Name,Obligated,Expenses"
)
# Cells the CSV writer must get exactly right: quoting of commas, quotes and newlines, text that looks
# numeric (leading zeros), non-ASCII, empty metrics, negative, huge and inexact floats.
TRICKY_LINES = [
    '8620,"Street Reconstruction, 2012 Bond",24K3,Division 3,2400,Corridor Program Office,10/01/2022,'
    "7QX15,Project group 7,1250.5,0.0",
    '0042,"The ""Mobility"" Bond",6BCA,División Año,6200,Public Works,03/15/2023,0001,"two\nlines",0.0,',
    "86A0,2018 Bond - Prop G,62A1,Division 1,6800,Parks,12/31/2023,1AB, leading space,-75.0,1200.0",
    "8113,2016 Mobility Bond - Prop 1,24K5,Division 5,7400,ATD,01/02/2024,9QI08,Project group 9,1e+16,"
    "0.30000000000000004",
]


def all_bonds_csv(plain_rows: int = 19) -> str:
    """The tricky lines plus ``plain_rows`` ordinary ones, as the export must write them."""
    lines = [ALL_BONDS_HEADER, *TRICKY_LINES]
    for i in range(plain_rows):
        lines.append(
            f"81{i % 7:02d},2016 Mobility Bond - Prop {i % 3},24K{i % 4},Division {i % 4},2400,Corridor Program Office,"
            f"{1 + i % 12:02d}/{1 + i % 28:02d}/2023,{i % 10}QG{i:02d},Project group {i},{i * 1000.25},{i * 17.5}"
        )
    return "\n".join(lines) + "\n"


def all_bonds_report(tmp_path, plain_rows: int = 19) -> tuple[Report, str]:
    """The all-bonds report rebuilt by the server from :func:`all_bonds_csv`, and that CSV text."""
    text = all_bonds_csv(plain_rows)
    path = tmp_path / "all_bonds_source.csv"
    path.write_bytes(text.encode("utf-8"))
    return Report.from_csv(ALL_BONDS_ID, path), text
