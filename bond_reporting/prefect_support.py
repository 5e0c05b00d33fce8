"""What the Prefect flow needs besides the pipeline itself: settings from a Secret block, log
routing and redaction, one-line failures, the retry rule and the run summary artifact.

The flow (``flows/pipeline.py``) stays a short story; everything here is plumbing:

- ``local_run``: ``prefect_env.PREFECT_DEFAULTS`` (analytics off, the scripts' loggers routed
  to the run log with Prefect's own ``PREFECT_LOGGING_EXTRA_LOGGERS``) for a command-line run;
- ``route_script_logs``: the same routing when Prefect was imported before the variable was set,
  the scripts' INFO lines kept, every secret masked (``logs.RedactingFilter``) and typed errors
  shown as their one line (no traceback, no repeats);
- ``run_step``: a task body; an expected failure (``EtlError`` with ``retryable`` False) ends the
  task as ``Failed`` with its one line, without a traceback; anything else is raised, masked;
- ``retry_unless_permanent``: the tasks' retry condition;
- ``load_settings``: the environment completed by a Prefect Secret block;
- ``RunSummary``: the table artifact ``bond-reporting-summary`` (also written when a step fails).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.blocks.system import Secret
from prefect.futures import PrefectFuture, wait
from prefect.logging.handlers import APILogHandler
from prefect.settings import (
    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)
from prefect.states import Failed, State

from bond_reporting import logs
from bond_reporting.errors import ConfigError, EtlError
from bond_reporting.prefect_env import PREFECT_DEFAULTS, SCRIPT_LOGGERS
from bond_reporting.report import Step, link_of
from bond_reporting.settings import VARIABLES, Settings, environment

ARTIFACT_KEY = "bond-reporting-summary"
REPORT_LINK_KEY = "bond-reporting-run-report"  # a link to the run's report.html (issue 11)
HEADLINE_KEY = "bond-reporting-headline"  # the run report's headline numbers, as Markdown

log = logging.getLogger("bond_reporting.flow")
# Prefect's handler that sends records to the API (it finds the flow or task run from the context).
_API_HANDLER = APILogHandler()


# --- one process running the flow ----------------------------------------------------------------


@contextmanager
def local_run() -> Iterator[None]:
    """``PREFECT_DEFAULTS`` for a flow run started from the command line, where Prefect was imported
    before they could be set: environment defaults (a local server inherits them) and the same
    values as temporary Prefect settings. Variables already set in the environment win."""
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    updates = {
        PREFECT_SERVER_ANALYTICS_ENABLED: os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"],
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"],
        # A temporary local server (no PREFECT_API_URL) on a busy machine takes more than the default 20 s.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 90,
    }
    with temporary_settings(updates=updates):
        yield


def route_script_logs(level: int = logging.INFO) -> None:
    """Route the scripts' log records to the Prefect run log, redacted, typed errors on one line.

    Prefect attaches its API handler to the loggers of ``PREFECT_LOGGING_EXTRA_LOGGERS`` when it
    is imported; this does the same for ``SCRIPT_LOGGERS`` if that came too late (idempotent), sets
    their level (Prefect's root logger is at WARNING) and puts ``logs.RedactingFilter`` and
    ``OneLineErrors`` on Prefect's handlers, so no console or API record shows a secret or a
    traceback of an expected error.
    """
    for name in SCRIPT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
        if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
            logger.addHandler(_API_HANDLER)
    handlers = {
        handler
        for name in (*SCRIPT_LOGGERS, "prefect", "prefect.extra", "prefect.flow_runs", "prefect.task_runs", "")
        for handler in logging.getLogger(name or None).handlers
    }
    for handler in handlers:
        for kind in (logs.RedactingFilter, OneLineErrors):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
    task_runs = logging.getLogger("prefect.task_runs")
    if _drop_thread_timeout_warning not in task_runs.filters:
        task_runs.addFilter(_drop_thread_timeout_warning)


class OneLineErrors(logging.Filter):
    """Typed errors (``EtlError``) are one line by design, so each is shown once, as that line:

    - their tracebacks are dropped;
    - Prefect's repeats of an exception the failing task reports anyway are not shown;
    - a flow run's closing "Finished in state Failed('…')" is not shown when a task run of the same
      flow run already showed exactly that state (the flow run's state message still carries it).
    """

    REPEATS = ("Task run failed with exception", "Encountered exception during execution")
    FINISHED = "Finished in state "

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[str, set[str]] = {}  # flow run id -> failed states shown by its task runs

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, EtlError):
            if str(record.msg).startswith(self.REPEATS):
                return False
            record.exc_info, record.exc_text = None, None
        message = str(record.msg)
        flow_run = getattr(record, "flow_run_id", None)
        if flow_run and message.startswith(self.FINISHED) and "Failed(" in message:
            shown = self._shown.setdefault(str(flow_run), set())
            if getattr(record, "task_run_id", None):
                shown.add(message)
                if len(self._shown) > 100:  # a long-lived process: forget the oldest runs
                    self._shown.pop(next(iter(self._shown)))
            elif message in shown:
                return False
        return True


def _drop_thread_timeout_warning(record: logging.LogRecord) -> bool:
    """Drop Prefect's per-task warning that a timeout in a worker thread (the concurrent exports)
    cannot interrupt a blocking call: known and accepted here. The scripts bound every request
    with their own time-outs, and the task timeout still fails the task when the call returns."""
    return not str(record.msg).startswith("Timeout of %s seconds configured for this task, but the task is running")


# --- failures and retries ---------------------------------------------------------------------------


def masked(exc: BaseException) -> BaseException:
    """``exc`` with every registered secret masked in its message (same type and ``retryable``
    when possible): the message becomes a state message in the Prefect API."""
    text = str(exc)
    clean = logs.redact(text)
    if clean == text:
        return exc
    try:
        if isinstance(exc, EtlError):
            return type(exc)(clean, retryable=exc.retryable)
    except TypeError:
        pass
    return EtlError(f"{type(exc).__name__}: {clean}")


def run_step(step: Callable[..., dict], *args: Any, **kwargs: Any) -> dict | State:
    """Run a task's work. An expected failure (``EtlError`` that is not ``retryable``: bad settings,
    bad data, a refused request) ends the task ``Failed`` with its one line as the state message and
    no traceback; any other error is raised (masked) for Prefect's retries."""
    try:
        return step(*args, **kwargs)
    except EtlError as exc:
        error = masked(exc)
        if exc.retryable:
            raise error from None
        return Failed(message=str(error), data=error)
    except Exception as exc:
        error = masked(exc)
        if error is exc:
            raise
        raise error from None


def retry_unless_permanent(task: Any, task_run: Any, state: State) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures (network, database, time-out),
    never a ConfigError, a ValidationError or a refused request (``EtlError.retryable`` is False),
    which would fail the same way; repeated failed logins could lock the MicroStrategy account.
    The clients have already retried 429/5xx themselves."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, EtlError) and not error.retryable)


# --- settings ---------------------------------------------------------------------------------------


def load_settings(secrets_block: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, with variables it lacks taken from the Prefect Secret block
    ``secrets_block`` (a JSON object of variable → value), if given and present.

    The environment wins over the block. A missing block is a warning (the environment may hold
    everything); a block that is not a JSON object, or names an unknown variable, is a ConfigError.
    """
    env = dict(environment() if environ is None else environ)
    if secrets_block:
        values = read_secret_block(secrets_block)
        unknown = sorted(set(values) - set(VARIABLES))
        if unknown:
            raise ConfigError(f"Secret block {secrets_block!r}: unknown variable(s) {', '.join(unknown)}")
        for name, value in values.items():
            if not (env.get(name) or "").strip():
                env[name] = str(value)
    return Settings.from_env(env)


def read_secret_block(name: str, missing_ok: bool = True) -> dict[str, Any]:
    """The JSON object held by the Secret block ``name``; ``{}`` (and a warning) if there is none
    and ``missing_ok``, else a ConfigError."""
    try:
        value = Secret.load(name, _sync=True).get()
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        if not missing_ok:
            raise ConfigError(f"there is no Secret block {name!r} on this Prefect server") from None
        log.warning("no Secret block %r: settings come from the environment only", name)
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"Secret block {name!r} must hold a JSON object of variable names to values")
    return value


# --- the run summary --------------------------------------------------------------------------------


class StepFailed(Exception):
    """A step of the flow failed with ``error``, whose one line is the message."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(logs.redact(str(error)))
        self.step = step
        self.error = error

    @classmethod
    def of(cls, step: str, state: State) -> StepFailed:
        """From a failed task run's state (its error, or its message if it holds none)."""
        error = state.result(raise_on_failure=False)
        return cls(step, error if isinstance(error, BaseException) else EtlError(state.message or "failed"))

    def state(self) -> State:
        """The flow run's final state: Failed, the one line as its message, the error as its result."""
        return Failed(message=str(self), data=self.error)


class RunSummary:
    """Rows of the summary artifact (step, item, rows, seconds, note), filled in as steps complete."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.data_as_of: str | None = None
        self.failed: str | None = None
        self._step_started = time.monotonic()

    def _step_seconds(self) -> float:
        """Seconds since the previous step was recorded (or the run started)."""
        now = time.monotonic()
        seconds, self._step_started = now - self._step_started, now
        return seconds

    def add(self, step: str, item: str, rows: int | None, seconds: float | None, note: str = "") -> None:
        self.rows.append(
            {
                "step": step,
                "item": item,
                "rows": "" if rows is None else int(rows),
                "seconds": "" if seconds is None else round(float(seconds), 1),
                "note": note,
            }
        )

    def exports(self, names: list[str], futures: list[PrefectFuture]) -> list[dict]:
        """Wait for every export and record it; then ``StepFailed`` with the first failure, if any."""
        wait(futures)
        seconds = self._step_seconds()
        results, failures = [], []
        for name, state in zip(names, [future.state for future in futures], strict=True):
            if state.is_completed():
                result = state.result()
                results.append(result)
                self.add("export", name, result["rows"], result["seconds"], str(result.get("destination", "")))
            else:
                self.add("export", name, None, None, f"FAILED: {state.message}")
                failures.append(state)
        if failures:
            raise StepFailed.of("export", failures[0])
        self.add("export", f"{len(names)} report(s)", sum(int(r["rows"]) for r in results), seconds)
        return results

    def load(self, state: State) -> dict:
        """Record the load (rows and newest date per table); ``StepFailed`` if it failed."""
        loaded = self._result("load", state)
        seconds = self._step_seconds()
        newest = loaded.get("newest_dates", {})
        for table, rows in loaded["tables"].items():
            self.add("load", table, rows, None, f"newest date {newest[table]}" if table in newest else "")
        self.add("load", f"{len(loaded['tables'])} table(s)", sum(loaded["tables"].values()), seconds)
        return loaded

    def publish(self, state: State) -> dict:
        """Record the published datasets and "data as of"; ``StepFailed`` if publishing failed."""
        published = self._result("publish", state)
        seconds = self._step_seconds()
        self.data_as_of = published.get("data_as_of")
        for dataset, rows in published["datasets"].items():
            self.add("publish", dataset, rows, None)
        self.add(
            "publish",
            f"{len(published['datasets'])} dataset(s)",
            sum(published["datasets"].values()),
            seconds,
            f"data as of {self.data_as_of}; to {published.get('destination')}",
        )
        return published

    def report_steps(self) -> list[Step]:
        """The steps recorded so far (export, load), for the run report's headline
        (``bond_calculations.run(steps=...)``)."""
        totals = [row for row in self.rows if row["item"].endswith(("report(s)", "table(s)"))]
        return [
            Step(
                row["step"],
                "ok",
                row["seconds"] or None,
                f"{row['item']}, {row['rows']:,} {logs.plural(row['rows'], 'row')}",
            )
            for row in totals
        ]

    def _result(self, step: str, state: State) -> dict:
        if not state.is_completed():
            raise StepFailed.of(step, state)
        return state.result()

    def fail(self, step: str, message: str) -> None:
        """Mark the run failed at ``step`` with its one-line error."""
        self.failed = step
        self.add(step, "(step failed: later steps did not run)", None, None, f"FAILED: {message}")

    def markdown(self) -> str:
        status = f"FAILED at {self.failed}" if self.failed else "completed"
        return f"Bond reporting run {status}; data as of {self.data_as_of or 'unknown'}."

    def create_artifact(self, more_rows: list[dict[str, Any]] = ()) -> None:
        """Create the table artifact (its rows, then ``more_rows``); a failure to do so is a warning
        (the run's own outcome stands)."""
        try:
            create_table_artifact(table=[*self.rows, *more_rows], key=ARTIFACT_KEY, description=self.markdown())
        except Exception as exc:  # noqa: BLE001 (the step's own error is the one that matters)
            log.warning("could not create the summary artifact: %s", logs.redact(str(exc)))


def report_artifacts(published: dict) -> None:
    """A link artifact to the run report (where it was written first) and a Markdown artifact with
    its headline numbers (issue 11)."""
    where = list(published.get("report") or [])
    if where:
        create_link_artifact(
            key=REPORT_LINK_KEY,
            link=link_of(where[0]),
            link_text="Run report (report.html)",
            description="The run report: headline, charts, what changed, data notes; one self-contained HTML file.",
        )
    if published.get("report_markdown"):
        create_markdown_artifact(key=HEADLINE_KEY, markdown=published["report_markdown"], description="Run report")
