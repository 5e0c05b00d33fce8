"""``python -m bond_reporting.check_config [--secrets-block NAME]``: is this configuration runnable?

Checks the settings a run would use — the environment completed by ``.env`` (local runs), or by
the Prefect Secret block ``NAME`` as the deployment reads them — and prints one line per check,
``ok``, ``FAIL`` or ``skip``, never a secret:

1. the variables: every name in ``.env`` and in the Secret block is one this project (or libpq,
   boto3, requests, Prefect) reads — a misspelt name is a FAIL line naming the likely intended one;
   every variable a step needs is set (one FAIL line per missing one);
2. the values: URLs and ids well-formed (``BASE_URL``, ``PROJECT_ID``, ``AWS_ENDPOINT_URL``,
   ``DATABASE_URL``, ``BUCKET``, ``SO_WEB``);
3. the services: PostgreSQL (connect, schema ``api``), the bucket (exists, reachable), MicroStrategy
   (log in and out), Socrata (each of the seven datasets answers with the credentials).

Exit code: 0 every check passed; 2 a variable is unknown, missing or malformed; 1 a service check
failed. ``make check-config [SECRETS_BLOCK=NAME]`` runs it. Operations: docs/operations.md.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from botocore.exceptions import BotoCoreError, ClientError

from bond_reporting import database, guards, logs, microstrategy, storage
from bond_reporting.errors import ConfigError, EtlError
from bond_reporting.settings import (
    REQUIRED_BY,
    VARIABLES,
    Settings,
    env_file_path,
    env_file_values,
    environment,
    is_known,
    seconds,
    socrata_host,
)
from config.datasets import DATASET_IDS

OK, FAIL, SKIP = "ok", "FAIL", "skip"
TIMEOUT = (10.0, 30.0)  # seconds: connect, read (one request per service)


@dataclass(frozen=True)
class Check:
    """One line of the report: status, what was checked, what was found (never a secret)."""

    status: str
    what: str
    detail: str
    config: bool = False  # a configuration problem (exit 2) rather than an unreachable service (exit 1)

    def line(self) -> str:
        return logs.redact(f"{self.status:<5} {self.what}: {self.detail}")


def check_all(settings: Settings, sources: Mapping[str, Mapping[str, str]]) -> Iterator[Check]:
    """Every check, in order. ``sources`` names each place variables were read from (``.env``, a
    Secret block) with the variables it set, for the unknown-name check."""
    yield from check_names(sources)
    yield from check_required(settings)
    values = list(check_values(settings))
    yield from values
    malformed = {c.what for c in values if c.status == FAIL}
    yield guarded("PostgreSQL", lambda: check_postgres(settings), malformed & {"DATABASE_URL"})
    yield guarded("bucket", lambda: check_bucket(settings), malformed & {"BUCKET", "AWS_ENDPOINT_URL"})
    yield guarded(
        "MicroStrategy login",
        lambda: check_microstrategy(settings),
        malformed & {"BASE_URL", "PROJECT_ID"} | set(settings.missing(*REQUIRED_BY["export"])),
    )
    yield guarded(
        "Socrata",
        lambda: check_socrata(settings),
        malformed & {"SO_WEB"} | set(settings.missing(*REQUIRED_BY["publish"])),
    )


def check_names(sources: Mapping[str, Mapping[str, str]]) -> Iterator[Check]:
    """One FAIL per unknown variable name (with the closest known name), else one ok line."""
    unknown = 0
    for source, values in sources.items():
        for name in values:
            if is_known(name):
                continue
            unknown += 1
            close = difflib.get_close_matches(name, VARIABLES, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            yield Check(FAIL, f"variable {name}", f"set in {source} but not read by anything{hint}", config=True)
    if not unknown:
        where = ", ".join(f"{source} ({len(values)})" for source, values in sources.items()) or "the environment only"
        yield Check(OK, "variables", f"every name known; read from {where}")


def check_required(settings: Settings) -> Iterator[Check]:
    """One FAIL per variable a step needs and lacks, else one ok line."""
    needed = [name for names in REQUIRED_BY.values() for name in names]
    missing = settings.missing(*needed)
    for name in missing:
        step = next(step for step, names in REQUIRED_BY.items() if name in names)
        yield Check(FAIL, f"missing {name}", f"needed by {step}: {VARIABLES[name][1]}", config=True)
    if not missing:
        yield Check(OK, "required", f"all {len(needed)} variables the steps need are set")


def check_values(settings: Settings) -> Iterator[Check]:
    """The form of every URL and id that is set (a secret never appears in a line)."""
    if settings.base_url:
        yield _url_check("BASE_URL", settings.base_url, ("http", "https"))
    if settings.project_id:
        good = re.fullmatch(r"[0-9A-Fa-f]{32}", settings.project_id)
        yield Check(OK if good else FAIL, "PROJECT_ID", "32 hex characters" if good else "not 32 hex characters", True)
    if settings.aws_endpoint_url:
        yield _url_check("AWS_ENDPOINT_URL", settings.aws_endpoint_url, ("http", "https"))
    if settings.database_url:
        yield _url_check("DATABASE_URL", settings.database_url, ("postgresql", "postgres"))
    yield _form_check("BUCKET", lambda: storage.open_bucket(settings.bucket, settings).description)
    if settings.so_web:
        yield _form_check("SO_WEB", lambda: "https://" + socrata_host(settings.so_web or ""))
    for name, parse in _NUMBERS.items():
        if getattr(settings, VARIABLES[name][0]):
            yield _form_check(name, lambda parse=parse: _number_text(parse(settings)))


# The thresholds and time-outs, parsed as the steps parse them (a bad value: the step's own line).
_NUMBERS: dict[str, Callable[[Settings], object]] = {
    "FRESHNESS_WARN_DAYS": lambda s: guards.thresholds(warn_days=s.freshness_warn_days).warn_days,
    "FRESHNESS_ERROR_DAYS": lambda s: guards.thresholds(error_days=s.freshness_error_days).error_days,
    "FRESHNESS_UNCHANGED_RUNS": lambda s: guards.thresholds(unchanged_runs=s.freshness_unchanged_runs).unchanged_runs,
    "MAX_DROP_PCT": lambda s: guards.thresholds(max_drop_pct=s.max_drop_pct).max_drop_pct,
    "MSTR_RUN_TIMEOUT": lambda s: seconds("MSTR_RUN_TIMEOUT", s.mstr_run_timeout, 0),
    "MSTR_CALL_TIMEOUT": lambda s: seconds("MSTR_CALL_TIMEOUT", s.mstr_call_timeout, 0),
    "DB_STALL_TIMEOUT": lambda s: s.stall_timeout,
    "LOCK_WAIT_SECONDS": lambda s: s.lock_wait,
}


def _number_text(value: object) -> str:
    return "off" if value is None else f"{float(value):g}"  # type: ignore[arg-type]


def _url_check(name: str, value: str, schemes: tuple[str, ...]) -> Check:
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        return Check(FAIL, name, f"not a URL ({exc})", config=True)
    # libpq also takes the host as a query parameter (a Unix socket folder): postgresql://u@/db?host=/run
    host = parts.hostname or ("socket" if "host=" in parts.query and parts.scheme.startswith("postgres") else "")
    if parts.scheme not in schemes or not host:
        return Check(FAIL, name, f"not a {' or '.join(s + '://' for s in schemes)}host URL", config=True)
    shown = f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"  # no user:password@, no query
    return Check(OK, name, shown, config=True)


def _form_check(name: str, describe: Callable[[], str]) -> Check:
    try:
        return Check(OK, name, describe(), config=True)
    except ConfigError as exc:
        return Check(FAIL, name, str(exc), config=True)


def guarded(what: str, check: Callable[[], str], blocked_by: set[str]) -> Check:
    """Run a service check; ``skip`` when a setting it needs is missing or malformed."""
    if blocked_by:
        return Check(SKIP, what, f"not tried: {', '.join(sorted(blocked_by))} missing or malformed")
    try:
        return Check(OK, what, check())
    except ConfigError as exc:
        return Check(FAIL, what, str(exc), config=True)
    except EtlError as exc:
        return Check(FAIL, what, str(exc))
    except Exception as exc:  # noqa: BLE001 (any failure of a probe is that check's one line)
        return Check(FAIL, what, f"{type(exc).__name__}: {' '.join(str(exc).split())}")


def check_postgres(settings: Settings) -> str:
    """Connect, read the server version and whether schema ``api`` holds the tables."""
    conn = database.connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("select current_database(), current_user, current_setting('server_version')")
            db, user, version = cur.fetchone()
            cur.execute("select count(*) from information_schema.tables where table_schema = %s", (database.SCHEMA,))
            (tables,) = cur.fetchone()
    finally:
        conn.close()
    where = f"{conn.info.host}:{conn.info.port}" if conn.info.host and not conn.info.host.startswith("/") else "socket"
    schema = (
        f"schema {database.SCHEMA} has {tables} {logs.plural(tables, 'table')}"
        if tables
        else f"schema {database.SCHEMA} not created yet (the first load creates it)"
    )
    if settings.uses_embedded_database:  # neither DATABASE_URL nor PGHOST: not the production database
        where = f"the embedded server in {settings.local_dir}/pgdata (DATABASE_URL and PGHOST unset)"
    return f"connected to {db} on {where} as {user} (PostgreSQL {version}); {schema}"


def check_bucket(settings: Settings) -> str:
    """The bucket exists and these credentials may use it (a folder: exists or can be created)."""
    bucket = storage.open_bucket(settings.bucket, settings)
    if isinstance(bucket, storage.S3Bucket):
        try:
            bucket._client().head_bucket(Bucket=bucket.name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(f"there is no bucket {bucket.name!r}") from None
            raise EtlError(f"{bucket.description}: HeadBucket refused ({code})") from None
        except BotoCoreError as exc:
            raise EtlError(f"{bucket.description}: {' '.join(str(exc).split())}") from None
        return f"{bucket.description} reachable"
    exists = bucket.root.is_dir()  # a LocalBucket
    return f"{bucket.description}" + ("" if exists else " (does not exist yet: the first export creates it)")


def check_microstrategy(settings: Settings) -> str:
    """Log in (standard login) and out again: the URL, the user and the password work."""
    base_url, project_id, username, password = settings.require(*REQUIRED_BY["export"])
    policy = microstrategy.Policy(attempts=2, call_window=30.0, read_timeout=TIMEOUT[1])
    client = microstrategy.Client(base_url, username, password, project_id, policy=policy)
    client.login()
    client.logout()
    return f"logged in to {client.host} as {username!r} and out again"


def check_socrata(settings: Settings) -> str:
    """Each of the seven datasets answers ``count(*)`` on ``SO_WEB`` with the key and the token."""
    domain = socrata_host(settings.so_web or "")
    session = requests.Session()
    session.auth = (settings.so_key or "", settings.so_secret or "")
    if settings.so_token:
        session.headers["X-App-Token"] = settings.so_token
    counts = []
    for dataset in DATASET_IDS:
        url = f"https://{domain}/resource/{dataset}.json"
        try:
            response = session.get(url, params={"$select": "count(*)"}, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise EtlError(f"GET {url}: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise ConfigError(f"GET {url}: HTTP {response.status_code}: SO_KEY/SO_SECRET (or SO_TOKEN) refused")
        if response.status_code != 200:
            raise EtlError(f"GET {url}: HTTP {response.status_code}")
        count = response.json()[0].get("count", "?")
        counts.append(f"{dataset} {count} {logs.plural(int(count) if str(count).isdigit() else 0, 'row')}")
    return f"https://{domain}: {len(counts)} of {len(DATASET_IDS)} datasets answer ({', '.join(counts)})"


def gather(secrets_block: str | None) -> tuple[Settings, dict[str, dict[str, str]], list[Check]]:
    """The settings to check, where their variables came from, and any failure reading them."""
    sources: dict[str, dict[str, str]] = {}
    problems: list[Check] = []
    try:
        env = dict(environment())
    except ConfigError as exc:  # BOND_ENV_FILE names no file: say so, check the environment alone
        problems.append(Check(FAIL, "BOND_ENV_FILE", str(exc), config=True))
        env = dict(os.environ)
    path = env_file_path()
    if path and (values := env_file_values()):
        sources[path] = values
    if secrets_block:
        from bond_reporting.prefect_support import read_secret_block  # Prefect only when asked for

        label = f"Secret block {secrets_block!r}"
        try:
            block = read_secret_block(secrets_block, missing_ok=False)
        except (EtlError, ValueError) as exc:
            problems.append(Check(FAIL, label, " ".join(str(exc).split()), config=True))
            block = {}
        sources[label] = {name: str(value) for name, value in block.items()}
        for name, value in block.items():
            if not (env.get(name) or "").strip():
                env[name] = str(value)
    return Settings.from_env(env), sources, problems


def summary_line(checks: list[Check]) -> str:
    """The closing count: passed, failed and skipped add up to the checks printed (a skip is not a pass)."""
    counts = {status: sum(c.status == status for c in checks) for status in (OK, FAIL, SKIP)}
    return (
        f"check-config: {counts[OK]} of {len(checks)} checks passed"
        + (f", {counts[FAIL]} failed" if counts[FAIL] else "")
        + (f", {counts[SKIP]} skipped" if counts[SKIP] else "")
    )


def main(argv: list[str] | None = None) -> int:
    """Print one line per check and a closing count; exit 0, 1 (a service) or 2 (configuration)."""
    parser = argparse.ArgumentParser(
        prog="python -m bond_reporting.check_config",
        description="Check the ETL's settings (environment + .env, or a Prefect Secret block) and that PostgreSQL, "
        "the bucket, MicroStrategy and Socrata answer. One line per check; no secret is printed.",
        epilog="Exit codes: 0 every check passed, 1 a service check failed, 2 a variable is unknown, missing or "
        "malformed. Variables: see .env.example.",
    )
    parser.add_argument("--secrets-block", metavar="NAME", help="Prefect Secret block completing the environment")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger().handlers[0].addFilter(logs.RedactingFilter())
    settings, sources, problems = gather(args.secrets_block)
    checks = [*problems, *check_all(settings, sources)]
    for check in checks:
        print(check.line(), flush=True)
    failed = [c for c in checks if c.status == FAIL]
    print(summary_line(checks))
    if not failed:
        return 0
    return 2 if any(c.config for c in failed) else 1


if __name__ == "__main__":
    sys.exit(main())
