"""The CLI boundary shared by the three scripts: errors become one line and an exit code."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from bond_reporting import logs, signals
from bond_reporting.errors import ConfigError, EtlError

log = logging.getLogger("bond_reporting")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def run_main(job: Callable[[], object], script: str) -> int:
    """Run ``job``; map every failure to one redacted log line and an exit code (0/1/2)."""
    try:
        with signals.sigterm_as_interrupt():  # SIGTERM is handled like Ctrl-C (bond_reporting/signals.py)
            job()
    except signals.Terminated as exc:
        log.error("%s %s before it finished: %s", script, exc, _what_was_done(exc))
        return signals.EXIT_CODE
    except EtlError as exc:
        log.error("%s failed: %s", script, logs.redact(str(exc)))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        log.error("%s interrupted before it finished: %s", script, _what_was_done(exc))
        return 1
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        log.error("%s failed: unexpected %s: %s", script, type(exc).__name__, logs.redact(str(exc)))
        return 1
    return 0


def _what_was_done(exc: BaseException) -> str:
    """The notes the steps added on the way out (``add_note``), else a pointer to the log."""
    notes = getattr(exc, "__notes__", None)
    return "; ".join(notes) if notes else "see the lines above for what was done"
