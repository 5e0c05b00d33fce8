"""Settings from the environment: the only reader of ``os.environ``.

Variable names are those of the existing deployment, so its env files keep
working. For local runs the file ``.env`` (``BOND_ENV_FILE``; python-dotenv) completes
the environment; a variable set in the environment wins over the file. Every value is
optional here; each job asks for what it needs with ``Settings.require(...)``, which
fails with one :class:`ConfigError` line (exit 2) naming every missing variable at once.
Secret values are registered with the logging redactor (``logs.register_secret``) so
they never reach any output. ``python -m bond_reporting.check_config`` checks them all.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from dotenv import dotenv_values, load_dotenv

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
    "DB_STALL_TIMEOUT": (
        "db_stall_timeout",
        "Seconds PostgreSQL may make no progress (or a lock may be awaited) before the step fails (default 300)",
        False,
    ),
    "LOCK_WAIT_SECONDS": (
        "lock_wait_seconds",
        "Seconds a load or publish waits for another run holding its lock before failing (default 60)",
        False,
    ),
    "FRESHNESS_WARN_DAYS": (
        "freshness_warn_days",
        "Warn when the newest expense date is older (days; default 7; off)",
        False,
    ),
    "FRESHNESS_ERROR_DAYS": (
        "freshness_error_days",
        "Fail before publishing when it is older (days; default off)",
        False,
    ),
    "FRESHNESS_UNCHANGED_RUNS": (
        "freshness_unchanged_runs",
        "Warn when a report's bytes equal those of this many previous loads (default 3; off)",
        False,
    ),
    "MAX_DROP_PCT": (
        "max_drop_pct",
        "Change guard: stop publishing when rows or money fall more (% ; default 10)",
        False,
    ),
    "BOND_ENV_FILE": ("env_file", "File read for local runs; the environment wins (default .env; empty: none)", False),
}
DEFAULT_DB_STALL_TIMEOUT = 300.0
DEFAULT_LOCK_WAIT_SECONDS = 60.0

# What each step cannot run without (the bucket, the database and the rest have defaults).
REQUIRED_BY = {
    "export": ("BASE_URL", "PROJECT_ID", "MSTRO_USERNAME", "MSTRO_PASSWORD"),
    "publish": ("SO_WEB", "SO_KEY", "SO_SECRET"),
}
# The steps that need PostgreSQL: DATABASE_URL or PGHOST, else the embedded one (local runs, pgserver).
DATABASE_STEPS = frozenset({"load", "calculate"})
# Other variables an env file or a Secret block may hold: libpq's, boto3's, requests', Prefect's.
OTHER_KNOWN = frozenset(
    [
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGCONNECT_TIMEOUT",
        "PGAPPNAME",
        "PGOPTIONS",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "REQUESTS_CA_BUNDLE",
    ]
)
OTHER_KNOWN_PREFIXES = ("PREFECT_",)
DEFAULT_ENV_FILE = ".env"


def is_known(name: str) -> bool:
    """True for a variable this project or one of its libraries reads."""
    return name in VARIABLES or name in OTHER_KNOWN or name.startswith(OTHER_KNOWN_PREFIXES)


def env_file_path() -> str | None:
    """The env file for local runs (``BOND_ENV_FILE``, default ``.env`` in the current folder); None if disabled."""
    return os.environ.get("BOND_ENV_FILE", DEFAULT_ENV_FILE).strip() or None


def environment() -> Mapping[str, str]:
    """``os.environ`` completed from the env file: a variable the environment sets wins over the
    file, and libraries that read the environment themselves (libpq, boto3) see the file's values."""
    path = env_file_path()
    if path and path != DEFAULT_ENV_FILE and "BOND_ENV_FILE" in os.environ and not Path(path).is_file():
        # named on purpose: a typo must not silently run without the settings it holds
        raise ConfigError(f"BOND_ENV_FILE={path}: no such file (unset: .env if present; empty: no file)")
    if path:
        load_dotenv(path, override=False)
    return os.environ


def env_file_values() -> dict[str, str]:
    """The variables the env file sets (empty when there is none)."""
    path = env_file_path()
    if not path or not Path(path).exists():
        return {}
    return {name: value or "" for name, value in dotenv_values(path).items()}


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
    db_stall_timeout: str | None = None
    lock_wait_seconds: str | None = None
    freshness_warn_days: str | None = None
    freshness_error_days: str | None = None
    freshness_unchanged_runs: str | None = None
    max_drop_pct: str | None = None
    env_file: str = DEFAULT_ENV_FILE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every known variable (default: ``environment()``); empty strings count as unset."""
        env = environment() if environ is None else environ
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
        # A driver error may quote just a piece of DATABASE_URL's password (e.g. a bad %-escape).
        for password in _uri_passwords(values.get("database_url", "")):
            logs.register_secret(password)
        return cls(**values)

    def require(self, *names: str) -> tuple[str, ...]:
        """Return the values of the named variables, or fail with one ConfigError line (exit 2) naming
        every missing one and every malformed one (SO_WEB: ``socrata_host``)."""
        _raise(self._missing(names), self._malformed(names))
        return tuple(getattr(self, VARIABLES[name][0]) for name in names)

    def require_for(self, *steps: str) -> None:
        """Check, before anything starts, that ``steps`` ("export", "load", "calculate", "publish")
        can run: every variable of ``REQUIRED_BY`` they need is set and well-formed, and a step of
        ``DATABASE_STEPS`` has a database (DATABASE_URL or PGHOST, or the embedded PostgreSQL
        installed). Else one ConfigError line (exit 2) naming every problem."""
        names = list(dict.fromkeys(name for step in steps for name in REQUIRED_BY.get(step, ())))
        missing = self._missing(names)
        if DATABASE_STEPS.intersection(steps) and self.uses_embedded_database and not embedded_database_available():
            missing.append(("DATABASE_URL", _NO_DATABASE))
        _raise(missing, self._malformed(names))

    def _missing(self, names: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
        """(name, meaning) of every named variable that is not set, in order."""
        return [(name, VARIABLES[name][1]) for name in self.missing(*names)]

    def _malformed(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """One message per named variable that is set but unusable (SO_WEB), in order."""
        problems = []
        if "SO_WEB" in names and self.so_web:
            try:
                socrata_host(self.so_web)
            except ConfigError as exc:
                problems.append(str(exc))
        return problems

    def missing(self, *names: str) -> list[str]:
        """The named variables that are not set, in order."""
        return [name for name in names if not getattr(self, VARIABLES[name][0])]

    @property
    def stall_timeout(self) -> float:
        """DB_STALL_TIMEOUT in seconds (> 0); a bad value is a ConfigError (exit 2)."""
        return seconds("DB_STALL_TIMEOUT", self.db_stall_timeout, DEFAULT_DB_STALL_TIMEOUT)

    @property
    def lock_wait(self) -> float:
        """LOCK_WAIT_SECONDS in seconds (> 0); a bad value is a ConfigError (exit 2)."""
        return seconds("LOCK_WAIT_SECONDS", self.lock_wait_seconds, DEFAULT_LOCK_WAIT_SECONDS)

    @property
    def uses_embedded_database(self) -> bool:
        """True when neither DATABASE_URL nor PGHOST is set."""
        return not (self.database_url or self.pghost)


# What a missing DATABASE_URL means where the embedded PostgreSQL cannot stand in (the image).
_NO_DATABASE = (
    "PostgreSQL libpq URI, or PGHOST and the other PG* variables (the embedded PostgreSQL of local runs, "
    "pgserver from requirements-dev.txt, is not installed)"
)


def _raise(missing: list[tuple[str, str]], malformed: list[str]) -> None:
    """One ConfigError line (exit 2) naming every missing variable (name, meaning), then every
    malformed one (its message); nothing when there is neither."""
    problems = []
    if missing:
        problems.append(
            f"{'; '.join(f'missing setting {name}: {meaning}' for name, meaning in missing)} (see .env.example)"
        )
    if problems or malformed:
        raise ConfigError("; ".join([*problems, *malformed]))


def embedded_database_available() -> bool:
    """True when the embedded PostgreSQL for local runs (``pgserver``, requirements-dev.txt) is installed;
    the image has no such thing, so a deployment needs DATABASE_URL or PGHOST."""
    return importlib.util.find_spec("pgserver") is not None


# A host name or address, with an optional port: what SO_WEB holds once its https:// and slash are taken off.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_EXAMPLE_DOMAIN = "datahub.austintexas.gov"  # as in .env.example and the README


def socrata_host(value: str) -> str:
    """``SO_WEB``'s Socrata domain (``host`` or ``host:port``; Socrata is always reached over https).

    Accepted quietly: ``host``, ``https://host``, either with one trailing ``/``. Refused with one
    ConfigError line (exit 2) that says what to put instead: another scheme (``http://`` too: writes
    need https, and the loopback test servers speak https), a path, a query or a fragment
    (``https://host/some/path?x=1``), and credentials (``user:password@host``, never echoed).
    docs/socrata-publishing.md §1.
    """
    text = value.strip()
    if "@" in text:
        credentials = text.rpartition("@")[0].partition("://")[2] or text.rpartition("@")[0]
        logs.register_secret(credentials)
        logs.register_secret(credentials.partition(":")[2])
        raise ConfigError(
            "SO_WEB must not contain credentials (user:password@…): put the API key in SO_KEY and SO_SECRET"
        )
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    host, rest = re.match(r"([^/?#]*)(.*)", rest, re.DOTALL).groups()  # type: ignore[union-attr]
    put = f"SO_WEB={host}" if _HOST.fullmatch(host) else f"only the domain, e.g. SO_WEB={_EXAMPLE_DOMAIN}"
    if sep and scheme.lower() != "https":
        raise ConfigError(
            f"SO_WEB takes the Socrata domain (always reached over https), not a URL starting {scheme}://: put {put}"
        )
    if rest not in ("", "/"):
        raise ConfigError(f"SO_WEB must be the Socrata domain only, without a path, query or fragment: put {put}")
    if not _HOST.fullmatch(host):
        raise ConfigError(f"SO_WEB must be a domain such as {_EXAMPLE_DOMAIN}, not {host!r}")
    return host


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


# Characters that end a piece of a mistyped password in a driver's error message.
_PIECES = re.compile(r"[@/:?#&=\s'\"]+")


def _uri_passwords(uri: str) -> set[str]:
    """Every substring of DATABASE_URL that may be (part of) its password, raw and %-decoded.

    Redaction must not depend on the value parsing the way the user meant it (issue 13 §5):
    besides the password libpq would read, this takes everything between ``://`` and the *last*
    ``@`` (the whole credential part, whatever raw ``@``, ``/``, ``:`` or ``%`` it holds), the
    ``password`` of the query string or of the key=value form (quoted, or unquoted up to the next
    ``key=``), and the pieces of each between the characters a driver error stops at (a raw ``/``
    makes libpq quote a piece as the "port"). Pieces shorter than 4 characters are not
    registered (logs.register_secret), so redaction never eats ordinary words.
    """
    whole: set[str] = set()  # registered as they are (the user name is no secret on its own)
    candidates: set[str] = set()  # registered, and split into pieces
    _scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest:
        credentials = rest.rpartition("@")[0]
        whole.update({credentials, unquote(credentials)})
        candidates.add(credentials.partition(":")[2])
    for match in re.finditer(r"[?&]password=([^&#]*)", uri):
        candidates.add(match.group(1))
    keyword = re.search(r"(?:^|\s)password\s*=\s*", uri)
    if keyword and not sep:
        tail = uri[keyword.end() :]
        if tail.startswith("'"):
            quoted = re.match(r"'((?:[^'\\]|\\.)*)'?", tail)
            value = quoted.group(1) if quoted else tail
            candidates.update({value, re.sub(r"\\(.)", r"\1", value)})  # as written and as libpq reads it
        else:  # unquoted: libpq stops at a space; a mistyped value runs to the next "key="
            candidates.add(re.split(r"\s+\w+\s*=", tail, maxsplit=1)[0].strip())
    out = {value for value in whole if value}
    for candidate in filter(None, candidates):
        for value in (candidate, unquote(candidate)):
            out.add(value)
            out.update(piece for piece in _PIECES.split(value) if piece)
            out.update(piece for piece in value.split() if piece)
    return out


ENV_FILE_VARIABLE = "BOND_ENV_FILE"


def env_example() -> str:
    """The text of `.env.example`: every variable with its one-line meaning."""
    lines = [
        "# Every variable the ETL reads. Copy to .env (git-ignored) and fill in: local runs read it, a variable set",
        "# in the environment wins. Check them all (names, URLs, services): make check-config. See docs/operations.md.",
    ]
    for name, (_attr, meaning, _secret) in VARIABLES.items():
        lines.append(f"# {meaning}")
        # The env file's own name is read from the environment only: set in the file, an empty value
        # would switch the file's checks off (check-config's unknown-name check) for every later reader.
        lines.append(f"# {name}=  (set it in the environment, not here)" if name == ENV_FILE_VARIABLE else f"{name}=")
    return "\n".join(lines) + "\n"


assert {f.name for f in fields(Settings)} == {a for a, _, _ in VARIABLES.values()}
