"""The publish lock can be confirmed: a holder whose lock connection was killed finds out in one line.

An advisory lock lives as long as its connection. Here a real PostgreSQL backend holding the lock
is ended with ``pg_terminate_backend`` from another connection (what an administrator, a network
cut or a restart does); ``confirm()`` then fails with one line, and the lock is indeed free for a
second publisher, which is why the holder must stop.
"""

from __future__ import annotations

import copy
import logging

import psycopg2
import pytest

import bond_calculations
from bond_reporting import database
from bond_reporting.errors import DatabaseError
from bond_reporting.settings import Settings
from config import datasets as cfg
from tests.support.soda_server import SodaFault, SodaServer

DESTINATION = "https://data.example.org"


def lock_holders(url: str, key: tuple[int, int]) -> list[int]:
    """Backend pids holding the advisory lock ``key`` (read from another connection)."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid::int8 = %s AND objid::int8 = %s",
            tuple(part & 0xFFFFFFFF for part in key),
        )
        pids = [row[0] for row in cur.fetchall()]
    conn.close()
    return pids


def terminate(url: str, pid: int) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert cur.fetchone()[0] is True
    conn.close()


def test_confirm_passes_while_the_lock_is_held(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    with database.publish_lock(Settings.from_env(), DESTINATION) as lock:
        lock.confirm()
        lock.confirm()  # cheap and repeatable: once per dataset
        assert len(lock_holders(database_url, database.publish_key(DESTINATION))) == 1
    assert lock_holders(database_url, database.publish_key(DESTINATION)) == []


def test_a_killed_lock_connection_fails_confirm_with_one_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "1")
    key = database.publish_key(DESTINATION)
    with database.publish_lock(Settings.from_env(), DESTINATION) as lock:
        (pid,) = lock_holders(database_url, key)
        terminate(database_url, pid)
        with pytest.raises(DatabaseError) as failure:
            lock.confirm()
        message = str(failure.value)
        assert message.startswith(f"lost the lock of publishing to {DESTINATION}: its PostgreSQL connection ended ("), (
            message
        )
        assert message.endswith("another publisher may have started; this run publishes nothing more")
        assert "\n" not in message and failure.value.exit_code == 1
        # Why the holder must stop: the lock is free, a second publisher takes it at once.
        assert lock_holders(database_url, key) == []
        with database.publish_lock(Settings.from_env(), DESTINATION) as second:
            second.confirm()
            assert len(lock_holders(database_url, key)) == 1
        with pytest.raises(DatabaseError, match="lost the lock of publishing to"):
            lock.confirm()  # still lost, whatever happened since
    assert lock_holders(database_url, key) == []


def test_a_lock_lost_mid_publish_stops_before_the_next_dataset_and_says_what_was_published(
    loaded_own: str, soda: SodaServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock connection ends while the first dataset is being written (the server runs
    ``pg_terminate_backend`` when it receives that PUT): that dataset finishes and is verified, the
    next one is never written, and the one line says which is which (exit 1)."""
    key = database.publish_key(f"https://{soda.domain}")
    before = copy.deepcopy(soda.datasets)
    first, second, *rest = cfg.DATASET_IDS
    soda.faults.append(
        SodaFault("PUT", dataset=first, on_match=lambda: terminate(loaded_own, lock_holders(loaded_own, key)[0]))
    )
    with caplog.at_level(logging.INFO):
        assert bond_calculations.main([]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith(
        f"bond_calculations failed: {second}: lost the lock of publishing to https://{soda.domain}: "
        "its PostgreSQL connection ended ("
    ), line
    assert "another publisher may have started; this run publishes nothing more" in line
    assert line.endswith(
        "this run publishes nothing more (the dataset is unchanged); "
        f"replaced and verified: {first}; unchanged: {', '.join(rest)}"
    ), line
    assert soda.datasets[first] != before[first]
    assert {i: soda.datasets[i] for i in [second, *rest]} == {i: before[i] for i in [second, *rest]}
    with psycopg2.connect(loaded_own) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, state FROM etl.items WHERE step = 'publish' ORDER BY item_id")
        marks = cur.fetchall()
    conn.close()
    assert marks == [(first, "publishing"), (first, "verified")]  # the next run repairs nothing: none half-done
