"""``python -m bond_reporting.check_config``: one line per check against the project's real local
servers (embedded PostgreSQL, moto's S3 endpoint, the MicroStrategy-protocol server, the Socrata
server on HTTPS), all passing; then a deliberately broken configuration, each problem on its own line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bond_reporting.settings import REQUIRED_BY
from config.datasets import DATASET_IDS
from scripts.mstr_server import MstrServer
from tests.support import ROOT
from tests.support.soda_server import SodaServer

PROJECT_ID = "0123456789ABCDEF0123456789ABCDEF"
MSTR_PASSWORD = "check-mstr-password-4711"
SO_KEY, SO_SECRET = "check-key-id", "check-socrata-secret-0815"
DB_PASSWORD_MARK = "@"  # DATABASE_URL carries the embedded server's credentials; none may be printed


@pytest.fixture
def services(
    database_url: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Every service running, and the environment a demo-like run would have."""
    soda = SodaServer(tmp_path, SO_KEY, SO_SECRET, DATASET_IDS).start()
    try:
        with MstrServer([], username="etl", password=MSTR_PASSWORD, project_id=PROJECT_ID) as mstr:
            env = {
                "DATABASE_URL": database_url,
                "BASE_URL": mstr.base_url,
                "PROJECT_ID": PROJECT_ID,
                "MSTRO_USERNAME": "etl",
                "MSTRO_PASSWORD": MSTR_PASSWORD,
                "SO_WEB": soda.domain,
                "SO_KEY": SO_KEY,
                "SO_SECRET": SO_SECRET,
                "REQUESTS_CA_BUNDLE": str(soda.ca_path),
            }
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            yield {**env, "BUCKET": s3_bucket}
    finally:
        soda.stop()


def check_config(cwd: Path, *args: str, env_file: str = ".env") -> subprocess.CompletedProcess:
    env = {**os.environ, "BOND_ENV_FILE": env_file}
    return subprocess.run(
        [sys.executable, "-m", "bond_reporting.check_config", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_check_passes_against_the_local_servers(services: dict[str, str], tmp_path: Path) -> None:
    result = check_config(tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(line.startswith("ok ") for line in lines[:-1]), lines
    by_what = {line[6:].split(":", 1)[0]: line for line in lines[:-1]}
    assert {"variables", "required", "PostgreSQL", "bucket", "MicroStrategy login", "Socrata"} <= set(by_what)
    assert "schema api" in by_what["PostgreSQL"]
    assert f"s3://{services['BUCKET']} reachable" in by_what["bucket"]
    assert "logged in to 127.0.0.1" in by_what["MicroStrategy login"]
    assert f"{len(DATASET_IDS)} of {len(DATASET_IDS)} datasets answer" in by_what["Socrata"]
    assert lines[-1] == f"check-config: {len(lines) - 1} of {len(lines) - 1} checks passed"
    for secret in (MSTR_PASSWORD, SO_SECRET, services["DATABASE_URL"]):
        assert secret not in result.stdout + result.stderr


def test_a_broken_configuration_gets_one_line_per_problem(
    services: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt name in .env, a malformed URL, a bucket that does not exist, a wrong Socrata
    secret: each on its own FAIL line; the checks that cannot run say so; exit 2; no secret shown."""
    monkeypatch.delenv("MSTRO_PASSWORD")
    monkeypatch.setenv("DATABASE_URL", "postgresql//etl:db-secret-77@db.example/bonds")  # no "://"
    monkeypatch.setenv("BUCKET", "no-such-bucket-here")
    monkeypatch.setenv("SO_SECRET", "wrong-socrata-secret-31")
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "30")  # well formed: an ok line
    (tmp_path / ".env").write_text(f"MSTRO_PASWORD={MSTR_PASSWORD}\nFRESHNESS_WARN_DAYS=seven\n")  # a typo, a word

    result = check_config(tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == [
        "FAIL  variable MSTRO_PASWORD: set in .env but not read by anything; did you mean MSTRO_PASSWORD?",
        f"FAIL  missing MSTRO_PASSWORD: needed by export: {'MicroStrategy password'}",
        "FAIL  DATABASE_URL: not a postgresql:// or postgres://host URL",
        "FAIL  FRESHNESS_WARN_DAYS: FRESHNESS_WARN_DAYS must be a whole number of days (or 'off'), not 'seven'",
        "FAIL  bucket: there is no bucket 'no-such-bucket-here'",
        f"FAIL  Socrata: GET https://{services['SO_WEB']}/resource/{DATASET_IDS[0]}.json: HTTP 401: "
        "SO_KEY/SO_SECRET (or SO_TOKEN) refused",
    ]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skip")]
    assert skipped == [
        "skip  PostgreSQL: not tried: DATABASE_URL missing or malformed",
        "skip  MicroStrategy login: not tried: MSTRO_PASSWORD missing or malformed",
    ]
    lines = result.stdout.splitlines()
    assert "ok    LOCK_WAIT_SECONDS: 30" in lines
    passed = len(lines) - 1 - len(failed) - len(skipped)  # a skipped check is not a passed one
    assert lines[-1] == f"check-config: {passed} of {len(lines) - 1} checks passed, {len(failed)} failed, 2 skipped"
    for secret in (MSTR_PASSWORD, "wrong-socrata-secret-31", "db-secret-77"):
        assert secret not in result.stdout + result.stderr


def test_environment_wins_over_env_file_and_missing_settings_come_at_once(
    services: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.env completes the environment (a value set in the environment wins); with nothing set,
    every missing variable has its own line and the service checks that need them are skipped."""
    (tmp_path / ".env").write_text("MSTRO_PASSWORD=not-this-one\nSO_WEB=elsewhere.example\n")
    result = check_config(tmp_path)
    assert result.returncode == 0, result.stdout  # the environment's values won
    assert "read from .env (2)" in result.stdout

    for name in [*REQUIRED_BY["export"], *REQUIRED_BY["publish"]]:
        monkeypatch.delenv(name, raising=False)
    result = check_config(tmp_path, env_file="")
    assert result.returncode == 2
    missing = [line for line in result.stdout.splitlines() if line.startswith("FAIL  missing ")]
    assert [line.split()[2].rstrip(":") for line in missing] == [*REQUIRED_BY["export"], *REQUIRED_BY["publish"]]
