"""The CLI boundary shared by the three scripts: errors become one line and an exit code."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from bond_reporting import logs
from bond_reporting.errors import ConfigError, EtlError

log = logging.getLogger("bond_reporting")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def run_main(job: Callable[[], object], script: str) -> int:
    """Run ``job``; map every failure to one redacted log line and an exit code (0/1/2)."""
    try:
        job()
    except EtlError as exc:
        log.error("%s failed: %s", script, logs.redact(str(exc)))
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("%s interrupted before it finished (see the lines above for what was done)", script)
        return 1
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        log.error("%s failed: unexpected %s: %s", script, type(exc).__name__, logs.redact(str(exc)))
        return 1
    return 0
