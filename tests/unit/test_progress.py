"""Progress lines for long transfers: at most one per interval, with rate and time left."""

from __future__ import annotations

import logging

import pytest

from bond_reporting.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_logs_at_most_once_per_interval_with_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress("publish vs3t-h2aj", 480_000, logging.getLogger("t.progress"), interval=10, clock=clock)
    with caplog.at_level(logging.INFO, "t.progress"):
        clock.now = 5
        progress.update(20_000)  # too early: no line
        clock.now = 10
        progress.update(40_000)
        clock.now = 15
        progress.update(60_000)  # 5 s after the last line: no line
    assert [r.getMessage() for r in caplog.records] == [
        "publish vs3t-h2aj: 40,000 / 480,000 rows (8%), 4,000 rows/s, about 1m 50s left"
    ]


def test_unknown_total_gives_rows_and_rate_only() -> None:
    clock = Clock()
    progress = Progress("export", None, logging.getLogger("t.progress"), clock=clock)
    clock.now = 4
    assert progress.line(10_000) == "export: 10,000 rows, 2,500 rows/s"
