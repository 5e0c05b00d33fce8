"""Pure functions of the MicroStrategy client: URL normalisation and flattening (doc §1, §5, §6, §7)."""

from __future__ import annotations

import copy
import csv
import io

import pandas as pd
import pytest

from bond_reporting.errors import MicroStrategyError
from bond_reporting.microstrategy import (
    check_grid,
    format_metric,
    grid_columns,
    normalise_base_url,
    page_rows,
)
from tests.support.mstr_support import EXAMPLE_CSV

METRICS = {
    "name": "Metrics",
    "type": "templateMetrics",
    "elements": [{"name": "Obligated"}, {"name": "Expenses"}],
}
# The two responses of doc §7, as printed there (page 2's abbreviated "columns" filled in).
PAGE_1 = {
    "instanceId": "4F1D0C2B9A8E47D6B5C4A3F2E1D0C9B8",
    "status": 1,
    "definition": {
        "grid": {
            "metricsPosition": {"axis": "columns", "index": 0},
            "rows": [
                {
                    "name": "Fund",
                    "type": "attribute",
                    "forms": [{"name": "Code"}, {"name": "Long Name"}],
                    "elements": [{"formValues": ["8526", "2020 Mobility Bond - Prop B"]}],
                },
                {
                    "name": "Date",
                    "type": "attribute",
                    "forms": [{"name": "ID"}],
                    "elements": [{"formValues": ["10/03/2022"]}, {"formValues": ["10/01/2022"]}],
                },
            ],
            "columns": [METRICS],
        }
    },
    "data": {
        "paging": {"total": 3, "current": 2, "offset": 0, "limit": 2},
        "headers": {"rows": [[0, 1], [0, 0]], "columns": [[0, 1]]},
        "metricValues": {"raw": [[1250.5, 0], [0, 310.25]]},
    },
}
PAGE_2 = {
    "definition": {
        "grid": {
            "rows": [
                {
                    "name": "Fund",
                    "forms": [{"name": "Code"}, {"name": "Long Name"}],
                    "elements": [{"formValues": ["8113", "2016 Mobility Bond - Prop 1"]}],
                },
                {"name": "Date", "forms": [{"name": "ID"}], "elements": [{"formValues": ["10/03/2022"]}]},
            ],
            "columns": [METRICS],
        }
    },
    "data": {
        "paging": {"total": 3, "current": 1, "offset": 2, "limit": 2},
        "headers": {"rows": [[0, 0]], "columns": [[0, 1]]},
        "metricValues": {"raw": [[-75, 1200]]},
    },
}


@pytest.mark.parametrize(
    "configured",
    [
        "https://bi.example.org/MicroStrategyLibrary",
        "https://bi.example.org/MicroStrategyLibrary/",
        "https://bi.example.org/MicroStrategyLibrary/api",
        "https://bi.example.org/MicroStrategyLibrary/api/",
        " https://bi.example.org/MicroStrategyLibrary/api/ ",
    ],
)
def test_base_url_is_normalised(configured):
    assert normalise_base_url(configured) == "https://bi.example.org/MicroStrategyLibrary"


def test_base_url_keeps_api_inside_the_path():
    assert normalise_base_url("https://h/apiserver/Library") == "https://h/apiserver/Library"


def test_worked_example_flattens_byte_for_byte():
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(grid_columns(PAGE_1["definition"]["grid"]))
    writer.writerows(page_rows(PAGE_1))
    writer.writerows(page_rows(PAGE_2))
    assert out.getvalue() == EXAMPLE_CSV


def test_element_lists_are_page_local():
    # Index 0 of Fund is 8526 on page 1 and 8113 on page 2.
    assert [r[0] for r in page_rows(PAGE_1)] == ["8526", "8526"]
    assert [r[0] for r in page_rows(PAGE_2)] == ["8113"]


def test_single_form_attribute_is_named_after_the_attribute_and_multi_form_per_form():
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    grid["rows"].append({"name": "Group (As-Is)", "forms": [{"name": "Code"}, {"name": "Long Name"}, {"name": "X"}]})
    assert grid_columns(grid) == [
        "Fund@Code",
        "Fund@Long Name",
        "Date",
        "Group (As-Is)@Code",
        "Group (As-Is)@Long Name",
        "Group (As-Is)@X",
        "Obligated",
        "Expenses",
    ]


def test_attribute_cells_are_verbatim_and_metrics_come_from_raw_never_formatted():
    page = copy.deepcopy(PAGE_2)
    page["definition"]["grid"]["rows"][0]["elements"] = [{"formValues": [" 0042 ", 'Año, "quoted"']}]
    page["data"]["metricValues"]["formatted"] = [["($75.00)", "$1,200.00"]]
    assert list(page_rows(page)) == [(" 0042 ", 'Año, "quoted"', "10/03/2022", "-75.0", "1200.0")]


@pytest.mark.parametrize(
    ("raw", "text"),
    [(0, "0.0"), (1200, "1200.0"), (1250.5, "1250.5"), (-75, "-75.0"), (None, ""), (0.1 + 0.2, "0.30000000000000004")],
)
def test_metric_rendering(raw, text):
    assert format_metric(raw) == text


def test_metric_rendering_matches_the_legacy_pandas_to_csv():
    values = [0, 1200, 1250.5, -75, 310.25, 1e16, 1e-05, 123456789.12, 0.1 + 0.2, None, -0.5, 2**53]
    frame = pd.DataFrame({"a": "x", "m": [float("nan") if v is None else float(v) for v in values]})
    legacy = frame.to_csv(index=False, lineterminator="\n")
    assert legacy.splitlines()[1:] == [f"x,{format_metric(v)}" for v in values]


@pytest.mark.parametrize("value", ["12", True, [1]])
def test_non_numeric_metric_value_is_an_error(value):
    with pytest.raises(MicroStrategyError, match="not a number"):
        format_metric(value)


def test_metrics_on_rows_fail_loudly():
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    grid["metricsPosition"] = {"axis": "rows", "index": 0}
    with pytest.raises(MicroStrategyError, match="'rows' axis"):
        grid_columns(grid)


def test_attributes_on_columns_fail_loudly():
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    grid["columns"] = [{"name": "Year", "type": "attribute", "forms": [{"name": "ID"}]}, METRICS]
    with pytest.raises(MicroStrategyError, match="crosstab"):
        grid_columns(grid)


def test_empty_page_gives_no_rows_and_the_full_header():
    page = copy.deepcopy(PAGE_1)
    for attribute in page["definition"]["grid"]["rows"]:
        attribute["elements"] = []
    page["data"] = {"paging": {"total": 0, "current": 0, "offset": 0, "limit": 2}, "headers": {"rows": []}}
    assert list(page_rows(page)) == []
    assert grid_columns(page["definition"]["grid"]) == ["Fund@Code", "Fund@Long Name", "Date", "Obligated", "Expenses"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["data"]["paging"].update(current=3), "paging.current is 3"),
        (lambda p: p["data"]["headers"]["rows"][0].append(0), "malformed page"),
        (lambda p: p["data"]["headers"]["rows"][0].__setitem__(1, 7), "IndexError"),
        (lambda p: p["data"]["metricValues"]["raw"][0].pop(), "1 metric value"),
        (lambda p: p["definition"]["grid"]["rows"][0]["elements"][0]["formValues"].pop(), "form count"),
    ],
)
def test_malformed_pages_are_clear_errors(mutate, message):
    page = copy.deepcopy(PAGE_1)
    mutate(page)
    with pytest.raises(MicroStrategyError, match=message):
        list(page_rows(page))


# --- doc §5.1: shapes the flat table cannot represent are refused with what to change ------------


def refused(grid) -> str:
    with pytest.raises(MicroStrategyError) as failure:
        check_grid(grid)
    assert failure.value.retryable is False  # the same report fails the same way until someone changes it
    return str(failure.value)


def test_plain_grid_passes():
    assert check_grid(PAGE_1["definition"]["grid"]) is None


def test_page_by_is_refused_naming_the_attribute():
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    grid["pageBy"] = [{"name": "Fiscal Year", "type": "attribute", "forms": [{"name": "ID"}]}]
    assert "remove the page-by attribute 'Fiscal Year' from the report" in refused(grid)


def test_metrics_on_rows_are_refused_saying_to_move_them():
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    grid["metricsPosition"] = {"axis": "rows", "index": 0}
    assert refused(grid).endswith("move the metrics to the columns of the report")


@pytest.mark.parametrize(
    "change",
    [
        lambda g: g.update(columns=[{"name": "Year", "type": "attribute", "forms": [{"name": "ID"}]}, METRICS]),
        lambda g: g.update(crossTab=True),
    ],
    ids=["attribute-on-columns", "crosstab-flag"],
)
def test_attributes_on_columns_are_refused(change):
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    change(grid)
    assert "on its columns axis (a crosstab): move" in refused(grid)


@pytest.mark.parametrize("axis", ["rows", "columns"])
def test_total_elements_are_refused_on_either_axis_whatever_the_visible_flag(axis):
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    grid["subtotals"] = {"defined": True, "visible": False}  # the server says hidden, yet sends them
    target = grid["rows"][1] if axis == "rows" else grid["columns"][0]
    target["elements"].append({"formValues": ["Total"], "subtotal": True})
    message = refused(grid)
    assert f"element 'Total' of '{target['name']}' on the {axis}" in message
    assert message.endswith("remove the totals and subtotals from the report")


def test_totals_are_refused_before_a_form_count_mismatch_is_reported():
    """Total elements carry one value whatever the form count (doc §5.1): the refusal must say so, not 'malformed'."""
    page = copy.deepcopy(PAGE_1)
    page["definition"]["grid"]["rows"][0]["elements"].append({"formValues": ["Total"], "subtotal": True})
    with pytest.raises(MicroStrategyError, match="total/subtotal rows"):
        list(page_rows(page))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda g: g["columns"][0]["elements"].append({"name": "Expenses", "id": "B2"}),
            "2 columns named 'Expenses' (metric 'Expenses' and metric 'Expenses' id B2)",
        ),
        (
            lambda g: g["rows"][0]["forms"].append({"name": "Code"}),
            "2 columns named 'Fund@Code' (attribute 'Fund' form 'Code' and attribute 'Fund' form 'Code')",
        ),
        (
            lambda g: g["rows"].append({"name": "Obligated", "forms": [{"name": "ID"}], "elements": []}),
            "2 columns named 'Obligated' (attribute 'Obligated' and metric 'Obligated')",
        ),
    ],
    ids=["two-metrics", "two-forms", "attribute-and-metric"],
)
def test_two_output_columns_with_one_name_are_refused(change, expected):
    grid = copy.deepcopy(PAGE_1["definition"]["grid"])
    change(grid)
    message = refused(grid)
    assert expected in message
    assert message.endswith("give them different names in the report")


@pytest.mark.parametrize("value", ["12", True, [1]])
def test_non_numeric_metric_value_in_a_page_is_an_error(value):
    page = copy.deepcopy(PAGE_1)
    page["data"]["metricValues"]["raw"][1][0] = value
    with pytest.raises(MicroStrategyError, match="not a number"):
        list(page_rows(page))
