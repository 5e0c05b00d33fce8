"""SIGTERM handled like Ctrl-C: what Docker, Prefect and systemd send to stop a run.

``Terminated`` is a ``KeyboardInterrupt``, so every clean-up written for Ctrl-C (a transaction
rolled back, temporaries removed, an upload aborted) runs for SIGTERM as well. The CLI boundary
(``cli.run_main``) turns it into one line and exit code 143 (128 + SIGTERM, what a shell reports
for a process SIGTERM stopped; Ctrl-C stays exit 1). See docs/operations.md "Stopping a run".
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODE = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""

    def __init__(self) -> None:
        super().__init__("stopped by SIGTERM")


def _raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (elsewhere: no-op).

    The previous handler is restored on exit. Blocking waits must stay interruptible for this to
    take effect at once: database calls run on a helper thread (``database.Guard.call``) while the
    main thread waits in short, interruptible joins.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
