"""BOND_ENV_FILE naming a file that is not there is a configuration error, not a silent run without it."""

import pytest

from bond_reporting.check_config import FAIL, gather
from bond_reporting.errors import ConfigError
from bond_reporting.settings import Settings, environment


def test_a_named_env_file_that_is_missing_is_one_config_line(monkeypatch, tmp_path):
    missing = tmp_path / "prod.env"
    monkeypatch.setenv("BOND_ENV_FILE", str(missing))
    with pytest.raises(ConfigError) as failure:
        Settings.from_env()
    assert str(failure.value) == f"BOND_ENV_FILE={missing}: no such file (unset: .env if present; empty: no file)"
    assert failure.value.exit_code == 2


def test_a_named_env_file_that_exists_is_read(monkeypatch, tmp_path):
    env_file = tmp_path / "prod.env"
    env_file.write_text("SO_WEB=data.example.org\n")
    monkeypatch.setenv("BOND_ENV_FILE", str(env_file))
    monkeypatch.delenv("SO_WEB", raising=False)
    assert environment()["SO_WEB"] == "data.example.org"
    monkeypatch.delenv("SO_WEB")  # load_dotenv wrote it into os.environ


def test_check_config_reports_it_as_a_failed_check(monkeypatch, tmp_path):
    monkeypatch.setenv("BOND_ENV_FILE", str(tmp_path / "prod.env"))
    _settings, _sources, problems = gather(None)
    assert [(c.status, c.what, c.config) for c in problems] == [(FAIL, "BOND_ENV_FILE", True)]


def test_naming_the_default_env_file_is_the_same_as_not_naming_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("BOND_ENV_FILE", ".env")
    assert Settings.from_env().bucket  # no error: .env is read only when present
