"""Counts in log lines read right for one: "1 table, 1 row", never "1 tables, 1 rows".

A real load (bond_data.py against PostgreSQL) of one table holding one row.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

TABLE = "bond_2020_aims_to_dashboard"


def test_a_load_of_one_row_says_1_table_1_row(database_url: str, sources: Path, tmp_path: Path) -> None:
    path = sources / f"{TABLE}.csv"
    header, first = path.read_text().splitlines()[:2]
    path.write_text(f"{header}\n{first}\n")
    env = {k: v for k, v in os.environ.items() if k != "PGHOST"} | {
        "DATABASE_URL": database_url,
        "BOND_ENV_FILE": "",
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "bond_data.py", "-v", "--from-dir", str(sources), "--only", TABLE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split(": ", 1)[1] for line in result.stderr.splitlines() if ": " in line]
    assert any(line.startswith(f"validated {TABLE}: 1 row in ") for line in lines), lines
    assert any(line.startswith(f"loaded {TABLE}: 1 row (validated in ") for line in lines), lines
    assert any(line.startswith("load committed: 1 table, 1 row, updated_at ") for line in lines), lines
    assert not [line for line in lines if " 1 rows" in line or " 1 tables" in line], lines
