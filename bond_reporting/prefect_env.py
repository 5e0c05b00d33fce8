"""The Prefect settings of every process that runs the flow; importable before ``prefect`` is.

Prefect reads its settings when it is first imported, so these are set as environment variables
by whoever starts the process: the image (``Dockerfile`` ``ENV``), the demo, the test harness, and
``python -m flows.pipeline`` (``prefect_support.local_run``, for what is read later). Values
already in the environment win.
"""

from __future__ import annotations

# Loggers of the scripts and the shared modules: their records go to the Prefect run log.
SCRIPT_LOGGERS = ("bond_reporting", "config", "microstrategy_to_s3", "bond_data", "bond_calculations")

PREFECT_DEFAULTS = {
    # No analytics: the client's (DO_NOT_TRACK) nor a local server's telemetry, whose heartbeat
    # fills the console with sqlite "database is locked" errors.
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Prefect's own log routing: its API handler on the scripts' loggers.
    "PREFECT_LOGGING_EXTRA_LOGGERS": ",".join(SCRIPT_LOGGERS),
    # The scripts log outside flow runs too (the CLIs, a local run's set-up): no warning for that.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}
