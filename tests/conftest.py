"""Shared fixtures for every tier: real PostgreSQL, a real S3-protocol endpoint (moto server), HTTP servers.

Tiers (directories, each test marked automatically by where it lives):
  tests/unit/         pure logic, no service, no subprocess of the pipeline: ``make test-fast``
  tests/integration/  real PostgreSQL, S3 endpoint, HTTP protocol servers, the scripts end to end
  tests/flow/         Prefect: the flow, the deployment, the image's file set
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import bond_data
from config.datasets import DATASET_IDS
from tests.support import ROOT
from tests.support.services import FileServer, fresh_database, s3_client
from tests.support.soda_server import APP_TOKEN, KEY_ID, KEY_SECRET, SodaServer

SAMPLE = ROOT / "sample_data"

ROOT = Path(__file__).resolve().parents[1]

# Variables a test must never inherit from the developer's shell: each test sets what it needs.
ETL_VARIABLES = (
    "BASE_URL",
    "PROJECT_ID",
    "MSTRO_USERNAME",
    "MSTRO_PASSWORD",
    "MSTR_RUN_TIMEOUT",
    "MSTR_CALL_TIMEOUT",
    "AWS_ACCESS_ID",
    "AWS_PASS",
    "AWS_ENDPOINT_URL",
    "BUCKET",
    "SO_WEB",
    "SO_TOKEN",
    "SO_KEY",
    "SO_SECRET",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "BOND_LOCAL_DIR",
    "DB_STALL_TIMEOUT",
    "LOCK_WAIT_SECONDS",
    "FRESHNESS_WARN_DAYS",
    "FRESHNESS_ERROR_DAYS",
    "FRESHNESS_UNCHANGED_RUNS",
    "MAX_DROP_PCT",
)


@pytest.fixture(scope="session")
def pg_server_uri() -> Iterator[str]:
    """URI of a running PostgreSQL server: DATABASE_URL if set, else an embedded one.

    The embedded server's data folder is a private temporary folder, not under pytest's numbered
    base folder: pytest removes old numbered folders when other sessions start, and a server whose
    data folder disappears dies mid-run (seen with several pytest sessions on one machine).
    """
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    import pgserver

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="bond-test-pg-")), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """A private copy of the sample data, for a test to change."""
    target = tmp_path / "sources"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.fixture(scope="module")
def shared_load(pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database per test module holding a good load of the sample data, for the tests that only read it."""
    with fresh_database(pg_server_uri) as uri, pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", uri)
        patch.setenv("BOND_LOCAL_DIR", str(tmp_path_factory.mktemp("local")))
        assert bond_data.main(["--from-dir", str(SAMPLE)]) == 0
        yield uri


@pytest.fixture
def database_url(pg_server_uri: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(pg_server_uri) as uri:
        yield uri


@pytest.fixture
def loaded_own(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database of this test's own, loaded with the sample data by bond_data, DATABASE_URL set
    (for tests that change it; tests that only read use ``shared_load``)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert bond_data.main(["--from-dir", str(SAMPLE)]) == 0
    return database_url


@pytest.fixture
def soda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SodaServer]:
    """The Socrata protocol server on loopback HTTPS holding the seven datasets, configured as an
    operator would: SO_WEB, SO_KEY, SO_SECRET, SO_TOKEN, REQUESTS_CA_BUNDLE (its private CA), and
    BUCKET a folder for the run reports. (tests/integration/test_socrata.py has its own, bare one.)"""
    server = SodaServer(tmp_path, KEY_ID, KEY_SECRET, DATASET_IDS).start()
    monkeypatch.setenv("SO_WEB", f"https://{server.domain}")
    monkeypatch.setenv("SO_KEY", KEY_ID)
    monkeypatch.setenv("SO_SECRET", KEY_SECRET)
    monkeypatch.setenv("SO_TOKEN", APP_TOKEN)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
    monkeypatch.setenv("BUCKET", str(tmp_path / "bucket"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol endpoint on loopback (moto's server)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the S3 endpoint; the process env points boto3 and the ETL at it."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_ID": "testing-key-id",
        "AWS_PASS": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"bucket-{uuid.uuid4().hex[:10]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    monkeypatch.setenv("BUCKET", bucket)
    return bucket


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """An HTTP server on loopback serving ``tmp_path / 'www'``, with injectable faults."""
    root = tmp_path / "www"
    root.mkdir()
    server = FileServer(root).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ETL variable leaks in from the shell or a developer's .env; local state goes to the test's folder."""
    for name in ETL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOND_ENV_FILE", "")
    monkeypatch.setenv("BOND_LOCAL_DIR", str(tmp_path / "local"))


TIERS = ("unit", "integration", "flow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, taken from its directory (``-m unit`` etc.)."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
