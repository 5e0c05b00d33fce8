"""The fast renderer gives exactly the bytes the old one gave (json.dumps of dict records), and the
human CSV exactly pandas' to_csv except for neutralised formula cells."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bond_reporting import render
from bond_reporting.errors import PublishError

# ---------------------------------------------------------------------------------------------- reference
# The renderer as it was before orjson (socrata.render_records + json.dumps): the byte format Socrata
# has always received.


def old_column(column: pd.Series) -> list[Any]:
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else None
    if kind in ("i", "u", "b"):
        return column.to_numpy().tolist()
    if kind == "f":
        values = column.to_numpy(np.float64)
        missing = np.isnan(values)
        if np.isinf(values).any():
            raise PublishError("infinite")
        boxed = values.astype(object)
        boxed[missing] = None
        return boxed.tolist()
    boxed = column.to_numpy(object, copy=True)
    boxed[column.isna().to_numpy()] = None
    return boxed.tolist()


def old_json(frame: pd.DataFrame) -> bytes:
    names = [str(c) for c in frame.columns]
    columns = [old_column(frame[name]) for name in frame.columns]
    records = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return json.dumps(records, allow_nan=False).encode("ascii")


def new_json(frame: pd.DataFrame, chunk_rows: int) -> bytes:
    return b"".join(render.json_array(frame, chunk_rows))


def old_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def new_csv(frame: pd.DataFrame, chunk_rows: int = 3) -> bytes:
    return b"".join(render.csv_lines(frame, chunk_rows))


# ---------------------------------------------------------------------------------------------- frames

TRICKY_FLOATS = [0.0, -0.0, 1e-05, 9.99e-05, 1e-4, 0.1, 1 / 3, 64703.38, 1e15, 1e16, 1.5e16, 1e300, 5e-324, -2.5e-7]
TRICKY_TEXT = [
    'say "hi"',
    "back\\slash",
    "naïve café",
    "日本",
    "emoji 😀",
    "tab\there",
    "line\nbreak",
    "",
    "a,b",
    "\x00\x1f",
]

floats = st.one_of(
    st.floats(allow_infinity=False, allow_nan=True, width=64),
    st.sampled_from(TRICKY_FLOATS),
    st.integers(-(10**9), 10**9).map(lambda c: c / 100),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from([*TRICKY_TEXT, "=1+1", "+cmd", "-x", "@sum", "\tx", "\rx"]))


@st.composite
def frames(draw) -> pd.DataFrame:
    n = draw(st.integers(0, 12))
    width = draw(st.integers(1, 5))
    data: dict[str, Any] = {}
    for j in range(width):
        kind = draw(st.sampled_from(["float", "int", "bool", "text", "text-none", "str-dtype", "date", "mixed"]))
        name = draw(st.sampled_from([f"c{j}", f"Ü{j}", f'q"{j}', f"sp ace{j}"]))
        if kind == "float":
            data[name] = pd.Series(draw(st.lists(floats, min_size=n, max_size=n)), dtype=np.float64)
        elif kind == "int":
            data[name] = pd.Series(draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n)), dtype=np.int64)
        elif kind == "bool":
            data[name] = pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        elif kind in ("text", "text-none"):
            values = draw(
                st.lists(st.one_of(texts, st.none()) if kind == "text-none" else texts, min_size=n, max_size=n)
            )
            data[name] = pd.Series(values, dtype=object)
        elif kind == "str-dtype":
            values = draw(st.lists(st.one_of(texts, st.none()), min_size=n, max_size=n))
            data[name] = pd.Series(values, dtype="str")
        elif kind == "date":
            days = draw(st.lists(st.integers(0, 20000), min_size=n, max_size=n))
            dates = pd.Timestamp("1990-01-01") + pd.to_timedelta(days, unit="D")
            data[name] = pd.Series(dates.strftime("%Y-%m-%dT00:00:00.000"), dtype=object)
        else:
            values = draw(st.lists(st.one_of(st.none(), st.integers(-5, 5), floats, texts), min_size=n, max_size=n))
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


# ---------------------------------------------------------------------------------------------- JSON


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.integers(1, 5))
def test_json_is_byte_for_byte_the_old_rendering(frame: pd.DataFrame, chunk_rows: int) -> None:
    assert new_json(frame, chunk_rows) == old_json(frame)


@settings(max_examples=200, deadline=None)
@given(st.lists(floats, min_size=1, max_size=50))
def test_every_float_is_repr_exact(values: list[float]) -> None:
    frame = pd.DataFrame({"x": np.array(values, dtype=np.float64)})
    text = new_json(frame, 7)
    assert text == old_json(frame)
    parsed = json.loads(text)
    for record, value in zip(parsed, values, strict=True):
        assert record["x"] is None if math.isnan(value) else repr(record["x"]) == repr(value)


def test_the_edges_by_hand() -> None:
    frame = pd.DataFrame(
        {
            "f": pd.Series([1e-05, np.nan, -0.0, 1e16], dtype=np.float64),
            "i": pd.Series([1, -2, 3, 2**62], dtype=np.int64),
            "t": pd.Series(['"q"', None, "é", "=A1"], dtype=object),
            "d": pd.Series(["2023-01-15T00:00:00.000", None, "2023-02-15T00:00:00.000", ""], dtype="str"),
        }
    )
    assert new_json(frame, 2) == (
        b'[{"f": 1e-05, "i": 1, "t": "\\"q\\"", "d": "2023-01-15T00:00:00.000"}, '
        b'{"f": null, "i": -2, "t": null, "d": null}, '
        b'{"f": -0.0, "i": 3, "t": "\\u00e9", "d": "2023-02-15T00:00:00.000"}, '
        b'{"f": 1e+16, "i": 4611686018427387904, "t": "=A1", "d": ""}]'
    )
    assert new_json(frame, 2) == old_json(frame)
    assert render.JsonRenderer(frame).array(1, 2) == b'[{"f": null, "i": -2, "t": null, "d": null}]'


def test_empty_frame_is_an_empty_array() -> None:
    frame = pd.DataFrame({"a": pd.Series([], dtype=np.float64), "b": pd.Series([], dtype=object)})
    assert new_json(frame, 10) == b"[]" == old_json(frame)


def test_infinity_is_refused() -> None:
    with pytest.raises(PublishError, match="x holds an infinite number"):
        new_json(pd.DataFrame({"x": [1.0, float("-inf")]}), 10)


def test_timestamps_are_refused_as_before() -> None:
    frame = pd.DataFrame({"d": pd.to_datetime(["2023-01-01"])})
    with pytest.raises(TypeError):
        old_json(frame)
    with pytest.raises(TypeError):
        new_json(frame, 10)


# ---------------------------------------------------------------------------------------------- CSV


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.integers(1, 5))
def test_csv_is_pandas_to_csv_with_formula_cells_neutralised(frame: pd.DataFrame, chunk_rows: int) -> None:
    # Python 3.11's csv module leaves a bare CR unquoted when the line ends in LF; we quote it.
    assume(not any(isinstance(v, str) and "\r" in v for name in frame.columns for v in frame[name].tolist()))
    expected = frame.copy()
    for name in expected.columns:
        if not isinstance(expected[name].dtype, np.dtype) or expected[name].dtype == object:
            safe = [render.neutralise(v) if isinstance(v, str) else v for v in expected[name].tolist()]
            expected[name] = pd.Series(safe, dtype=expected[name].dtype, index=expected.index)
    assert new_csv(frame, chunk_rows) == old_csv(expected)
    shared = render.prepare(frame)  # the folder sink factorizes once for both files
    assert b"".join(render.json_array(frame, chunk_rows, shared)) == old_json(frame)
    assert b"".join(render.csv_lines(frame, chunk_rows, shared)) == old_csv(expected)


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_formula_cells_start_with_a_quote_in_the_csv_but_not_in_the_json(cell: str) -> None:
    frame = pd.DataFrame({"name": [cell, "plain"], "amount": [-1.5, 2.0]})
    lines = pd.read_csv(pd.io.common.BytesIO(new_csv(frame)), dtype=str, keep_default_na=False)
    assert lines["name"].tolist() == ["'" + cell, "plain"]
    assert lines["amount"].tolist() == ["-1.5", "2.0"]  # numbers are not text: untouched
    assert json.loads(new_json(frame, 10))[0]["name"] == cell


def test_a_carriage_return_inside_a_cell_is_quoted() -> None:
    assert new_csv(pd.DataFrame({"a": ["x\ry", "z"], "b": [1, 2]})) == b'a,b\n"x\ry",1\nz,2\n'


def test_zero_and_negative_zero_stay_distinct_and_repeats_share_text() -> None:
    frame = pd.DataFrame({"f": [0.0, -0.0, 0.0, np.nan, -0.0, 1e-05, 1e-05], "i": [7, 7, 8, 7, 8, 7, 7]})
    assert new_json(frame, 3) == old_json(frame)
    assert b'"f": -0.0, "i": 7}' in new_json(frame, 3)
