"""The one CLI shape of the three scripts: help lists the choices, variables and exit codes;
usage errors print the usage and exit 2 before anything runs; one name-selection rule."""

from __future__ import annotations

import pytest

import bond_calculations
import bond_data
import microstrategy_to_s3
from bond_reporting import logs, selection
from bond_reporting.errors import ConfigError
from config import datasets, sources

SCRIPTS = {
    "bond_data.py": (bond_data, [s.table for s in sources.SOURCES], ["DATABASE_URL", "PGHOST", "BUCKET"]),
    "bond_calculations.py": (bond_calculations, list(datasets.DATASET_IDS), ["SO_WEB", "SO_KEY", "DATABASE_URL"]),
    "microstrategy_to_s3.py": (microstrategy_to_s3, list(sources.REPORTS), ["BASE_URL", "MSTRO_PASSWORD", "BUCKET"]),
}


@pytest.mark.parametrize("prog", SCRIPTS)
def test_help_lists_choices_variables_and_exit_codes_without_markup(prog, capsys):
    module, choices, variables = SCRIPTS[prog]
    assert module.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {prog} [-h] [-v]")
    for choice in choices:
        assert f"\n  {choice}  " in text
    for name in variables:
        assert f"\n  {name} " in text
    assert "exit codes:\n  0  success\n  1  data or runtime failure" in text and "\n  2  usage or configuration" in text
    for markup in ("``", ":func:", ":class:", "§"):
        assert markup not in text


@pytest.mark.parametrize(
    ("prog", "argv", "error"),
    [
        ("bond_data.py", ["--only", "nope"], "argument --only: invalid choice: 'nope' (choose from "),
        ("bond_data.py", ["--from"], "argument --from-dir: expected one argument"),
        ("bond_calculations.py", ["--only", "vs3t-h2aj", "x"], "argument --only: invalid choice: 'x'"),
        ("bond_calculations.py", ["--chunk-size", "0"], "argument --chunk-size: must be at least 1, not 0"),
        ("bond_calculations.py", ["--chunk-size", "1e3"], "argument --chunk-size: not a whole number: '1e3'"),
        ("microstrategy_to_s3.py", ["--bogus"], "the following arguments are required: -r/--report-name"),
    ],
)
def test_usage_errors_print_usage_and_one_error_line_and_exit_2(prog, argv, error, capsys, caplog):
    module = SCRIPTS[prog][0]
    assert module.main(argv) == 2
    err = capsys.readouterr().err
    usage, message = err.split(f"\n{prog}: error: ")
    assert usage.startswith(f"usage: {prog} [-h] [-v]")
    assert message.startswith(error) and message.endswith(" (see --help)\n") and message.count("\n") == 1
    assert not caplog.records  # nothing ran: no log line at all


def test_select_keeps_the_known_order_and_names_every_unknown_name():
    known = ["a", "b", "c"]
    assert selection.select(None, known, "table") == known
    assert selection.select(["c", "a"], known, "table") == ["a", "c"]
    assert selection.select([], known, "table") == []
    with pytest.raises(ConfigError) as one:
        selection.select(["x"], known, "table")
    assert str(one.value) == "unknown table 'x'; known tables: a, b, c"
    with pytest.raises(ConfigError) as two:
        selection.select(["x", "a", "y"], known, "dataset id")
    assert str(two.value) == "unknown dataset ids 'x', 'y'; known dataset ids: a, b, c"
    assert two.value.exit_code == 2


def test_one_line_collapses_whitespace_redacts_and_names_silent_errors():
    logs.register_secret("s3cr3t-value")
    assert logs.one_line(RuntimeError("a\n  b\tc s3cr3t-value")) == "a b c ***"
    assert logs.one_line(ValueError()) == "ValueError"
    assert logs.one_line("x  y", limit=2) == "x"
