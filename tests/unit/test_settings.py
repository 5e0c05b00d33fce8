"""Settings: one reader of the environment, one-line errors, secrets masked."""

import logging
import subprocess
import sys

import pytest

from bond_reporting import logs
from bond_reporting.errors import ConfigError
from bond_reporting.settings import (
    DEFAULT_BUCKET,
    REQUIRED_BY,
    VARIABLES,
    Settings,
    embedded_database_available,
    env_example,
    socrata_host,
)
from tests.support import ROOT


def test_env_example_lists_every_variable_with_its_meaning():
    committed = (ROOT / ".env.example").read_text()
    assert committed == env_example()
    for name, (_attr, meaning, _secret) in VARIABLES.items():
        line = f"\n# {name}=  (set it in the environment, not here)\n" if name == "BOND_ENV_FILE" else f"\n{name}=\n"
        assert line in committed and meaning in committed


def test_a_copied_env_example_keeps_the_env_files_checks_on(tmp_path, monkeypatch):
    """`cp .env.example .env` (the README's first step) must not set BOND_ENV_FILE to empty (= no file)."""
    (tmp_path / ".env").write_text(env_example() + "SO_SECERT=typo\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BOND_ENV_FILE", raising=False)
    from dotenv import dotenv_values

    assert "BOND_ENV_FILE" not in dotenv_values(tmp_path / ".env")


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


# --- SO_WEB: the Socrata domain, nothing else --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("data.austintexas.gov", "data.austintexas.gov"),
        ("data.austintexas.gov/", "data.austintexas.gov"),
        ("https://data.austintexas.gov", "data.austintexas.gov"),
        ("HTTPS://data.austintexas.gov/", "data.austintexas.gov"),
        (" 127.0.0.1:8443 ", "127.0.0.1:8443"),
    ],
)
def test_so_web_takes_a_domain_with_or_without_https_quietly(value: str, host: str) -> None:
    assert socrata_host(value) == host
    Settings.from_env({"SO_WEB": value, "SO_KEY": "k", "SO_SECRET": "s"}).require("SO_WEB", "SO_KEY", "SO_SECRET")


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (
            "https://data.austintexas.gov/some/path?x=1",
            "SO_WEB must be the Socrata domain only, without a path, query or fragment: put SO_WEB=data.austintexas.gov",
        ),
        ("data.austintexas.gov?x=1", "without a path, query or fragment: put SO_WEB=data.austintexas.gov"),
        ("https://data.austintexas.gov/#top", "without a path, query or fragment: put SO_WEB=data.austintexas.gov"),
        (
            "http://data.austintexas.gov",
            "SO_WEB takes the Socrata domain (always reached over https), not a URL starting http://: "
            "put SO_WEB=data.austintexas.gov",
        ),
        ("ftp://127.0.0.1:21/", "not a URL starting ftp://: put SO_WEB=127.0.0.1:21"),
        ("data austintexas gov", "SO_WEB must be a domain such as datahub.austintexas.gov, not 'data austintexas gov'"),
    ],
)
def test_so_web_refuses_a_url_saying_what_to_put_instead(value: str, line: str) -> None:
    with pytest.raises(ConfigError) as failure:
        Settings.from_env({"SO_WEB": value, "SO_KEY": "k", "SO_SECRET": "s"}).require("SO_WEB", "SO_KEY", "SO_SECRET")
    assert line in str(failure.value) and "\n" not in str(failure.value)
    assert failure.value.exit_code == 2


def test_so_web_credentials_are_refused_and_never_echoed() -> None:
    with pytest.raises(ConfigError) as failure:
        socrata_host("https://etl-user:pw-9f3c1a@data.austintexas.gov/")
    assert "etl-user" not in str(failure.value) and "pw-9f3c1a" not in str(failure.value)
    assert logs.redact("pw-9f3c1a") == "***"


def test_a_missing_and_a_malformed_setting_are_one_line() -> None:
    settings = Settings.from_env({"SO_WEB": "https://h.example/x"})
    with pytest.raises(ConfigError) as failure:
        settings.require("SO_WEB", "SO_KEY", "SO_SECRET")
    assert str(failure.value) == (
        "missing setting SO_KEY: Socrata API key id (basic auth user); missing setting SO_SECRET: Socrata API key "
        "secret (basic auth password) (see .env.example); SO_WEB must be the Socrata domain only, without a path, "
        "query or fragment: put SO_WEB=h.example"
    )


# --- what a run's steps need ------------------------------------------------------------------------


def missing_names(error: ConfigError) -> list[str]:
    return [part.split()[2].rstrip(":") for part in str(error).split("; ") if part.startswith("missing setting ")]


@pytest.mark.parametrize(
    ("steps", "names"),
    [
        (("export", "load", "calculate", "publish"), [*REQUIRED_BY["export"], *REQUIRED_BY["publish"]]),
        (("export", "load", "calculate"), list(REQUIRED_BY["export"])),
        (("calculate", "publish"), list(REQUIRED_BY["publish"])),
    ],
)
def test_require_for_names_every_setting_the_steps_need(steps: tuple[str, ...], names: list[str]) -> None:
    with pytest.raises(ConfigError) as failure:
        Settings.from_env({}).require_for(*steps)
    assert missing_names(failure.value) == names
    Settings.from_env(dict.fromkeys(names, "x") | {"SO_WEB": "h.example"}).require_for(*steps)


def test_without_pgserver_a_database_step_needs_database_url_or_pghost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)  # as in the image: requirements.txt has no pgserver
    assert not embedded_database_available()
    with pytest.raises(ConfigError) as failure:
        Settings.from_env({}).require_for("calculate")
    assert missing_names(failure.value) == ["DATABASE_URL"]
    assert "PGHOST" in str(failure.value) and "pgserver" in str(failure.value)
    Settings.from_env({"PGHOST": "db.internal"}).require_for("load", "calculate")
    Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"}).require_for("calculate")
    Settings.from_env({}).require_for()  # no step, nothing needed


@pytest.mark.parametrize(("count", "word"), [(0, "rows"), (1, "row"), (2, "rows"), (-1, "rows")])
def test_plural_is_singular_for_exactly_one(count: int, word: str) -> None:
    assert logs.plural(count, "row") == word
    assert logs.plural(count, "entry", "entries") == ("entry" if count == 1 else "entries")
