"""Read a source CSV as text, map its columns, parse values and validate them.

Every value is read as text first (no type inference: codes keep leading zeros,
``8640`` never becomes ``8640.0``), then parsed by the kind its pandera column
declares (int64, float64, datetime64 for the date field, str). Parse failures and
pandera failures are collected together, so one run reports every broken column,
each with its first offending rows (CSV line numbers, header = line 1).
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.csv as pacsv
from pandera.errors import SchemaErrors

from bond_reporting.errors import ValidationError
from config.sources import Source

SHOWN_ROWS = 5  # offending rows quoted per failed check

# ASCII digits only. Numbers may carry surrounding blanks (as the typed reader and PostgreSQL
# accept); no separators, currency signs, or exotic forms.
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT = re.compile(r"[ \t]*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[ \t]*", re.ASCII)
_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{4}", re.ASCII)
_INT64 = (-(2**63), 2**63 - 1)


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
    line numbers; so the thorough path alone defines what is valid.
    """
    header = _read_header(path, label)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if not duplicates and all(name in header for name in source.field_maps):
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
    types = {header: words[kind] for header, kind in kinds.items()}
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
        series = table.column(header).to_pandas()
        kind = kinds[header]
        if kind == "float":
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
            if (series == "").any():
                return None
            typed[name] = series
    frame = pd.DataFrame(typed)
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors:
        return None
    return frame


def pa_types() -> dict[str, pyarrow.DataType]:
    """pyarrow column types by kind: dates and whole numbers are dictionary-encoded text, parsed
    once per distinct value by the thorough path's own rules."""
    distinct = pyarrow.dictionary(pyarrow.int32(), pyarrow.string())
    return {"text": pyarrow.string(), "date": distinct, "int": distinct, "float": pyarrow.float64()}


def read_csv_as_text(path: Path, source: str, mapped: Collection[str] | None = None) -> pd.DataFrame:
    """Every cell as a ``str`` (empty cell → ``""``); rejects empty, header-only, ragged and
    non-UTF-8 files, and duplicated header names among ``mapped`` (all names if None), with a
    message naming ``source``. Other duplicated or blank headers (unused sheet columns) are renamed."""
    header = _read_header(path, source)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    checked = [name for name in duplicates if mapped is None or name in mapped]
    if checked:
        raise ValidationError(f"{source}: duplicate header column(s) {checked}")
    header = _unique_names(header)
    try:
        with warnings.catch_warnings():
            # pandas only *warns* when a data row is longer than the header; make it an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                dtype=str,
                names=header,
                header=0,
                index_col=False,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8-sig",
                skip_blank_lines=True,
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        detail = str(exc).strip().replace("Error tokenizing data. C error: ", "")
        raise ValidationError(f"{source}: ragged row: {detail}") from None
    if frame.empty:
        raise ValidationError(f"{source}: header only, no data rows")
    # A row *shorter* than the header reads as trailing empty cells, reported by the "not empty" check.
    return frame


def _unique_names(header: list[str]) -> list[str]:
    """Header names made unique (``Notes``, ``Notes.1``, ...); unique names are kept as they are."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def map_columns(frame: pd.DataFrame, field_maps: dict[str, str], source: str) -> pd.DataFrame:
    """Keep the mapped CSV columns (others are ignored), renamed and in table order."""
    missing = [name for name in field_maps if name not in frame.columns]
    if missing:
        raise ValidationError(f"{source}: missing column(s) {missing}; the file has {list(frame.columns)}")
    return frame[list(field_maps)].rename(columns=field_maps)


def parse_and_validate(text: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Text frame (already mapped) → typed frame; raise one ValidationError listing every failure."""
    failures: list[Failure] = []
    typed: dict[str, pd.Series] = {}
    for name, column in schema.columns.items():
        empty = (text[name] == "").to_numpy()
        if empty.any():
            failures.append(_failure(name, "not empty (empty cell or short row)", text[name], empty))
        values, bad, requirement = _parse(text[name], str(column.dtype), empty)
        typed[name] = values
        if (bad & ~empty).any():
            failures.append(_failure(name, requirement, text[name], bad & ~empty))
        # The column's own checks (dtype, ranges) run on the values that did parse.
        try:
            pa.DataFrameSchema({name: column}).validate(values[~bad].to_frame(name), lazy=True)
        except SchemaErrors as exc:
            failures.extend(_schema_failures(exc, text))
    frame = pd.DataFrame(typed, index=text.index)
    if failures:
        raise ValidationError(f"{source}: {len(failures)} problem(s): " + "; ".join(f.describe() for f in failures))
    return frame


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


def _failure(column: str, check: str, raw: pd.Series, bad: np.ndarray) -> Failure:
    positions = np.flatnonzero(bad)
    rows = [(int(p) + 2, str(raw.iloc[p])) for p in positions[:SHOWN_ROWS]]
    return Failure(column, check, rows, len(positions))


def _schema_failures(exc: SchemaErrors, text: pd.DataFrame) -> list[Failure]:
    cases = exc.failure_cases
    out = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        indexes = [i for i in group["index"].tolist() if i is not None and not pd.isna(i)]
        if column in text.columns and indexes:
            positions = [text.index.get_loc(i) for i in indexes]
            rows = [(p + 2, str(text[column].iloc[p])) for p in positions[:SHOWN_ROWS]]
        else:
            rows = [(0, str(v)) for v in group["failure_case"].tolist()[:SHOWN_ROWS]]
        out.append(Failure(str(column), str(check), rows, max(len(indexes), 1)))
    return out


def read_header(path: Path) -> list[str]:
    """The CSV's header row ([] for an empty file); bad bytes are replaced, not raised."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle), [])


def _read_header(path: Path, source: str) -> list[str]:
    """Header of a UTF-8 file with a non-empty header row, or ValidationError."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            _check_utf8(handle)
        header = read_header(path)
    except UnicodeDecodeError:
        _raise_not_utf8(path, source)
    if not header or not any(cell.strip() for cell in header):
        raise ValidationError(f"{source}: empty file (no header row)")
    return header


def _check_utf8(handle: object) -> None:
    """Decode the rest of the file in chunks (raises UnicodeDecodeError on bad bytes)."""
    while handle.read(1 << 20):  # type: ignore[attr-defined]
        pass


def _raise_not_utf8(path: Path, source: str) -> None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationError(f"{source}: not UTF-8: byte {data[exc.start : exc.start + 1]!r} at line {line}") from None
