"""MicroStrategy REST client: log in, run one grid report, page through it, flatten it to CSV, log out.

Written from docs/microstrategy-rest.md (v2 report instances) with plain ``requests``: one
``requests.Session`` holds the auth token header and the session cookies for the whole run.
The CSV has the legacy tool's columns (single-form attribute → its name, multi-form →
``Attribute@Form``, then metrics) and is written row by row as pages arrive, so memory is
bounded by one page, not by the report.

Only what the flat table represents exactly is exported (doc §5.1): a page-by attribute,
total/subtotal elements (sent by servers that ignore ``subtotals.visible=false``), metrics on the
rows, attributes on the columns and two output columns with one name are refused, each with one
line saying what to change in the report. A server that rejects the ``fields`` parameter (ERR006,
before 11.2.0200) is asked again without it, once.

Failure handling (doc §8): 429/5xx, connection resets and read time-outs are retried with
exponential backoff by :mod:`bond_reporting.retry`, each call bounded in time (a login or page
that does not answer within ``Policy.read_timeout`` fails; the report's execution is bounded by
``Policy.run_timeout`` in all); a lost session (401) means log in again, re-create the instance and
restart from row 0; a lost instance (404 on a page) means re-create it and restart; anything else
is one :class:`MicroStrategyError` line naming the report, the HTTP status, server error code and
ticket id. Logout always runs. The password is never part of any message.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests

from bond_reporting import logs, reconcile, retry
from bond_reporting.errors import MicroStrategyError
from bond_reporting.logs import plural
from bond_reporting.progress import DEFAULT_INTERVAL, Progress

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50_000  # rows per request: a few MB of JSON (doc §4: 10,000–50,000 work well)
# Drop the formatted strings and "extras" from every data response: far smaller pages (doc §3).
FIELDS = "-data.metricValues.formatted,-data.metricValues.extras"
# Keep total/subtotal rows out of the data even if the report designer turned them on (doc §3).
INSTANCE_BODY = {"subtotals": {"visible": False}}
# Connection failures and read time-outs: no (complete) answer, worth another try (doc §8).
NO_ANSWER = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class Policy:
    """Time-outs (seconds) and retry limits. Tests inject short ones; settings set ``run_timeout``."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # login, each page GET, logout: no answer within this is a failure
    run_timeout: float = 1800.0  # running the report (the instance POST), every attempt together
    call_window: float | None = None  # every attempt of one login/page call together; None: 3 × read_timeout
    attempts: int = 5  # per request, on 429/5xx, connection resets and read time-outs
    backoff: float = 1.0  # first wait between attempts; doubled each time (1, 2, 4, 8 s)
    restarts: int = 2  # fresh instance + restart from row 0 after a lost session or instance
    progress_interval: float = DEFAULT_INTERVAL  # seconds between INFO progress lines


DEFAULT_POLICY = Policy()


# ---------------------------------------------------------------------------------------------
# Pure functions: URL, grid checks and flattening (doc §1, §5, §5.1, §6)


def normalise_base_url(url: str) -> str:
    """``https://h/MicroStrategyLibrary``, ``…/api`` and ``…/api/`` all → ``https://h/MicroStrategyLibrary``."""
    url = url.strip().rstrip("/")
    return url[: -len("/api")] if url.endswith("/api") else url


def check_grid(grid: dict[str, Any]) -> None:
    """Refuse a grid the flat table cannot represent exactly (doc §5.1); return None if it is plain.

    Raises a non-retryable :class:`MicroStrategyError` whose message says what is wrong and what to
    change in the report: a page-by attribute, metrics on the rows axis, attributes on the columns
    axis (a crosstab), total/subtotal elements on either axis, two output columns with one name.
    """
    page_by = grid.get("pageBy") or []
    if page_by:
        names = ", ".join(repr(_name(a)) for a in page_by)
        raise _refuse(
            f"has the page-by attribute {names}: the export would hold only the rows of one of its elements; "
            f"remove the page-by attribute {names} from the report (or move it to the rows)"
        )
    axis = (grid.get("metricsPosition") or {}).get("axis", "columns")
    if axis != "columns":
        raise _refuse(f"has its metrics on the {axis!r} axis: move the metrics to the columns of the report")
    columns = grid.get("columns") or []
    others = [c for c in columns if c.get("type", "templateMetrics") != "templateMetrics"]
    if others or len(columns) > 1 or grid.get("crossTab"):
        names = ", ".join(repr(_name(c)) for c in others) or "an attribute"
        raise _refuse(f"has {names} on its columns axis (a crosstab): move {names} to the rows of the report")
    for where, objects in (("rows", grid.get("rows") or []), ("columns", columns)):
        for obj in objects:
            total = next((e for e in obj.get("elements") or [] if e.get("subtotal")), None)
            if total is not None:
                value = "/".join(map(str, total.get("formValues") or [])) or "Total"
                raise _refuse(
                    f"sends total/subtotal rows (element {value!r} of {_name(obj)!r} on the {where}), which would "
                    "be added up as data (servers before 11.2.0100 ignore subtotals.visible=false): remove the "
                    "totals and subtotals from the report"
                )
    names = _column_sources(grid)
    counts = Counter(name for name, _ in names)
    for name, count in counts.items():
        if count > 1:
            sources = " and ".join(source for n, source in names if n == name)
            raise _refuse(
                f"would give {count} columns named {name!r} ({sources}): give them different names in the report"
            )


def grid_columns(grid: dict[str, Any]) -> list[str]:
    """The legacy column names of a report grid: attributes' forms left to right, then metrics.

    Raises :class:`MicroStrategyError` for a grid :func:`check_grid` refuses.
    """
    check_grid(grid)
    return [name for name, _source in _column_sources(grid)]


def _column_sources(grid: dict[str, Any]) -> list[tuple[str, str]]:
    """(column name, where it comes from) for every output column, in order (doc §6)."""
    columns: list[tuple[str, str]] = []
    for attribute in grid.get("rows") or []:
        forms = attribute["forms"]
        if len(forms) == 1:
            columns.append((attribute["name"], f"attribute {attribute['name']!r}"))
        else:
            columns.extend(
                (f"{attribute['name']}@{form['name']}", f"attribute {attribute['name']!r} form {form['name']!r}")
                for form in forms
            )
    for metric in _metrics(grid):
        source = f"metric {metric['name']!r}" + (f" id {metric['id']}" if metric.get("id") else "")
        columns.append((metric["name"], source))
    return columns


def _name(obj: Any) -> str:
    return str(obj.get("name") or obj.get("id") or "?") if isinstance(obj, dict) else str(obj)


def _refuse(reason: str) -> MicroStrategyError:
    # The same report fails the same way until someone changes it: never worth a retry.
    return MicroStrategyError(f"the report {reason}", retryable=False)


def format_metric(value: Any) -> str:
    """A raw metric value as the legacy tool wrote it: float text (``0`` → ``0.0``), null → empty."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MicroStrategyError(f"metric value {value!r} is not a number")
    return repr(float(value))


def page_rows(page: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    """The rows of one data response as CSV cells, using that page's own element lists (doc §4 rule 4).

    Attribute cells are the ``formValues`` strings verbatim; metric cells come from ``raw``
    (:func:`format_metric`). Raises :class:`MicroStrategyError` for a refused shape or a malformed page.
    """
    columns, _metric_columns = page_columns(page)
    return zip(*columns, strict=True)


def page_columns(page: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """One data response as columns of CSV cells: every output column, and the metric ones alone.

    Built column by column (C-level maps, not a Python loop per cell): flattening is the client's
    hot path. Checks the grid (:func:`check_grid`) and the page's shape first.
    """
    grid = page["definition"]["grid"]
    check_grid(grid)
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
        columns: list[list[str]] = []
        if attributes and set(map(len, index_rows)) - {len(attributes)}:
            raise MicroStrategyError(
                f"malformed page: a header row has not one index per attribute ({len(attributes)})"
            )
        for a, attribute in enumerate(attributes):
            n_forms = len(attribute["forms"])
            # This attribute's elements on this page, as tuples of form values (one per form).
            values = [tuple(element["formValues"]) for element in attribute["elements"]]
            if any(len(v) != n_forms for v in values):
                raise MicroStrategyError(f"malformed page: attribute {attribute['name']!r} element form count")
            chosen = list(map(values.__getitem__, map(itemgetter(a), index_rows)))
            columns.extend(list(map(itemgetter(f), chosen)) for f in range(n_forms))
        metric_columns: list[list[str]] = []
        if n_metrics and raw:
            if set(map(len, raw)) - {n_metrics}:
                r = next(r for r, values in enumerate(raw) if len(values) != n_metrics)
                raise MicroStrategyError(
                    f"malformed page: row {r} has {len(raw[r])} {plural(len(raw[r]), 'metric value')}"
                )
            metric_columns = [_metric_texts(column) for column in zip(*raw, strict=True)]
        columns.extend(metric_columns)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MicroStrategyError(f"malformed page: {type(exc).__name__}: {exc}") from None
    return columns, metric_columns


def _metric_texts(column: Sequence[Any]) -> list[str]:
    """:func:`format_metric` of a whole column, at C speed when every value is a number."""
    types = set(map(type, column))
    if types <= {float, int}:
        return list(map(repr, map(float, column)))
    if types <= {float, int, type(None)}:
        return ["" if value is None else repr(float(value)) for value in column]
    return list(map(format_metric, column))  # raises for the first value that is not a number


def _metrics(grid: dict[str, Any]) -> list[dict[str, Any]]:
    columns = grid.get("columns") or []
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
        self.host = urlsplit(self.api).netloc.rpartition("@")[2]
        self.username = username
        self._password = password
        logs.register_secret(password)
        self.project_id = project_id
        self.policy = policy or DEFAULT_POLICY
        self.session = session or requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.logged_in = False
        self.fields: str | None = FIELDS  # None once the server has rejected the parameter (ERR006)
        self.label = ""  # the report being exported, for log lines (set by download_report)

    def login(self) -> None:
        """Standard login (mode 1); a fresh session replaces any previous one (doc §2)."""
        self.session.cookies.clear()
        for header in ("X-MSTR-AuthToken", "X-MSTR-ProjectID"):
            self.session.headers.pop(header, None)
        what = f"login as {self.username!r}"
        body = {"username": self.username, "password": self._password, "loginMode": 1}
        response = self._send("POST", "auth/login", what, json=body)
        if response.status_code != 204:
            raise self._error(what, response)
        token = response.headers.get("X-MSTR-AuthToken")
        if not token:
            raise MicroStrategyError(f"{what}: HTTP 204 without an X-MSTR-AuthToken header")
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
                log.warning("MicroStrategy %s", self._error("logout", response))
        except MicroStrategyError as exc:
            log.warning("MicroStrategy %s", exc)

    def create_instance(self, report_id: str, limit: int) -> dict[str, Any]:
        """Run the report (synchronously, bounded by ``policy.run_timeout``) and return its first page (doc §3)."""
        what = f"run of report {report_id}"
        deadline = time.monotonic() + self.policy.run_timeout

        def send() -> requests.Response:
            params: dict[str, Any] = {"offset": 0, "limit": limit}
            if self.fields:
                params["fields"] = self.fields
            return self._send(
                "POST",
                f"v2/reports/{report_id}/instances",
                what,
                params=params,
                json=INSTANCE_BODY,
                read_timeout=lambda: max(deadline - time.monotonic(), 0.01),
                within=self.policy.run_timeout,
                timeout_note=f"the report may run {_secs(self.policy.run_timeout)} s in all (MSTR_RUN_TIMEOUT)",
            )

        response = send()
        if self.fields and _rejects_fields(response):
            log.warning(
                "MicroStrategy %s: %s: the server rejects the 'fields' parameter (ERR006: servers before 11.2.0200); "
                "asking again without it (larger pages)",
                self.label or "report",
                what,
            )
            self.fields = None
            response = send()
        if response.status_code == 401:
            raise _Restart(str(self._error(what, response)), relogin=True)
        return self._json(what, response)

    def get_page(self, report_id: str, instance_id: str, offset: int, limit: int) -> dict[str, Any]:
        """Rows ``offset``… of an instance (doc §4)."""
        return self.read_page(self.request_page(report_id, instance_id, offset, limit), offset)

    def request_page(self, report_id: str, instance_id: str, offset: int, limit: int) -> requests.Response:
        """The HTTP answer for rows ``offset``… (retried like every call); may run in another thread."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if self.fields:
            params["fields"] = self.fields
        what = f"page at offset {offset}"
        return self._send("GET", f"v2/reports/{report_id}/instances/{instance_id}", what, params=params)

    def read_page(self, response: requests.Response, offset: int) -> dict[str, Any]:
        """The page of an answer of :meth:`request_page` (JSON decoded by the caller's thread)."""
        what = f"page at offset {offset}"
        if response.status_code in (401, 404) and _is_json(response):
            # 401: session gone; 404: instance gone. Either way the instance must be re-created.
            raise _Restart(str(self._error(what, response)), relogin=response.status_code == 401)
        return self._json(what, response)

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        read_timeout: Callable[[], float] | None = None,
        attempts: int | None = None,
        within: float | None = None,
        timeout_note: str = "",
        **kwargs: Any,
    ) -> requests.Response:
        """One call, retried on 429/5xx, connection failures and time-outs; other answers are returned.

        Bounded: each attempt by its time-outs, all attempts together by ``within`` (default
        ``policy.call_window``).
        """
        policy = self.policy
        timeouts: list[tuple[float, float]] = []

        def attempt() -> requests.Response:
            timeout = (policy.connect_timeout, read_timeout() if read_timeout else policy.read_timeout)
            timeouts.append(timeout)
            response = self.session.request(method, f"{self.api}/{path}", timeout=timeout, **kwargs)
            if response.status_code == 429 or response.status_code >= 500:
                raise retry.Transient(_answer(response), retry_after=retry.retry_after(response.headers))
            return response

        def describe(exc: BaseException) -> str:
            if isinstance(exc, retry.Transient):
                return exc.reason
            note = f"; {timeout_note}" if timeout_note and isinstance(exc, requests.ReadTimeout) else ""
            return _describe(exc, timeouts[-1], self.host) + note

        try:
            return retry.call(
                attempt,
                what=f"MicroStrategy {self.label}: {what}" if self.label else f"MicroStrategy {what}",
                attempts=attempts or policy.attempts,
                backoff=policy.backoff,
                on=(retry.Transient, *NO_ANSWER),
                within=within if within is not None else (policy.call_window or 3 * policy.read_timeout),
                describe=describe,
                logger=log,
            )
        except retry.GaveUp as exc:
            plural = "s" * (exc.attempts > 1)
            raise MicroStrategyError(
                f"{what}: {exc.reason}; gave up after {exc.attempts} attempt{plural} in {exc.seconds:.0f} s"
            ) from None

    def _error(self, what: str, response: requests.Response) -> MicroStrategyError:
        """One line from an error answer: HTTP status, server code, message, iServerCode and ticket id."""
        return _error(what, response, self.api)

    def _json(self, what: str, response: requests.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise self._error(what, response)
        try:
            return response.json()
        except ValueError:
            raise MicroStrategyError(f"{what}: HTTP 200 but the body is not JSON") from None


def _describe(exc: BaseException, timeout: tuple[float, float], host: str) -> str:
    """A short reason for a failure without an HTTP answer (no URL path, no traceback), naming host:port."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection to {host} within {_secs(timeout[0])} s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer from {host} within {_secs(timeout[1])} s (read time-out)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return f"response from {host} cut off before its end"
    reason: BaseException = exc
    while reason.__cause__ is not None or reason.__context__ is not None:
        reason = reason.__cause__ or reason.__context__  # type: ignore[assignment]
    if isinstance(reason, ConnectionRefusedError) or "refused" in str(exc).lower():
        return f"connection to {host} refused (is BASE_URL right and the server up?)"
    if "Name or service not known" in str(exc) or "getaddrinfo" in str(exc) or "NameResolution" in str(exc):
        return f"host name of {host} not found (check BASE_URL)"
    return f"connection to {host} failed ({type(reason).__name__})"


def _secs(seconds: float) -> str:
    """Seconds for a message: ``0.5``, ``60``, ``1800``."""
    return f"{seconds:.1f}".removesuffix(".0")


def _is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "")


def _body(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _rejects_fields(response: requests.Response) -> bool:
    """400 ERR006 about the ``fields`` parameter (servers before 11.2.0200, doc §5.1)."""
    body = _body(response) if response.status_code == 400 else None
    return bool(body) and body.get("code") == "ERR006" and "fields" in str(body.get("message", "")).lower()


def _error(what: str, response: requests.Response, api: str = "") -> MicroStrategyError:
    """``<what>: <the answer in one line>`` (see :func:`_answer`); retryable only for 408/429/5xx."""
    status = response.status_code
    # Refused requests (bad credentials, no access, unknown id) fail the same way when repeated.
    return MicroStrategyError(f"{what}: {_answer(response, api)}", retryable=status >= 500 or status in (408, 429))


def _answer(response: requests.Response, api: str = "") -> str:
    """An answer in one line: ``HTTP 403 Forbidden`` for a bare answer, ``HTTP 401 ERR003: <message>
    (iServerCode …) (ticket …)`` for a MicroStrategy error body. An HTML page or a bare 404 (not a
    REST answer) says to check BASE_URL."""
    status = response.status_code
    body = _body(response)
    if body is None or not (body.get("code") or body.get("message")):
        line = f"HTTP {status}" + (f" {response.reason}" if response.reason else "")
        html = "html" in response.headers.get("Content-Type", "")
        if status in (404, 405) or html:
            line += (
                f"; {api or 'the server'} answered with {'an HTML page' if html else 'no MicroStrategy error'}, "
                "not as the MicroStrategy REST API does: check BASE_URL (the Library URL, e.g. "
                "https://<host>/MicroStrategyLibrary)"
            )
        return line
    line = f"HTTP {status}"
    if body.get("code"):
        line += f" {body['code']}"
    message = " ".join(str(body.get("message") or "").split())[:300]
    if message:
        line += f": {message}"
    if body.get("iServerCode") is not None:
        line += f" (iServerCode {body['iServerCode']})"
    if body.get("ticketId"):
        line += f" (ticket {body['ticketId']})"
    return line


@dataclass(frozen=True)
class Download:
    """What :func:`download_report` received (the pages) and wrote (the CSV, read back); equal by construction
    of the check in :func:`download_report`."""

    received: reconcile.Figures
    written: reconcile.Figures

    @property
    def rows(self) -> int:
        return self.written.rows


def download_report(
    client: Client,
    report_id: str,
    dest: Path,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    label: str | None = None,
) -> Download:
    """Log in, write the whole report to ``dest`` as CSV (overwriting it), always log out.

    Returns the rows and metric totals of the pages received and of the CSV written (read back from
    ``dest`` page by page, while the server makes the next page); they must be equal, else
    :class:`MicroStrategyError` (nothing is to be published).
    The row count equals the server's ``paging.total``. On a lost session or instance the file is
    rewritten from row 0, at most ``policy.restarts`` times. Every error names the report (``label``).
    """
    label = label or f"report {report_id}"
    client.label = label
    try:
        client.login()
        for restart in range(client.policy.restarts + 1):
            try:
                received, written = _download_once(client, report_id, dest, page_size, label)
                break
            except (KeyError, TypeError) as exc:
                raise MicroStrategyError(f"malformed response ({type(exc).__name__}: {exc})") from None
            except _Restart as exc:
                if restart == client.policy.restarts:
                    raise MicroStrategyError(
                        f"{exc.reason}; gave up after {restart} {plural(restart, 'restart')}"
                    ) from None
                action = "logging in again" if exc.relogin else "re-creating the instance"
                log.warning("MicroStrategy %s: %s; %s and restarting from row 0", label, exc.reason, action)
                if exc.relogin:
                    client.login()
        log.info("%s", reconcile.check("export", label, received, written, what=("pages received", "CSV written")))
        return Download(received, written)
    except MicroStrategyError as exc:
        raise exc.prefixed(f"MicroStrategy {label}") from None
    finally:
        client.logout()


def figures_dict(figures: reconcile.Figures) -> dict[str, Any]:
    """JSON-ready figures: ``{"rows": 23, "money": {"Obligated": "1250.50", …}}`` (exact decimal text)."""
    return {"rows": figures.rows, "money": {name: str(value) for name, value in figures.money.items()}}


def _read_back(data: bytes, positions: range) -> tuple[int, list[np.ndarray]]:
    """Records and metric columns (floats; an empty cell is NaN) of CSV bytes without a header line.

    pandas' C parser (exact float parsing, quoted multi-line cells) reads only the metric columns:
    several times faster than the csv module, which makes a str of every cell.
    """
    if not data:
        return 0, []
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            header=None,
            usecols=list(positions),
            dtype="float64",
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise MicroStrategyError(f"the CSV written cannot be read back: {' '.join(str(exc).split())}") from None
    return len(frame), [frame[p].to_numpy() for p in positions]


class _Tally:
    """Running rows and exact sums of the metric columns (:func:`bond_reporting.reconcile.exact_total`)."""

    def __init__(self, metrics: list[str]) -> None:
        self.metrics = metrics
        self.rows = 0
        self.sums = [Decimal(0)] * len(metrics)

    def add(self, rows: int, columns: Iterable[np.ndarray]) -> None:
        self.rows += rows
        for k, values in enumerate(columns):
            self.sums[k] += reconcile.exact_total(values)

    def totals(self) -> reconcile.Figures:
        return reconcile.Figures(self.rows, dict(zip(self.metrics, self.sums, strict=True)))


def _download_once(
    client: Client, report_id: str, dest: Path, page_size: int, label: str
) -> tuple[reconcile.Figures, reconcile.Figures]:
    page = client.create_instance(report_id, page_size)
    status = page.get("status")
    if status == 2:
        raise MicroStrategyError(
            "has unanswered prompts (instance status 2); this export cannot answer "
            "prompts: remove them from the report or give them default answers",
            retryable=False,
        )
    if status != 1:
        raise MicroStrategyError(f"unexpected instance status {status!r}")
    instance_id = page["instanceId"]
    total = page["data"]["paging"]["total"]
    progress = Progress(f"MicroStrategy {label}: export", total, log, interval=client.policy.progress_interval)
    offset, number, header = 0, 0, None
    received = written = _Tally([])
    positions: range = range(0)
    # The file is read back as it grows (a second handle, one page at a time, while the server makes
    # the next one): the totals of the CSV are those of what is on disk, not of what was meant.
    with open(dest, "w", encoding="utf-8", newline="") as out, open(dest, "rb") as back:
        # QUOTE_MINIMAL and "\n" line ends: the legacy tool's CSV (pandas to_csv).
        writer = csv.writer(out, lineterminator="\n")
        while True:
            number += 1
            columns = grid_columns(page["definition"]["grid"])
            if header is None:
                header = columns
                metrics = [m["name"] for m in _metrics(page["definition"]["grid"])]
                received, written = _Tally(metrics), _Tally(metrics)
                positions = range(len(header) - len(metrics), len(header))
                writer.writerow(header)
                out.flush()
                if next(csv.reader([back.read().decode("utf-8")]), None) != header:
                    raise MicroStrategyError("the CSV written does not start with its header")
            elif columns != header:
                raise MicroStrategyError(f"page {number} has columns {columns}, not {header}")
            paging = page["data"]["paging"]
            if paging["total"] != total or paging.get("offset", offset) != offset:
                raise MicroStrategyError(
                    f"page {number} has total {paging['total']} and offset "
                    f"{paging.get('offset')}, expected {total} and {offset}"
                )
            current = paging["current"]
            following = None
            if offset + current < total:
                if current == 0:
                    raise MicroStrategyError(f"empty page at offset {offset} of {total} {plural(total, 'row')}")
                # The server makes the next page while this one is flattened (one request in flight).
                # Only the HTTP exchange runs in the other thread; the JSON is decoded here (one malloc arena).
                following = _Prefetch(partial(client.request_page, report_id, instance_id, offset + current, page_size))
            cells, _metric_cells = page_columns(page)
            writer.writerows(zip(*cells, strict=True))
            out.flush()
            raw = page["data"].get("metricValues", {}).get("raw") or []
            # None (a null) becomes NaN, which the sums skip; on the CSV side an empty cell is skipped.
            received.add(current, (np.array(column, dtype=np.float64) for column in zip(*raw, strict=True)))
            written.add(*_read_back(back.read(), positions))  # exactly this page's records: flushed whole
            offset += current
            log.debug("%s: page %d: %d/%d rows", label, number, offset, total)
            progress.update(offset)
            if following is None:
                break
            page = client.read_page(following.result(), offset)
        written.add(*_read_back(back.read(), positions))  # anything after the last page is a mismatch
    if offset != total:
        raise MicroStrategyError(f"received {offset} {plural(offset, 'row')}, but the report has {total}")
    return received.totals(), written.totals()


class _Prefetch:
    """``fn()`` in a daemon thread; ``result()`` waits for it (interruptible by Ctrl-C/SIGTERM) and
    returns its value or raises its exception. A daemon thread, so a stopped export never waits for an
    abandoned request (each request is bounded by its own time-outs anyway)."""

    def __init__(self, fn: Callable[[], requests.Response]) -> None:
        self._value: requests.Response | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(fn,), name="mstr-next-page", daemon=True).start()

    def _run(self, fn: Callable[[], requests.Response]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the waiting thread  # noqa: BLE001
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> requests.Response:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value
