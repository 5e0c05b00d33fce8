"""The publish lock can be confirmed: a holder whose lock connection was killed finds out in one line.

An advisory lock lives as long as its connection. Here a real PostgreSQL backend holding the lock
is ended with ``pg_terminate_backend`` from another connection (what an administrator, a network
cut or a restart does); ``confirm()`` then fails with one line, and the lock is indeed free for a
second publisher, which is why the holder must stop.
"""

from __future__ import annotations

import psycopg2
import pytest

from bond_reporting import database
from bond_reporting.errors import DatabaseError
from bond_reporting.settings import Settings

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
