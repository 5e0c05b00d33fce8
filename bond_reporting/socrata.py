"""Where the payloads go: Socrata (chunked, retried, verified by content) or a local folder.

Both sinks send the same bytes: the JSON array ``render.JsonRenderer`` builds from a payload frame
(exactly ``json.dumps`` of the records: floats as floats, ints as ints, null never NaN, field order
kept). The folder sink is ``bond_reporting.folder_sink`` (all or nothing).

Publishing one dataset to Socrata (docs/socrata-publishing.md §3, §4, §5, §7, §8):

* the first chunk replaces the dataset (PUT), every further chunk is appended (POST); the body of
  each request is rendered when it is sent, so memory is bounded by a chunk;
* every answer is classified (``classify``):
  - **confirmed**: 200 with counts (``Rows Created``/``Rows Updated``…) and ``Errors`` 0 — which
    count holds the rows does not matter: the content check below decides;
  - **processing**: 202 — the write is queued; the rows are never re-sent: the dataset is polled
    (count and aggregates of the rows sent so far) until it shows them, at most
    ``processing_timeout`` seconds;
  - **refused**: 4xx, or a 200 whose JSON has a ``message`` and no counts (e.g. "Cannot update a
    synced dataset manually"): not retried, the server's message is in the error; 409 (write lock)
    and 429 (throttled) were refused before being applied and are re-sent after ``Retry-After`` or
    a backoff; 413 halves the chunk size and restarts the dataset;
  - **unknown**: 5xx, time-outs, broken or non-JSON answers: a PUT is re-sent (idempotent); a POST
    may have been applied, and re-sending it could duplicate rows (these datasets have no row
    identifier), so the dataset is restarted from its first, replacing chunk;
* the waiting and repeating (backoff with jitter, ``Retry-After``, the bounds, one WARNING line per
  retry naming the dataset, the rows and the call) is ``bond_reporting.retry``'s; what may be
  repeated, and what restarts the dataset instead, is decided here;
* afterwards the dataset is **verified by content**: ``$select=count(*)``, ``sum`` of every money
  field, ``min``/``max`` of ``date`` (datasets without money: ``min``/``max`` of their first, key
  field) must equal the same figures computed from the payload — exactly, as decimals (Socrata
  sums numbers as decimals; the payload's numbers are their JSON text). A mismatch restarts the
  dataset.

A failure ends in one PublishError line naming the dataset and what is known of it: unchanged
(nothing was written), or possibly partial; a dataset that verification proves complete is never
reported as failed. ``publish_all`` adds which datasets were replaced and verified and which are
unchanged, and returns / attaches a :class:`DatasetResult` per dataset.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
import requests
import urllib3

from bond_reporting import render, retry
from bond_reporting.calculations import MONEY_FIELDS
from bond_reporting.errors import ConfigError, EtlError, PublishError
from bond_reporting.folder_sink import FolderSink
from bond_reporting.progress import DEFAULT_INTERVAL, Progress
from bond_reporting.settings import socrata_host

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DatasetResult",
    "FolderSink",
    "PublishFailed",
    "SocrataPublisher",
    "payload_figures",
    "publish_all",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_TIMEOUT = 300.0  # seconds per request: large upserts are slow (docs/socrata-publishing.md §6)
DEFAULT_PROCESSING_TIMEOUT = 900.0  # seconds to wait for a 202 (queued) write to show
JITTER = 0.25  # each backoff wait × [1, 1.25): clients that failed together do not retry together
POLL_MAX_WAIT = 30.0  # seconds between two looks at a dataset whose write was queued (202)
NO_ANSWER = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)

T = TypeVar("T")

# What is known of a dataset after a publish.
UNCHANGED = "unchanged"  # nothing was written (every write refused, or none attempted)
VERIFIED = "replaced and verified"  # the content check proved the new rows are all there
PARTIAL = "possibly partial"  # a write may have been applied and completeness is not proven

_STATE_TEXT = {
    UNCHANGED: "the dataset is unchanged",
    PARTIAL: "the dataset may now hold only part of the new rows",
}


# ---------------------------------------------------------------------------------------------
# Rendering (kept for callers; the work is in bond_reporting.render)
# ---------------------------------------------------------------------------------------------


def render_records(frame: pd.DataFrame, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
    """Rows ``start:stop`` of a payload frame as JSON records (what Socrata reads back from the bytes
    ``render.JsonRenderer`` sends): keys in column order, null for missing."""
    return json.loads(render.JsonRenderer(frame).array(start, stop))


def payload_json(frame: pd.DataFrame, chunk_size: int = render.DEFAULT_RENDER_ROWS) -> Iterator[str]:
    """The exact JSON array text ``json.dumps(all_records)`` would give, produced piecewise."""
    for piece in render.json_array(frame, chunk_size):
        yield piece.decode("ascii")


# ---------------------------------------------------------------------------------------------
# Figures: what the dataset must show afterwards
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One aggregate: its SoQL alias and expression, and the value the payload gives (None: the
    aggregate has no value, e.g. the sum of no rows — Socrata then leaves the field out)."""

    alias: str
    soql: str
    expected: str | None
    numeric: bool


def _figures(frame: pd.DataFrame) -> list[Figure]:
    figures = [Figure("row_count", "count(*)", str(len(frame)), True)]
    money = [c for c in frame.columns if c in MONEY_FIELDS]
    for name in money:
        figures.append(Figure(f"total_{name.lower()}", f"sum(`{name}`)", _exact_sum(frame[name]), True))
    ranged = ["date"] if "date" in frame.columns else []
    if not money and not ranged and len(frame.columns):
        ranged = [str(frame.columns[0])]  # no money: the key's range
    for name in ranged:
        column = frame[name]
        numeric = isinstance(column.dtype, np.dtype) and column.dtype.kind in "iuf"
        present = column.dropna()
        for how in ("min", "max"):
            value = getattr(present, how)() if len(present) else None
            text = None if value is None else (_number_text(value) if numeric else str(value))
            figures.append(Figure(f"{how}_{name.lower()}", f"{how}(`{name}`)", text, numeric))
    return figures


def payload_figures(frame: pd.DataFrame) -> dict[str, str | None]:
    """The figures a published dataset must show for this payload, keyed by name:
    ``row_count``, ``total_<money field>`` (exact decimal sums), ``min_date``/``max_date`` (or the
    key's range for datasets without money). Values are strings as Socrata answers them."""
    return {f.alias: f.expected for f in _figures(frame)}


def _number_text(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float | np.floating) else str(int(value))


def _exact_sum(column: pd.Series) -> str | None:
    """The exact decimal sum of a column's JSON numbers (what Socrata's ``sum`` gives)."""
    values = column.to_numpy(np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    cents = np.rint(values * 100)
    if np.all(np.abs(values) < 1e13) and np.array_equal(cents / 100, values) and np.all(np.round(values, 2) == values):
        # Every amount is whole cents (real money): its JSON text is the 2-decimal number, so the
        # integer sum of cents is exact.
        return str(Decimal(int(cents.astype(np.int64).astype(object).sum())).scaleb(-2))
    return str(sum((Decimal(repr(v)) for v in values.tolist()), Decimal(0)))


def _same(figure: Figure, answer: Any) -> bool:
    if answer is None or figure.expected is None:
        return answer is None and figure.expected is None
    if not figure.numeric:
        return str(answer) == figure.expected
    try:
        return Decimal(str(answer)) == Decimal(figure.expected)
    except InvalidOperation:
        return False


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetResult:
    """What one publish did to one dataset: ``state`` is UNCHANGED, VERIFIED or PARTIAL; ``figures``
    are the payload's (``payload_figures``); ``error`` the failure line, if any."""

    dataset_id: str
    state: str
    rows: int
    figures: Mapping[str, str | None]
    seconds: float = 0.0
    error: str | None = None


class DatasetPublishError(PublishError):
    """One dataset failed; ``result`` says what is known of it."""

    def __init__(self, message: str, result: DatasetResult) -> None:
        super().__init__(message)
        self.result = result


class PublishFailed(PublishError):
    """``publish_all`` failed; ``results`` holds one DatasetResult per dataset, in publish order."""

    def __init__(self, message: str, results: list[DatasetResult]) -> None:
        super().__init__(message)
        self.results = results


class Sink(Protocol):
    """Receives one payload per dataset.

    ``publish`` replaces the dataset's content (returning its DatasetResult, or None when the sink
    has nothing to add) or raises PublishError. Optional ``begin``/``commit``/``abort`` bracket a
    run; a sink with ``atomic = True`` makes nothing visible before ``commit``.
    """

    description: str

    def publish(self, dataset_id: str, frame: pd.DataFrame) -> DatasetResult | None: ...


# ---------------------------------------------------------------------------------------------
# Socrata
# ---------------------------------------------------------------------------------------------


# SO_WEB is parsed in one place (bond_reporting/settings.py); the publisher's name for it.
socrata_domain = socrata_host


class _Restart(Exception):
    """The dataset must be re-published from its first (replacing) chunk."""


class _TooLarge(Exception):
    """The server refused a body as too large (413)."""


class _Mismatch(PublishError):
    """The content check failed (raised only when giving up)."""


@dataclass
class Answer:
    """A classified answer to a write: ``kind`` is confirmed, processing, refused or unknown."""

    kind: str
    status: int
    reason: str
    counts: dict[str, int] | None = None


_COUNT_KEYS = ("Errors", "Rows Created", "Rows Updated", "Rows Deleted")


def classify(status: int, body: bytes, content_type: str = "") -> Answer:
    """Classify a write's answer (docs/socrata-publishing.md §4, §5; see the module docstring)."""
    parsed: Any = None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    message = _server_message(parsed, body, content_type)
    if status == 200:
        if isinstance(parsed, dict) and any(k in parsed for k in _COUNT_KEYS):
            try:
                counts = {k: int(parsed.get(k) or 0) for k in _COUNT_KEYS}
            except (TypeError, ValueError):
                return Answer("unknown", status, f"HTTP 200 with unreadable counts: {_short(body)}")
            if counts["Errors"]:
                return Answer("refused", status, f"Socrata reported {counts['Errors']} row errors", counts)
            return Answer("confirmed", status, "", counts)
        if isinstance(parsed, dict) and parsed.get("message"):
            return Answer("refused", status, f"Socrata refused the write: {message} (HTTP 200 without counts)")
        return Answer("unknown", status, f"HTTP 200 without counts: {message}")
    if status == 202:
        return Answer("processing", status, "HTTP 202 (accepted, still processing)")
    if 400 <= status < 500:
        return Answer("refused", status, f"HTTP {status}: {message}" if message else f"HTTP {status}")
    return Answer("unknown", status, f"HTTP {status}: {message}" if message else f"HTTP {status}")


def _server_message(parsed: Any, body: bytes, content_type: str) -> str:
    """The server's own words on one line: the JSON ``message``, or a note that the body is HTML."""
    if isinstance(parsed, dict):
        for key in ("message", "error"):
            if isinstance(parsed.get(key), str) and parsed[key].strip():
                return _short(parsed[key].encode())
    text = body.lstrip()[:200].lower()
    if "html" in content_type.lower() or text.startswith((b"<!doctype", b"<html")):
        return "an HTML page, not JSON"
    return _short(body) if body else ""


def _short(body: bytes, limit: int = 300) -> str:
    return " ".join(body.decode("utf-8", "replace").split())[:limit]


@dataclass
class SocrataPublisher:
    """Publishes payload frames to Socrata datasets over HTTPS with requests (module docstring).

    ``sleep``, ``backoff``, ``timeout``, ``processing_timeout`` and ``verify`` (a CA bundle path or
    bool) are injectable so tests run fast against a loopback HTTPS server.
    """

    domain: str
    app_token: str | None = field(default=None, kw_only=True)
    key_id: str = field(default="", kw_only=True, repr=False)
    key_secret: str = field(default="", kw_only=True, repr=False)
    chunk_size: int = field(default=DEFAULT_CHUNK_SIZE, kw_only=True)
    timeout: float = field(default=DEFAULT_TIMEOUT, kw_only=True)
    attempts: int = field(default=5, kw_only=True)
    restarts: int = field(default=3, kw_only=True)
    backoff: float = field(default=2.0, kw_only=True)
    max_wait: float = field(default=300.0, kw_only=True)
    processing_timeout: float = field(default=DEFAULT_PROCESSING_TIMEOUT, kw_only=True)
    progress_interval: float = field(default=DEFAULT_INTERVAL, kw_only=True)
    sleep: Callable[[float], None] = field(default=time.sleep, kw_only=True, repr=False)
    verify: bool | str = field(default=True, kw_only=True)
    _touched: bool = field(default=False, init=False, repr=False)
    _warned_token: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"chunk size must be at least 1, got {self.chunk_size}")
        self.domain = socrata_domain(self.domain)
        self.app_token = self.app_token or None

    @property
    def description(self) -> str:
        return f"https://{self.domain}"

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.auth = (self.key_id, self.key_secret)
        session.headers["Accept"] = "application/json"
        if self.app_token:
            session.headers["X-App-Token"] = self.app_token
        elif not self._warned_token:
            self._warned_token = True  # once per run, not once per dataset
            log.warning("SO_TOKEN is not set: Socrata throttles requests without an app token")
        return session

    def publish(self, dataset_id: str, frame: pd.DataFrame) -> DatasetResult:
        """Replace the dataset's rows with the payload's and verify them by content.

        Raises DatasetPublishError whose message and ``result.state`` say whether the dataset is
        unchanged or possibly partial.
        """
        started = time.perf_counter()
        self._touched = False
        figures = _figures(frame)
        expected = {f.alias: f.expected for f in figures}
        with self._session() as session:
            try:
                self._publish(session, dataset_id, frame, figures)
            except Exception as exc:  # noqa: BLE001 - every failure becomes one line saying what is known
                error = _named(dataset_id, exc)
                state = PARTIAL if self._touched else UNCHANGED
                if state == PARTIAL and not isinstance(exc, _Mismatch) and self._proven(session, dataset_id, figures):
                    log.warning("%s: %s; but the dataset is verified complete", dataset_id, error)
                    return DatasetResult(dataset_id, VERIFIED, len(frame), expected, time.perf_counter() - started)
                message = f"{error} ({_STATE_TEXT[state]})"
                result = DatasetResult(dataset_id, state, len(frame), expected, time.perf_counter() - started, message)
                raise DatasetPublishError(message, result) from None
        return DatasetResult(dataset_id, VERIFIED, len(frame), expected, time.perf_counter() - started)

    def _publish(self, session: requests.Session, dataset_id: str, frame: pd.DataFrame, figures: list[Figure]) -> None:
        """Publish the whole dataset and verify it; on a _Restart start again from its first chunk."""
        renderer = render.JsonRenderer(frame)  # refuses infinities etc. before anything is sent

        def whole_dataset() -> None:
            while True:
                try:
                    self._send_all(session, dataset_id, frame, renderer)
                    break
                except _TooLarge:
                    if self.chunk_size == 1:
                        raise PublishError(f"{dataset_id}: HTTP 413, even a single record is too large") from None
                    self.chunk_size = max(1, self.chunk_size // 2)
                    log.warning(
                        "%s: HTTP 413 body too large; restarting with %d rows per request", dataset_id, self.chunk_size
                    )
            mismatch = self._check(session, dataset_id, figures)
            if mismatch:
                raise _Restart(f"verification after publishing: {mismatch}")

        try:
            self._retry(
                whole_dataset, f"{dataset_id}: publish from the first (replacing) chunk", self.restarts + 1, (_Restart,)
            )
        except retry.GaveUp as exc:
            error = _Mismatch if str(exc.last).startswith("verification") else PublishError
            raise error(
                f"{dataset_id}: {exc.last}; gave up after {exc.attempts} attempts at the whole dataset"
            ) from None

    def _send_all(self, session: requests.Session, dataset_id: str, frame: pd.DataFrame, renderer) -> None:
        """PUT the first chunk, POST the rest, each confirmed (or, if 202, shown by the dataset)."""
        total = len(frame)
        progress = Progress(f"{dataset_id}: publishing", total, log, interval=self.progress_interval)
        starts = range(0, total, self.chunk_size) if total else range(1)  # an empty payload: one empty PUT
        for index, start in enumerate(starts):
            stop = min(start + self.chunk_size, total)
            first = index == 0
            method = "PUT" if first else "POST"
            what = f"{method} rows {start + 1}-{stop} of {total}"
            answer = self._write(session, dataset_id, what, method, renderer.array(start, stop), idempotent=first)
            if answer.kind == "processing":
                self._await(session, dataset_id, frame.iloc[:stop], what)
            elif answer.counts is not None and answer.counts["Rows Created"] + answer.counts["Rows Updated"] != (
                stop - start
            ):
                log.debug("%s: %s: Socrata counted %s", dataset_id, what, answer.counts)
            log.debug("%s: %s done (%s)", dataset_id, what, answer.kind)
            progress.update(stop)

    def _await(self, session: requests.Session, dataset_id: str, sent: pd.DataFrame, what: str) -> None:
        """A 202: poll until the dataset shows exactly the rows sent so far; never re-send them."""
        figures = _figures(sent)
        started = time.monotonic()

        def shown() -> None:
            mismatch = self._check(session, dataset_id, figures)
            if mismatch:
                raise retry.Transient(mismatch)  # not shown yet

        try:
            self._retry(
                shown,
                f"{dataset_id}: {what}: 202 accepted, not shown yet",
                None,
                within=self.processing_timeout,
                max_wait=min(self.max_wait, POLL_MAX_WAIT),
                level=logging.DEBUG,
            )
        except retry.GaveUp as exc:
            raise PublishError(
                f"{dataset_id}: {what}: Socrata answered 202 (still processing) and the dataset did not show "
                f"the rows within {exc.seconds:.0f} s ({exc.reason})"
            ) from None
        log.info("%s: %s: applied after %.0f s (202 accepted)", dataset_id, what, time.monotonic() - started)

    def _check(self, session: requests.Session, dataset_id: str, figures: list[Figure]) -> str:
        """'' when the dataset shows every figure, else what differs (one line)."""
        select = ", ".join(f"{f.soql} AS {f.alias}" for f in figures)
        answer = self._request(session, dataset_id, "GET aggregates", "GET", params={"$select": select})
        try:
            row = json.loads(answer.content)[0]
            if not isinstance(row, dict):
                raise TypeError
        except (ValueError, TypeError, IndexError, KeyError):
            raise PublishError(
                f"{dataset_id}: unexpected answer to $select={select}: {_short(answer.content, 200)}"
            ) from None
        wrong = [
            f"{f.alias} {row.get(f.alias)} (expected {f.expected})" for f in figures if not _same(f, row.get(f.alias))
        ]
        return ", ".join(wrong)

    def _proven(self, session: requests.Session, dataset_id: str, figures: list[Figure]) -> bool:
        """After a failure: does the dataset nevertheless show the whole payload?"""
        try:
            return not self._check(session, dataset_id, figures)
        except PublishError:
            return False

    def _write(
        self, session: requests.Session, dataset_id: str, what: str, method: str, body: bytes, *, idempotent: bool
    ) -> Answer:
        """Send one chunk; re-send it where safe. Returns a confirmed or processing Answer;
        raises _Restart, _TooLarge or PublishError."""

        def answer(response: requests.Response) -> Answer:
            answer = classify(response.status_code, response.content, response.headers.get("Content-Type", ""))
            if answer.kind in ("confirmed", "processing"):
                self._touched = True
                return answer
            if answer.status == 413:
                raise _TooLarge()
            if answer.status in (409, 429):  # refused before being applied: re-send as is
                raise retry.Transient(answer.reason, retry_after=retry.retry_after(response.headers))
            if answer.kind == "refused":
                if answer.counts is not None:
                    self._touched = True  # rows were applied, some refused
                raise PublishError(f"{dataset_id}: {what}: {answer.reason}")
            self._touched = True  # unknown: may have been applied
            if not idempotent:
                raise _Restart(f"{what}: {answer.reason} (may have been applied)")
            raise retry.Transient(answer.reason)

        headers = {"Content-Type": "application/json"}
        return self._call(session, dataset_id, what, method, answer, idempotent=idempotent, data=body, headers=headers)

    def _request(
        self, session: requests.Session, dataset_id: str, what: str, method: str, params: Mapping[str, str]
    ) -> requests.Response:
        """An idempotent read, repeated on 409/429/5xx and no answer; returns a 200 response or raises
        PublishError."""

        def answer(response: requests.Response) -> requests.Response:
            if response.status_code == 200:
                return response
            reason = classify(response.status_code, response.content, response.headers.get("Content-Type", "")).reason
            if response.status_code in (409, 429):
                raise retry.Transient(reason, retry_after=retry.retry_after(response.headers))
            if 400 <= response.status_code < 500:
                raise PublishError(f"{dataset_id}: {what}: {reason}")
            raise retry.Transient(reason)

        return self._call(session, dataset_id, what, method, answer, idempotent=True, params=params)

    def _call(
        self,
        session: requests.Session,
        dataset_id: str,
        what: str,
        method: str,
        answer: Callable[[requests.Response], T],
        *,
        idempotent: bool,
        **kwargs: Any,
    ) -> T:
        """One request, repeated by retry.call while ``answer`` (or a lost answer) raises retry.Transient.

        A request that got no answer but may have reached the server: a write is ``_touched``; one
        that is not ``idempotent`` raises _Restart instead of being sent again.
        """

        def attempt() -> T:
            try:
                response = session.request(
                    method, self._url(dataset_id), timeout=self.timeout, verify=self.verify, **kwargs
                )
            except requests.exceptions.SSLError as exc:
                raise PublishError(f"{dataset_id}: {what}: TLS error: {_short(str(exc).encode(), 200)}") from None
            except NO_ANSWER as exc:
                sent, reason = _maybe_sent(exc), self._no_answer(exc)
                if method != "GET":
                    self._touched |= sent
                    if sent and not idempotent:
                        raise _Restart(f"{what}: {reason} (may have been applied)") from None
                raise retry.Transient(reason) from None
            return answer(response)

        try:
            return self._retry(attempt, f"{dataset_id}: {what}", self.attempts)
        except retry.GaveUp as exc:
            raise PublishError(f"{dataset_id}: {what}: {exc.reason}; gave up after {exc.attempts} attempts") from None

    def _retry(self, fn: Callable[[], T], what: str, attempts: int | None, on=(retry.Transient,), **options: Any) -> T:
        """retry.call with this publisher's backoff, jitter, longest wait and (injectable) sleep."""
        options = {"backoff": self.backoff, "max_wait": self.max_wait, "jitter": JITTER, **options}
        return retry.call(fn, what=what, attempts=attempts, on=on, logger=log, sleep=self.sleep, **options)

    def _no_answer(self, exc: Exception) -> str:
        """Why a request got no answer, naming the host (and the OS's words where there are some)."""
        if isinstance(exc, requests.ConnectTimeout):
            return f"no connection to {self.domain} within {self.timeout:.0f} s"
        if isinstance(exc, requests.ReadTimeout):
            return f"no answer from {self.domain} within {self.timeout:.0f} s"
        words = re.search(r"\[Errno -?\d+\] ([^)'\"]+)|Failed to resolve '[^']*'", str(exc))
        detail = (words[1] or words[0]).strip() if words else type(exc).__name__
        if not _maybe_sent(exc):
            return f"cannot connect to {self.domain}: {detail}"
        return f"connection to {self.domain} broken before the answer ({detail})"

    def _url(self, dataset_id: str) -> str:
        return f"https://{self.domain}/resource/{dataset_id}.json"


def _maybe_sent(exc: Exception) -> bool:
    """Whether a request that got no answer may have reached the server (False only when the
    connection itself could not be made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


def _named(dataset_id: str, exc: Exception) -> PublishError:
    """The failure as a PublishError whose line starts with the dataset id (any EtlError's line
    kept as it is, e.g. a lost publish lock; anything else called unexpected)."""
    if not isinstance(exc, EtlError):
        return _unexpected(dataset_id, exc)
    return exc if str(exc).startswith(f"{dataset_id}:") else PublishError(f"{dataset_id}: {exc}")


def _unexpected(dataset_id: str, exc: Exception) -> PublishError:
    return PublishError(f"{dataset_id}: unexpected {type(exc).__name__}: {_short(str(exc).encode())}")


# ---------------------------------------------------------------------------------------------
# Publishing all datasets
# ---------------------------------------------------------------------------------------------


def publish_all(
    sink: Sink,
    payloads: Mapping[str, pd.DataFrame],
    *,
    on_start: Callable[[str, Mapping[str, str | None]], None] | None = None,
    on_result: Callable[[DatasetResult], None] | None = None,
) -> dict[str, int]:
    """Publish every payload in the given (publish) order; one log line per dataset.

    ``on_start(dataset_id, figures)`` is called before a dataset's first write (an exception there
    fails the dataset as unchanged, like a refused write), ``on_result`` with
    each final DatasetResult (for an atomic sink, after its commit). Returns rows per dataset. On
    failure raises :class:`PublishFailed` — one line naming the dataset, what is known of it, which
    datasets were replaced and verified and which are unchanged — with every DatasetResult.
    """
    atomic = bool(getattr(sink, "atomic", False))
    results: list[DatasetResult] = []
    ids = list(payloads)
    begin = getattr(sink, "begin", None)
    try:
        if begin:
            begin()
        for position, (dataset_id, frame) in enumerate(payloads.items()):
            started = time.perf_counter()
            figures = payload_figures(frame)
            try:
                if on_start:  # e.g. confirm the publish lock, mark the dataset: a failure writes nothing
                    on_start(dataset_id, figures)
                result = sink.publish(dataset_id, frame)
            except Exception as exc:  # noqa: BLE001 - any failure still becomes one line naming what was done
                failed = _failed_result(dataset_id, frame, figures, exc, started)
                _abort(sink)
                raise _failure(sink, atomic, results, failed, ids[position + 1 :], payloads) from None
            if result is None:
                result = DatasetResult(dataset_id, VERIFIED, len(frame), figures, time.perf_counter() - started)
            results.append(result)
            if not atomic and on_result:
                on_result(result)
            log.info(
                "%s: %d rows %s to %s in %.1f s",
                dataset_id,
                len(frame),
                "staged" if atomic else "published and verified",
                sink.description,
                result.seconds,
            )
        commit = getattr(sink, "commit", None)
        if commit:
            commit()
    except PublishFailed:
        raise
    except PublishError as exc:  # begin or commit
        _abort(sink)
        unchanged = [
            DatasetResult(i, UNCHANGED, len(payloads[i]), payload_figures(payloads[i]), error=str(exc)) for i in ids
        ]
        raise PublishFailed(
            f"{exc}; nothing was written: {sink.description} keeps its previous content", unchanged
        ) from None
    if atomic:
        if on_result:
            for result in results:
                on_result(result)
        log.info("%d dataset(s) written to %s", len(results), sink.description)
    return {r.dataset_id: r.rows for r in results}


def _abort(sink: Sink) -> None:
    abort = getattr(sink, "abort", None)
    if abort:
        abort()


def _failed_result(
    dataset_id: str, frame: pd.DataFrame, figures: Mapping[str, str | None], exc: Exception, started: float
) -> DatasetResult:
    if isinstance(exc, DatasetPublishError):
        return exc.result
    error = _named(dataset_id, exc)
    return DatasetResult(dataset_id, UNCHANGED, len(frame), figures, time.perf_counter() - started, str(error))


def _failure(
    sink: Sink,
    atomic: bool,
    done: list[DatasetResult],
    failed: DatasetResult,
    rest: list[str],
    payloads: Mapping[str, pd.DataFrame],
) -> PublishFailed:
    untouched = [DatasetResult(i, UNCHANGED, len(payloads[i]), payload_figures(payloads[i])) for i in rest]
    if atomic:
        results = [DatasetResult(r.dataset_id, UNCHANGED, r.rows, r.figures, r.seconds) for r in done] + [
            DatasetResult(failed.dataset_id, UNCHANGED, failed.rows, failed.figures, failed.seconds, failed.error)
        ]
        return PublishFailed(
            f"{failed.error}; nothing was written: {sink.description} keeps its previous content", results + untouched
        )
    verified = ", ".join(r.dataset_id for r in done) or "none"
    error = failed.error or ""
    if failed.state == UNCHANGED and "(the dataset is " not in error:  # e.g. stopped before its first write
        error += " (the dataset is unchanged)"
    message = f"{error}; replaced and verified: {verified}; unchanged: {', '.join(rest) or 'none'}"
    return PublishFailed(message, [*done, failed, *untouched])
