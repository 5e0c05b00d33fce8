"""`scripts/demo.py --help` explains the demo instead of running it."""

import pytest

from scripts.demo import parse_args


def test_help_exits_0_without_running(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--help"])
    assert stop.value.code == 0
    assert "offline" in capsys.readouterr().out


def test_an_unknown_option_is_a_usage_error():
    with pytest.raises(SystemExit) as stop:
        parse_args(["--output-dir", "x"])
    assert stop.value.code == 2


def test_no_option_runs_the_demo():
    assert parse_args([]) is None
