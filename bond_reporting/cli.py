"""The one CLI shape of the three scripts: the same -v, help, logging setup and exit codes.

Each script builds its parser with :func:`parser` (its choices, the environment variables it
reads) and ends with ``return cli.main(parser, job, argv)``, where ``job(args)`` calls the
script's ``run(...)`` and returns its summary dict. Usage errors print the usage and exit 2;
every other failure is one redacted log line and exit 1 (data/runtime) or 2 (configuration).
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence

from bond_reporting import logs, signals
from bond_reporting.errors import ConfigError, EtlError
from bond_reporting.settings import VARIABLES

log = logging.getLogger("bond_reporting")

EXIT_CODES = {
    0: "success",
    1: "data or runtime failure (one line says what; a failed step changes nothing)",
    2: "usage or configuration error",
    signals.EXIT_CODE: "stopped by SIGTERM (handled like Ctrl-C: nothing half-done is left)",
}
# libpq reads these itself when PGHOST is set (DATABASE_URL unset).
_LIBPQ = "PGPORT, PGUSER, PGPASSWORD, PGDATABASE: read by libpq with PGHOST"


class UsageError(ConfigError):
    """Bad command-line arguments: the usage is printed, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so ``main`` returns the exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parser(
    prog: str,
    description: str,
    *,
    variables: Sequence[str],
    required: Sequence[str] = (),
    required_note: str = "required",
    choices: Mapping[str, Mapping[str, str]] | None = None,
) -> ArgumentParser:
    """A parser with ``-v`` and a help that lists ``choices`` (title → {value: meaning}), the
    environment ``variables`` the script reads (``required`` ones marked) and the exit codes."""
    sections = []
    for title, values in (choices or {}).items():
        width = max(map(len, values), default=0)
        sections.append(f"{title}:\n" + "\n".join(f"  {v:<{width}}  {meaning}" for v, meaning in values.items()))
    variables = (*variables, "BOND_ENV_FILE")  # every script reads the env file for local runs
    width = max(map(len, variables), default=0)
    lines = []
    for name in variables:
        mark = f" ({required_note})" if name in required else ""
        lines.append(f"  {name:<{width}}  {VARIABLES[name][1]}{mark}")
        if name == "PGHOST":
            lines.append(f"  {'':<{width}}  ({_LIBPQ})")
    sections.append("environment variables:\n" + "\n".join(lines))
    sections.append("exit codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()))
    result = ArgumentParser(
        prog=prog,
        description=textwrap.fill(description, 100),
        epilog="\n\n".join(sections),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return result


def main(parser: ArgumentParser, job: Callable[[argparse.Namespace], object], argv: Sequence[str] | None) -> int:
    """Parse ``argv``, set up logging, run ``job(args)``; the exit code (0/1/2, see EXIT_CODES)."""
    logs.setup_logging()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(parser.format_usage())
        sys.stderr.write(f"{parser.prog}: error: {exc} (see --help)\n")
        return exc.exit_code
    except SystemExit as exc:  # --help printed the help
        return exc.code if isinstance(exc.code, int) else 0
    logs.setup_logging(verbose=args.verbose)
    return run_main(lambda: job(args), parser.prog.removesuffix(".py"))


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
        log.error("%s failed: unexpected %s: %s", script, type(exc).__name__, logs.one_line(exc))
        return 1
    return 0


def _what_was_done(exc: BaseException) -> str:
    """The notes the steps added on the way out (``add_note``), else a pointer to the log."""
    notes = getattr(exc, "__notes__", None)
    return "; ".join(notes) if notes else "see the lines above for what was done"
