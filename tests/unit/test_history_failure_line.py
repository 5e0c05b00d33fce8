"""A failed step whose history cannot be written for the same reason prints its one line, not two."""

import logging

import pytest

from bond_reporting import history
from bond_reporting.errors import EtlError
from bond_reporting.settings import Settings


@pytest.mark.parametrize(
    ("history_error", "warned"),
    [("cannot connect to PostgreSQL: refused", False), ("permission denied for schema etl", True)],
)
def test_history_warning_only_when_it_adds_something(monkeypatch, caplog, history_error, warned):
    def refuse(*_args, **_kwargs):
        raise EtlError(history_error)

    monkeypatch.setattr(history, "record_step", refuse)
    record = history.StepRecord(run_id="run-1", step="load")
    with caplog.at_level(logging.DEBUG, logger=history.log.name):
        history.record_failure(Settings.from_env({}), record, EtlError("cannot connect to PostgreSQL: refused"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == int(warned)
    assert any("could not record the failed load step" in r.getMessage() for r in caplog.records)
