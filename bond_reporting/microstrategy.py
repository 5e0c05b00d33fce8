"""MicroStrategy REST client: log in, run one grid report, page through it, flatten it to CSV, log out.

Written from docs/microstrategy-rest.md (v2 report instances) with plain ``requests``: one
``requests.Session`` holds the auth token header and the session cookies for the whole run.
The CSV has the legacy tool's columns (single-form attribute → its name, multi-form →
``Attribute@Form``, then metrics) and is written row by row as pages arrive, so memory is
bounded by one page, not by the report.

Failure handling (doc §8): 429/5xx, connection resets and read time-outs are retried with
exponential backoff; a lost session (401) means log in again, re-create the instance and restart
from row 0; a lost instance (404 on a page) means re-create it and restart; anything else is one
:class:`MicroStrategyError` line with the HTTP status, server error code and ticket id. Logout
always runs. The password is never part of any message.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bond_reporting import logs
from bond_reporting.errors import MicroStrategyError

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50_000  # rows per request: a few MB of JSON (doc §4: 10,000–50,000 work well)
# Drop the formatted strings and "extras" from every data response: far smaller pages (doc §3).
FIELDS = "-data.metricValues.formatted,-data.metricValues.extras"
# Keep total/subtotal rows out of the data even if the report designer turned them on (doc §3).
INSTANCE_BODY = {"subtotals": {"visible": False}}


@dataclass(frozen=True)
class Policy:
    """Time-outs (seconds) and retry limits. Tests inject short ones."""

    connect_timeout: float = 10.0
    read_timeout: float = 120.0  # login, page GETs, logout
    instance_timeout: float = 1800.0  # the instance POST runs the report synchronously: minutes
    attempts: int = 5  # per request, on 429/5xx, connection resets and read time-outs
    backoff: float = 1.0  # first wait between attempts; doubled each time (1, 2, 4, 8 s)
    restarts: int = 2  # fresh instance + restart from row 0 after a lost session or instance


DEFAULT_POLICY = Policy()


# ---------------------------------------------------------------------------------------------
# Pure functions: URL and flattening (doc §1, §5, §6)


def normalise_base_url(url: str) -> str:
    """``https://h/MicroStrategyLibrary``, ``…/api`` and ``…/api/`` all → ``https://h/MicroStrategyLibrary``."""
    url = url.strip().rstrip("/")
    return url[: -len("/api")] if url.endswith("/api") else url


def grid_columns(grid: dict[str, Any]) -> list[str]:
    """The legacy column names of a report grid: attributes' forms left to right, then metrics."""
    axis = (grid.get("metricsPosition") or {}).get("axis", "columns")
    if axis != "columns":
        raise MicroStrategyError(f"report grid has its metrics on the {axis!r} axis; only 'columns' is supported")
    columns: list[str] = []
    for attribute in grid.get("rows") or []:
        forms = attribute["forms"]
        if len(forms) == 1:
            columns.append(attribute["name"])
        else:
            columns.extend(f"{attribute['name']}@{form['name']}" for form in forms)
    return columns + [metric["name"] for metric in _metrics(grid)]


def format_metric(value: Any) -> str:
    """A raw metric value as the legacy tool wrote it: float text (``0`` → ``0.0``), null → empty."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MicroStrategyError(f"metric value {value!r} is not a number")
    return repr(float(value))


def page_rows(page: dict[str, Any]) -> Iterator[list[str]]:
    """The rows of one data response as CSV cells, using that page's own element lists (doc §4 rule 4).

    Attribute cells are the ``formValues`` strings verbatim; metric cells come from ``raw``.
    """
    grid = page["definition"]["grid"]
    attributes = grid.get("rows") or []
    n_metrics = len(_metrics(grid))
    data = page.get("data") or {}
    current = data["paging"]["current"]
    index_rows = (data.get("headers") or {}).get("rows") or []
    raw = (data.get("metricValues") or {}).get("raw") or []
    if (attributes and len(index_rows) != current) or (n_metrics and len(raw) != current):
        raise MicroStrategyError(
            f"malformed page: paging.current is {current} but it has {len(index_rows)} header rows "
            f"and {len(raw)} metric rows"
        )
    try:
        # Each attribute's elements on this page, as tuples of form values (one per form).
        elements = []
        for attribute in attributes:
            n_forms = len(attribute["forms"])
            values = [tuple(element["formValues"]) for element in attribute["elements"]]
            if any(len(v) != n_forms for v in values):
                raise MicroStrategyError(f"malformed page: attribute {attribute['name']!r} element form count")
            elements.append(values)
        for r in range(current):
            cells: list[str] = []
            if attributes:
                for values, index in zip(elements, index_rows[r], strict=True):
                    cells.extend(values[index])
            if n_metrics:
                if len(raw[r]) != n_metrics:
                    raise MicroStrategyError(f"malformed page: row {r} has {len(raw[r])} metric values")
                cells.extend(map(format_metric, raw[r]))
            yield cells
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MicroStrategyError(f"malformed page: {type(exc).__name__}: {exc}") from None


def _metrics(grid: dict[str, Any]) -> list[dict[str, Any]]:
    columns = grid.get("columns") or []
    if len(columns) > 1 or (columns and columns[-1].get("type", "templateMetrics") != "templateMetrics"):
        raise MicroStrategyError("report grid has attributes on its columns axis (a crosstab); not supported")
    return (columns[-1].get("elements") or []) if columns else []


# ---------------------------------------------------------------------------------------------
# HTTP


class _Restart(Exception):
    """The session or the instance is gone: re-create the instance and restart from row 0."""

    def __init__(self, reason: str, relogin: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.relogin = relogin


class Client:
    """One MicroStrategy login session (one ``requests.Session``) against one project."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        project_id: str,
        *,
        policy: Policy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.api = normalise_base_url(base_url) + "/api"
        self.username = username
        self._password = password
        logs.register_secret(password)
        self.project_id = project_id
        self.policy = policy or DEFAULT_POLICY
        self.session = session or requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.logged_in = False

    def login(self) -> None:
        """Standard login (mode 1); a fresh session replaces any previous one (doc §2)."""
        self.session.cookies.clear()
        for header in ("X-MSTR-AuthToken", "X-MSTR-ProjectID"):
            self.session.headers.pop(header, None)
        what = f"login as {self.username!r}"
        body = {"username": self.username, "password": self._password, "loginMode": 1}
        response = self._send("POST", "auth/login", what, json=body)
        if response.status_code != 204:
            raise _error(what, response)
        token = response.headers.get("X-MSTR-AuthToken")
        if not token:
            raise MicroStrategyError(f"MicroStrategy {what}: HTTP 204 without an X-MSTR-AuthToken header")
        logs.register_secret(token)
        self.session.headers["X-MSTR-AuthToken"] = token
        self.session.headers["X-MSTR-ProjectID"] = self.project_id
        self.logged_in = True

    def logout(self) -> None:
        """End the server session (and its instances). Never raises: a 401 means it is already gone."""
        if not self.logged_in:
            return
        self.logged_in = False
        try:
            # One attempt: logging out is a courtesy; the session times out on its own anyway.
            response = self._send("POST", "auth/logout", "logout", attempts=1)
            if response.status_code not in (204, 401):
                log.warning("%s", _error("logout", response))
        except MicroStrategyError as exc:
            log.warning("%s", exc)

    def create_instance(self, report_id: str, limit: int) -> dict[str, Any]:
        """Run the report (synchronously: long read time-out) and return its first page (doc §3)."""
        what = f"run of report {report_id}"
        response = self._send(
            "POST",
            f"v2/reports/{report_id}/instances",
            what,
            params={"offset": 0, "limit": limit, "fields": FIELDS},
            json=INSTANCE_BODY,
            read_timeout=self.policy.instance_timeout,
        )
        if response.status_code == 401:
            raise _Restart(str(_error(what, response)), relogin=True)
        return _json(what, response)

    def get_page(self, report_id: str, instance_id: str, offset: int, limit: int) -> dict[str, Any]:
        """Rows ``offset``… of an instance (doc §4)."""
        what = f"page at offset {offset} of report {report_id}"
        response = self._send(
            "GET",
            f"v2/reports/{report_id}/instances/{instance_id}",
            what,
            params={"offset": offset, "limit": limit, "fields": FIELDS},
        )
        if response.status_code in (401, 404):
            # 401: session gone; 404: instance gone. Either way the instance must be re-created.
            raise _Restart(str(_error(what, response)), relogin=response.status_code == 401)
        return _json(what, response)

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        read_timeout: float | None = None,
        attempts: int | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One call, retried on 429/5xx, connection failures and time-outs; other answers are returned."""
        policy = self.policy
        timeout = (policy.connect_timeout, read_timeout or policy.read_timeout)
        attempts = attempts or policy.attempts
        delay = policy.backoff
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, f"{self.api}/{path}", timeout=timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"MicroStrategy {what}: {_describe(exc, timeout)}"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                problem = str(_error(what, response))
            if attempt == attempts:
                raise MicroStrategyError(f"{problem}; gave up after {attempt} attempt{'s' * (attempt > 1)}")
            log.warning("%s; attempt %d of %d, retrying in %.3g s", problem, attempt, attempts, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")


def _describe(exc: Exception, timeout: tuple[float, float]) -> str:
    """A short reason for a failure without an HTTP answer (no URL, no traceback)."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {timeout[0]:g} s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within {timeout[1]:g} s (read time-out)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "response cut off before its end"
    reason = exc
    while reason.__context__ is not None or reason.__cause__ is not None:
        reason = reason.__cause__ or reason.__context__  # type: ignore[assignment]
    return f"connection failed ({type(reason).__name__})"


def _error(what: str, response: requests.Response) -> MicroStrategyError:
    """One line from an error answer: HTTP status, server code, message, iServerCode and ticket id."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": response.text[:200]}
    line = f"MicroStrategy {what}: HTTP {response.status_code}"
    if body.get("code"):
        line += f" {body['code']}"
    message = " ".join(str(body.get("message") or "").split())[:300]
    if message:
        line += f": {message}"
    if body.get("iServerCode") is not None:
        line += f" (iServerCode {body['iServerCode']})"
    if body.get("ticketId"):
        line += f" (ticket {body['ticketId']})"
    # Refused requests (bad credentials, no access, unknown id) fail the same way when repeated.
    return MicroStrategyError(line, retryable=response.status_code >= 500 or response.status_code in (408, 429))


def _json(what: str, response: requests.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise _error(what, response)
    try:
        return response.json()
    except ValueError:
        raise MicroStrategyError(f"MicroStrategy {what}: HTTP 200 but the body is not JSON") from None


# ---------------------------------------------------------------------------------------------
# The download


def download_report(
    client: Client, report_id: str, dest: Path, *, page_size: int = DEFAULT_PAGE_SIZE, label: str | None = None
) -> int:
    """Log in, write the whole report to ``dest`` as CSV (overwriting it), always log out.

    Returns the number of data rows, which equals the server's ``paging.total``. On a lost session or
    instance the file is rewritten from row 0, at most ``policy.restarts`` times.
    """
    label = label or f"report {report_id}"
    try:
        client.login()
        for restart in range(client.policy.restarts + 1):
            try:
                return _download_once(client, report_id, dest, page_size, label)
            except (KeyError, TypeError) as exc:
                raise MicroStrategyError(
                    f"MicroStrategy {label}: malformed response ({type(exc).__name__}: {exc})"
                ) from None
            except _Restart as exc:
                if restart == client.policy.restarts:
                    raise MicroStrategyError(f"{exc.reason}; gave up after {restart} restarts") from None
                action = "logging in again" if exc.relogin else "re-creating the instance"
                log.warning("%s: %s; %s and restarting from row 0", label, exc.reason, action)
                if exc.relogin:
                    client.login()
        raise AssertionError("unreachable")
    finally:
        client.logout()


def _download_once(client: Client, report_id: str, dest: Path, page_size: int, label: str) -> int:
    started = time.monotonic()
    page = client.create_instance(report_id, page_size)
    status = page.get("status")
    if status == 2:
        raise MicroStrategyError(
            f"MicroStrategy {label} has unanswered prompts (instance status 2); this export cannot answer "
            "prompts: remove them from the report or give them default answers"
        )
    if status != 1:
        raise MicroStrategyError(f"MicroStrategy {label}: unexpected instance status {status!r}")
    instance_id = page["instanceId"]
    total = page["data"]["paging"]["total"]
    offset, number, header = 0, 0, None
    with open(dest, "w", encoding="utf-8", newline="") as out:
        # QUOTE_MINIMAL and "\n" line ends: the legacy tool's CSV (pandas to_csv).
        writer = csv.writer(out, lineterminator="\n")
        while True:
            number += 1
            columns = grid_columns(page["definition"]["grid"])
            if header is None:
                header = columns
                writer.writerow(header)
            elif columns != header:
                raise MicroStrategyError(f"MicroStrategy {label}: page {number} has columns {columns}, not {header}")
            paging = page["data"]["paging"]
            if paging["total"] != total or paging.get("offset", offset) != offset:
                raise MicroStrategyError(
                    f"MicroStrategy {label}: page {number} has total {paging['total']} and offset "
                    f"{paging.get('offset')}, expected {total} and {offset}"
                )
            current = paging["current"]
            writer.writerows(page_rows(page))
            offset += current
            log.info("%s: page %d: %d/%d rows, %.1f s", label, number, offset, total, time.monotonic() - started)
            if offset >= total:
                break
            if current == 0:
                raise MicroStrategyError(f"MicroStrategy {label}: empty page at offset {offset} of {total} rows")
            page = client.get_page(report_id, instance_id, offset, page_size)
    if offset != total:
        raise MicroStrategyError(f"MicroStrategy {label}: received {offset} rows, but the report has {total}")
    return offset
