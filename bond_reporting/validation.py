"""Read a source CSV as text, map its columns, parse values and validate them.

Every value is read as text first (no type inference: codes keep leading zeros,
``8640`` never becomes ``8640.0``), then parsed by the kind its pandera column
declares (int64, float64, datetime64 for the date field, str). Parse failures and
pandera failures are collected together, so one run reports every broken column,
each with its first offending rows.

Spec: docs/data-contract.md §3.2 (reading a CSV) and §3.3 (validation).

Locations are **physical lines** of the file as downloaded (header = line 1): blank lines,
CRLF or CR line ends and line breaks inside quoted cells all count, so an editor's "go to
line" lands on the value. A value inside a multi-line record is placed on the line where
its cell starts.

Control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) are refused in every
mapped column, except tab anywhere and CR/LF inside a quoted text cell (multi-line text,
stored as it is). PostgreSQL cannot store NUL, and the others are invisible junk on the
dashboard. Unmapped columns are never read, so junk there is ignored.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pandera.errors import SchemaErrors

from bond_reporting import checks
from bond_reporting.errors import SourceError, ValidationError
from config.sources import Source

SHOWN_ROWS = 5  # offending rows quoted per failed check

# ASCII digits only. Numbers may carry surrounding blanks (as the typed reader and PostgreSQL
# accept); no separators, currency signs, or exotic forms.
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT = re.compile(r"[ \t]*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[ \t]*", re.ASCII)
_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{4}", re.ASCII)
_INT64 = (-(2**63), 2**63 - 1)
# Refused in mapped columns: Unicode control characters (Cc) except tab, CR and LF (CR/LF reach a
# cell only inside quotes: multi-line text). RE2 syntax (pyarrow).
_CONTROL_RE2 = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{7f}-\x{9f}]"
_SUSPICIOUS = np.zeros(256, dtype=bool)
_SUSPICIOUS[[*range(0x20), 0x7F, 0xC2]] = True
_SUSPICIOUS[[0x09, 0x0A, 0x0D]] = False
# The start of an HTML page (after blanks): what a sign-in or error page looks like.
_HTML = re.compile(rb"\s*<(!doctype\s+html|html|head|body|!--|meta|title|script)", re.IGNORECASE)


@dataclass(frozen=True)
class Failure:
    """One failed check: the column, what it requires, and the offending (line, value) pairs."""

    column: str
    check: str
    rows: list[tuple[int, str]]
    count: int

    def describe(self) -> str:
        shown = ", ".join(f"line {line}: {value!r}" for line, value in self.rows[:SHOWN_ROWS])
        more = f" (+{self.count - SHOWN_ROWS} more)" if self.count > SHOWN_ROWS else ""
        plural = "row" if self.count == 1 else "rows"
        return f"column {self.column!r} fails {self.check!r} on {self.count} {plural}: {shown}{more}"


def validate_file(path: Path, source: Source, label: str) -> pd.DataFrame:
    """Typed, renamed frame of a valid source file, or one ValidationError naming every failure.

    Good files take a fast, strict typed read (pyarrow). Anything that read rejects, or that
    fails a check, is re-read as text by the thorough path, which explains every failure with
    physical line numbers; so the thorough path alone defines what is valid. A body that is an
    HTML page (a sign-in or error page instead of the sheet) is refused first, as such.
    """
    refuse_html(path, label)
    header, plain_quotes = _read_header(path, label)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if not duplicates and all(name in header for name in source.field_maps) and plain_quotes:
        frame = _read_typed(path, source)
        if frame is not None:
            return frame
    text = read_csv_as_text(path, label, mapped=source.field_maps)
    return parse_and_validate(map_columns(text, source.field_maps, label), source.schema, label)


def _read_typed(path: Path, source: Source) -> pd.DataFrame | None:
    """Strict typed read of the mapped columns; None if any value or check is not clean."""
    field_maps, schema = source.field_maps, source.schema
    kinds = {header: column_kind(str(schema.columns[name].dtype)) for header, name in field_maps.items()}
    words = pa_types()
    # Columns with checks on their text (money: no exponent) are read as text and checked first.
    raw_checks = {header: checks.text_checks(schema.columns[name]) for header, name in field_maps.items()}
    types = {header: pyarrow.string() if raw_checks[header] else words[kind] for header, kind in kinds.items()}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(field_maps),
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return None
    if table.num_rows == 0:
        return None
    typed: dict[str, pd.Series] = {}
    for header, name in field_maps.items():
        column = table.column(header)
        if raw_checks[header]:
            if any(rule.failing(column).any() for rule in raw_checks[header]):
                return None
            try:
                column = pc.cast(column, words[kinds[header]])
            except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
                return None
        series = column.to_pandas()
        kind = kinds[header]
        if kind == "float":  # the typed parse itself refuses control characters
            if not np.isfinite(series.to_numpy()).all():
                return None
            typed[name] = series
        elif kind == "int":  # same rules as the thorough path, checked once per distinct value
            categories = pd.Series(series.cat.categories.astype(str))
            values, bad, _ = _parse(categories, "int64", (categories == "").to_numpy())
            if bad.any():
                return None
            typed[name] = pd.Series(values.to_numpy()[series.cat.codes.to_numpy()])
        elif kind == "date":
            categories = pd.Series(series.cat.categories.astype(str))
            values, bad, _ = _parse(categories, "datetime64[s]", (categories == "").to_numpy())
            if bad.any():
                return None
            typed[name] = pd.Series(values.to_numpy()[series.cat.codes.to_numpy()])
        else:
            if (series == "").any() or _any_control(table.column(header)):
                return None
            typed[name] = series
    frame = pd.DataFrame(typed)
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors:
        return None
    return frame


def _any_control(column: pyarrow.ChunkedArray) -> bool:
    """Does any text value hold a refused control character? (see ``control_mask``)"""
    return bool(control_mask(column).any())


def control_mask(column: pyarrow.ChunkedArray | pyarrow.Array) -> np.ndarray:
    """Per value: does it hold a refused control character (module docstring)?

    First a byte scan of each chunk's UTF-8 data (a lookup table, milliseconds per million
    values); only a chunk with a suspicious byte (a C0 byte other than tab/CR/LF, DEL, or 0xC2,
    the lead byte of U+0080-U+00BF) is matched exactly, with RE2.
    """
    chunks = column.chunks if isinstance(column, pyarrow.ChunkedArray) else [column]
    masks = []
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is not None and _SUSPICIOUS[np.frombuffer(data, dtype=np.uint8)].any():
            masks.append(pc.match_substring_regex(chunk, _CONTROL_RE2).to_numpy(zero_copy_only=False))
        else:
            masks.append(np.zeros(len(chunk), dtype=bool))
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def pa_types() -> dict[str, pyarrow.DataType]:
    """pyarrow column types by kind: dates and whole numbers are dictionary-encoded text, parsed
    once per distinct value by the thorough path's own rules."""
    distinct = pyarrow.dictionary(pyarrow.int32(), pyarrow.string())
    return {"text": pyarrow.string(), "date": distinct, "int": distinct, "float": pyarrow.float64()}


@dataclass
class TextTable:
    """Every cell of a CSV as ``str`` (empty cell → ``""``), records in file order.

    ``frame.index`` holds the physical line (1-based, header = 1) on which each record starts.
    ``cell_lines`` maps (record line, column) → the line a cell starts on, only for the cells of
    multi-line records that start below their record's first line (usually none).
    """

    frame: pd.DataFrame
    cell_lines: dict[tuple[int, str], int] = field(default_factory=dict)

    def line(self, record_line: int, column: str) -> int:
        """Physical line on which the cell of ``column`` in the record starting at ``record_line`` starts."""
        return self.cell_lines.get((record_line, column), record_line)


_EOF = "\x00end-of-file\x00"  # fed to the csv reader after the last line: swallowed only by an open quote


def read_csv_as_text(path: Path, source: str, mapped: Collection[str] | None = None) -> TextTable:
    """Every cell as text, each record with its physical line (see ``TextTable``).

    Blank lines are skipped (they still count as lines). Rejects, with a message naming
    ``source``: an HTML page, an empty or header-only file, non-UTF-8 bytes, rows with more or
    fewer fields than the header ("line 2 has 12 fields, the header has 11"), a quoted cell
    that is never closed, and duplicated header names among ``mapped`` (all names if None).
    Other duplicated or blank headers (unused sheet columns) are renamed.
    """
    refuse_html(path, source)
    header, _ = _read_header(path, source)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    checked = [name for name in duplicates if mapped is None or name in mapped]
    if checked:
        raise ValidationError(f"{source}: duplicate header column(s) {checked}")
    names = _unique_names(header)
    width = len(names)
    records: list[list[str]] = []
    starts: list[int] = []
    cell_lines: dict[tuple[int, str], int] = {}
    ragged: list[tuple[int, int, int]] = []  # first line, last line, fields
    ragged_count = 0
    with open(path, encoding="utf-8-sig", newline="") as handle:
        # strict=False reads stray quotes as pyarrow does ('a"b' stays, '"a"b' is 'ab').
        reader = csv.reader(itertools.chain(handle, [_EOF]), strict=False)
        next(reader)  # the header (may itself span lines)
        end = reader.line_num
        record: list[str] = []
        for record in reader:
            start, end = end + 1, reader.line_num
            if len(record) == width and end == start:  # the usual record: one line, every field
                records.append(record)
                starts.append(start)
            elif not record or record == [_EOF]:
                continue  # a blank line, or the end
            elif len(record) != width:
                ragged_count += 1
                if len(ragged) < SHOWN_ROWS:
                    ragged.append((start, end, len(record)))
            else:  # a multi-line record: the line each later cell starts on
                records.append(record)
                starts.append(start)
                breaks = 0
                for name, cell in zip(names, record, strict=True):
                    if breaks:
                        cell_lines[(start, name)] = start + breaks
                    breaks += _line_breaks(cell)
    # The sentinel is the last record read: on its own if every quote was closed, else swallowed
    # by the open quoted cell (always the last field of the record it opens).
    if record and record[-1].endswith(_EOF) and record != [_EOF]:
        raise ValidationError(f"{source}: line {start}: a quoted cell is never closed (it runs to the end of the file)")
    if records and records[-1] == [_EOF]:  # a one-column file reads the sentinel as a record
        records.pop()
        starts.pop()
    if ragged_count:
        raise ValidationError(_describe_ragged(source, ragged, ragged_count, width))
    if not records:
        raise ValidationError(f"{source}: header only, no data rows")
    columns = zip(*records, strict=True)
    frame = pd.DataFrame({name: _text_series(cells) for name, cells in zip(names, columns, strict=True)})
    frame.index = pd.Index(starts, dtype="int64", name="line")
    return TextTable(frame, cell_lines)


def _text_series(cells: Sequence[str]) -> pd.Series:
    """Python strings → a pandas ``str`` Series (through Arrow: several times faster than pandas)."""
    return pyarrow.array(cells, type=pyarrow.string()).to_pandas()


def _line_breaks(cell: str) -> int:
    """Line breaks inside a cell: LF, CRLF and lone CR each count once (as they do for files)."""
    if "\r" not in cell:
        return cell.count("\n")
    return cell.count("\n") + cell.count("\r") - cell.count("\r\n")


def _describe_ragged(source: str, ragged: list[tuple[int, int, int]], count: int, width: int) -> str:
    def row(first: int, last: int, n: int) -> str:
        spans = f" (a quoted cell runs to line {last})" if last > first else ""
        return f"line {first} has {n} field{'' if n == 1 else 's'}{spans}"

    shown = ", ".join(row(*item) for item in ragged)
    more = f" (+{count - len(ragged)} more)" if count > len(ragged) else ""
    lead = "ragged row" if count == 1 else f"{count} ragged rows"
    return f"{source}: {lead}: {shown}{more}, the header has {width}"


def refuse_html(path: Path, source: str) -> None:
    """Raise if the body is an HTML page (a sign-in or error page served instead of the CSV)."""
    with open(path, "rb") as handle:
        start = handle.read(1024)
    if _HTML.match(start.removeprefix(codecs.BOM_UTF8)):
        raise SourceError(
            f"{source}: answered with an HTML page, not CSV (is the sheet still published?)", retryable=False
        )


def _unique_names(header: list[str]) -> list[str]:
    """Header names made unique (``Notes``, ``Notes.1``, ...); unique names are kept as they are."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def map_columns(table: TextTable, field_maps: dict[str, str], source: str) -> TextTable:
    """Keep the mapped CSV columns (others are ignored), renamed and in table order."""
    frame = table.frame
    missing = [name for name in field_maps if name not in frame.columns]
    if missing:
        raise ValidationError(f"{source}: missing column(s) {missing}; the file has {list(frame.columns)}")
    cell_lines = {(line, field_maps[name]): at for (line, name), at in table.cell_lines.items() if name in field_maps}
    return TextTable(frame[list(field_maps)].rename(columns=field_maps), cell_lines)


def parse_and_validate(table: TextTable, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Text table (already mapped) → typed frame; raise one ValidationError listing every failure."""
    text = table.frame
    failures: list[Failure] = []
    typed: dict[str, pd.Series] = {}
    for name, column in schema.columns.items():
        empty = (text[name] == "").to_numpy()
        if empty.any():
            failures.append(_failure(table, name, "not empty", empty))
        arrow_text = pyarrow.array(text[name], type=pyarrow.large_string())
        control = control_mask(arrow_text)
        if control.any():
            failures.append(_failure(table, name, "no control characters", control))
        refused = empty | control
        for rule in checks.text_checks(column):  # what parsing would hide (money: no exponent)
            failing = rule.failing(arrow_text) & ~refused
            if failing.any():
                failures.append(_failure(table, name, rule.requirement, failing))
                refused = refused | failing
        values, bad, requirement = _parse(text[name], str(column.dtype), refused)
        typed[name] = values
        if (bad & ~refused).any():
            failures.append(_failure(table, name, requirement, bad & ~refused))
        # The column's own checks (dtype, ranges) run on the values that did parse.
        try:
            pa.DataFrameSchema({name: column}).validate(values[~bad].to_frame(name), lazy=True)
        except SchemaErrors as exc:
            failures.extend(_schema_failures(exc, table))
    if failures:
        raise ValidationError(f"{source}: {len(failures)} problem(s): " + "; ".join(f.describe() for f in failures))
    return pd.DataFrame(typed, index=text.index).reset_index(drop=True)


def column_kind(dtype: str) -> str:
    """pandera dtype name → "text", "int", "float" or "date"."""
    if dtype.startswith(("str", "object")):
        return "text"
    if dtype.startswith("int"):
        return "int"
    if dtype.startswith("float"):
        return "float"
    if dtype.startswith("datetime64"):
        return "date"
    raise ValueError(f"unsupported column dtype {dtype}")


def _parse(raw: pd.Series, dtype: str, empty: np.ndarray) -> tuple[pd.Series, np.ndarray, str]:
    """Parse one text column by dtype. Returns (values, unusable-row mask, requirement text).

    Patterns are checked on the distinct values only: amounts are the one column with
    many distinct values, everything else (dates, codes, years) repeats heavily.
    """
    kind = column_kind(dtype)
    if kind == "text":
        return raw, empty, "text"
    if kind == "int":
        bad = empty | ~_matches(raw, _INT, in_range=_INT64)
        values = pd.to_numeric(raw.where(~bad, "0"), errors="coerce").astype("int64")
        return values, bad, "whole number (no decimal point, no separators, 64-bit)"
    if kind == "float":
        bad = empty | ~_matches(raw, _FLOAT)
        values = pd.to_numeric(raw.where(~bad, "0"), errors="coerce").astype("float64")
        bad |= ~np.isfinite(values.to_numpy())
        return values, bad, "number (no separators or currency signs)"
    if kind == "date":
        bad = empty | ~_matches(raw, _DATE)
        # Parsed per distinct value at second resolution, so a typo like 3028 stays representable
        # and is reported by the plausibility check rather than as an overflow.
        codes, uniques = pd.factorize(raw.where(~bad, "1/1/2000"))
        parsed = pd.to_datetime(pd.Series(uniques), format="%m/%d/%Y", errors="coerce").astype("datetime64[s]")
        values = pd.Series(parsed.to_numpy()[codes], index=raw.index)
        bad |= values.isna().to_numpy()  # e.g. 2/30/2024
        return values, bad, "date M/D/YYYY"
    raise AssertionError(kind)


def _matches(raw: pd.Series, pattern: re.Pattern[str], in_range: tuple[int, int] | None = None) -> np.ndarray:
    """Per row: does the value match ``pattern`` (and, as an integer, lie within ``in_range``)?"""
    codes, uniques = pd.factorize(raw)

    def ok(value: str) -> bool:
        if pattern.fullmatch(value) is None:
            return False
        return in_range is None or in_range[0] <= int(value) <= in_range[1]

    return np.fromiter((ok(value) for value in uniques), bool, len(uniques))[codes]


def _failure(table: TextTable, column: str, check: str, bad: np.ndarray) -> Failure:
    raw = table.frame[column]
    positions = np.flatnonzero(bad)
    lines = raw.index[positions[:SHOWN_ROWS]]
    rows = [(table.line(int(line), column), str(value)) for line, value in zip(lines, raw.loc[lines], strict=True)]
    return Failure(column, check, rows, len(positions))


def _schema_failures(exc: SchemaErrors, table: TextTable) -> list[Failure]:
    text = table.frame
    cases = exc.failure_cases
    out = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        indexes = [int(i) for i in group["index"].tolist() if i is not None and not pd.isna(i)]
        if column in text.columns and indexes:  # the index is the record's physical line
            rows = [(table.line(i, column), str(text[column].loc[i])) for i in indexes[:SHOWN_ROWS]]
        else:
            rows = [(0, str(v)) for v in group["failure_case"].tolist()[:SHOWN_ROWS]]
        out.append(Failure(str(column), str(check), rows, max(len(indexes), 1)))
    return out


def read_header(path: Path) -> list[str]:
    """The CSV's header row ([] for an empty file); bad bytes are replaced, not raised."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle), [])


def _read_header(path: Path, source: str) -> tuple[list[str], bool]:
    """Header of a UTF-8 file with a non-empty header row, and whether its quotes are plain
    (``QuoteScan``); or ValidationError."""
    try:
        with open(path, "rb") as handle:
            plain_quotes = _check_utf8(handle)
        header = read_header(path)
    except UnicodeDecodeError:
        _raise_not_utf8(path, source)
    if not header or not any(cell.strip() for cell in header):
        raise ValidationError(f"{source}: empty file (no header row)")
    return header, plain_quotes


def _check_utf8(handle: IO[bytes]) -> bool:
    """Decode the file in chunks (raises UnicodeDecodeError on bad bytes); returns whether its
    quotes are plain (``QuoteScan``)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    quotes = QuoteScan()
    first = True
    while chunk := handle.read(1 << 20):
        if first:
            chunk, first = chunk.removeprefix(codecs.BOM_UTF8), False
        decoder.decode(chunk)
        quotes.feed(chunk)
    decoder.decode(b"", final=True)
    return quotes.plain


class QuoteScan:
    """Are a file's quotes *plain*: every ``"`` one that a CSV reader toggles on, and none left open?

    A ``"`` toggles the quoted state when it opens a field (after a comma, a line end or the start),
    when it is inside a quoted cell (closing it, or the second of an escaped ``""``), or right
    after a closing quote (the escape again). Any other ``"`` is a stray quote in an unquoted
    field, which readers treat differently. With plain quotes the state after the k-th quote is
    just k's parity, so an even count means every quoted cell is closed. pyarrow reads a quoted
    cell left open in the last column silently to the end of the file, so the typed reader is
    only used for plain files; the rest take the thorough path, which tells them apart.
    """

    _OPENS_AFTER = np.array([ord(","), ord("\n"), ord("\r"), ord('"')], dtype=np.uint8)

    def __init__(self) -> None:
        self.count = 0
        self.stray = False
        self._previous = ord("\n")  # the start of the file behaves like a line start

    def feed(self, chunk: bytes) -> None:
        """Scan the next chunk of the file (bytes, in order)."""
        if not chunk:
            return
        if b'"' in chunk:
            data = np.frombuffer(chunk, dtype=np.uint8)
            at = np.flatnonzero(data == ord('"'))
            before = data[np.maximum(at - 1, 0)]
            if at[0] == 0:
                before[0] = self._previous
            quoted = (self.count + np.arange(len(at))) % 2 == 1  # inside a quoted cell
            self.stray |= not bool((quoted | np.isin(before, self._OPENS_AFTER)).all())
            self.count += len(at)
        self._previous = chunk[-1]

    @property
    def plain(self) -> bool:
        return not self.stray and self.count % 2 == 0


def _raise_not_utf8(path: Path, source: str) -> None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
        raise ValidationError(f"{source}: not UTF-8: byte {data[exc.start : exc.start + 1]!r} at line {line}") from None
