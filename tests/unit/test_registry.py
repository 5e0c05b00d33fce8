"""The registry (config/sources.py) and what is derived from it: one fact, one place."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import microstrategy_to_s3
from bond_reporting import calculations
from bond_reporting.checks import column
from config import datasets, sources
from config.sources import SOURCES, Column, Report, Source
from scripts import mstr_server
from tests.support import ROOT
from tests.support.frames import TABLE_COLUMNS, empty_tables


def test_every_source_has_a_sample_file_with_its_headers():
    for source in SOURCES:
        path = ROOT / "sample_data" / f"{source.table}.csv"
        header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
        assert set(source.field_maps) <= set(header), source.name


def test_pandera_schema_has_the_registry_columns_in_order():
    for source in SOURCES:
        assert list(source.schema.columns) == list(source.column_names)
        assert source.schema.strict and source.schema.ordered
        for col in source.columns:
            assert str(source.schema.columns[col.name].dtype) == str(column(col.kind).dtype)


def test_reports_are_the_report_sources_and_read_from_their_bucket_key():
    reports = [s for s in SOURCES if s.report]
    assert {s.report.name: s.report.id for s in reports} == microstrategy_to_s3.REPORTS
    for source in reports:
        assert source.url == f"bucket:{source.report.name}.csv"
        assert re.fullmatch(r"[0-9A-F]{32}", source.report.id), source.report


def test_protocol_server_built_in_report_ids_are_registered_reports():
    """The dev server generates data for two ids; they must be the registry's (same names)."""
    for report_id, name in mstr_server.KNOWN_NAMES.items():
        assert sources.REPORTS[name] == report_id


def test_table_names_are_spelled_once():
    assert len(sources.BY_TABLE) == len(SOURCES)
    for dataset in datasets.DATASETS:
        assert set(dataset.tables) <= set(sources.BY_TABLE)
    text = (ROOT / "config" / "datasets.py").read_text()
    for source in SOURCES:
        assert f'"{source.table}"' not in text


def test_calculation_inputs_and_test_frames_follow_the_registry():
    assert (*sources.EXPENSES_2020.column_names, "updated_at") == calculations.COLUMNS_2020
    assert (*sources.EXPENSES_ALL_BONDS.column_names, "updated_at") == calculations.COLUMNS_ALL_BONDS
    assert set(TABLE_COLUMNS) == set(datasets.tables_for(datasets.DATASETS))
    for table, frame in empty_tables().items():
        assert list(frame.columns) == [*sources.BY_TABLE[table].column_names, "updated_at"]
    assert calculations.MONEY_INPUTS[sources.EXPENSES_2020.table] == ("obligated", "expenses")


def test_money_columns_are_numeric():
    for source in SOURCES:
        for col in source.columns:
            if col.money:
                assert col.sql_type == "numeric", (source.name, col.name)
    assert sources.APPROPRIATIONS.money_columns == ("amount",)


def test_schema_sql_creates_every_table_with_updated_at_last():
    ddl = sources.schema_sql()
    tables = re.findall(r'CREATE TABLE IF NOT EXISTS api\."(\w+)" \((.*?)\n\);', ddl, re.S)
    assert [t for t, _ in tables] == [s.table for s in SOURCES] + list(sources.LEGACY_TABLES)
    for table, body in tables:
        columns = [line.strip().rstrip(",").split(" ", 1) for line in body.strip().splitlines()]
        assert columns[-1] == ['"updated_at"', "timestamp"]
        if table in sources.BY_TABLE:
            expected = [[f'"{c.name}"', c.sql_type] for c in sources.BY_TABLE[table].columns]
            assert columns[:-1] == expected


def test_a_source_is_either_a_report_or_a_location():
    cols = (Column("A", "a"),)
    with pytest.raises(ValueError, match="exactly one of url= and report="):
        Source("X", "x", cols)
    with pytest.raises(ValueError, match="exactly one of url= and report="):
        Source("X", "x", cols, url="http://h/x.csv", report=Report("X", "0" * 32))
    with pytest.raises(ValueError, match="date_field"):
        Source("X", "x", cols, url="http://h/x.csv", date_field="d")
    with pytest.raises(ValueError, match="duplicate"):
        Source("X", "x", (Column("A", "a"), Column("B", "a")), url="http://h/x.csv")


def test_a_new_kind_of_source_validates_with_its_derived_schema():
    source = Source(
        "G11 test",
        "test_table",
        (Column("Id", "id"), Column("When", "when", "date"), Column("Dollars", "dollars", "whole", money=True)),
        url="http://h/x.csv",
        date_field="when",
    )
    good = pd.DataFrame(
        {"id": ["a"], "when": pd.Series(["2024-01-02"], dtype="datetime64[s]"), "dollars": pd.Series([5])}
    )
    source.schema.validate(good)
    assert source.money_columns == ("dollars",)
    assert source.field_maps == {"Id": "id", "When": "when", "Dollars": "dollars"}
