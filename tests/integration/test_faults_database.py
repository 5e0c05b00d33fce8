"""The PostgreSQL side under faults (issue 13 §1-3, §6-8; issue 9 §4-5): real servers, real signals.

Every test asserts the exit code, the one line printed, how many seconds the run took to fail,
and the end state: every table unchanged, or fully replaced (never half).

Pausing a load at an exact point uses the database itself, not a mock: a trigger on the
table (row trigger: during its COPY; deferred constraint trigger: at COMMIT) that waits for an
advisory lock the test holds; a lock on the first table pauses the load before its first COPY.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest

import bond_calculations
import bond_data
from bond_reporting import database, loader, logs
from bond_reporting.errors import DatabaseError
from bond_reporting.settings import Settings
from config import datasets as cfg
from config.sources import SOURCES
from tests.support import ROOT
from tests.support.soda_server import SodaFault, SodaServer

SAMPLE = ROOT / "sample_data"
TABLES = [source.table for source in SOURCES]
PAUSE_KEY = 4242  # the advisory lock a paused trigger waits for
APP = database.APPLICATION_NAME


# --- helpers -----------------------------------------------------------------------------------


def state(url: str) -> dict[str, tuple[int, str, tuple[str, ...]]]:
    """Per table: rows, an order-sensitive checksum of the content, the distinct updated_at; every
    table read from one snapshot (a commit landing between two tables' reads would look partial)."""
    out = {}
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in TABLES:
            cur.execute(
                "SELECT count(*), md5(coalesce(string_agg((to_jsonb(t) - 'updated_at')::text, '|' ORDER BY ctid), '')),"
                f' array_agg(DISTINCT updated_at::text) FROM api."{table}" t'
            )
            count, digest, stamps = cur.fetchone()
            out[table] = (count, digest, tuple(stamps or ()))
    conn.close()
    return out


def replaced_whole(before: dict, after: dict) -> bool:
    """Every table holds the same content with one new updated_at shared by all (a full reload)."""
    stamps = {after[t][2] for t in TABLES}
    return all(after[t][:2] == before[t][:2] for t in TABLES) and len(stamps) == 1 and stamps != {before[TABLES[0]][2]}


def install_pause(url: str, table: str, *, at_commit: bool = False) -> None:
    """A trigger on ``table`` that waits for advisory lock PAUSE_KEY, per row during its COPY
    or, ``at_commit``, per row when the transaction commits."""
    trigger = (
        f'CREATE CONSTRAINT TRIGGER bond_test_pause AFTER INSERT ON api."{table}" '
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.bond_test_pause()"
        if at_commit
        else f'CREATE TRIGGER bond_test_pause BEFORE INSERT ON api."{table}" FOR EACH ROW EXECUTE FUNCTION public.bond_test_pause()'
    )
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE OR REPLACE FUNCTION public.bond_test_pause() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_advisory_lock_shared({PAUSE_KEY}); PERFORM pg_advisory_unlock_shared({PAUSE_KEY}); "
            "RETURN NEW; END $$"
        )
        cur.execute(trigger)
    conn.close()


@contextmanager
def paused(url: str) -> Iterator[psycopg2.extensions.connection]:
    """Hold PAUSE_KEY: a paused trigger waits until the block ends (or ``release``)."""
    holder = psycopg2.connect(url)
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (PAUSE_KEY,))
    try:
        yield holder
    finally:
        holder.close()


def release(holder: psycopg2.extensions.connection) -> None:
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_KEY,))


def waiting_backends(url: str, event: str | None = None, query: str = "") -> list[tuple[int, str, str]]:
    """(pid, wait event, query) of the ETL's sessions that wait for a lock."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid, wait_event, query FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock' AND datname = current_database()",
            (APP,),
        )
        rows = cur.fetchall()
    conn.close()
    return [r for r in rows if (event is None or r[1] == event) and query in r[2]]


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def etl_env(url: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGHOST", "DB_STALL_TIMEOUT", "LOCK_WAIT_SECONDS")}
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    env |= {"DATABASE_URL": url, "TMPDIR": str(tmpdir), **extra}
    return env


def start_load(url: str, tmp: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "bond_data.py", "--from-dir", str(SAMPLE), *args],
        cwd=ROOT,
        env=etl_env(url, tmp, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, list[str], float]:
    """Exit code, the ERROR lines, seconds from now until it ended."""
    started = time.monotonic()
    _out, err = process.communicate(timeout=timeout)
    seconds = time.monotonic() - started
    errors = [line.split(": ", 1)[1] for line in err.splitlines() if " ERROR " in line]
    process.stderr_text = err  # type: ignore[attr-defined]
    return process.returncode, errors, seconds


def workdirs(tmp: Path) -> list[Path]:
    return sorted((tmp / "tmpdir").glob("bond-load-*"))


@pytest.fixture
def loaded(database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A database holding a good load of the sample data; returns its state."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert bond_data.main(["--from-dir", str(SAMPLE)]) == 0
    return state(database_url)


# --- kill -9 and SIGTERM at several points of a load ---------------------------------------------

POINTS = {
    "before the first COPY": TABLES[0],  # the load's DELETE waits for a SHARE lock the test holds
    "during the COPY of the 5th table": TABLES[4],
    "before the commit": TABLES[-1],
}


@contextmanager
def load_paused_at(url: str, point: str) -> Iterator[None]:
    """Make the next load pause at ``point``; yields once the caller may start the load."""
    table = POINTS[point]
    if point == "before the first COPY":
        blocker = psycopg2.connect(url)
        with blocker.cursor() as cur:
            cur.execute(f'LOCK TABLE api."{table}" IN SHARE MODE')
        try:
            yield
        finally:
            blocker.close()
        return
    install_pause(url, table, at_commit=point == "before the commit")
    with paused(url):
        yield


def wait_for_pause(url: str, point: str) -> int:
    event = "relation" if point == "before the first COPY" else "advisory"
    return wait_until(lambda: waiting_backends(url, event), what=f"the load to pause {point}")[0][0]


@pytest.mark.parametrize("point", list(POINTS))
def test_sigterm_rolls_back_says_so_and_exits_143(point, loaded, database_url, tmp_path):
    with load_paused_at(database_url, point):
        load = start_load(database_url, tmp_path)
        wait_for_pause(database_url, point)
        assert len(workdirs(tmp_path)) == 1  # its downloads
        load.send_signal(signal.SIGTERM)
        code, errors, seconds = finish(load)
    assert code == 143, load.stderr_text
    line = "bond_data stopped by SIGTERM before it finished: "
    if point == "before the commit":
        assert errors == [
            line + "nothing was committed (the commit was cancelled): every table keeps its previous rows"
        ], load.stderr_text
    else:
        assert errors == [
            line + "nothing was loaded: the transaction was rolled back, every table keeps its previous rows"
        ]
    assert seconds < 5
    assert state(database_url) == loaded
    assert workdirs(tmp_path) == []  # its temporaries removed


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_9_leaves_every_table_unchanged_or_fully_replaced(point, loaded, database_url, tmp_path):
    with load_paused_at(database_url, point):
        load = start_load(database_url, tmp_path)
        pid = wait_for_pause(database_url, point)
        load.kill()
        load.wait(10)
        if point != "before the commit":  # the backend sees the client gone and rolls back
            wait_until(lambda: not _backend_alive(database_url, pid), what="the backend to end")
    # Before the commit, the backend was in COMMIT when the pause ended: it finishes (or not) now.
    wait_until(lambda: not _backend_alive(database_url, pid), what="the backend to end")
    after = state(database_url)
    if point == "before the commit":
        # COMMIT had been sent whole before the kill: PostgreSQL may finish it. Either way, all or nothing.
        assert after == loaded or replaced_whole(loaded, after)
    else:
        assert after == loaded
    # The killed run's folder is left behind; the next load removes it, and only it.
    [stale] = workdirs(tmp_path)
    code, _errors, _s = finish(start_load(database_url, tmp_path, "--only", TABLES[1]))
    assert code == 0
    assert workdirs(tmp_path) == []
    assert not stale.exists()


def _backend_alive(url: str, pid: int) -> bool:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        alive = cur.fetchone()[0] > 0
    conn.close()
    return alive


def test_stale_load_folders_of_live_loads_are_kept(tmp_path):
    parent = tmp_path / "tmp"
    parent.mkdir()
    live = parent / "bond-load-live"
    (live).mkdir()
    (parent / "bond-load-dead").mkdir()
    (parent / "bond-load-dead" / ".in-use").write_text("")
    (parent / "bond-load-dead" / "x.download").write_bytes(b"x" * 1000)
    (parent / "other-folder").mkdir()
    import fcntl

    with open(live / ".in-use", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert loader.remove_stale_workdirs(parent) == 1
    assert sorted(p.name for p in parent.iterdir()) == ["bond-load-live", "other-folder"]


# --- a frozen, a stopped database ------------------------------------------------------------------


def test_a_frozen_database_fails_the_load_after_the_stall_limit(loaded, database_url, tmp_path):
    """The backend serving the load is SIGSTOPped mid-COPY (what a network partition looks like)."""
    with load_paused_at(database_url, "during the COPY of the 5th table") as _:
        load = start_load(database_url, tmp_path, DB_STALL_TIMEOUT="2")
        pid = wait_for_pause(database_url, "during the COPY of the 5th table")
        if not Path(f"/proc/{pid}").exists():
            load.kill()
            pytest.skip("the PostgreSQL server is not on this machine")
        os.kill(pid, signal.SIGSTOP)
        try:
            code, errors, seconds = finish(load)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert code == 1, load.stderr_text
    assert errors == [
        f"bond_data failed: PostgreSQL made no progress for 2 s while copying rows into api.{TABLES[4]} (COPY) "
        "(limit 2 s, DB_STALL_TIMEOUT); connection closed, the server rolls the transaction back"
    ]
    assert seconds < 8
    wait_until(lambda: not _backend_alive(database_url, pid), what="the resumed backend to roll back")
    assert state(database_url) == loaded
    assert workdirs(tmp_path) == []


def test_a_stopped_database_fails_at_once_and_keeps_every_table(tmp_path):
    """A private server, stopped (fast shutdown) while a load waits in the 5th table's COPY."""
    import pgserver
    from pgserver._commands import pg_ctl

    # Outside pytest's folder, like the shared server (tests/conftest.py): a pytest session starting
    # meanwhile resets /tmp/pytest-of-<user> to 0700, which the server's own user then cannot enter.
    pgdata = Path(tempfile.mkdtemp(prefix="bond-test-stopped-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        url = server.get_uri()
        env = etl_env(url, tmp_path)
        assert (
            subprocess.run([sys.executable, "bond_data.py", "--from-dir", str(SAMPLE)], cwd=ROOT, env=env).returncode
            == 0
        )
        before = state(url)
        with load_paused_at(url, "during the COPY of the 5th table"):
            load = start_load(url, tmp_path)
            wait_for_pause(url, "during the COPY of the 5th table")
            pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=server.system_user)
            code, errors, seconds = finish(load)
        assert code == 1
        assert len(errors) == 1
        assert errors[0].startswith(f"bond_data failed: COPY into {TABLES[4]} failed, transaction rolled back: ")
        assert seconds < 5
        # Stopped before the run starts: one line at once.
        code, errors, seconds = finish(start_load(url, tmp_path))
        assert code == 1 and len(errors) == 1 and errors[0].startswith("bond_data failed: cannot connect to PostgreSQL")
        assert seconds < 15
        server.ensure_postgres_running()
        assert state(url) == before
    finally:
        server.cleanup()


# --- concurrent loads ------------------------------------------------------------------------------


def test_two_loads_on_an_empty_database_serialise(database_url, tmp_path):
    """Both create the schema: the load lock is taken before it, so neither fails."""
    first, second = start_load(database_url, tmp_path), start_load(database_url, tmp_path)
    results = [finish(first), finish(second)]
    assert [code for code, _e, _s in results] == [0, 0], [p.stderr_text for p in (first, second)]
    after = state(database_url)
    assert all(after[t][0] > 0 and len(after[t][2]) == 1 for t in TABLES)


def test_a_second_load_waits_for_the_lock_then_fails_with_one_line(loaded, database_url, tmp_path):
    with load_paused_at(database_url, "during the COPY of the 5th table") as _:
        first = start_load(database_url, tmp_path)
        wait_for_pause(database_url, "during the COPY of the 5th table")
        second = start_load(database_url, tmp_path, LOCK_WAIT_SECONDS="1")
        code, errors, seconds = finish(second)
        assert code == 1, second.stderr_text
        assert errors == [
            "bond_data failed: another run holds the lock of the load (bond_data) (waited 1 s, LOCK_WAIT_SECONDS); "
            "nothing was done"
        ]
        assert "waiting up to 1 s for the load (bond_data)" in second.stderr_text
        assert seconds < 10
    code, _errors, _s = finish(first)
    assert code == 0
    assert replaced_whole(loaded, state(database_url))


# --- loads with reads ------------------------------------------------------------------------------


def every_only_subset() -> list[tuple[str, ...]]:
    """The distinct table sets read by every ``--only`` the CLI accepts (each non-empty subset of
    the dataset ids; the reader's lock order depends only on the set)."""
    sets = {}
    for size in range(1, len(cfg.DATASET_IDS) + 1):
        for only in itertools.combinations(cfg.DATASET_IDS, size):
            tables = tuple(cfg.tables_for(cfg.select(list(only))))
            sets.setdefault(frozenset(tables), tables)
    return list(sets.values())


@pytest.mark.parametrize("pause_table", [TABLES[1], TABLES[4], TABLES[6]])
def test_readers_of_every_only_subset_and_a_load_never_deadlock(pause_table, loaded, database_url, monkeypatch, caplog):
    """The load is paused in the COPY of ``pause_table`` (the tables before it emptied, the ones
    after not yet): readers of every subset start, then the load goes on. Before issue 13, a
    reader locked in its own order (``--only 9ufs-k2md``: program names, then appropriations) and
    deadlocked with the load's TRUNCATEs; now readers wait for the load's lock first and lock
    tables in the load's order, and the load's DELETE conflicts with no reader's lock."""
    subsets = every_only_subset()
    assert len(subsets) > 10
    install_pause(database_url, pause_table)
    settings = Settings.from_env()
    results: dict[tuple[str, ...], object] = {}

    def read(tables: tuple[str, ...]) -> None:
        try:
            results[tables] = database.read_tables(settings, list(tables))
        except Exception as exc:  # noqa: BLE001 - asserted below
            results[tables] = exc

    load_result: list[object] = []
    with paused(database_url) as holder, caplog.at_level(logging.INFO):
        load = threading.Thread(target=lambda: load_result.append(bond_data.main(["--from-dir", str(SAMPLE)])))
        load.start()
        wait_until(lambda: waiting_backends(database_url, "advisory"), what="the load to pause")
        readers = [threading.Thread(target=read, args=(tables,)) for tables in subsets]
        for reader in readers:
            reader.start()
        time.sleep(1.5)  # readers take their locks (or start waiting) while the load is paused
        release(holder)
        for reader in [*readers, load]:
            reader.join(60)
    assert load_result == [0]
    failures = {t: r for t, r in results.items() if isinstance(r, Exception)}
    assert failures == {}
    assert len(results) == len(subsets)
    assert "deadlock" not in caplog.text


def test_a_reader_waits_for_the_load_says_so_and_gives_up_after_the_limit(
    loaded, database_url, monkeypatch, caplog, tmp_path
):
    install_pause(database_url, TABLES[4])
    monkeypatch.setenv("DB_STALL_TIMEOUT", "1")
    with paused(database_url):
        load = start_load(database_url, tmp_path)
        wait_until(lambda: waiting_backends(database_url, "advisory"), what="the load to pause")
        started = time.monotonic()
        with caplog.at_level(logging.INFO), pytest.raises(DatabaseError) as caught:
            database.read_tables(Settings.from_env(), [TABLES[4], TABLES[0]])
        seconds = time.monotonic() - started
        load.kill()
        load.wait(10)
    assert "waiting for the load in progress to commit; giving up after 1 s (DB_STALL_TIMEOUT)" in caplog.text
    assert (
        str(caught.value) == "gave up after 1 s (DB_STALL_TIMEOUT) waiting for the load in progress; nothing was read"
    )
    assert seconds < 5


def test_a_reader_waiting_for_a_table_lock_says_so_and_gives_up(loaded, database_url, monkeypatch, caplog):
    """Another session holding a table exclusively (a schema change): the reader's lock wait."""
    monkeypatch.setenv("DB_STALL_TIMEOUT", "1")
    holder = psycopg2.connect(database_url)
    with holder.cursor() as cur:
        cur.execute(f'LOCK TABLE api."{TABLES[4]}" IN ACCESS EXCLUSIVE MODE')
    try:
        with caplog.at_level(logging.INFO), pytest.raises(DatabaseError) as caught:
            database.read_tables(Settings.from_env(), [TABLES[4], TABLES[0]])
    finally:
        holder.close()
    names = f"api.{TABLES[0]}, api.{TABLES[4]}"  # load order
    assert f"waiting for {names} (another session holds a lock on them); giving up after 1 s" in caplog.text
    assert str(caught.value) == (
        f"gave up after 1 s (DB_STALL_TIMEOUT) waiting for a lock on {names} (held by another session); nothing was read"
    )


def test_a_repeatable_read_reader_with_an_older_snapshot_keeps_the_previous_rows(loaded, database_url, sources):
    """Pins the replace strategy chosen (DELETE + COPY; benchmarks/bench_load.py, docs/operations.md
    "Direct readers and VACUUM"): a REPEATABLE READ reader whose snapshot predates the load's
    commit still reads the previous rows (with TRUNCATE it read the table as empty), and the
    next reader sees the new rows, in file order."""
    table = TABLES[2]
    direct = psycopg2.connect(database_url)
    direct.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with direct.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM api."{TABLES[0]}"')  # the snapshot is taken here
        assert cur.fetchone()[0] > 0
    lines = (sources / f"{table}.csv").read_text().splitlines()
    (sources / f"{table}.csv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # new content
    assert bond_data.main(["--from-dir", str(sources), "--only", table]) == 0
    with direct.cursor() as cur:
        cur.execute(f'SELECT aims_dept_prog_act FROM api."{table}" ORDER BY ctid')
        seen_by_old_snapshot = [row[0] for row in cur.fetchall()]
    direct.close()
    first_column = [line.split(",")[0] for line in lines[1:]]
    assert seen_by_old_snapshot == first_column  # the previous rows, whole
    frames = database.read_tables(Settings.from_env(), [table])
    assert frames[table]["aims_dept_prog_act"].tolist() == list(reversed(first_column))  # new rows, file order


# --- Prefect task time-outs stop the step -------------------------------------------------------


def test_a_prefect_time_out_stops_a_load_waiting_on_the_database(loaded, database_url):
    """Prefect ends a timed-out sync task by raising an exception in its thread; the load's waits
    are short joins, so it stops at once and rolls back."""
    from prefect._internal.concurrency.cancellation import cancel_sync_after

    install_pause(database_url, TABLES[4])
    outcome: list[object] = []

    def task() -> None:
        started = time.monotonic()
        try:
            with cancel_sync_after(2.0):
                loader.load_sources(Settings.from_env(), SOURCES, from_dir=str(SAMPLE))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome.extend([type(exc).__name__, time.monotonic() - started])

    with paused(database_url):
        worker = threading.Thread(target=task)
        worker.start()
        worker.join(30)
    assert not worker.is_alive()
    name, seconds = outcome
    assert "Cancel" in name or "Timeout" in name
    assert seconds < 8
    assert state(database_url) == loaded


# --- publishers --------------------------------------------------------------------------------


def test_two_publishers_to_one_folder_the_second_fails_cleanly(loaded, database_url, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert bond_calculations.main(["--output-dir", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with database.publish_lock(Settings.from_env(), f"folder {out.resolve()}"):  # a first publisher at work
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "bond_calculations.py", "--output-dir", str(out)],
            cwd=ROOT,
            env=etl_env(database_url, tmp_path, LOCK_WAIT_SECONDS="1"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        seconds = time.monotonic() - started
    errors = [line.split(": ", 1)[1] for line in second.stderr.splitlines() if " ERROR " in line]
    assert second.returncode == 1
    assert errors == [
        f"bond_calculations failed: another run holds the lock of publishing to folder {out.resolve()} "
        "(waited 1 s, LOCK_WAIT_SECONDS); nothing was done"
    ]
    assert seconds < 15
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_two_publishers_to_one_socrata_domain_the_second_fails_cleanly(
    loaded, database_url, tmp_path, monkeypatch, caplog
):
    """Two real publishers (the second started while the first is in its first, slow, write)."""
    server = SodaServer(tmp_path, "k-id-1", "k-secret-1", cfg.DATASET_IDS).start()
    try:
        for name, value in {
            "SO_WEB": f"https://{server.domain}",
            "SO_KEY": "k-id-1",
            "SO_SECRET": "k-secret-1",
            "REQUESTS_CA_BUNDLE": str(server.ca_path),
        }.items():
            monkeypatch.setenv(name, value)
        server.faults.append(SodaFault("PUT", delay=3.0, dataset="vs3t-h2aj"))  # a slow first write
        first: list[int] = []
        runner = threading.Thread(target=lambda: first.append(bond_calculations.main([])))
        runner.start()
        wait_until(lambda: publish_lock_held(database_url), what="the first publisher to take its lock")
        monkeypatch.setenv("LOCK_WAIT_SECONDS", "1")
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            code = bond_calculations.main([])
        seconds = time.monotonic() - started
        runner.join(120)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert code == 1
        assert errors == [
            f"bond_calculations failed: another run holds the lock of publishing to https://{server.domain} "
            "(waited 1 s, LOCK_WAIT_SECONDS); nothing was done"
        ]
        assert f"waiting up to 1 s for publishing to https://{server.domain}" in caplog.text
        assert seconds < 5
        assert first == [0]
        reference = tmp_path / "reference"
        assert bond_calculations.main(["--output-dir", str(reference)]) == 0
        for dataset_id in cfg.DATASET_IDS:  # what the first run published, whole, once
            assert server.datasets[dataset_id] == json.loads((reference / f"{dataset_id}.json").read_text())
    finally:
        server.stop()


def publish_lock_held(url: str) -> bool:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s",
            (database.PUBLISH_LOCK_CLASS,),
        )
        held = cur.fetchone()[0] > 0
    conn.close()
    return held


# --- secrets in real driver errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "pieces"),
    [
        ("postgresql://etl:s3cr/etpw0rd@127.0.0.1:9/bonds", ["s3cr", "etpw0rd"]),
        ("postgresql://etl:p@ss-w0rd-1@no-such-host.invalid/bonds", ["ss-w0rd-1"]),
    ],
)
def test_the_real_driver_error_is_redacted(url, pieces, monkeypatch, tmp_path):
    """libpq's own message quotes a piece of a mistyped password: the redaction masks it even if
    the pre-check (which refuses these values) were bypassed; the scripts refuse them with exit 2."""
    monkeypatch.setattr(logs, "_SECRETS", set())
    Settings.from_env({"DATABASE_URL": url})
    with pytest.raises(psycopg2.Error) as caught:
        psycopg2.connect(url, connect_timeout=3)
    raw = str(caught.value)
    assert any(piece in raw for piece in pieces)  # the driver really quotes it
    shown = logs.redact(raw)
    assert not any(piece in shown for piece in pieces)
    result = subprocess.run(
        [sys.executable, "bond_data.py", "--from-dir", str(SAMPLE), "-v"],
        cwd=ROOT,
        env=etl_env(url, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "DATABASE_URL is not a valid libpq URI or key=value string (see docs/operations.md)" in result.stderr
    assert not any(piece in result.stderr + result.stdout for piece in pieces)


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("127.0.0.1:9/bonds?sslmode=bogus", 'invalid sslmode value: "bogus"'),
        ("127.0.0.1:notaport/bonds", 'invalid integer value "notaport" for connection option "port"'),
    ],
)
def test_a_connection_option_libpq_cannot_use_is_a_setting_error(where, said, tmp_path):
    """Exit 2 (a setting to fix, not a database that is down), libpq's words, no password."""
    url = f"postgresql://etl:opt-pw-5512@{where}"
    result = subprocess.run(
        [sys.executable, "bond_data.py", "--from-dir", str(SAMPLE)],
        cwd=ROOT,
        env=etl_env(url, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert line.endswith(f"bond_data failed: DATABASE_URL or PG* settings: {said}"), line
    assert "opt-pw-5512" not in result.stderr + result.stdout
