"""Benchmark the calculation step at 150 groups × 800 dates × 4 fiscal years (issue 4).

    python benchmarks/bench_calc.py [--groups 150 --dates 800 --fiscal-years 4 --repeat 3]

1. generates the sample sources at that size (scripts/make_sample_data.py) and loads them with
   bond_data into PostgreSQL (DATABASE_URL, PG*, or the embedded server under benchmarks/.work);
2. compute: ``calculations.build_payloads`` on the tables as read (best of --repeat runs);
3. whole script: ``bond_calculations.py --output-dir`` in a fresh process (read tables → seven
   payloads written), wall seconds and that process's peak RSS;
4. baselines, measured in the same run on the same machine:
   * compute baseline: the irreducible core of the work, one vectorised FY × date × group cross
     join of the same size plus one group-wise cumulative sum; ``compute / baseline`` says how
     many such passes the whole calculation costs;
   * writer floor: read tables + compute + pandas' own C writers (``to_json(orient="records")`` and
     ``to_csv``) for the same seven frames — not the exact payload format (pandas rounds floats to
     10 digits), but the fastest pandas gets; ``whole / floor`` is our price for exact JSON.

5. render: the seven payloads rendered in memory as the exact Socrata JSON (``render.json_array``)
   and as the human CSV (``render.csv_lines``), records per second (best of --repeat runs).

6. the run report (issue 11): whole runs with and without writing report.html, alternated, and
   the page's size.

Targets (issue 4 and issue 8 item 7, on 2 cores): compute ≤ 5 s, whole script ≤ 5 s, JSON
rendered at ≥ 1,000,000 records/s, peak memory ≤ 600 MB; the run report adds ≤ 1 s to the whole
run and stays < 3 MB (issue 11).
Prints figures only; it never fails on timing (exit 1 only if a step itself fails).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bond_reporting import calculations, render  # noqa: E402
from bond_reporting.database import embedded_uri, read_tables  # noqa: E402
from bond_reporting.settings import Settings  # noqa: E402
from config import datasets as cfg  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"
TARGETS = {"compute_s": 5.0, "whole_s": 5.0, "peak_mb": 600.0, "records_per_s": 1_000_000}

# Runs bond_calculations.main in a child process and reports that process's peak RSS in KiB: VmHWM
# of the exec'd process (ru_maxrss would include the parent's RSS inherited through fork + exec).
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
started = time.perf_counter()
import bond_calculations
from bond_reporting import report
# The run report (issue 11): timed where it is built and written; off for the same-run comparison.
report_s = [0.0]
def timed(function):
    def run(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            report_s[0] += time.perf_counter() - begun
    return run
if {report}:
    report.Delivery.render_or_none = timed(report.Delivery.render_or_none)
    report.Delivery.send = timed(report.Delivery.send)
else:
    report.Delivery.render_or_none = lambda *args, **kwargs: None  # a one-line placeholder page
    report.ChartWorker.start = classmethod(lambda cls: cls())  # no worker process
    report.Delivery.submit = lambda *args, **kwargs: None
code = bond_calculations.main(["--output-dir", {out!r}])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
try:
    with open("/proc/self/status") as status:
        peak = int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run report's chart worker
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({{"code": code, "seconds": seconds, "cpu": cpu, "peak_kib": peak, "report_s": report_s[0],
                  "worker_cpu": children.ru_utime + children.ru_stime}}))
"""


def baseline_seconds(n_fy: int, n_dates: int, n_groups: int) -> float:
    """One cross join of the output's size + one group-wise cumsum: the floor of this workload."""
    started = time.perf_counter()
    index = pd.MultiIndex.from_product([range(n_fy), range(n_dates), range(n_groups)], names=["fy", "date", "group"])
    frame = index.to_frame(index=False)
    frame["value"] = np.ones(len(frame))
    frame["running"] = frame.groupby(["group", "fy"], sort=False)["value"].cumsum()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=150)
    parser.add_argument("--dates", type=int, default=800)
    parser.add_argument("--fiscal-years", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import bond_data
    from scripts.make_sample_data import generate_sample_data

    sources, out = WORK / "calc-sources", WORK / "calc-out"
    started = time.perf_counter()
    counts = generate_sample_data(sources, groups=args.groups, dates=args.dates, fiscal_years=args.fiscal_years)
    print(
        f"generated sources in {time.perf_counter() - started:.1f} s: {counts[cfg.EXPENSES_2020]} rows 2020, "
        f"{counts[cfg.EXPENSES_ALL_BONDS]} rows all bonds"
    )

    env = dict(os.environ)
    if not (env.get("DATABASE_URL") or env.get("PGHOST")):
        env["DATABASE_URL"] = embedded_uri(WORK / "local")  # shared by this process and the child
    os.environ["DATABASE_URL"] = env["DATABASE_URL"]
    settings = Settings.from_env()
    started = time.perf_counter()
    bond_data.run(from_dir=str(sources), settings=settings)
    print(f"loaded with bond_data in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    tables = read_tables(settings, [t for d in cfg.DATASETS for t in d.tables])
    read_s = time.perf_counter() - started

    compute_runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        payloads = calculations.build_payloads(tables)
        compute_runs.append(time.perf_counter() - started)
    compute_s = min(compute_runs)
    rows = {k: len(v) for k, v in payloads.items()}
    floor_dir = WORK / "calc-floor"
    floor_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for dataset_id, frame in payloads.items():
        frame.to_json(floor_dir / f"{dataset_id}.json", orient="records")
        frame.to_csv(floor_dir / f"{dataset_id}.csv", index=False)
    floor_s = read_s + compute_s + time.perf_counter() - started

    def render_seconds(renderer, frames) -> tuple[float, float]:
        """Best wall and CPU seconds (CPU time shows the work when other processes share the cores)."""
        runs, cpus = [], []
        for _ in range(args.repeat):
            started, cpu = time.perf_counter(), time.process_time()
            for frame in frames:
                for _piece in renderer(frame):
                    pass
            runs.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        return min(runs), min(cpus)

    json_s, json_cpu = render_seconds(render.json_array, payloads.values())
    csv_s, csv_cpu = render_seconds(render.csv_lines, payloads.values())
    records = sum(rows.values())
    del payloads

    raw = tables[cfg.EXPENSES_2020]
    n_groups = calculations.aims_group_id(raw["department"], raw["fund"], raw["division"], raw["group"]).nunique()
    shape = (raw["fiscal_year"].nunique(), raw["date"].nunique(), n_groups)
    base_s = min(baseline_seconds(*shape) for _ in range(args.repeat))

    def whole_run(with_report: bool) -> dict | None:
        child = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=str(ROOT), out=str(out), report=with_report)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {"code": 1}
        if result["code"] != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            return None
        return result

    # The run report's cost: whole runs with and without it, alternated (best of 2 each).
    runs = {True: [], False: []}
    for with_report in (False, True, False, True):
        result = whole_run(with_report)
        if result is None:
            return 1
        runs[with_report].append(result)
    result = min(runs[True], key=lambda r: r["seconds"])
    without_s = min(r["seconds"] for r in runs[False])
    report_kb = (out / "report.html").stat().st_size / 1024
    without_cpu = min(r["cpu"] for r in runs[False])
    whole_s, whole_cpu, peak_mb = result["seconds"], result["cpu"], result["peak_kib"] / 1024
    written_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6

    print(f"size: {shape[0]} FY × {shape[1]} dates × {shape[2]} groups; rows per dataset: {rows}")
    print(f"read tables:   {read_s:6.2f} s ({sum(len(t) for t in tables.values())} rows)")
    print(f"baseline:      {base_s:6.2f} s (one {np.prod(shape):,}-row cross join + group cumsum)")
    print(
        f"compute:       {compute_s:6.2f} s (best of {args.repeat}: {', '.join(f'{s:.2f}' for s in compute_runs)}) "
        f"= {compute_s / base_s:.1f}× baseline; {compute_s / TARGETS['compute_s']:.2f} of the 5 s target"
    )
    print(
        f"whole script:  {whole_s:6.2f} s (CPU {whole_cpu:.2f} s; bond_calculations --output-dir, "
        f"{written_mb:.0f} MB written) "
        f"= {whole_s / floor_s:.1f}× the writer floor ({floor_s:.2f} s); "
        f"{whole_s / TARGETS['whole_s']:.2f} of the 5 s target"
    )
    print(
        f"render JSON:   {json_s:6.2f} s = {records / json_s:,.0f} records/s "
        f"({records / json_s / TARGETS['records_per_s']:.2f} of the 1,000,000/s target; CPU {json_cpu:.2f} s = "
        f"{records / json_cpu:,.0f} records/s); "
        f"CSV: {csv_s:.2f} s = {records / csv_s:,.0f} records/s (CPU {csv_cpu:.2f} s)"
    )
    print(
        f"peak memory:   {peak_mb:6.0f} MB (whole-script process RSS); "
        f"{peak_mb / TARGETS['peak_mb']:.2f} of the 600 MB target"
    )
    print(
        f"run report:    {result['seconds'] - without_s:+6.2f} s on the whole run "
        f"({result['seconds']:.2f} s with, {without_s:.2f} s without; best of 2 each; CPU of this process "
        f"{whole_cpu - without_cpu:+.2f} s, of the chart worker process {result['worker_cpu']:.2f} s); "
        f"{result['report_s']:.2f} s spent building and writing it; report.html {report_kb:,.0f} KB "
        f"(targets: +1 s, 3 MB)"
    )
    print("for scale, issue 4 quotes the original at this size: about 17 minutes and 1.6 GB (not measured here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
