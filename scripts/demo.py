"""``make demo``: the whole pipeline through the Prefect flow, offline, on the embedded defaults.

    .venv/bin/python scripts/demo.py            # what `make demo` runs

What stands in for each production service (nothing leaves the machine):

- MicroStrategy: ``scripts/mstr_server.py`` on 127.0.0.1, serving the two sample report CSVs
  (``sample_data/expenses_obligated_*_raw.csv``) through the REST protocol, with demo credentials;
- the S3 bucket: the folder ``.local/bucket`` (``BUCKET``);
- PostgreSQL: the embedded server under ``.local`` (no ``DATABASE_URL``/``PGHOST``);
- the Google-Sheets sources: ``sample_data/`` (``sheets_dir``);
- Socrata: ``out/`` (``output_dir``) receives the seven payloads and the run report ``report.html``;
- Prefect: a temporary local server (ephemeral mode), state in ``.local/prefect``, analytics off.

The demo ignores ETL variables set in your shell or in .env, so it can never reach a real service.
Exit code 0 when the flow completed, 1 when it failed (the failing step is printed).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
OUT = ROOT / "out"
SAMPLE = ROOT / "sample_data"
# Report name (microstrategy_to_s3.REPORTS) → the sample CSV the local MicroStrategy serves.
SAMPLE_REPORTS = {
    "2020 Bond Expenses Obligated": SAMPLE / "expenses_obligated_2020_bond_raw.csv",
    "All bonds Expenses Obligated": SAMPLE / "expenses_obligated_all_bonds_raw.csv",
}
DEMO_PROJECT_ID = "0123456789ABCDEF0123456789ABCDEF"
ETL_AND_PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE", "AWS_PROFILE")


def demo_environment(local: Path = LOCAL) -> dict[str, str]:
    """Prefect and ETL settings for an offline run (applied before prefect is imported)."""
    from bond_reporting.prefect_env import PREFECT_DEFAULTS

    return {
        **PREFECT_DEFAULTS,
        "PREFECT_HOME": str(local / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "BOND_LOCAL_DIR": str(local),
        "BOND_ENV_FILE": "",  # never a developer's .env either
        "BUCKET": str(local / "bucket"),
    }


def isolate_environment(local: Path = LOCAL) -> None:
    """Drop every ETL, PG* and Prefect API variable of the shell, then set the demo's."""
    from bond_reporting.settings import VARIABLES

    for name in (*VARIABLES, *ETL_AND_PG_VARIABLES, "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(demo_environment(local))
    # Prefect creates PREFECT_HOME but not its parents.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def main(local: Path = LOCAL, out: Path = OUT) -> int:
    """Run the demo with local state in ``local`` and the payloads in ``out``; exit code."""
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    isolate_environment(local)

    from microstrategy_to_s3 import REPORTS
    from scripts.mstr_server import MstrServer, Report

    # A fresh password per run: the flow's logs show it only as *** (redaction at work).
    username, password = "demo", f"demo-{secrets.token_hex(8)}"
    server = MstrServer(
        [Report.from_csv(REPORTS[name], path, name=name) for name, path in SAMPLE_REPORTS.items()],
        username=username,
        password=password,
        project_id=DEMO_PROJECT_ID,
    ).start()
    os.environ.update(
        {
            "BASE_URL": server.base_url,
            "PROJECT_ID": DEMO_PROJECT_ID,
            "MSTRO_USERNAME": username,
            "MSTRO_PASSWORD": password,
        }
    )
    print(f"demo: MicroStrategy stand-in on {server.base_url} serving {len(SAMPLE_REPORTS)} sample reports")
    print(f"demo: bucket {_rel(local / 'bucket')}/, embedded PostgreSQL under {_rel(local)}/, payloads to {_rel(out)}/")
    print("demo: starting a temporary local Prefect server (first run: ~10 s)...")

    from flows.pipeline import bond_reporting

    started = time.monotonic()
    try:
        state = bond_reporting(output_dir=str(out), sheets_dir=str(SAMPLE), return_state=True)
    except Exception as exc:  # noqa: BLE001 (e.g. the local Prefect server did not start): one line, exit 1
        print(f"demo: could not run the flow: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    seconds = time.monotonic() - started
    if not state.is_completed():
        print(f"\ndemo: the flow FAILED after {seconds:.1f} s: {state.message}", file=sys.stderr)
        return 1
    print_summary(state.result(), seconds, local, out)
    return 0


def print_summary(summary: dict, seconds: float, local: Path, out: Path) -> None:
    published = summary["publish"]
    print(f"\ndemo: flow 'bond-reporting' completed in {seconds:.1f} s (including the Prefect server start-up)")
    print("  1. export (MicroStrategy → bucket), concurrent task runs:")
    for item in summary["exports"]:
        where = str(item["destination"]).replace(f"{ROOT}/", "")
        print(f"       {item['report']!r}: {item['rows']} rows in {item['seconds']:.1f} s → {where}")
    load = summary["load"]
    tables, rows = len(load["tables"]), sum(load["tables"].values())
    print(f"  2. load (bucket + sample_data/ → PostgreSQL): {tables} tables, {rows} rows in {load['seconds']:.1f} s")
    datasets, as_of, took = len(published["datasets"]), published["data_as_of"], published["seconds"]
    print(f"  3. calculate & publish (→ {_rel(out)}/): {datasets} payloads in {took:.1f} s, data as of {as_of}")
    for dataset, count in published["datasets"].items():
        path = out / f"{dataset}.json"
        size = f"{path.stat().st_size:>9,} bytes" if path.exists() else "(missing!)"
        print(f"       {_rel(path):<22} {count:>6} rows {size}")
    print("\nOutputs:")
    print(f"  payloads       {_rel(out)}/<dataset id>.json (what Socrata would receive; .csv alongside)")
    for page in published.get("report") or []:
        print(f"  run report     {_rel(page)} (open it in a browser: charts, headline numbers, data notes)")
    print(f"  report CSVs    {_rel(local / 'bucket')}/<report name>.csv")
    print(f"  database       embedded PostgreSQL in {_rel(local)} (schema api, 12 tables)")
    print(f"  Prefect runs   {_rel(local / 'prefect')} (summary artifact 'bond-reporting-summary'); to browse them:")
    print(f"                 PREFECT_HOME={_rel(local / 'prefect')} .venv/bin/prefect server start")
    first = out / f"{next(iter(published['datasets']))}.json"
    if first.exists():
        records = json.loads(first.read_text())
        if records:
            print(f"\nFirst record of {_rel(first)}:\n  {json.dumps(records[0])}")


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
