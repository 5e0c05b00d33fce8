"""SO_WEB given as a URL with a path or query is refused in one line saying what to put instead.

Against a loaded database and the Socrata-protocol server on loopback: the publish exits 2
before anything is read, locked, recorded or sent; the datasets keep their rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from config import datasets as cfg
from tests.support import ROOT
from tests.support.soda_server import SodaServer


@pytest.fixture
def soda(tmp_path: Path) -> Iterator[SodaServer]:
    server = SodaServer(tmp_path, "k-id-7", "k-secret-7", cfg.DATASET_IDS).start()
    try:
        yield server
    finally:
        server.stop()


def history_rows(url: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM etl.steps")
        rows = cur.fetchone()[0]
    conn.close()
    return rows


@pytest.mark.parametrize(
    ("so_web", "put"),
    [
        ("https://{domain}/resource/vs3t-h2aj.json?$limit=1", "{domain}"),
        ("https://{domain}/some/path", "{domain}"),
        ("{domain}?x=1", "{domain}"),
    ],
)
def test_publish_with_a_so_web_url_exits_2_and_touches_nothing(
    shared_load: str, soda: SodaServer, tmp_path: Path, so_web: str, put: str
) -> None:
    before = history_rows(shared_load)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PGHOST", "BOND_LOCAL_DIR")},
        "DATABASE_URL": shared_load,
        "SO_WEB": so_web.format(domain=soda.domain),
        "SO_KEY": "k-id-7",
        "SO_SECRET": "k-secret-7",
        "REQUESTS_CA_BUNDLE": str(soda.ca_path),
        "BUCKET": str(tmp_path / "bucket"),
        "BOND_ENV_FILE": "",
    }
    result = subprocess.run(
        [sys.executable, "bond_calculations.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert [line.partition(" ERROR bond_reporting: ")[2] for line in result.stderr.splitlines()] == [
        "bond_calculations failed: SO_WEB must be the Socrata domain only, without a path, query or fragment: "
        f"put SO_WEB={put.format(domain=soda.domain)}"
    ]
    assert soda.requests == []
    assert all(rows == [{"old": "row"}] for rows in soda.datasets.values())
    assert history_rows(shared_load) == before
    assert not (tmp_path / "bucket").exists()  # no run report either
