"""Settings from the environment: the only reader of ``os.environ``.

Variable names are those of the existing deployment, so its env files keep
working. Every value is optional here; each job asks for what it needs with
``Settings.require(...)``, which fails with a one-line :class:`ConfigError`
(exit 2) naming the missing variable. Secret values are registered with the
logging redactor (``logs.register_secret``) so they never reach any output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote

from bond_reporting import logs
from bond_reporting.errors import ConfigError

DEFAULT_BUCKET = "atd-microstrategy-reports"

# Variable name -> (attribute, one-line meaning, is_secret). `.env.example` mirrors this table.
VARIABLES: dict[str, tuple[str, str, bool]] = {
    "BASE_URL": ("base_url", "MicroStrategy Library URL (with or without a trailing /api)", False),
    "PROJECT_ID": ("project_id", "MicroStrategy project id (32 hex characters)", False),
    "MSTRO_USERNAME": ("mstro_username", "MicroStrategy user (standard login)", False),
    "MSTRO_PASSWORD": ("mstro_password", "MicroStrategy password", True),
    "MSTR_RUN_TIMEOUT": (
        "mstr_run_timeout",
        "Seconds a MicroStrategy report may take to run, all attempts (default 1800)",
        False,
    ),
    "MSTR_CALL_TIMEOUT": (
        "mstr_call_timeout",
        "Seconds a MicroStrategy login or page may go unanswered (default 60)",
        False,
    ),
    "AWS_ACCESS_ID": ("aws_access_id", "AWS access key id (unset: the standard AWS credential chain)", True),
    "AWS_PASS": ("aws_pass", "AWS secret access key", True),
    "AWS_ENDPOINT_URL": ("aws_endpoint_url", "S3-protocol endpoint to use instead of AWS (MinIO, moto, ...)", False),
    "BUCKET": ("bucket", "Report CSV bucket: a bucket name, s3://name, file://folder or a local folder", False),
    "SO_WEB": ("so_web", "Socrata domain, e.g. datahub.austintexas.gov", False),
    "SO_TOKEN": ("so_token", "Socrata app token (X-App-Token)", True),
    "SO_KEY": ("so_key", "Socrata API key id (basic auth user)", True),
    "SO_SECRET": ("so_secret", "Socrata API key secret (basic auth password)", True),
    "DATABASE_URL": ("database_url", "PostgreSQL libpq URI; unset with PGHOST unset: embedded PostgreSQL", True),
    "PGHOST": ("pghost", "PostgreSQL host (with the other standard PG* variables)", False),
    "BOND_LOCAL_DIR": ("local_dir", "Folder for embedded PostgreSQL data and local runs (default .local)", False),
}


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment. Secrets are masked in ``repr``."""

    base_url: str | None = None
    project_id: str | None = None
    mstro_username: str | None = None
    mstro_password: str | None = field(default=None, repr=False)
    mstr_run_timeout: str | None = None
    mstr_call_timeout: str | None = None
    aws_access_id: str | None = field(default=None, repr=False)
    aws_pass: str | None = field(default=None, repr=False)
    aws_endpoint_url: str | None = None
    bucket: str = DEFAULT_BUCKET
    so_web: str | None = None
    so_token: str | None = field(default=None, repr=False)
    so_key: str | None = field(default=None, repr=False)
    so_secret: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    pghost: str | None = None
    local_dir: str = ".local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every known variable; empty strings count as unset."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (attr, _meaning, secret) in VARIABLES.items():
            value = (env.get(name) or "").strip()
            if not value:
                continue
            values[attr] = value
            if secret:
                logs.register_secret(value)
        # libpq reads PGPASSWORD itself; still keep it out of every output.
        if env.get("PGPASSWORD"):
            logs.register_secret(env["PGPASSWORD"])
        # A driver error may quote just the password of DATABASE_URL (e.g. a bad %-escape in it).
        for password in _uri_passwords(values.get("database_url", "")):
            logs.register_secret(password)
        return cls(**values)

    def require(self, *names: str) -> tuple[str, ...]:
        """Return the values of the named variables, or fail naming the first missing one."""
        out = []
        for name in names:
            attr = VARIABLES[name][0]
            value = getattr(self, attr)
            if not value:
                raise ConfigError(f"missing setting {name}: {VARIABLES[name][1]} (see .env.example)")
            out.append(value)
        return tuple(out)


def seconds(name: str, value: str | None, default: float) -> float:
    """A positive number of seconds from setting ``name`` (unset: ``default``); else ConfigError."""
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
    return number


def refuse_credentials(name: str, url: str) -> None:
    """ConfigError (exit 2) if the URL setting ``name`` carries ``user:password@``; the value is never echoed."""
    # Anywhere before the query: a password with a raw "/" or "@" in it must not slip through.
    if "@" in url.split("?")[0].split("#")[0]:
        raise ConfigError(
            f"{name} must not contain credentials (user:password@host); "
            "use the settings meant for them (see .env.example)"
        )


def _uri_passwords(uri: str) -> set[str]:
    """The password of a libpq URI (user:password@host) or key=value DSN, raw and %-decoded."""
    match = re.search(r"://[^:/@]*:([^@]*)@", uri) or re.search(r"(?:^|\s)password\s*=\s*'?([^'\s]+)", uri)
    if not match:
        return set()
    return {match.group(1), unquote(match.group(1))}


def env_example() -> str:
    """The text of `.env.example`: every variable with its one-line meaning."""
    lines = ["# Every variable the ETL reads. Copy to .env (git-ignored) and fill in."]
    for name, (_attr, meaning, _secret) in VARIABLES.items():
        lines.append(f"# {meaning}")
        lines.append(f"{name}=")
    return "\n".join(lines) + "\n"


assert {f.name for f in fields(Settings)} == {a for a, _, _ in VARIABLES.values()}
