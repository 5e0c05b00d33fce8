"""``make demo``: the whole pipeline through the Prefect flow, offline, on the embedded defaults.

    .venv/bin/python scripts/demo.py            # what `make demo` runs

What stands in for each production service (nothing leaves the machine):

- MicroStrategy: ``scripts/mstr_server.py`` on 127.0.0.1, serving every report of the registry
  (config/sources.py) from its sample CSV ``sample_data/<table>.csv``, with demo credentials;
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

    from scripts.mstr_server import MstrServer

    # A fresh password per run: the flow's logs show it only as *** (redaction at work).
    username, password = "demo", f"demo-{secrets.token_hex(8)}"
    reports = served_reports(SAMPLE)
    server = MstrServer(
        reports,
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
    print(f"demo: MicroStrategy stand-in on {server.base_url} serving {len(reports)} sample reports")
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


def served_reports(folder: Path) -> list:
    """Every report of the registry (config/sources.py), rebuilt from ``folder/<table>.csv`` for the
    MicroStrategy stand-in: adding a report to the registry (and its sample file) is all it takes."""
    from config.sources import REPORT_SOURCES
    from scripts.mstr_server import Report

    return [
        Report.from_csv(source.report.id, folder / f"{source.table}.csv", name=source.report.name)
        for source in REPORT_SOURCES
    ]


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
    print(f"  database       embedded PostgreSQL in {_rel(local)} (schema api, {tables} loaded tables)")
    print(f"  Prefect runs   {_rel(local / 'prefect')} (summary artifact 'bond-reporting-summary'); to browse them:")
    print(f"                 PREFECT_HOME={_rel(local / 'prefect')} .venv/bin/prefect server start")
    first = out / f"{next(iter(published['datasets']))}.json"
    records = json.loads(first.read_text()) if first.exists() else []
    if records:
        print(f"\nFirst record of {_rel(first)}:\n  {json.dumps(records[0])}")
    print_explanations(summary, records[0] if records else {})


def print_explanations(summary: dict, record: dict) -> None:
    """One line for each value that looks wrong and is not, with where the data contract says so."""
    print("\nValues that look odd and are meant to be (docs/data-contract.md):")
    department = record.get("department")
    if isinstance(department, float):
        print(
            f"  {f'department {department!r}':<24}a float on purpose: the published expense tables always had it so "
            "and the dashboard reads it so (quirk Q7, §5.2)"
        )
    today = time.strftime("%Y-%m-%d")
    future = {t: d for t, d in summary["load"].get("newest_dates", {}).items() if str(d) > today}
    if future:
        table, newest = max(future.items(), key=lambda item: str(item[1]))
        print(
            f"  {f'newest date {newest}':<24}in the future on purpose: baselines and spend plans are planned spending, "
            f"dated up to ten years ahead ({table}; §3.3)"
        )
    from config.sources import SOURCES

    short = [source.name.split()[0] for source in SOURCES]  # "S1", "G3", … (config/sources.py)
    reports, sheets = [s for s in short if s.startswith("S")], [s for s in short if s.startswith("G")]
    names = ", ".join([*reports, f"{sheets[0]} … {sheets[-1]}"] if len(sheets) > 2 else [*reports, *sheets])
    print(
        f"  {names:<24}the sources' short names in messages: S = a MicroStrategy report, "
        "G = a published Google Sheet (§3.1)"
    )


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None = None) -> None:
    """``--help`` prints what the demo does and exits; the demo takes no options (anything else: exit 2)."""
    import argparse

    argparse.ArgumentParser(
        prog="scripts/demo.py",
        description="Run the whole pipeline offline through the Prefect flow (what `make demo` runs): "
        "a MicroStrategy stand-in, the bucket .local/bucket, the embedded PostgreSQL under .local, "
        "the sheets from sample_data/, the payloads and report.html to out/. ETL and PG* variables "
        "of your shell and .env are ignored, so it never reaches a real service.",
        epilog="Exit codes: 0 the flow completed, 1 it failed (the failing step is printed).",
    ).parse_args(argv)


if __name__ == "__main__":
    parse_args()
    sys.exit(main())
