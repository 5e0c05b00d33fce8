"""The one logging setup: one line per event, secrets redacted everywhere.

``setup_logging`` is called by each CLI; inside Prefect, the flow attaches the
run logger instead. ``register_secret`` adds a value that must never appear in
any output; the filter replaces it with ``***`` in every record's final text.
"""

from __future__ import annotations

import logging
import re
import sys

_SECRETS: set[str] = set()
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def register_secret(value: str) -> None:
    """Never print ``value`` (ignored if too short to be a meaningful secret)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


# Credentials by shape, whatever was registered: the part of a URL between "://" and the last "@"
# before the next blank (a raw "@", "/" or ":" in a password included), and a key=value password.
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)\S*@")
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)")


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``, then every URL credential part
    (``scheme://***@host``) and every ``password=***`` whatever its value."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacted, so no handler sees a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args = redact(message), None
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (pytest swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr with timestamps; idempotent."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in root.handlers:
        if getattr(handler, "_bond_reporting", False):
            return
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter())
    handler._bond_reporting = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # Library chatter (boto, urllib3) is debug-level noise for the people running this.
    for name in ("botocore", "boto3", "urllib3", "s3transfer", "pgserver", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``noun`` for a count of exactly 1, else its plural (``many``, default ``noun + "s"``), so a line
    reads "1 row", "0 rows", "2 rows": ``f"{n} {plural(n, 'row')}"``."""
    return noun if count == 1 else (many or f"{noun}s")


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """An error (or text) as one redacted line: whitespace runs collapsed, at most ``limit``
    characters; an exception without a message gives its type name."""
    text = " ".join(str(error).split())
    if limit is not None:
        text = text[:limit].rstrip()
    return redact(text) or (type(error).__name__ if isinstance(error, BaseException) else "")
