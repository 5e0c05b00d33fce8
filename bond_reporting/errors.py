"""Error types that carry their exit code and a one-line message.

Everything below the CLI raises one of these; the CLI boundary (`cli.run_main`)
turns it into one log line and the exit code. Nothing else calls `sys.exit`.
Exit codes across all scripts: 0 success, 1 data or runtime failure, 2 usage/config.
"""

from __future__ import annotations


class EtlError(Exception):
    """A failure with a clear one-line message. Exit code 1.

    ``retryable`` tells a scheduler whether running the step again may succeed: False for
    refused requests, bad settings and bad data, which would fail the same way (and repeated
    failed logins can lock an account).
    """

    exit_code = 1
    retryable = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message

    def prefixed(self, prefix: str) -> EtlError:
        """The same error (type, retryable) with ``prefix: `` before its message."""
        return type(self)(f"{prefix}: {self.message}", retryable=self.retryable)


class ConfigError(EtlError):
    """A missing or invalid setting, an unknown report name, bad arguments. Exit code 2."""

    exit_code = 2
    retryable = False


class SourceError(EtlError):
    """A source could not be read (HTTP error, missing S3 key, bad bytes, empty file)."""


class ValidationError(EtlError):
    """A source was read but its rows break the data contract."""

    retryable = False


class DatabaseError(EtlError):
    """PostgreSQL was unreachable or a statement failed; the transaction was rolled back."""


class MicroStrategyError(EtlError):
    """The MicroStrategy REST API refused or failed a call."""


class PublishError(EtlError):
    """Publishing to Socrata (or the local sink) failed."""


class ReconciliationError(EtlError):
    """Totals that must agree at a hop (export, load, calculate) do not: nothing is committed or
    published (issue 10 item 2)."""

    retryable = False


class StaleDataError(ValidationError):
    """The data is older than ``FRESHNESS_ERROR_DAYS``: the run fails before anything is published."""


class ChangeGuardError(ValidationError):
    """A dataset's rows or money fell by more than ``MAX_DROP_PCT`` since the last publish to the same
    destination: nothing is published unless ``--accept-changes``."""
