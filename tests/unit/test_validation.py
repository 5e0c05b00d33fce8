"""Unit tests of the pure validation steps (no services)."""

from pathlib import Path

import pytest

from bond_reporting.errors import ValidationError
from bond_reporting.loader import AppendColumn
from bond_reporting.validation import map_columns, parse_and_validate, read_csv_as_text
from config.sources import BY_TABLE, EXPENSES_2020, Source

S1 = EXPENSES_2020
HEADER = "Fund,Department,Date,Group,Fiscal Year,Division,Obligated,Expenses"


def validate(tmp_path: Path, text: str | bytes, source: Source = S1):
    path = tmp_path / "source.csv"
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    frame = read_csv_as_text(path, source.name)
    return parse_and_validate(map_columns(frame, source.field_maps, source.name), source.schema, "S1")


def test_text_columns_stay_text_with_leading_zeros(tmp_path):
    frame = validate(tmp_path, f"{HEADER}\n0086,6200,3/5/2024,0001,2024,0620,100,40.5\n")
    row = frame.iloc[0]
    assert (row["fund"], row["group"], row["division"]) == ("0086", "0001", "0620")
    assert row["department"] == 6200 and row["obligated"] == 100.0 and row["expenses"] == 40.5
    assert str(row["date"].date()) == "2024-03-05"


def test_whole_numbers_are_accepted_in_float_columns(tmp_path):
    frame = validate(tmp_path, f"{HEADER}\nA1,6200,03/05/2024,G,2024,D,100,40\n")
    assert frame["obligated"].dtype == "float64" and frame["expenses"].tolist() == [40.0]


def test_extra_columns_are_ignored(tmp_path):
    frame = validate(tmp_path, f"{HEADER},Notes\nA1,6200,3/5/2024,G,2024,D,1,2,call Bob\n")
    assert list(frame.columns) == list(S1.field_maps.values())


@pytest.mark.parametrize(
    ("row", "column", "check"),
    [
        ("A1,6200,3/5/2024,,2024,D,1,2", "group", "not empty"),
        ("A1,6200,3/5/2024,G,2024,D,1,abc", "expenses", "number"),
        ('A1,6200,3/5/2024,G,2024,D,"1,000.50",2', "obligated", "number"),
        ("A1,6200,3/5/2024,G,2024,D,$5,2", "obligated", "number"),
        ("A1,6200.0,3/5/2024,G,2024,D,1,2", "department", "whole number"),
        ("A1,6200,2024-03-05,G,2024,D,1,2", "date", "date M/D/YYYY"),
        ("A1,6200,3/5/24,G,2024,D,1,2", "date", "date M/D/YYYY"),
        ("A1,6200,2/30/2024,G,2024,D,1,2", "date", "date M/D/YYYY"),
        ("A1,6200,3/5/3028,G,2024,D,1,2", "date", "between 2000-01-01 and ten years from today"),
        ("A1,6200,3/5/1999,G,2024,D,1,2", "date", "between 2000-01-01"),
        ("A1,6200,3/5/2024,G,2000,D,1,2", "fiscal_year", "fiscal year > 2000"),
        ("A1,6200,3/5/2024,G,3028,D,1,2", "fiscal_year", "fiscal year > 2000"),
        ("A1,6200,3/5/2024,G,2024,D,nan,2", "obligated", "number"),
        ("A1,6200,3/5/2024,G,2024,D,1e999,2", "obligated", "number"),
    ],
)
def test_bad_values_name_column_check_and_line(tmp_path, row, column, check):
    good = "A1,6200,3/5/2024,G,2024,D,1,2"
    with pytest.raises(ValidationError) as failure:
        validate(tmp_path, f"{HEADER}\n{good}\n{row}\n")
    message = str(failure.value)
    assert f"column {column!r}" in message and check in message and "line 3" in message


def test_every_failure_is_reported_at_once(tmp_path):
    with pytest.raises(ValidationError) as failure:
        validate(tmp_path, f"{HEADER}\nA1,x,3/5/3028,G,1999,D,$1,2\n")
    message = str(failure.value)
    assert "4 problem(s)" in message
    for column in ("department", "date", "fiscal_year", "obligated"):
        assert f"column {column!r}" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file"),
        (b"\n\n", "empty file"),
        (HEADER.encode() + b"\n", "header only"),
        (b"Fund,Fund,Date\n1,2,3\n", "duplicate header"),
        (HEADER.encode() + b"\nA1,6200,3/5/2024,G,2024,D,1,2\nA\xe9,6200,3/5/2024,G,2024,D,1,2\n", "not UTF-8"),
        (HEADER.encode() + b"\nA1,6200,3/5/2024,G,2024,D,1,2\nA1,6200,3/5/2024,G,2024,D,1,2,9\n", "ragged row"),
    ],
)
def test_malformed_files_are_rejected_with_the_reason(tmp_path, content, expected):
    with pytest.raises(ValidationError, match=expected):
        validate(tmp_path, content)


def test_non_utf8_names_the_line(tmp_path):
    with pytest.raises(ValidationError, match="at line 3"):
        validate(tmp_path, HEADER.encode() + b"\nA1,6200,3/5/2024,G,2024,D,1,2\nA\xe9,6200,3/5/2024,G,2024,D,1,2\n")


def test_short_row_is_reported_as_empty_cells(tmp_path):
    with pytest.raises(ValidationError, match=r"'expenses' fails 'not empty.*line 3"):
        validate(tmp_path, f"{HEADER}\nA1,6200,3/5/2024,G,2024,D,1,2\nA1,6200,3/5/2024,G,2024,D,1\n")


def test_missing_column_lists_what_the_file_has(tmp_path):
    with pytest.raises(ValidationError, match=r"missing column\(s\) \['Expenses'\]"):
        validate(tmp_path, "Fund,Department,Date,Group,Fiscal Year,Division,Obligated\nA,1,3/5/2024,G,2024,D,1\n")


@pytest.mark.parametrize("ending", [b"\n", b""])
def test_append_column_adds_the_value_to_every_line(tmp_path, ending):
    path = tmp_path / "f.csv"
    path.write_bytes(b"a,b\n1,2\n3,4" + ending)
    with open(path, "rb") as handle:
        stream = AppendColumn(handle, b",T")
        out = b"".join(iter(lambda: stream.read(3), b""))
    assert out == b"a,b,T\n1,2,T\n3,4,T\n"


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("A1,99999999999999999999,3/5/2024,G,2024,D,1,2", "department"),  # beyond 64 bits
        ("A1,3000000000,3/5/2024,G,2024,D,1,2", "department"),  # beyond the 32-bit SQL column
        ("A1,١٢٣,3/5/2024,G,2024,D,1,2", "department"),  # non-ASCII digits
        ("A1, 6200,3/5/2024,G,2024,D,1,2", "department"),  # blanks in a whole number
    ],
)
def test_whole_numbers_are_ascii_and_fit_their_column(tmp_path, row, column):
    from bond_reporting.validation import validate_file

    with pytest.raises(ValidationError, match=rf"column '{column}' fails .* line 2"):
        validate(tmp_path, f"{HEADER}\n{row}\n")
    with pytest.raises(ValidationError, match=rf"column '{column}' fails .* line 2"):  # the typed reader too
        validate_file(tmp_path / "source.csv", S1, "S1")


def test_fast_and_thorough_paths_agree_on_numbers_with_blanks(tmp_path):
    """The typed reader and the text path accept the same values (blanks around a decimal number)."""
    from bond_reporting.validation import validate_file

    path = tmp_path / "s.csv"
    path.write_text(f"{HEADER}\nA1,6200,3/5/2024,G,2024,D, 5 ,2\n")
    fast = validate_file(path, S1, "S1")
    assert validate(tmp_path, f"{HEADER}\nA1,6200,3/5/2024,G,2024,D, 5 ,2\n")["obligated"].tolist() == [5.0]
    assert fast["obligated"].tolist() == [5.0]


def test_huge_appropriation_is_rejected_not_wrapped(tmp_path):
    source = BY_TABLE["all_bonds_appropriations"]
    text = "Dashboard FundDeptProgAct,Date,Appropriation,Notes\nP1,10/1/2025,99999999999999999999,\n"
    with pytest.raises(ValidationError, match="'amount' fails 'whole number"):
        validate(tmp_path, text, source)
