"""Unit tests of the pure validation steps (no services)."""

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bond_reporting.errors import EtlError, ValidationError
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
    table = read_csv_as_text(path, "S1")
    return parse_and_validate(map_columns(table, source.field_maps, "S1"), source.schema, "S1")


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
        ("A1,6200,3/5/2024,G,2024,D,1e999,2", "obligated", "no exponent notation"),
        ("A1,6200,3/5/2024,G,2024,D,1E-400,2", "obligated", "no exponent notation"),
        ("A1,6200,3/5/2024,G,2024,D,1.005,2", "obligated", "at most 2 decimal places"),
        ("A1,6200,3/5/2024,G,2024,D,-10000000000,2", "obligated", "amount below 10,000,000,000 dollars"),
        ("A1,6200,3/5/2024,G,2024,D,1,99999999999999999999999.99", "expenses", "amount below 10,000,000,000"),
        ("A1 ,6200,3/5/2024,G,2024,D,1,2", "fund", "no leading or trailing spaces"),
        ("A1,6200,3/5/2024,\tG,2024,D,1,2", "group", "no leading or trailing spaces"),
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
        (HEADER.encode() + b"\nA1,6200,3/5/2024,G,2024,D,1,2\nA1,6200,3/5/2024,G,2024,D,1,2,9\n", "ragged row: line 3"),
    ],
)
def test_malformed_files_are_rejected_with_the_reason(tmp_path, content, expected):
    with pytest.raises(ValidationError, match=expected):
        validate(tmp_path, content)


def test_non_utf8_names_the_line(tmp_path):
    with pytest.raises(ValidationError, match="at line 3"):
        validate(tmp_path, HEADER.encode() + b"\nA1,6200,3/5/2024,G,2024,D,1,2\nA\xe9,6200,3/5/2024,G,2024,D,1,2\n")


def test_short_row_is_a_ragged_row_with_field_counts(tmp_path):
    with pytest.raises(ValidationError, match=r"S1: ragged row: line 3 has 7 fields, the header has 8$"):
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


@pytest.mark.parametrize(
    ("value", "check"),
    [
        ("1e-400", "no exponent notation"),  # reads as 0.0, but PostgreSQL would store it
        ("2.5E3", "no exponent notation"),
        ("0.125", "at most 2 decimal places"),
        ("123456789012.34", "amount below 10,000,000,000 dollars"),
    ],
)
def test_the_typed_reader_refuses_bad_amounts_as_the_text_path_does(tmp_path, value, check):
    from bond_reporting.validation import validate_file

    path = tmp_path / "source.csv"
    path.write_text(f"{HEADER}\nA1,6200,3/5/2024,G,2024,D,1,2\nA1,6200,3/5/2024,G,2024,D,{value},2\n")
    with pytest.raises(ValidationError) as failure:
        validate_file(path, S1, "S1")
    assert str(failure.value) == f"S1: 1 problem(s): column 'obligated' fails {check!r} on 1 row: line 3: {value!r}"


def test_amounts_in_cents_of_every_size_below_the_limit_pass_both_paths(tmp_path):
    from bond_reporting.validation import validate_file

    amounts = ["0.01", "-0.07", "1234567.89", "9999999999.99", "-9999999999.99", "0.1", "5"]
    rows = "".join(f"A1,6200,3/5/2024,G,2024,D,{a},{a}\n" for a in amounts)
    path = tmp_path / "source.csv"
    path.write_text(f"{HEADER}\n{rows}")
    assert validate_file(path, S1, "S1")["obligated"].tolist() == [float(a) for a in amounts]
    assert validate(tmp_path, f"{HEADER}\n{rows}")["expenses"].tolist() == [float(a) for a in amounts]


def test_names_keep_their_spaces_codes_do_not(tmp_path):
    source = BY_TABLE["all_bonds_program_names"]
    header = ",".join(source.field_maps)
    frame = validate(tmp_path, f"{header}\nP1, Public Works ,2018, Streets ,Sub ,1,1\n", source)
    assert frame["department_name"].tolist() == [" Public Works "]
    with pytest.raises(ValidationError, match="column 'dashboard_deptfundprogact' fails 'no leading or trailing"):
        validate(tmp_path, f"{header}\nP1 ,Public Works,2018,Streets,Sub,1,1\n", source)


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


# --- physical line numbers, ragged rows, control characters, HTML pages (issue 9, item 6) ------


def check_both_paths(tmp_path: Path, content: bytes, source: dict = S1) -> str:
    """The one message for ``content``: the public entry (fast path first) and the thorough path
    alone must both refuse it, with the same words."""
    from bond_reporting.validation import validate_file

    path = tmp_path / "source.csv"
    path.write_bytes(content)
    with pytest.raises(EtlError) as fast:
        validate_file(path, source, "S1")
    with pytest.raises(EtlError) as thorough:
        validate(tmp_path, content, source)
    assert str(fast.value) == str(thorough.value)
    return str(fast.value)


GOOD = b"A1,6200,3/5/2024,G,2024,D,1,2"
BAD_OBLIGATED = b"column 'obligated' fails 'number (no separators or currency signs)' on 1 row"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            HEADER.encode() + b"\nA1,6200,3/5/2024,G,2024,D,TBD,2\n",
            b"line 2: 'TBD'",
            id="first data row",
        ),
        pytest.param(
            HEADER.encode() + b"\n" + GOOD + b"\n\n\n" + b"A1,6200,3/5/2024,G,2024,D,TBD,2\n",
            b"line 5: 'TBD'",
            id="blank lines",
        ),
        pytest.param(
            HEADER.encode() + b"\r\n" + GOOD + b"\r\n\r\n" + b"A1,6200,3/5/2024,G,2024,D,TBD,2\r\n",
            b"line 4: 'TBD'",
            id="CRLF and a blank line",
        ),
        pytest.param(
            HEADER.encode() + b"\r" + GOOD + b"\r" + b"A1,6200,3/5/2024,G,2024,D,TBD,2\r",
            b"line 3: 'TBD'",
            id="lone CR",
        ),
        pytest.param(
            HEADER.encode() + b'\nA1,6200,3/5/2024,"G\r\nsecond\nthird",2024,D,1,2\nA1,6200,3/5/2024,G,2024,D,TBD,2\n',
            b"line 5: 'TBD'",
            id="quoted multi-line cell in an earlier row",
        ),
        pytest.param(
            HEADER.encode() + b"\n" + GOOD + b'\nA1,6200,3/5/2024,"G\nsecond",2024,D,TBD,2\n',
            b"line 4: 'TBD'",  # the record starts on line 3, the bad cell on line 4
            id="quoted multi-line cell before the bad value in its row",
        ),
        pytest.param(
            b"\xef\xbb\xbf" + HEADER.encode() + b"\n" + GOOD + b"\nA1,6200,3/5/2024,G,2024,D,TBD,2",
            b"line 3: 'TBD'",
            id="BOM, no final newline",
        ),
    ],
)
def test_lines_are_physical_lines_of_the_file(tmp_path, content, expected):
    message = check_both_paths(tmp_path, content)
    assert message == "S1: 1 problem(s): " + (BAD_OBLIGATED + b": " + expected).decode()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            HEADER.encode() + b"\nA1,6200,3/5/2024,G,2024,D,1,2,9\n" + GOOD + b"\n",
            "S1: ragged row: line 2 has 9 fields, the header has 8",
            id="first data row too long",
        ),
        pytest.param(
            HEADER.encode() + b"\n" + GOOD + b"\n\n" + GOOD + b"\nA1,6200,3/5/2024,G,2024,D,1\n",
            "S1: ragged row: line 5 has 7 fields, the header has 8",
            id="last row too short",
        ),
        pytest.param(
            HEADER.encode() + b"\n" + GOOD + b"\nA1\n" + GOOD + b",9\r\n" + GOOD + b",9,9",
            "S1: 3 ragged rows: line 3 has 1 field, line 4 has 9 fields, line 5 has 10 fields, the header has 8",
            id="several, no final newline",
        ),
        pytest.param(
            HEADER.encode() + b'\nA1,6200,3/5/2024,"G\nH",2024,D,1\n' + GOOD + b"\n",
            "S1: ragged row: line 2 has 7 fields (a quoted cell runs to line 3), the header has 8",
            id="multi-line record",
        ),
        pytest.param(
            HEADER.encode() + b"\n" + GOOD + b'\nA1,6200,3/5/2024,G,2024,D,1,"2\n' + GOOD + b"\n",
            "S1: line 3: a quoted cell is never closed (it runs to the end of the file)",
            id="quote never closed in the last column",
        ),
        pytest.param(
            HEADER.encode() + b'\nA1,6200,3/5/2024,"G,2024,D,1,2\n' + GOOD + b"\n",
            "S1: line 2: a quoted cell is never closed (it runs to the end of the file)",
            id="quote never closed",
        ),
    ],
)
def test_ragged_rows_name_the_line_and_the_field_counts(tmp_path, content, expected):
    assert check_both_paths(tmp_path, content) == expected


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
@pytest.mark.parametrize(
    ("column", "row"),
    [
        ("fund", "A{c}1,6200,3/5/2024,G,2024,D,1,2"),
        ("group", '"A1",6200,3/5/2024,"G{c}",2024,D,1,2'),
        ("department", "A1,62{c}00,3/5/2024,G,2024,D,1,2"),
        ("date", "A1,6200,3/5/2024{c},G,2024,D,1,2"),
        ("obligated", "A1,6200,3/5/2024,G,2024,D,{c}1,2"),
        ("expenses", "A1,6200,3/5/2024,G,2024,D,1,2{c}"),
    ],
)
def test_control_characters_in_mapped_columns_are_refused_with_column_and_line(tmp_path, char, column, row):
    content = f"{HEADER}\n{GOOD.decode()}\n\n{row.format(c=char)}\n".encode()
    message = check_both_paths(tmp_path, content)
    value = row.format(c=char).replace('"', "").split(",")[list(S1.field_maps.values()).index(column)]
    assert message == f"S1: 1 problem(s): column '{column}' fails 'no control characters' on 1 row: line 4: {value!r}"


def test_tabs_and_quoted_line_breaks_in_text_and_junk_in_unmapped_columns_are_accepted(tmp_path):
    """Decided: tab anywhere, CR/LF inside a quoted text cell, and anything in a column the
    load does not read, are data; both paths accept them and give the same frame."""
    from bond_reporting.validation import validate_file

    content = (
        f"{HEADER},Notes\r\n"
        'A1,6200,3/5/2024,"G\tx",2024,"D\r\nsecond line",1,2,"nul \x00 here"\r\n'
        f"\r\n{GOOD.decode()},\x07\r\n"
    ).encode()
    path = tmp_path / "source.csv"
    path.write_bytes(content)
    fast, thorough = validate_file(path, S1, "S1"), validate(tmp_path, content)
    pd.testing.assert_frame_equal(fast, thorough)
    assert fast["group"].tolist() == ["G\tx", "G"] and fast["division"].tolist() == ["D\r\nsecond line", "D"]


def test_the_fast_path_reads_crlf_blank_lines_and_multi_line_cells(tmp_path):
    """Clean files with CRLF, blank lines or quoted line breaks stay on the typed reader."""
    from bond_reporting.validation import _read_typed

    path = tmp_path / "source.csv"
    path.write_bytes(HEADER.encode() + b"\r\n" + GOOD + b'\r\n\r\nA1,6200,3/5/2024,"G\r\nH",2024,D,1,2\r\n')
    frame = _read_typed(path, S1)
    assert frame is not None and frame["group"].tolist() == ["G", "G\r\nH"]


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><head><title>Sign in - Google Accounts</title></head><body></body></html>",
        b'\xef\xbb\xbf\r\n  <html lang="en"><head><meta charset="utf-8">',
        b"<HTML><BODY>Error 404 (Not Found)!!1</BODY></HTML>\n",
        b"<!-- a comment first -->\n<html>",
        "<html><body>Ce fichier est introuvable \xe9</body></html>".encode("latin-1"),  # not even UTF-8
    ],
)
def test_an_html_page_is_named_as_such(tmp_path, body):
    assert check_both_paths(tmp_path, body) == (
        "S1: answered with an HTML page, not CSV (is the sheet still published?)"
    )


@pytest.mark.parametrize("folder", ["blank-line-then-bad-value", "ragged-first-row"])
def test_the_repository_copy_of_a_shared_case_is_identical(folder):
    from tests.support.cases import LOCAL_CASES, SHARED_CASES

    if not (SHARED_CASES / folder).is_dir():
        pytest.skip("../shared/cases is not beside this clone")
    shared = sorted((SHARED_CASES / folder).glob("*.csv"))
    assert [p.name for p in shared] == [p.name for p in sorted((LOCAL_CASES / folder).glob("*.csv"))]
    for path in shared:
        assert path.read_bytes() == (LOCAL_CASES / folder / path.name).read_bytes()


@pytest.mark.parametrize("ending", [b"\n", b""])
def test_a_one_column_file_keeps_every_row_and_its_line(tmp_path, ending):
    path = tmp_path / "one.csv"
    path.write_bytes(b"A\n1\n\n" + b'"2\n2b"' + ending)
    table = read_csv_as_text(path, "S")
    assert table.frame["A"].tolist() == ["1", "2\n2b"] and table.frame.index.tolist() == [2, 4]
    path.write_bytes(b'A\n1\n"2' + ending)
    with pytest.raises(ValidationError, match=r"^S: line 3: a quoted cell is never closed"):
        read_csv_as_text(path, "S")


# --- the fast path never accepts what the thorough path refuses, and reads the same values -----

_SPECIAL = st.sampled_from(['"', ",", "\n", "\r", "\r\n", "\t", " ", "\x00", "\x1b", "\x85", "é", ""])
_TEXT = st.lists(st.one_of(st.sampled_from(["A1", "0086", "G", "x y"]), _SPECIAL), min_size=0, max_size=4).map("".join)


def _cell(value: str, quote: bool) -> str:
    return '"' + value.replace('"', '""') + '"' if quote else value


G2 = BY_TABLE["bond_2020_baseline_spend"]
SHAPES = {  # a source, its header, a good row: S1 (every column mapped), G2 (an unmapped last column)
    "S1": (S1, HEADER, ["A1", "6200", "3/5/2024", "G", "2024", "D", "1", "2"]),
    "G2": (G2, "Dashboard DeptFundProgAct,Date,Amount,Notes", ["P1", "10/1/2025", "5", "note"]),
}


@st.composite
def _csv_files(draw, header: str, good: list[str]) -> bytes:
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [header]
    for _ in range(draw(st.integers(1, 4))):
        cells = list(good)
        for index in draw(st.lists(st.integers(0, len(good) - 1), max_size=3)):
            cells[index] = draw(st.one_of(_TEXT, st.sampled_from(["12", "1.5", "3/5/2024", "TBD"])))
        quoted = [_cell(c, draw(st.booleans())) if ('"' not in c or draw(st.booleans())) else c for c in cells]
        lines.append(",".join(quoted))
        lines.extend([""] * draw(st.integers(0, 1)))
    end = draw(st.sampled_from([newline, ""]))
    return (newline.join(lines) + end).encode()


@pytest.mark.parametrize("shape", list(SHAPES))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_path_agrees_with_the_thorough_path(tmp_path, shape, data):
    from bond_reporting.validation import _read_header, _read_typed, validate_file

    source, header, good = SHAPES[shape]
    content = data.draw(_csv_files(header, good))
    path = tmp_path / "generated.csv"
    path.write_bytes(content)
    try:
        thorough = validate(tmp_path, content, source)
    except EtlError as exc:
        thorough = str(exc)
    try:
        result = validate_file(path, source, "S1")
    except EtlError as exc:
        result = str(exc)
    if isinstance(thorough, str):
        assert result == thorough  # refused by both, with the same words
    else:
        pd.testing.assert_frame_equal(result, thorough)
    try:
        plain = _read_header(path, "S1")[1]
    except EtlError:
        return
    fast = _read_typed(path, source) if plain else None  # what validate_file's fast path returns
    if fast is not None:
        assert not isinstance(thorough, str), thorough
        pd.testing.assert_frame_equal(fast, thorough)


def test_a_stray_quote_does_not_hide_a_quote_left_open_in_an_unmapped_column(tmp_path):
    """An even number of quotes is not enough: one stray, one never closed (pyarrow would drop P3)."""
    content = b'Dashboard DeptFundProgAct,Date,Amount,Notes\nP"1,10/1/2025,5,\nP2,10/1/2025,6,"open\nP3,10/1/2025,7,\n'
    assert check_both_paths(tmp_path, content, G2) == (
        "S1: line 3: a quoted cell is never closed (it runs to the end of the file)"
    )
