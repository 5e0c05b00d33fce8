"""Progress of long transfers at INFO: a line at most every ``interval`` seconds.

Used by the export (pages received) and the publisher (chunks sent), so that a Prefect run log
shows movement during minutes of work instead of silence that looks like a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_INTERVAL = 10.0


@dataclass
class Progress:
    """Counts rows done of ``total`` (None: unknown) and logs ``what: done / total rows, rows/s, ETA``.

    ``update(done)`` takes the running count (rows done so far, not an increment); it logs when
    ``interval`` seconds have passed since the last line. ``clock`` is injectable for tests.
    """

    what: str
    total: int | None
    logger: logging.Logger
    interval: float = DEFAULT_INTERVAL
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    last_logged: float = field(init=False)
    lines: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.started = self.last_logged = self.clock()

    def update(self, done: int) -> None:
        """Record ``done`` rows so far; log a progress line if ``interval`` has passed."""
        now = self.clock()
        if now - self.last_logged >= self.interval:
            self.last_logged = now
            self.lines += 1
            self.logger.info("%s", self.line(done, now))

    def line(self, done: int, now: float | None = None) -> str:
        """The progress text: ``<what>: 40,000 / 480,000 rows (8%), 5,210 rows/s, about 1m 24s left``."""
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        rate = done / elapsed
        text = f"{self.what}: {done:,}"
        if self.total:
            text += f" / {self.total:,} rows ({100 * done / self.total:.0f}%)"
        else:
            text += " rows"
        text += f", {rate:,.0f} rows/s"
        if self.total and rate > 0 and done < self.total:
            text += f", about {_duration((self.total - done) / rate)} left"
        return text


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
