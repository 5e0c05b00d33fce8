"""A MicroStrategy REST server of our own, faithful to docs/microstrategy-rest.md, with fault injection.

Standard library only. Used by the tests (``from scripts.mstr_server import MstrServer, Report, Fault``),
by ``benchmarks/bench_mstr.py`` and as a dev tool for local runs and the demo::

    python scripts/mstr_server.py --port 8765 \\
        --report 077C066E6C4BF56B081F96A3E405D83C="sample_data/expenses_obligated_all_bonds_raw.csv" \\
        --report D6BC5BD13143FF3129F3318F589EBD51=sample_data/expenses_obligated_2020_bond_raw.csv
    python scripts/mstr_server.py --generate 077C066E6C4BF56B081F96A3E405D83C=1000000   # lazily generated rows

What it does, as the real Library server does: standard login (204, ``X-MSTR-AuthToken`` + ``JSESSIONID``
cookie; 401 ERR003 on bad credentials or another login mode); every later call needs token *and* cookie
(401 ERR009); project calls need ``X-MSTR-ProjectID`` (400 ERR006); v2 report instances with offset/limit
paging and page-local element lists in the §5 shape; ``fields`` exclusions; status 2 for prompted
reports; 404 ERR004 for unknown reports and instances; logout 204 ends the session and its instances.
Report shapes of doc §5.1 (``Report.page_by``, ``Report.subtotals``, two metrics with one name) and server
versions (``version``: before 11.2.0100 ``subtotals.visible=false`` is ignored, before 11.2.0200 a
``fields`` parameter is refused with 400 ERR006).
Faults (:class:`Fault`): any status with an MSTR error body, delays, connection resets, bodies cut
off mid-way, session expiry and lost instances, empty pages; plus ``page_cap`` and ``session_timeout``.
Every call is recorded in ``calls``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

LIBRARY = "/MicroStrategyLibrary"  # the web application path; the REST API is under LIBRARY + "/api"
DEFAULT_PROJECT_ID = "B19DEDCC11D4E0EFC000EB9495D0F44F"
DEFAULT_USERNAME = "etl-user"
DEFAULT_PASSWORD = "dev-only-password"
ALL_BONDS_ID = "077C066E6C4BF56B081F96A3E405D83C"
BOND_2020_ID = "D6BC5BD13143FF3129F3318F589EBD51"
KNOWN_NAMES = {ALL_BONDS_ID: "All bonds Expenses Obligated", BOND_2020_ID: "2020 Bond Expenses Obligated"}

Cell = str | int | float | None
Row = Sequence[Cell]  # one report row, flat: every attribute's form values, then the metric values


# ---------------------------------------------------------------------------------------------
# Reports


@dataclass
class Report:
    """A grid report: attributes (name, form names), metric names, and ``total`` rows from ``row(i)``.

    ``row(i)`` returns the flat row ``i`` (0-based): the form values of each attribute (strings), then
    the metric values (numbers or None). Rows are produced on demand, page by page, so a generated
    report of millions of rows costs no memory.
    """

    id: str
    name: str
    attributes: list[tuple[str, list[str]]]
    metrics: list[str]
    total: int
    row: Callable[[int], Row]
    prompted: bool = False
    # Shapes the flat table cannot represent (doc §5.1), as a report designer makes them:
    page_by: tuple[str, ...] = ()  # attributes moved to the page-by area (the instance shows the first element)
    subtotals: bool = False  # totals turned on: a subtotal after each group of the first attribute, a grand total

    @property
    def columns(self) -> list[str]:
        """The header the legacy flattening gives (doc §6)."""
        names = []
        for name, forms in self.attributes:
            names.extend([name] if len(forms) == 1 else [f"{name}@{form}" for form in forms])
        return names + list(self.metrics)

    @classmethod
    def from_rows(
        cls,
        report_id: str,
        name: str,
        attributes: list[tuple[str, list[str]]],
        metrics: list[str],
        rows: Sequence[Row],
        *,
        prompted: bool = False,
        page_by: Sequence[str] = (),
        subtotals: bool = False,
    ) -> Report:
        rows = list(rows)
        width = sum(len(forms) for _, forms in attributes) + len(metrics)
        if any(len(r) != width for r in rows):
            raise ValueError(f"report {name!r}: every row needs {width} cells")
        return cls(
            report_id, name, attributes, list(metrics), len(rows), rows.__getitem__, prompted, tuple(page_by), subtotals
        )

    @classmethod
    def from_csv(
        cls,
        report_id: str,
        path: str | Path,
        *,
        metrics: Iterable[str] = ("Obligated", "Expenses"),
        name: str | None = None,
    ) -> Report:
        """Rebuild a report from a CSV in the legacy layout.

        ``A@Form`` columns next to each other become one multi-form attribute ``A``; other columns
        single-form attributes; the ``metrics`` columns (which must come last) metrics, parsed to
        numbers (empty → null).
        """
        path = Path(path)
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            records = list(reader)
        metric_set = set(metrics)
        metric_columns = [c for c in header if c in metric_set]
        n_attr = len(header) - len(metric_columns)
        if header[n_attr:] != metric_columns:
            raise ValueError(f"{path}: the metric columns {metric_columns} must be the last columns")
        groups: list[tuple[str, list[str], bool]] = []  # (attribute, forms, came from A@Form columns)
        for column in header[:n_attr]:
            attribute, at, form = column.rpartition("@")
            if at and groups and groups[-1][2] and groups[-1][0] == attribute:
                groups[-1][1].append(form)
            elif at:
                groups.append((attribute, [form], True))
            else:
                groups.append((column, ["ID"], False))
        # A lone "A@Form" column would flatten back to "A": keep its whole name as a single-form attribute.
        attributes = [
            (attribute, forms) if len(forms) > 1 or not multi else (f"{attribute}@{forms[0]}", ["ID"])
            for attribute, forms, multi in groups
        ]
        rows = [
            [*record[:n_attr], *(_number(v, path, i) for v in record[n_attr:])] for i, record in enumerate(records, 2)
        ]
        return cls.from_rows(report_id, name or KNOWN_NAMES.get(report_id, path.stem), attributes, metric_columns, rows)


def _number(text: str, path: Path, line: int) -> int | float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path} line {line}: metric value {text!r} is not a number") from None
    return int(value) if value.is_integer() else value


def generated_report(report_id: str, total: int, name: str | None = None) -> Report:
    """A deterministic report of ``total`` rows made on demand: the 2020 layout for the 2020 report id,
    else the all-bonds layout (multi-form attributes). Values follow docs/data-contract.md §3 (MM/DD/YYYY dates,
    integer departments, alphanumeric codes, some commas and quotes to exercise CSV quoting, a few nulls)."""
    dates = [date.fromordinal(date(2019, 10, 1).toordinal() + k) for k in range(1461)]
    date_text = [d.strftime("%m/%d/%Y") for d in dates]
    fiscal = [str(d.year + 1 if d.month >= 10 else d.year) for d in dates]
    departments = [("2400", "Corridor Program Office"), ("6200", "Public Works"), ("6800", "Parks"), ("7400", "ATD")]

    def metrics(i: int) -> tuple[float | None, float | None]:
        obligated = round((i * 7919 % 10_000_000) / 100, 2) if i % 3 == 0 else 0.0
        expenses = None if i % 101 == 0 else round(((i * 104_729) % 2_000_000 - 100_000) / 100, 2)
        return obligated, expenses

    if report_id == BOND_2020_ID:
        funds = [f"86{chr(65 + k)}{k}" for k in range(9)]
        groups = [f"{g % 10}{chr(65 + g % 26)}A{g // 26}" for g in range(997)]

        def row_2020(i: int) -> Row:
            k = i * 7 % 1461
            dept = departments[i // 5 % 4][0]
            return (funds[i % 9], dept, date_text[k], groups[i % 997], fiscal[k], f"{dept[:2]}A{i % 7}", *metrics(i))

        attributes = [(a, ["ID"]) for a in ("Fund", "Department", "Date", "Group", "Fiscal Year", "Division")]
        return Report(report_id, name or KNOWN_NAMES[report_id], attributes, ["Obligated", "Expenses"], total, row_2020)

    funds = [
        ("8113", "2016 Mobility Bond - Prop 1"),
        ("8526", "2020 Mobility Bond - Prop B"),
        ("8166", "2016 Mobility Bond - Prop C"),
        ("8620", 'Street Reconstruction, 2012 Bond "Prop 12"'),
        ("86A0", "2018 Bond - Prop G"),
    ]
    divisions = [(f"{d}K{d * 3 % 10}", f"Division {d}") for d in range(1, 10)]
    groups = [(f"{g % 10}Q{chr(65 + g % 26)}{g % 100:02d}", f"Project group {g}") for g in range(997)]

    def row_all(i: int) -> Row:
        return (
            *funds[i % 5],
            *divisions[i // 3 % 9],
            *departments[i // 5 % 4],
            date_text[i * 7 % 1461],
            *groups[i % 997],
            *metrics(i),
        )

    attributes = [
        ("Fund", ["Code", "Long Name"]),
        ("Division (As-Is)", ["Code", "Long Name"]),
        ("Department", ["Dept", "Long Name"]),
        ("Date", ["ID"]),
        ("Group (As-Is)", ["Code", "Long Name"]),
    ]
    return Report(
        report_id, name or KNOWN_NAMES.get(report_id, report_id), attributes, ["Obligated", "Expenses"], total, row_all
    )


class _Total(str):
    """The attribute value of a total row: becomes an element marked ``"subtotal": true`` (doc §5.1)."""


@dataclass
class _View:
    """What one instance shows: the rows (page-by applied, total rows added) and the grid's extra parts."""

    report: Report  # the rows axis only (page-by attributes removed), ``row(i)`` over the shown rows
    page_by: list[dict[str, Any]] = field(default_factory=list)  # grid.pageBy
    subtotals: dict[str, Any] = field(default_factory=lambda: {"defined": False, "visible": False})


def _view(report: Report, *, show_totals: bool, visible_requested: bool) -> _View:
    """The instance's view of ``report``. Plain reports stay lazy (rows made page by page)."""
    subtotals = {"defined": report.subtotals, "visible": visible_requested}
    if not report.page_by and not (report.subtotals and show_totals):
        return _View(report, subtotals=subtotals)
    rows = [list(report.row(i)) for i in range(report.total)]
    spans, start = [], 0
    for name, forms in report.attributes:
        spans.append((name, forms, start, start + len(forms)))
        start += len(forms)
    n_attr = start
    page_by = []
    for name in report.page_by:
        _n, forms, lo, hi = next(span for span in spans if span[0] == name)
        elements = sorted({tuple(r[lo:hi]) for r in rows}, reverse=True)
        attribute_id = _object_id(report.id, name)
        page_by.append(
            {
                "name": name,
                "id": attribute_id,
                "type": "attribute",
                "forms": [{"id": _object_id(name, f), "name": f, "dataType": "Char"} for f in forms],
                "elements": [{"id": f"h{v[0]};{attribute_id}", "formValues": list(v)} for v in elements],
            }
        )
        if elements:  # the instance shows the first element only (data.currentPageBy = [0, ...])
            rows = [r for r in rows if tuple(r[lo:hi]) == elements[0]]
    keep = [span for span in spans if span[0] not in report.page_by]
    rows = [[*(v for _n, _f, lo, hi in keep for v in r[lo:hi]), *r[n_attr:]] for r in rows]
    attributes = [(name, forms) for name, forms, _lo, _hi in keep]
    if report.subtotals and show_totals and attributes:
        rows = _with_totals(rows, attributes, len(report.metrics))
    shown = Report(report.id, report.name, attributes, report.metrics, len(rows), rows.__getitem__)
    return _View(shown, page_by, subtotals)


def _with_totals(rows: list[list[Cell]], attributes: list[tuple[str, list[str]]], n_metrics: int) -> list[list[Cell]]:
    """A subtotal row after each run of the first attribute's element, and a grand total at the end, as a
    server that ignores ``subtotals.visible=false`` sends them: total elements carry one value ("Total")."""
    first = len(attributes[0][1])
    n_attr = sum(len(forms) for _, forms in attributes)

    def total(group: list[list[Cell]], keep: int) -> list[Cell]:
        sums = []
        for k in range(n_attr, n_attr + n_metrics):
            values = [r[k] for r in group if r[k] is not None]
            sums.append(sum(values) if values else None)  # type: ignore[arg-type]
        return [*group[0][:keep], *(_Total("Total") for _ in range(n_attr - keep)), *sums]

    out: list[list[Cell]] = []
    group: list[list[Cell]] = []
    for row in rows:
        if group and row[:first] != group[0][:first]:
            out.extend([*group, total(group, first)])
            group = []
        group.append(row)
    if group:
        out.extend([*group, total(group, first)])
    if rows:
        out.append(total(rows, 0))
    return out


def _object_id(*parts: str) -> str:
    """A stable 32-hex MicroStrategy-style object id."""
    return hashlib.md5("/".join(parts).encode()).hexdigest().upper()


def _grid(report: Report, rows: Sequence[Row], view: _View | None = None) -> tuple[dict[str, Any], list[list[int]]]:
    """The §5 grid for these rows (page-local element lists) and the rows' element indexes."""
    grid_rows, index_columns, start = [], [], 0
    for name, forms in report.attributes:
        end = start + len(forms)
        # A total row's cells are _Total values: its own element, marked "subtotal": true.
        keys = [(isinstance(r[start], _Total), tuple(r[start:end])) for r in rows]
        # Sorted (descending) rather than in order of appearance: indexes must be followed, not assumed.
        elements = sorted(set(keys), reverse=True)
        position = {v: i for i, v in enumerate(elements)}
        index_columns.append([position[v] for v in keys])
        attribute_id = _object_id(report.id, name)
        grid_rows.append(
            {
                "name": name,
                "id": attribute_id,
                "type": "attribute",
                "forms": [{"id": _object_id(name, f), "name": f, "dataType": "Char"} for f in forms],
                "elements": [
                    {"id": f"h{v[0]};{attribute_id}", "formValues": list(v[:1]), "subtotal": True}
                    if is_total
                    else {"id": f"h{v[0]};{attribute_id}", "formValues": list(v)}
                    for is_total, v in elements
                ],
            }
        )
        start = end
    grid = {
        "crossTab": False,
        "metricsPosition": {"axis": "columns", "index": 0},
        "rows": grid_rows,
        "columns": [
            {
                "name": "Metrics",
                "id": "00000000000000000000000000000000",
                "type": "templateMetrics",
                "elements": [_metric_element(report, m, start + k, rows) for k, m in enumerate(report.metrics)],
            }
        ],
        "pageBy": view.page_by if view else [],
        "sorting": {"rows": [], "columns": [], "pageBy": []},
        "subtotals": view.subtotals if view else {"defined": report.subtotals, "visible": False},
        "thresholds": [],
    }
    return grid, [list(ix) for ix in zip(*index_columns, strict=True)] if index_columns else [[] for _ in rows]


def _metric_element(report: Report, name: str, column: int, rows: Sequence[Row]) -> dict[str, Any]:
    values = [r[column] for r in rows if r[column] is not None]
    index = column - sum(len(forms) for _, forms in report.attributes)
    first = report.metrics.index(name) == index  # two metrics may share a name, never an id
    return {
        "name": name,
        "id": _object_id(report.id, name) if first else _object_id(report.id, name, str(index)),
        "type": "metric",
        "min": min(values, default=0),
        "max": max(values, default=0),
        "dataType": "double",
        "numberFormatting": {"category": 1, "decimalPlaces": 2, "formatCode": '"$"#,##0.00;("$"#,##0.00)'},
    }


def _raw(value: Cell) -> Cell:
    # Integral values travel as JSON integers (0, 1200), others as decimals (1250.5): doc §5.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _money(value: Cell) -> str:
    if value is None:
        return ""
    text = f"${abs(value):,.2f}"
    return f"({text})" if value < 0 else text


def page_body(
    report: Report,
    instance_id: str,
    offset: int,
    limit: int,
    *,
    exclude: Iterable[str] = (),
    cap: int | None = None,
    view: _View | None = None,
) -> dict[str, Any]:
    """The data response for rows ``offset``… (``limit`` -1: all), in the doc's §5 shape.

    ``view``: the instance's page-by selection and total rows (default: the plain report)."""
    name, report = report.name, (view.report if view else report)
    available = max(report.total - offset, 0)
    count = available if limit < 0 else min(limit, available)
    if cap is not None:
        count = min(count, cap)
    rows = [report.row(i) for i in range(offset, offset + count)]
    grid, header_rows = _grid(report, rows, view)
    n_attr = sum(len(forms) for _, forms in report.attributes)
    metric_values: dict[str, Any] = {"raw": [[_raw(v) for v in r[n_attr:]] for r in rows]}
    if "data.metricValues.formatted" not in exclude:
        metric_values["formatted"] = [[_money(v) for v in r[n_attr:]] for r in rows]
    if "data.metricValues.extras" not in exclude:
        metric_values["extras"] = [[{} for _ in report.metrics] for _ in rows]
    return {
        "id": report.id,
        "name": name,
        "instanceId": instance_id,
        "status": 1,
        "definition": {"grid": grid},
        "data": {
            "currentPageBy": [0 for _ in view.page_by] if view else [],
            "paging": {"total": report.total, "current": count, "offset": offset, "limit": limit},
            "headers": {"rows": header_rows, "columns": [list(range(len(report.metrics)))]},
            "metricValues": metric_values,
        },
    }


# ---------------------------------------------------------------------------------------------
# Server


@dataclass
class Fault:
    """One injected failure for calls to ``endpoint`` (login, logout, instance, page, definition, status,
    sessions), optionally only at the requested ``offset``; fires ``times`` times (None: on every call).

    Applied in this order: ``delay`` seconds; then ``drop`` (connection reset, no answer) or ``status``
    (that HTTP status with an MSTR error body, ``code``, before any other check, as a gateway would) or
    ``expire_session`` (the caller's session ends: 401 ERR009) or ``lose_instance`` (404 ERR004);
    ``empty`` answers a page with no rows;
    ``truncate`` sends the headers and half of the body, then resets the connection.
    """

    endpoint: str
    offset: int | None = None
    status: int | None = None
    code: str = "ERR001"
    delay: float = 0.0
    drop: bool = False
    truncate: bool = False
    expire_session: bool = False
    lose_instance: bool = False
    empty: bool = False
    bare: bool = False  # answer ``status`` without a MicroStrategy error body, as a proxy or gateway does
    times: int | None = 1


@dataclass
class Call:
    """One request as the server saw it (the password is never recorded)."""

    method: str
    endpoint: str
    path: str
    params: dict[str, str]
    body: Any
    status: int = 0  # 0: no answer (dropped connection)


@dataclass
class _Session:
    token: str
    cookie: str
    last_used: float
    instances: dict[str, str] = field(default_factory=dict)  # instance id → report id


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class MstrServer:
    """The server, on loopback by default (``port=0``: any free port). Use as a context manager or
    ``start()``/``stop()``. ``base_url`` is the Library URL to give the client as BASE_URL."""

    def __init__(
        self,
        reports: Iterable[Report] = (),
        *,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        project_id: str = DEFAULT_PROJECT_ID,
        host: str = "127.0.0.1",
        port: int = 0,
        page_cap: int | None = None,
        session_timeout: float | None = None,
        version: str = "11.4.0300",
    ) -> None:
        self.reports = {r.id: r for r in reports}
        # What the server's version changes (doc §3, §5.1): before 11.2.0100 subtotals.visible=false is
        # ignored (total rows are sent anyway); before 11.2.0200 a "fields" parameter is a 400 ERR006.
        self.version = version
        self.views: dict[str, _View] = {}  # instance id → what it shows
        self.username, self._password, self.project_id = username, password, project_id
        self.page_cap = page_cap  # the server's own maximum rows per page (clients must follow `current`)
        self.session_timeout = session_timeout  # idle seconds before a session expires
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.tickets: list[str] = []  # ticket ids of every error answer, in order
        self.sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None

    # -- lifecycle and inspection --------------------------------------------------------------

    def start(self) -> MstrServer:
        self._httpd = _HTTPServer(self._address, _Handler)
        self._httpd.app = self
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="mstr-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MstrServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{LIBRARY}"

    def add_report(self, report: Report) -> None:
        self.reports[report.id] = report

    def count(self, endpoint: str, status: int | None = None) -> int:
        """How many calls to ``endpoint`` were made (with that answer status, if given)."""
        return sum(1 for c in self.calls if c.endpoint == endpoint and (status is None or c.status == status))

    # -- request handling ----------------------------------------------------------------------

    def handle(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length) if length else b""
        endpoint, args = _route(method, url.path)
        body = _parse_body(handler.headers.get("Content-Type", ""), raw_body)
        call = Call(method, endpoint, url.path, params, _without_password(body))
        with self._lock:
            self.calls.append(call)
            fault = self._take_fault(endpoint, params)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.drop:
            _reset(handler)
            return
        reply = self._respond(endpoint, args, params, handler.headers, body, fault)
        call.status = reply.status
        if fault and fault.truncate and reply.body:
            _send(handler, reply, cut=len(reply.body) // 2)
            _reset(handler)
            return
        _send(handler, reply)

    def _take_fault(self, endpoint: str, params: dict[str, str]) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint != endpoint or fault.times == 0:
                continue
            if fault.offset is not None and params.get("offset") != str(fault.offset):
                continue
            if fault.times is not None:
                fault.times -= 1
            return fault
        return None

    def _respond(
        self,
        endpoint: str,
        args: list[str],
        params: dict[str, str],
        headers: Any,
        body: Any,
        fault: Fault | None,
    ) -> _Reply:
        if endpoint == "unknown":
            return _Reply(404, b"<html><body>404 Not Found</body></html>", {"Content-Type": "text/html"})
        if fault and fault.status:
            if fault.bare:
                return _Reply(fault.status, b"", {"Content-Type": "text/plain"})
            return self._error(fault.status, fault.code)
        if endpoint == "status":
            return self._json(200, {"webVersion": self.version, "iServerVersion": self.version})
        if endpoint == "login":
            return self._login(body)
        with self._lock:
            session = self._session(headers)
            if session is None:
                return self._error(401, "ERR009", "The user's session has expired, please reauthenticate")
            if fault and fault.expire_session:
                del self.sessions[session.token]
                return self._error(401, "ERR009", "The user's session has expired, please reauthenticate")
            if endpoint == "logout":
                del self.sessions[session.token]
                return _Reply(204)
            if endpoint == "sessions":
                return self._json(200, {"username": self.username, "timeout": self.session_timeout or 600})
            project = headers.get("X-MSTR-ProjectID")
            if project != self.project_id:
                return self._error(400, "ERR006", f"'{project or ''}' is not a valid value for Project ID")
            report = self.reports.get(args[0])
            if report is None:
                return self._error(404, "ERR004", f"Object with ID '{args[0]}' and type 3 is not found")
            if endpoint == "definition":
                view = _view(report, show_totals=False, visible_requested=True)
                grid, _ = _grid(view.report, [], view)
                return self._json(200, {"id": report.id, "name": report.name, "definition": {"grid": grid}})
            try:
                offset, limit = int(params.get("offset", "0")), int(params.get("limit", "-1"))
                if offset < 0 or limit == 0 or limit < -1:
                    raise ValueError
            except ValueError:
                return self._error(400, "ERR006", "Invalid value for offset or limit")
            if "fields" in params and _version(self.version) < (11, 2, 200):
                return self._error(400, "ERR006", 'Invalid "fields" param')
            if endpoint == "instance":
                if body is not None and not isinstance(body, dict):
                    return self._error(400, "ERR006", "The request body is not a JSON object")
                instance_id = uuid.uuid4().hex.upper()
                session.instances[instance_id] = report.id
                visible = ((body or {}).get("subtotals") or {}).get("visible", True) is not False
                honoured = _version(self.version) >= (11, 2, 100)
                self.views[instance_id] = _view(report, show_totals=visible or not honoured, visible_requested=visible)
                if report.prompted:
                    return self._json(
                        200, {"id": report.id, "name": report.name, "instanceId": instance_id, "status": 2}
                    )
            else:  # page
                instance_id = args[1]
                if session.instances.get(instance_id) != report.id or (fault and fault.lose_instance):
                    session.instances.pop(instance_id, None)
                    return self._error(404, "ERR004", f"Report instance '{instance_id}' was not found")
        # Build the page outside the lock: it is the expensive part.
        exclude = {f[1:] for f in params.get("fields", "").split(",") if f.startswith("-")}
        cap = 0 if fault and fault.empty else self.page_cap
        view = self.views.get(instance_id)
        return self._json(200, page_body(report, instance_id, offset, limit, exclude=exclude, cap=cap, view=view))

    def _login(self, body: Any) -> _Reply:
        body = body if isinstance(body, dict) else {}
        mode = str(body.get("loginMode", 1))
        if mode != "1" or body.get("username") != self.username or body.get("password") != self._password:
            return self._error(401, "ERR003", "Login failure: invalid username, password or login mode")
        session = _Session(uuid.uuid4().hex, uuid.uuid4().hex.upper(), time.monotonic())
        with self._lock:
            self.sessions[session.token] = session
        return _Reply(
            204,
            headers={
                "X-MSTR-AuthToken": session.token,
                "Set-Cookie": f"JSESSIONID={session.cookie}; Path={LIBRARY}; HttpOnly",
            },
        )

    def _session(self, headers: Any) -> _Session | None:
        """The caller's live session: token and JSESSIONID cookie must both match (caller holds the lock)."""
        session = self.sessions.get(headers.get("X-MSTR-AuthToken") or "")
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("Cookie") or "")
        except CookieError:  # a malformed cookie header is simply "no cookie"
            cookies = SimpleCookie()
        if session is None or "JSESSIONID" not in cookies or cookies["JSESSIONID"].value != session.cookie:
            return None
        now = time.monotonic()
        if self.session_timeout is not None and now - session.last_used > self.session_timeout:
            del self.sessions[session.token]
            return None
        session.last_used = now
        return session

    def _json(self, status: int, payload: Any) -> _Reply:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return _Reply(status, body, {"Content-Type": "application/json;charset=UTF-8"})

    def _error(self, status: int, code: str, message: str | None = None) -> _Reply:
        ticket = uuid.uuid4().hex
        self.tickets.append(ticket)
        payload: dict[str, Any] = {"code": code, "message": message or f"Injected failure (HTTP {status})"}
        payload["ticketId"] = ticket
        if status == 500:
            payload["iServerCode"] = -2147206497  # "request timed out on the server"
        return self._json(status, payload)


def _version(text: str) -> tuple[int, ...]:
    """``"11.2.0100"`` → ``(11, 2, 100)``."""
    return tuple(int(part) for part in text.split("."))


def _route(method: str, path: str) -> tuple[str, list[str]]:
    prefix = LIBRARY + "/api/"
    if not path.startswith(prefix):
        return "unknown", []
    match method, path[len(prefix) :].rstrip("/").split("/"):
        case "POST", ["auth", "login"]:
            return "login", []
        case "POST", ["auth", "logout"]:
            return "logout", []
        case "GET", ["status"]:
            return "status", []
        case "GET", ["sessions"]:
            return "sessions", []
        case "GET", ["v2", "reports", report_id]:
            return "definition", [report_id]
        case "POST", ["v2", "reports", report_id, "instances"]:
            return "instance", [report_id]
        case "GET", ["v2", "reports", report_id, "instances", instance_id]:
            return "page", [report_id, instance_id]
    return "unknown", []


def _parse_body(content_type: str, raw: bytes) -> Any:
    if not raw:
        return None
    if "application/x-www-form-urlencoded" in content_type:
        return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8")).items()}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _without_password(body: Any) -> Any:
    if isinstance(body, dict) and "password" in body:
        return {**body, "password": "***"}
    return body


def _send(handler: _Handler, reply: _Reply, cut: int | None = None) -> None:
    handler.send_response(reply.status)
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    if reply.status != 204:
        handler.send_header("Content-Length", str(len(reply.body)))
    handler.end_headers()
    handler.wfile.write(reply.body if cut is None else reply.body[:cut])


def _reset(handler: _Handler) -> None:
    """Close with RST, as a proxy cutting a connection does (the client sees 'connection reset')."""
    handler.wfile.flush()
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: MstrServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (read time-out) makes the late answer fail: not the server's problem.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real server and requests.Session use
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms a call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.app.handle(self, "GET")

    def do_POST(self) -> None:
        self.server.app.handle(self, "POST")

    def do_PUT(self) -> None:
        self.server.app.handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.app.handle(self, "DELETE")


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve MicroStrategy reports over the REST protocol (dev/test).")
    parser.add_argument("--report", action="append", default=[], metavar="ID=CSV", help="a report from a legacy CSV")
    parser.add_argument("--generate", action="append", default=[], metavar="ID=ROWS", help="a generated report")
    parser.add_argument("--metrics", default="Obligated,Expenses", help="metric columns of the CSVs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--username", default=DEFAULT_USERNAME)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--project-id", default=DEFAULT_PROJECT_ID)
    parser.add_argument("--page-cap", type=int, help="the server's maximum rows per page")
    parser.add_argument("--server-version", default="11.4.0300", help="behave as this server version")
    args = parser.parse_args(argv)
    reports = []
    for spec in args.report:
        report_id, _, path = spec.partition("=")
        reports.append(Report.from_csv(report_id, path, metrics=args.metrics.split(",")))
    for spec in args.generate:
        report_id, _, rows = spec.partition("=")
        reports.append(generated_report(report_id, int(rows)))
    server = MstrServer(
        reports,
        username=args.username,
        password=args.password,
        project_id=args.project_id,
        host=args.host,
        port=args.port,
        page_cap=args.page_cap,
        version=args.server_version,
    ).start()
    print(f"listening on {server.base_url}", flush=True)
    print(f"BASE_URL={server.base_url} PROJECT_ID={args.project_id} MSTRO_USERNAME={args.username}", flush=True)
    for report in reports:
        print(
            f"report {report.id} {report.name!r}: {report.total} rows, columns {','.join(report.columns)}", flush=True
        )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
