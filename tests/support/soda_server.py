"""A SODA 2.x producer endpoint of our own, over HTTPS on loopback, with injectable faults.

Speaks what docs/socrata-publishing.md documents and the publisher uses:
``PUT /resource/{id}.json`` replaces the dataset with the body's rows, ``POST`` appends them (a
dataset without row identifier: every posted row is added, so a re-sent batch duplicates),
``GET ...?$select=count(*)`` answers ``[{"count": "N"}]``, and SoQL aggregates
``$select=count(*) AS a, sum(`f`) AS b, min(`f`) AS c, max(`f`) AS d`` answer one row of strings,
computed as Socrata does: sums exact in decimal, null fields left out. Writes need HTTP Basic auth
(401 for wrong credentials, 403 without). Bodies that are not strict JSON (e.g. ``NaN``) get 400,
bodies above ``max_body_bytes`` get 413. Error bodies are ``{"code", "error", "message", "data"}``.

A :class:`SodaFault` makes one matching request fail: with ``apply_first`` the request is applied
before the fault answers (a 500 or a time-out whose write went through anyway); ``accepted``
answers 202 and applies the write ``apply_after`` seconds later (None: never); ``message`` answers
200 with only that message and applies nothing (a synced dataset); ``updated`` applies the write
and counts its rows under "Rows Updated" instead of "Rows Created".
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

# The credentials the tests configure (tests/conftest.py ``soda``); tests assert they never appear in output.
KEY_ID, KEY_SECRET, APP_TOKEN = "e2e-key-id-4471", "e2e-key-secret-8812", "e2e-app-token-2290"


@dataclass
class SodaFault:
    """Fail the ``nth`` request with this ``method`` (and ``dataset`` if given), ``times`` times in a row."""

    method: str
    status: int | None = None
    nth: int = 1
    times: int = 1
    dataset: str | None = None
    apply_first: bool = False  # apply the write, then answer with the fault
    delay: float = 0.0  # seconds to wait before answering (a client time-out if above its timeout)
    retry_after: str | None = None
    html: bool = False  # a gateway-style HTML body instead of JSON
    lose: bool = False  # answer 200 with the usual counts but store nothing (a lost write)
    cut: bool = False  # apply the write, then cut the 200 answer off mid-body (connection closed)
    not_json: bool = False  # apply the write, then answer 200 with an HTML page instead of JSON
    accepted: bool = False  # answer 202 at once, apply the write apply_after seconds later
    apply_after: float | None = 0.3  # with accepted: None never applies it
    message: str | None = None  # answer 200 {"message": ...} without counts, apply nothing
    updated: bool = False  # apply, but report the rows as "Rows Updated"
    errors: int = 0  # apply, but report this many row "Errors"
    corrupt: bool = False  # apply with the first row's numbers changed, answer as if all went well
    on_match: Callable[[], None] | None = (
        None  # run when the request is matched (e.g. what an administrator does meanwhile)
    )
    _seen: int = 0

    def matches(self, method: str, dataset: str) -> bool:
        if method != self.method or (self.dataset and dataset != self.dataset) or self.times <= 0:
            return False
        self._seen += 1
        if self._seen < self.nth:
            return False
        self.times -= 1
        return True


@dataclass
class Request:
    method: str
    dataset: str
    rows: int
    status: int


@dataclass
class SodaServer:
    """The server; ``datasets`` holds the stored rows of each known dataset id."""

    cert_dir: Path
    key_id: str
    key_secret: str
    dataset_ids: tuple[str, ...]
    max_body_bytes: int | None = None
    faults: list[SodaFault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    app_tokens: list[str | None] = field(default_factory=list)
    datasets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ca_path: Path | None = None
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def domain(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> SodaServer:
        import trustme

        ca = trustme.CA()
        self.ca_path = self.cert_dir / "soda-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        for dataset_id in self.dataset_ids:
            self.datasets.setdefault(dataset_id, [{"old": "row"}])  # a dataset starts with stale content
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._handle(self, "GET")

            def do_PUT(self) -> None:
                owner._handle(self, "PUT")

            def do_POST(self) -> None:
                owner._handle(self, "POST")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    # -- request handling ---------------------------------------------------------------------

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(handler.path)
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        dataset = parsed.path.removeprefix("/resource/").removesuffix(".json")
        with self._lock:
            self.app_tokens.append(handler.headers.get("X-App-Token"))
        if not parsed.path.startswith("/resource/") or dataset not in self.datasets:
            return self._error(handler, method, dataset, 404, "not_found", f"Cannot find dataset {dataset}")
        auth = handler.headers.get("Authorization")
        expected_auth = "Basic " + base64.b64encode(f"{self.key_id}:{self.key_secret}".encode()).decode()
        if method == "GET" and auth and auth != expected_auth:  # like Socrata: given credentials must be valid
            return self._error(handler, method, dataset, 401, "authentication_required", "Invalid credentials")
        if method != "GET":
            if not auth:
                return self._error(handler, method, dataset, 403, None, "You must be logged in to access this resource")
            expected = base64.b64encode(f"{self.key_id}:{self.key_secret}".encode()).decode()
            if auth != f"Basic {expected}":
                return self._error(handler, method, dataset, 401, "authentication_required", "Invalid credentials")
            if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
                return self._error(handler, method, dataset, 413, "request_too_large", "Request body too large")
            try:
                rows = json.loads(body, parse_constant=_reject_constant)
                if isinstance(rows, dict):
                    rows = [rows]
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise ValueError("expected an array of objects")
            except ValueError as exc:
                return self._error(handler, method, dataset, 400, "json.parse", f"Malformed JSON: {exc}")
        else:
            rows = []

        with self._lock:
            fault = next((f for f in self.faults if f.matches(method, dataset)), None)
        query = parse_qs(parsed.query)
        if fault and fault.on_match:
            fault.on_match()
        if fault and fault.accepted:
            if fault.apply_after is not None:
                timer = threading.Timer(fault.apply_after, self._apply, (method, dataset, rows, query))
                timer.daemon = True
                timer.start()
            body = json.dumps({"message": "Accepted; processing"}).encode()
            return self._send(handler, method, dataset, 202, body, "application/json", len(rows))
        if fault and fault.message is not None:
            body = json.dumps({"message": fault.message}).encode()
            return self._send(handler, method, dataset, 200, body, "application/json", len(rows))
        if fault and fault.apply_first:
            answer = self._apply(method, dataset, rows, parse_qs(parsed.query))
        if fault:
            time.sleep(fault.delay)
            if fault.status:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                if fault.html:
                    return self._send(handler, method, dataset, fault.status, b"<html>bad gateway</html>", "text/html")
                return self._error(handler, method, dataset, fault.status, "internal", "fault injected", headers)
        if fault and (fault.cut or fault.not_json):
            self._apply(method, dataset, rows, parse_qs(parsed.query))
            with self._lock:
                self.requests.append(Request(method, dataset, len(rows), 200))
            body = b"<html>ok</html>" if fault.not_json else b'{"Errors": 0, "Rows Cre'
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html" if fault.not_json else "application/json")
            handler.send_header("Content-Length", str(len(body) + (0 if fault.not_json else 50)))
            handler.end_headers()
            handler.wfile.write(body)
            handler.close_connection = True
            return None
        if fault and fault.lose:
            answer = {"Errors": 0, "Rows Created": len(rows), "Rows Updated": 0, "Rows Deleted": 0}
        elif fault and fault.corrupt and rows:
            changed = {
                k: v + 1 if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in rows[0].items()
            }
            answer = self._apply(method, dataset, [changed, *rows[1:]], query)
        elif not (fault and fault.apply_first):
            try:
                answer = self._apply(method, dataset, rows, query)
            except ValueError as exc:
                return self._error(handler, method, dataset, 400, "query.compiler.malformed", str(exc))
        if fault and fault.updated and isinstance(answer, dict):
            answer = {**answer, "Rows Created": 0, "Rows Updated": len(rows)}
        if fault and fault.errors and isinstance(answer, dict):
            answer = {**answer, "Errors": fault.errors}
        self._send(handler, method, dataset, 200, json.dumps(answer).encode(), "application/json", len(rows))

    def _apply(self, method: str, dataset: str, rows: list[dict[str, Any]], query: dict[str, list[str]]) -> Any:
        with self._lock:
            if method == "PUT":
                self.datasets[dataset] = list(rows)
            elif method == "POST":
                self.datasets[dataset].extend(rows)
            else:
                if query.get("$select") == ["count(*)"]:
                    return [{"count": str(len(self.datasets[dataset]))}]
                if "$select" in query:
                    return [aggregates(self.datasets[dataset], query["$select"][0])]
                return self.datasets[dataset]
            return {"Errors": 0, "Rows Created": len(rows), "Rows Updated": 0, "Rows Deleted": 0}

    def _error(self, handler, method, dataset, status, code, message, headers=None) -> None:
        body: dict[str, Any] = {"error": True, "message": message, "data": {}}
        if code:
            body = {"code": code, **body}
        self._send(handler, method, dataset, status, json.dumps(body).encode(), "application/json", headers=headers)

    def _send(self, handler, method, dataset, status, body, content_type, rows=0, headers=None) -> None:
        with self._lock:
            self.requests.append(Request(method, dataset, rows, status))
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (time-out); the write, if any, stays applied


_SELECT = re.compile(r"^\s*(count|sum|min|max)\(\s*(\*|`[^`]+`|[\w:]+)\s*\)\s+AS\s+(\w+)\s*$", re.IGNORECASE)


def aggregates(rows: list[dict[str, Any]], select: str) -> dict[str, str]:
    """One SoQL aggregate row as Socrata answers it: every value a string, null aggregates left out."""
    out: dict[str, str] = {}
    for item in select.split(","):
        match = _SELECT.match(item)
        if not match:
            raise ValueError(f"unsupported $select item {item!r}")
        how, field, alias = match[1].lower(), match[2].strip("`"), match[3]
        if how == "count":
            out[alias] = str(len(rows))
            continue
        values = [r[field] for r in rows if r.get(field) is not None]
        if not values:
            continue
        if how == "sum":
            out[alias] = str(sum((_decimal(v) for v in values), Decimal(0)))
        else:
            pick = min if how == "min" else max
            numeric = all(isinstance(v, int | float) for v in values)
            out[alias] = str(_decimal(pick(values, key=_decimal))) if numeric else str(pick(str(v) for v in values))
    return out


def _decimal(value: Any) -> Decimal:
    """A stored number as Socrata holds it: the decimal its JSON text wrote."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
