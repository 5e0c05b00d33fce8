"""SO_WEB given as a URL with a path or query is refused in one line saying what to put instead.

Against a loaded database and the Socrata-protocol server on loopback: the publish exits 2
before anything is read, locked, recorded or sent; the datasets keep their rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from tests.support import ROOT
from tests.support.soda_server import SodaServer


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
    """``soda`` (tests/conftest.py) sets SO_KEY, SO_SECRET, the CA and BUCKET as an operator would."""
    before = history_rows(shared_load)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PGHOST"},
        "DATABASE_URL": shared_load,
        "SO_WEB": so_web.format(domain=soda.domain),
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
