"""Benchmark: export a 1,000,000-row "All bonds Expenses Obligated" report to a local CSV file.

Three processes, so the memory figure is honest: the protocol server (scripts/mstr_server.py, rows
generated on demand), the export (``python microstrategy_to_s3.py -r ... --output``) whose peak RSS is
read from its own rusage (``os.wait4``), and this script. Baseline, measured in the same run against
the same server: the same pages fetched with plain ``requests`` and JSON-decoded (what any client must
do), without flattening or writing. The ratio export/baseline is the cost of the client on top of the
transfer.

    python benchmarks/bench_mstr.py [--rows 1000000] [--page-size 50000] [--keep]

Exits 1 if the output is wrong or the export's peak RSS is 500 MB or more.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bond_reporting.microstrategy import FIELDS, format_metric  # noqa: E402
from scripts.mstr_server import ALL_BONDS_ID, generated_report  # noqa: E402

REPORT = "All bonds Expenses Obligated"
HEADER = (
    "Fund@Code,Fund@Long Name,Division (As-Is)@Code,Division (As-Is)@Long Name,Department@Dept,"
    "Department@Long Name,Date,Group (As-Is)@Code,Group (As-Is)@Long Name,Obligated,Expenses"
)
USERNAME, PASSWORD, PROJECT_ID = "bench-user", "bench-password", "B19DEDCC11D4E0EFC000EB9495D0F44F"
LIMIT_MB = 500


def start_server(rows: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "mstr_server.py"),
            "--generate",
            f"{ALL_BONDS_ID}={rows}",
            "--username",
            USERNAME,
            "--password",
            PASSWORD,
            "--project-id",
            PROJECT_ID,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def baseline(base_url: str, page_size: int) -> tuple[float, int, int, float]:
    """Fetch every page with plain requests + json decode; returns (seconds, rows, bytes, CPU seconds)."""
    started, cpu = time.perf_counter(), time.process_time()
    session = requests.Session()
    response = session.post(
        f"{base_url}/api/auth/login", json={"username": USERNAME, "password": PASSWORD, "loginMode": 1}, timeout=30
    )
    response.raise_for_status()
    session.headers.update({"X-MSTR-AuthToken": response.headers["X-MSTR-AuthToken"], "X-MSTR-ProjectID": PROJECT_ID})
    params = {"offset": 0, "limit": page_size, "fields": FIELDS}
    url = f"{base_url}/api/v2/reports/{ALL_BONDS_ID}/instances"
    response = session.post(url, params=params, json={"subtotals": {"visible": False}}, timeout=600)
    page = json.loads(response.content)
    instance, total = page["instanceId"], page["data"]["paging"]["total"]
    offset, size = page["data"]["paging"]["current"], len(response.content)
    while offset < total:
        response = session.get(f"{url}/{instance}", params={**params, "offset": offset}, timeout=600)
        size += len(response.content)
        offset += json.loads(response.content)["data"]["paging"]["current"]
    session.post(f"{base_url}/api/auth/logout", timeout=30)
    return time.perf_counter() - started, offset, size, time.process_time() - cpu


def export(base_url: str, page_size: int, out: Path) -> tuple[float, float, str, float]:
    """Run the real command; returns (wall seconds, peak RSS in MB, stderr, CPU seconds)."""
    env = {
        **os.environ,
        "BASE_URL": base_url,
        "PROJECT_ID": PROJECT_ID,
        "MSTRO_USERNAME": USERNAME,
        "MSTRO_PASSWORD": PASSWORD,
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "microstrategy_to_s3.py", "-r", REPORT, "--output", str(out), "--page-size", str(page_size)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"export failed (exit {proc.returncode}):\n{stderr}")
    # ru_maxrss is in KiB on Linux; CPU time is the figure that holds on a busy machine.
    return seconds, usage.ru_maxrss / 1024, stderr, usage.ru_utime + usage.ru_stime


def expected_line(i: int) -> str:
    """Row i of the generated report as the export must write it (flattened with the csv module)."""
    row = generated_report(ALL_BONDS_ID, i + 1).row(i)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([*row[:-2], *map(format_metric, row[-2:])])
    return buffer.getvalue()


def check_output(out: Path, rows: int) -> list[str]:
    """Stream the file: header, row count, and a sample of rows compared with the generator."""
    problems, sample = [], {0, 1, 2, 3, rows // 2, rows - 1}
    with open(out, encoding="utf-8", newline="") as handle:
        header = handle.readline()
        if header != HEADER + "\n":
            problems.append(f"header is {header!r}")
        count = 0
        # Records may not span lines here: the generated values have commas and quotes but no newlines.
        for count, line in enumerate(handle, 1):
            if count - 1 in sample and line != expected_line(count - 1):
                problems.append(f"row {count - 1} is {line!r}, expected {expected_line(count - 1)!r}")
    if count != rows:
        problems.append(f"{count} data rows, expected {rows}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=50_000)
    parser.add_argument("--keep", action="store_true", help="keep the output CSV in benchmarks/.work")
    args = parser.parse_args()
    work = ROOT / "benchmarks" / ".work"
    work.mkdir(parents=True, exist_ok=True)
    out = work / "mstr_out.csv"
    server, base_url = start_server(args.rows)
    try:
        export_s, peak_mb, stderr, export_cpu = export(base_url, args.page_size, out)
        base_s, base_rows, base_bytes, base_cpu = baseline(base_url, args.page_size)
    finally:
        server.terminate()
        _pid, _status, server_usage = os.wait4(server.pid, 0)
    problems = check_output(out, args.rows)
    if base_rows != args.rows:
        problems.append(f"baseline fetched {base_rows} rows")
    inner = re.search(r"written to .* in ([0-9.]+) s", stderr)
    size_mb = out.stat().st_size / 1e6
    if not args.keep:
        out.unlink()

    print(f"MicroStrategy export: {args.rows:,} rows, {args.page_size:,} rows/page, {size_mb:.0f} MB CSV")
    print(f"  export (process wall time)   {export_s:8.2f} s   {args.rows / export_s:10,.0f} rows/s")
    if inner:
        print(f"  export (its own summary)     {float(inner.group(1)):8.2f} s")
    print(f"  export peak RSS              {peak_mb:8.1f} MB  (limit {LIMIT_MB} MB)")
    base_rate = args.rows / base_s
    print(
        f"  baseline: raw fetch + JSON   {base_s:8.2f} s   {base_rate:10,.0f} rows/s  ({base_bytes / 1e6:.0f} MB JSON)"
    )
    print(f"  ratio export / baseline      {export_s / base_s:8.2f}")
    print(f"  CPU: export {export_cpu:.2f} s, baseline {base_cpu:.2f} s, ratio {export_cpu / base_cpu:.2f}")
    print(f"  server peak RSS              {server_usage.ru_maxrss / 1024:8.1f} MB  (rows generated per page)")
    for problem in problems:
        print(f"  WRONG OUTPUT: {problem}")
    ok = not problems and peak_mb < LIMIT_MB
    print(("PASS" if ok else "FAIL") + f": output verified, peak memory {peak_mb:.0f} MB < {LIMIT_MB} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
