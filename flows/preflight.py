"""What ``python -m flows.pipeline`` checks before Prefect is imported or started.

A run whose settings are missing or malformed cannot succeed; found only inside the flow, it
costs a Prefect import and a temporary local server (tens of seconds on a busy machine, a
``~/.prefect`` database written). Here the command line's arguments give the steps the run will
take (``steps``), and ``Settings.require_for`` checks what they need, so such a run fails in
about a second with the one line the scripts print (exit 2) and touches nothing. The flow makes
the same check first (``flows.pipeline.configure``) for a run started any other way (a
deployment, ``--secrets-block``, whose values need Prefect to read). This module imports
nothing heavy (no Prefect, no pandas).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bond_reporting import cli, logs
from bond_reporting.errors import ConfigError
from bond_reporting.settings import Settings

FLOW_NAME = "bond-reporting"


def parser(report_names: Sequence[str] = (), *, add_help: bool = True) -> cli.ArgumentParser:
    """The command line of ``python -m flows.pipeline``; ``report_names`` only feed the help."""
    result = cli.ArgumentParser(
        prog="python -m flows.pipeline",
        add_help=add_help,
        description="Run the bond-reporting flow once: export each report, load every source, calculate "
        "and publish. Settings come from the environment (and .env); see docs/operations.md.",
        epilog="Variables (.env.example; .env is read too): export needs BASE_URL, PROJECT_ID, MSTRO_USERNAME, "
        "MSTRO_PASSWORD; publishing needs SO_WEB, SO_KEY, SO_SECRET (SO_TOKEN optional); BUCKET, DATABASE_URL or PG*, "
        "AWS_* as for the scripts. Check them: make check-config. "
        "Exit codes: 0 completed, 1 a step failed, 2 usage or configuration error.",
    )
    result.add_argument(
        "-r",
        "--report",
        action="append",
        dest="reports",
        metavar="NAME",
        help=f"report to export (repeatable; default all: {', '.join(report_names)})",
    )
    result.add_argument("--output-dir", metavar="DIR", help="write the seven payloads here instead of publishing")
    result.add_argument("--sheets-dir", metavar="DIR", help="read the Google-Sheets sources from this folder")
    result.add_argument("--secrets-block", metavar="NAME", help="Prefect Secret block completing the environment")
    result.add_argument(
        "--publish-only", action="store_true", help="skip export and load: calculate and publish what PostgreSQL holds"
    )
    result.add_argument(
        "--accept-changes", action="store_true", help="publish although rows or money fell by more than MAX_DROP_PCT"
    )
    return result


def steps(
    reports: Sequence[str] | None, *, publish_only: bool = False, output_dir: str | None = None
) -> tuple[str, ...]:
    """The steps a run with these flow parameters takes, as ``Settings.require_for`` names them:
    export (unless ``publish_only`` or ``reports`` is ``[]``), load (unless ``publish_only``),
    calculate, publish (unless ``output_dir``: the payloads go to that folder)."""
    return (
        *(("export",) if not publish_only and reports != [] else ()),
        *(() if publish_only else ("load",)),
        "calculate",
        *(("publish",) if output_dir is None else ()),
    )


def check(args: argparse.Namespace) -> None:
    """ConfigError (one line, exit 2) naming every setting the run's steps lack or cannot use.
    With ``--secrets-block`` nothing is checked here: the block may hold them (the flow checks)."""
    if args.secrets_block is None:
        Settings.from_env().require_for(
            *steps(args.reports, publish_only=args.publish_only, output_dir=args.output_dir)
        )


def exit_unless_ready(argv: Sequence[str]) -> None:
    """Exit 2 with the scripts' one line when the settings the run needs are missing or malformed;
    return otherwise (also for ``--help`` and bad arguments, which the full command line reports)."""
    try:
        args = parser(add_help=False).parse_args(argv)  # --help, -h: not known here, the full command line prints it
    except cli.UsageError:
        return
    try:
        check(args)
    except ConfigError:
        logs.setup_logging()
        sys.exit(cli.run_main(lambda: check(args), FLOW_NAME))
