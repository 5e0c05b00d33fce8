"""The one retry helper (bond_reporting/retry.py) and the one atomic writer (bond_reporting/storage.py)."""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time

import pytest

from bond_reporting import retry, storage


def flaky(failures: list[BaseException], result: str = "ok"):
    """A function that raises the given exceptions in turn, then returns ``result``; counts its calls."""
    calls = []

    def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return fn, calls


def test_transient_failures_are_retried_with_doubling_waits(caplog):
    waits: list[float] = []
    fn, calls = flaky([retry.Transient("HTTP 503"), retry.Transient("HTTP 502")])
    assert retry.call(fn, what="GET x", attempts=4, backoff=0.5, sleep=waits.append) == "ok"
    assert len(calls) == 3
    assert waits == [0.5, 1.0]
    assert "GET x: HTTP 503; attempt 1 of 4, retrying in 0.5 s" in caplog.text


def test_giving_up_names_the_call_the_last_reason_and_the_attempts():
    fn, calls = flaky([retry.Transient(f"HTTP 50{i}") for i in range(5)])
    with pytest.raises(retry.GaveUp, match=r"^GET x: HTTP 502; gave up after 3 attempts in \d+ s$") as info:
        retry.call(fn, what="GET x", attempts=3, backoff=0.01, sleep=lambda s: None)
    assert (info.value.attempts, len(calls), info.value.reason) == (3, 3, "HTTP 502")


def test_other_exceptions_pass_straight_through():
    for exc in (ValueError("refused"), KeyboardInterrupt()):
        fn, calls = flaky([exc])
        with pytest.raises(type(exc)):
            retry.call(fn, what="x", attempts=5, backoff=0.01, sleep=lambda s: None)
        assert len(calls) == 1


def test_retry_after_wins_over_the_backoff_and_is_capped():
    waits: list[float] = []
    fn, _ = flaky([retry.Transient("429", retry_after=7), retry.Transient("429", retry_after=900)])
    retry.call(fn, what="x", attempts=3, backoff=1, max_wait=60, sleep=waits.append)
    assert waits == [7, 60]


def test_within_bounds_the_total_time(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(retry.time, "monotonic", lambda: now[0])

    def fn():
        now[0] += 40  # each attempt takes 40 s (a read time-out)
        raise TimeoutError("no answer")

    def sleep(seconds):
        now[0] += seconds

    # Attempts start at 0, 41 and 83 s; none at 123 s (past 100 s). Each attempt has its own time-out.
    with pytest.raises(retry.GaveUp, match=r"gave up after 3 attempts in 123 s"):
        retry.call(fn, what="login", attempts=10, backoff=1, within=100, on=(TimeoutError,), sleep=sleep)


def test_retry_after_header_in_seconds_or_as_an_http_date():
    assert retry.retry_after({"Retry-After": "3"}) == 3.0
    assert retry.retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # past: at once
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= retry.retry_after({"Retry-After": in_a_minute}) <= 60
    assert retry.retry_after({"Retry-After": "soon"}) is None
    assert retry.retry_after({}) is None


def test_jitter_stretches_the_backoff_but_not_a_retry_after():
    waits: list[float] = []
    failures = [retry.Transient("HTTP 503") for _ in range(6)] + [retry.Transient("429", retry_after=3)]
    fn, _ = flaky(failures)
    retry.call(fn, what="x", attempts=8, backoff=1, jitter=0.25, max_wait=20, sleep=waits.append)
    backoffs, after = waits[:6], waits[6]
    for wait, base in zip(backoffs, [1, 2, 4, 8, 16, 20], strict=True):
        assert base <= wait <= min(base * 1.25, 20)  # capped at max_wait
    assert backoffs[:4] != [1, 2, 4, 8]  # stretched at random, not the bare doubling
    assert after == 3


def test_a_poll_bounded_only_in_time_logs_at_the_level_asked(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    now = [0.0]
    monkeypatch.setattr(retry.time, "monotonic", lambda: now[0])

    def sleep(seconds):
        now[0] += seconds

    fn, calls = flaky([retry.Transient("not shown yet") for _ in range(100)])
    with pytest.raises(retry.GaveUp, match=r"^poll: not shown yet; gave up after 7 attempts in 10 s$"):
        retry.call(fn, what="poll", attempts=None, backoff=1, max_wait=2, within=10, level=logging.DEBUG, sleep=sleep)
    assert len(calls) == 7  # at 0, 1, 3, 5, 7, 9 and 10 s (the last wait is what is left)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 6
    assert caplog.records[0].getMessage() == "poll: not shown yet; attempt 1, retrying in 1 s"
    with pytest.raises(ValueError, match="attempts or within"):
        retry.call(fn, what="x", attempts=None, backoff=1)


# --- the atomic writer ---------------------------------------------------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_file_replaces_the_target_with_the_umask_mode(tmp_path, umask_027):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with storage.open_atomic(target, "w", encoding="utf-8") as out:
        out.write("new\n")
        assert target.read_text() == "old\n"  # readers see the old file until the rename
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_file_leaves_the_target_and_no_temporary_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    for exc in (OSError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), storage.open_atomic(target, "w") as out:
            out.write("partial")
            raise exc
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_file_modes_are_right_under_concurrent_writers(tmp_path, umask_027):
    """The umask is never changed, so threads writing at once all get 0o640 (issue 9 item 9)."""
    errors = []

    def write(k: int) -> None:
        try:
            for j in range(20):
                with storage.open_atomic(tmp_path / f"f{k}-{j}.csv", "w") as out:
                    out.write("x")
        except OSError as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o640}


def test_stale_temporaries_are_removed_but_a_live_writers_file_is_kept(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    stale = [tmp_path / ".report.csv.1a2b3c4d.tmp", tmp_path / ".report.x9y8.csv.tmp"]  # new and old name forms
    for path in stale:
        path.write_text("partial")
    others = [tmp_path / ".other.csv.1a2b3c4d.tmp", tmp_path / "report.csv", tmp_path / ".report.csv"]
    for path in others:
        path.write_text("keep")
    with storage.temp_file(tmp_path, "report.csv") as live:
        removed = storage.remove_stale_temp_files(tmp_path, "report.csv", "report")
        assert live.exists()
    assert sorted(removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in others)
    assert "left by an earlier run that was stopped" in caplog.text
