"""Settings: one reader of the environment, one-line errors, secrets masked."""

import logging
import subprocess
import sys

import pytest

from bond_reporting import logs
from bond_reporting.errors import ConfigError
from bond_reporting.settings import DEFAULT_BUCKET, VARIABLES, Settings, env_example
from tests.support import ROOT


def test_env_example_lists_every_variable_with_its_meaning():
    committed = (ROOT / ".env.example").read_text()
    assert committed == env_example()
    for name, (_attr, meaning, _secret) in VARIABLES.items():
        assert f"\n{name}=\n" in committed and meaning in committed


def test_empty_values_count_as_unset_and_bucket_has_its_default():
    settings = Settings.from_env({"BUCKET": "", "BASE_URL": "  "})
    assert settings.bucket == DEFAULT_BUCKET and settings.base_url is None
    assert settings.uses_embedded_database


def test_require_names_the_first_missing_variable():
    settings = Settings.from_env({"BASE_URL": "https://mstr.example/MicroStrategyLibrary"})
    with pytest.raises(ConfigError, match="missing setting PROJECT_ID") as failure:
        settings.require("BASE_URL", "PROJECT_ID", "MSTRO_USERNAME")
    assert failure.value.exit_code == 2


def test_secrets_are_masked_in_repr_and_redacted_from_logs(caplog):
    settings = Settings.from_env({"SO_SECRET": "so-secret-value-123", "MSTRO_PASSWORD": "pw-value-456"})
    assert "so-secret-value-123" not in repr(settings) and "pw-value-456" not in repr(settings)
    assert logs.redact("token so-secret-value-123 and pw-value-456") == "token *** and ***"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed with %s", ("pw-value-456",), None)
    logs.RedactingFilter().filter(record)
    assert record.getMessage() == "failed with ***"


def test_missing_required_setting_exits_2_with_one_line():
    result = subprocess.run(
        [sys.executable, "microstrategy_to_s3.py", "-r", "2020 Bond Expenses Obligated"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing setting BASE_URL" in lines[0]
    assert "Traceback" not in result.stderr


def test_errors_say_whether_a_retry_could_succeed():
    from bond_reporting.errors import DatabaseError, MicroStrategyError, SourceError, ValidationError

    assert ConfigError("x").retryable is False and ValidationError("x").retryable is False
    assert DatabaseError("x").retryable is True
    refused = MicroStrategyError("login: HTTP 401 ERR003", retryable=False).prefixed("report 'r'")
    assert isinstance(refused, MicroStrategyError) and refused.retryable is False
    assert str(refused) == "report 'r': login: HTTP 401 ERR003"
    assert SourceError("timeout").prefixed("G1").retryable is True
