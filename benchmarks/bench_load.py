"""Benchmark: bond_data's load of a 1,000,000-row "2020 Bond Expenses Obligated" export vs a bare COPY.

    python benchmarks/bench_load.py [--rows 1000000] [--repeat 2]

(a) load:  read → map → validate → COPY → reconcile + run history → commit: bond_data.run();
(b) limit: psycopg2 COPY of an already-clean CSV (ISO dates, table columns) of the same rows into
           the same table, TRUNCATE + COPY + commit, no validation at all.
Ways to replace a table that already holds the rows (issue 13 §7; each from the same state: the
table holding the N rows, vacuumed), clean CSV, no validation:
(c) DELETE + COPY + commit: the MVCC-safe way (an older snapshot still sees the old rows); its
    deferred cost, the VACUUM of the N dead rows, is measured apart;
(d) staging-table swap: COPY into a new table, DROP the old one, RENAME, commit (not MVCC-safe either:
    an older snapshot finds the new table and none of its rows are visible to it).
After (c) + VACUUM, a second DELETE + COPY shows whether ORDER BY ctid still gives the file's order
(the readers rely on it: docs/data-contract.md §4).
Each measurement runs in its own process (so peak RSS is that job's alone), interleaved, best of
--repeat; the load process first loads the small sample once so that one-time costs (imports,
first connection) are reported apart from the per-row cost.
Prints both times, the ratio (a)/(b) and the load's peak memory.
Database: DATABASE_URL, else an embedded PostgreSQL under benchmarks/.work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "benchmarks" / ".work"
TABLE = "expenses_obligated_2020_bond_raw"


def measure_load(source_dir: str) -> dict:
    import bond_data

    # The load step as the script and the flow run it: validation, COPY, and (issue 10) the exact
    # reconciliation and run-history rows inside the transaction, before commit.
    # Warm-up: one load of the small committed sample pays the one-time costs (lazy imports in
    # pandera/pyarrow, first connection), which do not grow with the data; reported separately.
    started = time.perf_counter()
    bond_data.run(from_dir=str(ROOT / "sample_data"), only=[TABLE])
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    loaded = bond_data.run(from_dir=source_dir, only=[TABLE])
    return {"seconds": time.perf_counter() - started, "rows": loaded["tables"][TABLE], "warm_up": warm_up}


def measure_bare_copy(clean_csv: str) -> dict:
    from psycopg2 import sql

    from bond_reporting import database
    from bond_reporting.settings import Settings

    columns = ["fund", "department", "date", "group", "fiscal_year", "division", "obligated", "expenses", "updated_at"]
    started = time.perf_counter()
    with database.transaction(Settings.from_env()) as conn, conn.cursor() as cur, open(clean_csv, "rb") as handle:
        database.apply_schema(conn)
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("api", TABLE)))
        cur.copy_expert(
            sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
                sql.Identifier("api", TABLE), sql.SQL(", ").join(map(sql.Identifier, columns))
            ),
            handle,
            size=1 << 20,
        )
    return {"seconds": time.perf_counter() - started}


COLUMNS = ["fund", "department", "date", "group", "fiscal_year", "division", "obligated", "expenses", "updated_at"]


def measure_replace(kind: str, clean_csv: str) -> dict:
    """One way of replacing the table's N rows by the file's N rows (see the module docstring)."""
    from psycopg2 import sql

    from bond_reporting import database
    from bond_reporting.settings import Settings

    settings = Settings.from_env()
    target = sql.Identifier("api", TABLE)

    def copy_into(cur, table: str) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
            sql.Identifier("api", table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )
        with open(clean_csv, "rb") as handle:
            cur.copy_expert(statement, handle, size=1 << 20)

    # The same starting state for every way: the table holds the rows, no dead tuples.
    with database.transaction(settings) as conn, conn.cursor() as cur:
        database.apply_schema(conn)
        cur.execute(sql.SQL("TRUNCATE {}").format(target))
        copy_into(cur, TABLE)
    vacuum(settings, TABLE)
    result: dict = {}
    started = time.perf_counter()
    with database.transaction(settings) as conn, conn.cursor() as cur:
        if kind == "truncate":
            cur.execute(sql.SQL("TRUNCATE {}").format(target))
            copy_into(cur, TABLE)
        elif kind == "delete":
            cur.execute(sql.SQL("DELETE FROM {}").format(target))
            copy_into(cur, TABLE)
        else:  # swap
            staging = f"{TABLE}_staging"
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("api", staging)))
            cur.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(sql.Identifier("api", staging), target)
            )
            copy_into(cur, staging)
            cur.execute(sql.SQL("DROP TABLE {}").format(target))
            rename = sql.SQL("ALTER TABLE {} RENAME TO {}")
            cur.execute(rename.format(sql.Identifier("api", staging), sql.Identifier(TABLE)))
    result["seconds"] = time.perf_counter() - started
    if kind == "delete":
        started = time.perf_counter()
        vacuum(settings, TABLE)
        result["vacuum"] = time.perf_counter() - started
        with database.transaction(settings) as conn, conn.cursor() as cur:  # the next day's load
            cur.execute(sql.SQL("DELETE FROM {}").format(target))
            copy_into(cur, TABLE)
        result["file_order_kept"] = file_order_kept(settings, clean_csv)
    return result


def vacuum(settings, table: str) -> None:
    from psycopg2 import sql

    from bond_reporting import database

    conn = database.connect(settings)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("VACUUM {}").format(sql.Identifier("api", table)))
    conn.close()


def file_order_kept(settings, clean_csv: str) -> bool:
    """True if ORDER BY ctid lists the rows in the file's order (compared by fund,group,date,amounts)."""
    import hashlib

    from bond_reporting import database

    digest = hashlib.md5()
    with open(clean_csv, "rb") as handle:
        for line in handle:
            fund, _dept, date, group, _fy, _div, obligated, expenses, _at = line.rstrip(b"\n").split(b",")
            digest.update(b"|".join([fund, date, group, obligated, expenses]) + b"\n")
    with database.transaction(settings) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT md5(string_agg(concat_ws('|', fund, date, \"group\", obligated, expenses) || E'\\n', '' "
            f"ORDER BY ctid)) FROM api.{TABLE}"
        )
        return cur.fetchone()[0] == digest.hexdigest()


def child(kind: str, path: str) -> None:
    if kind in ("truncate", "delete", "swap"):
        result = measure_replace(kind, path)
    else:
        result = measure_load(path) if kind == "load" else measure_bare_copy(path)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(kind: str, path: str, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, path], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(f"{kind} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import pandas as pd

    from bond_reporting.database import embedded_uri
    from scripts.make_sample_data import generate_sample_data

    source_dir = WORK / f"load-{args.rows}"
    raw = source_dir / f"{TABLE}.csv"
    if not raw.exists():
        print(f"generating a {args.rows:,}-row export in {source_dir} ...", flush=True)
        generate_sample_data(source_dir, groups=150, dates=800, fiscal_years=4, report_rows=args.rows)
    clean = WORK / f"clean-{args.rows}.csv"
    if not clean.exists():
        frame = pd.read_csv(raw, dtype=str, keep_default_na=False)
        frame["Date"] = pd.to_datetime(frame["Date"], format="%m/%d/%Y").dt.strftime("%Y-%m-%d")
        frame["updated_at"] = "2026-01-01 00:00:00"
        frame.to_csv(clean, index=False, header=False)
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = embedded_uri(WORK)
    size_mb = raw.stat().st_size / 1e6
    where = "DATABASE_URL" if "DATABASE_URL" in os.environ else "embedded PostgreSQL"
    print(f"{args.rows:,} rows, {size_mb:.0f} MB CSV; database: {where}")
    loads, bares = [], []
    ways: dict[str, list[dict]] = {"truncate": [], "delete": [], "swap": []}
    for _ in range(args.repeat):
        bares.append(run_child("bare", str(clean), env))
        loads.append(run_child("load", str(source_dir), env))
        for kind, results in ways.items():
            results.append(run_child(kind, str(clean), env))
    load = min(loads, key=lambda r: r["seconds"])
    bare = min(bares, key=lambda r: r["seconds"])
    best = {kind: min(results, key=lambda r: r["seconds"]) for kind, results in ways.items()}
    assert load["rows"] == args.rows
    print(f"(b) bare COPY of a clean CSV : {bare['seconds']:6.2f} s  ({args.rows / bare['seconds']:,.0f} rows/s)")
    print(f"(a) bond_data load           : {load['seconds']:6.2f} s  ({args.rows / load['seconds']:,.0f} rows/s)")
    print(f"ratio load / bare COPY       : {load['seconds'] / bare['seconds']:6.2f}   (target <= 1.5)")
    print(f"peak memory of the load      : {max(r['peak_rss_mb'] for r in loads):6.0f} MB (target < 1500 MB)")
    print(f"one-time warm-up (not in (a)): {load['warm_up']:6.2f} s  (first load of the 168-row sample)")
    print(f"replacing {args.rows:,} rows that are already there (clean CSV, no validation):")
    base = best["truncate"]["seconds"]
    labels = {"truncate": "TRUNCATE + COPY", "delete": "DELETE + COPY (MVCC-safe)", "swap": "staging swap"}
    for kind, label in labels.items():
        print(f"  {label:28}: {best[kind]['seconds']:6.2f} s  ratio {best[kind]['seconds'] / base:5.2f}")
    delete = best["delete"]
    print(f"  VACUUM after DELETE + COPY  : {delete['vacuum']:6.2f} s  (deferred: autovacuum's work)")
    overhead = delete["seconds"] - base  # what DELETE costs over TRUNCATE; (a) uses DELETE (database.replace_tables)
    print(
        f"load with TRUNCATE (estimated): {load['seconds'] - overhead:6.2f} s  ratio to bare COPY "
        f"{(load['seconds'] - overhead) / bare['seconds']:5.2f}   ((a) is the DELETE load; rule: DELETE if (a) <= 1.5)"
    )
    print(f"ORDER BY ctid = file order after VACUUM + DELETE + COPY: {delete['file_order_kept']}")


if __name__ == "__main__":
    main()
