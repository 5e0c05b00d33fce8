"""Where the payloads go: Socrata (chunked, retried, count-verified) or a local folder.

Both sinks send the same thing: the JSON array ``render.JsonRenderer`` builds from a payload frame
(exactly ``json.dumps`` of its records: floats as floats, ints as ints, null never NaN, field order kept).

Publishing one dataset to Socrata (socrata-publishing.md §3, §7, §8):

* the first chunk replaces the dataset (PUT), every further chunk is appended (POST upsert);
  records are rendered one chunk at a time, so memory is bounded by a chunk;
* 429 (and 409, the write lock) refused the request, so it is re-sent after ``Retry-After`` or a
  backoff; a PUT or GET is idempotent and is re-sent after 5xx/time-outs too;
* a POST that fails with 5xx, a time-out or a broken connection may have been applied; re-sending
  it could duplicate rows (these datasets have no row identifier), so the dataset is restarted from
  its first, replacing chunk;
* 413 halves the chunk size (kept for the rest of the run) and restarts the dataset;
* each response must report ``Errors`` 0, the summed ``Rows Created`` must equal the rows sent,
  and ``$select=count(*)`` must equal the payload's row count afterwards.

Failures end in one PublishError line naming the dataset and what was and was not published.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pandas as pd
import requests
import requests.adapters

from bond_reporting import render, storage
from bond_reporting.errors import ConfigError, PublishError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_TIMEOUT = 300.0  # seconds per request: large upserts are slow (socrata-publishing.md §6)


# ---------------------------------------------------------------------------------------------
# Rendering
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
# Sinks
# ---------------------------------------------------------------------------------------------


class Sink(Protocol):
    """Receives one payload per dataset. ``publish`` replaces the dataset's content or raises PublishError."""

    description: str

    def publish(self, dataset_id: str, frame: pd.DataFrame) -> None: ...


@dataclass
class FolderSink:
    """Writes ``DIR/<id>.json`` (exactly the array Socrata would get) and ``DIR/<id>.csv`` for people.

    Each file is written to a temporary name in DIR and renamed over the target, so a reader never
    sees a half-written file.
    """

    directory: Path
    chunk_size: int = DEFAULT_CHUNK_SIZE

    @property
    def description(self) -> str:
        return f"folder {self.directory}"

    def publish(self, dataset_id: str, frame: pd.DataFrame) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with _atomic_file(self.directory / f"{dataset_id}.json") as out:
                out.writelines(render.json_array(frame))
            with _atomic_file(self.directory / f"{dataset_id}.csv") as out:
                out.writelines(render.csv_lines(frame))
        except OSError as exc:
            raise PublishError(f"{dataset_id}: cannot write to {self.directory}: {exc}") from None


@contextmanager
def _atomic_file(target: Path) -> Iterator[BinaryIO]:
    """A binary file written under a temporary name in the target's folder, renamed over it on success
    (the project's one atomic writer, :func:`bond_reporting.storage.open_atomic`: umask permissions)."""
    with storage.open_atomic(target, "wb") as out:
        yield out


def socrata_domain(value: str) -> str:
    """``SO_WEB`` → bare domain (``https://host/`` accepted); plain http is refused."""
    domain = value.strip()
    if domain.lower().startswith("http://"):
        raise ConfigError("SO_WEB must be an https domain (Socrata writes need HTTPS), not http://")
    if domain.lower().startswith("https://"):
        domain = domain[len("https://") :]
    domain = domain.rstrip("/")
    if not domain or "/" in domain:
        raise ConfigError(f"SO_WEB must be a domain such as data.austintexas.gov, got {value!r}")
    return domain


class _VerifyingAdapter(requests.adapters.HTTPAdapter):
    """Sends every request with the given ``verify`` (a CA bundle path, or False)."""

    def __init__(self, verify: bool | str) -> None:
        super().__init__()
        self._verify = verify

    def send(self, request, **kwargs):  # type: ignore[override]
        kwargs["verify"] = self._verify
        return super().send(request, **kwargs)


class _Restart(Exception):
    """The dataset must be re-published from its first (replacing) chunk."""


class _TooLarge(Exception):
    """The server refused a body as too large (413)."""


class SocrataPublisher:
    """Publishes payload frames to Socrata datasets with sodapy (see the module docstring).

    ``sleep``, ``backoff``, ``timeout`` and ``verify`` (a CA bundle path or bool) are injectable so
    tests run fast against a loopback HTTPS server.
    """

    def __init__(
        self,
        domain: str,
        *,
        app_token: str | None,
        key_id: str,
        key_secret: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = 5,
        restarts: int = 3,
        backoff: float = 2.0,
        max_wait: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        verify: bool | str = True,
    ) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk size must be at least 1, got {chunk_size}")
        self.domain = socrata_domain(domain)
        self.app_token = app_token or None
        self._auth = (key_id, key_secret)
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.attempts = attempts
        self.restarts = restarts
        self.backoff = backoff
        self.max_wait = max_wait
        self.sleep = sleep
        self.verify = verify
        self._touched = False  # a write of the current dataset may have been applied

    @property
    def description(self) -> str:
        return f"https://{self.domain}"

    def _client(self):
        from sodapy import Socrata

        client = Socrata(
            self.domain, self.app_token, username=self._auth[0], password=self._auth[1], timeout=self.timeout
        )
        if self.verify is not True:
            # requests lets REQUESTS_CA_BUNDLE override Session.verify; an adapter has the last word.
            client.session.mount("https://", _VerifyingAdapter(self.verify))
        return client

    def publish(self, dataset_id: str, frame: pd.DataFrame) -> None:
        """Replace the dataset's rows with the payload's, verified by count; PublishError when that fails.

        The error says whether the dataset is unchanged (every write was refused) or may now hold
        only part of the new rows.
        """
        self._touched = False
        try:
            with self._client() as client:
                self._publish(client, dataset_id, frame)
        except PublishError as exc:
            state = (
                "the dataset may now hold only part of the new rows" if self._touched else "the dataset is unchanged"
            )
            raise PublishError(f"{exc} ({state})") from None

    def _publish(self, client, dataset_id: str, frame: pd.DataFrame) -> None:
        total = len(frame)
        restarts = 0
        while True:
            try:
                created = self._send_all(client, dataset_id, frame)
                count = self._count(client, dataset_id)
                if count != total:
                    raise _Restart(f"the dataset holds {count} rows after publishing, expected {total}")
                if created is not None and created != total:
                    raise PublishError(
                        f"{dataset_id}: Socrata reported {created} rows created for {total} sent (row identifier?)"
                    )
                return
            except _TooLarge:
                if self.chunk_size == 1:
                    raise PublishError(f"{dataset_id}: HTTP 413, even a single record is too large") from None
                self.chunk_size = max(1, self.chunk_size // 2)
                log.warning(
                    "%s: HTTP 413 body too large; restarting with %d rows per request", dataset_id, self.chunk_size
                )
            except _Restart as exc:
                restarts += 1
                if restarts > self.restarts:
                    raise PublishError(
                        f"{dataset_id}: {exc}; gave up after {restarts} attempts at the whole dataset"
                    ) from None
                wait = self._backoff(restarts)
                log.warning("%s: %s; restarting from the first (replacing) chunk in %.1f s", dataset_id, exc, wait)
                self.sleep(wait)

    def _send_all(self, client, dataset_id: str, frame: pd.DataFrame) -> int | None:
        """PUT the first chunk, POST the rest. Returns the summed 'Rows Created' (None if not reported)."""
        created: int | None = 0
        sent = 0
        renderer = render.JsonRenderer(frame)
        starts = range(0, len(frame), self.chunk_size) if len(frame) else [0]  # an empty payload: one empty PUT
        for index, start in enumerate(starts):
            records = json.loads(renderer.array(start, start + self.chunk_size))
            first = index == 0
            method = client.replace if first else client.upsert
            what = f"{'PUT' if first else 'POST'} rows {sent + 1}-{sent + len(records)} of {len(frame)}"
            result = self._request(
                dataset_id, what, lambda m=method, r=records: m(dataset_id, r), idempotent=first, write=True
            )
            counts = _counts(result)
            if counts is None:
                created = None
            else:
                if counts["Errors"]:
                    raise PublishError(f"{dataset_id}: {what}: Socrata reported {counts['Errors']} row errors")
                if created is not None:
                    created += counts["Rows Created"]
            sent += len(records)
            log.debug("%s: %s done", dataset_id, what)
        return created

    def _count(self, client, dataset_id: str) -> int:
        result = self._request(
            dataset_id, "GET count(*)", lambda: client.get(dataset_id, select="count(*)"), idempotent=True
        )
        try:
            return int(result[0]["count"])
        except (TypeError, KeyError, IndexError, ValueError):
            raise PublishError(f"{dataset_id}: unexpected answer to $select=count(*): {str(result)[:200]}") from None

    def _request(
        self, dataset_id: str, what: str, call: Callable[[], Any], *, idempotent: bool, write: bool = False
    ) -> Any:
        """One request with retries in place where that is safe; raises _Restart/_TooLarge/PublishError."""
        for attempt in range(1, self.attempts + 1):
            try:
                result = call()
                self._touched |= write
                return result
            except requests.HTTPError as exc:
                response = exc.response
                status = response.status_code if response is not None else 0
                reason = f"HTTP {status} {_message(exc)}".strip()
                if status == 413:
                    raise _TooLarge() from None
                if status in (409, 429):
                    # Refused before being applied: re-sending the same request is safe.
                    wait = _retry_after(response) if response is not None else None
                elif status >= 500:
                    self._touched |= write  # a 5xx does not prove the write was not applied
                    if not idempotent:
                        raise _Restart(f"{what}: {reason} (may have been applied)") from None
                    wait = None
                else:
                    raise PublishError(f"{dataset_id}: {what}: {reason}") from None
            except requests.exceptions.SSLError as exc:
                raise PublishError(f"{dataset_id}: {what}: TLS error: {' '.join(str(exc).split())[:200]}") from None
            except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                # No (complete) answer: the request may or may not have been applied.
                reason = type(exc).__name__
                self._touched |= write and not isinstance(exc, requests.ConnectTimeout)
                if not idempotent and not isinstance(exc, requests.ConnectTimeout):
                    raise _Restart(f"{what}: {reason} (may have been applied)") from None
                wait = None
            except Exception as exc:  # noqa: BLE001 - e.g. sodapy's "Unknown response format" on a non-JSON 200
                reason = f"unexpected answer: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                self._touched |= write
                if not idempotent:
                    raise _Restart(f"{what}: {reason} (may have been applied)") from None
                wait = None
            if attempt == self.attempts:
                raise PublishError(f"{dataset_id}: {what}: {reason}; gave up after {attempt} attempts")
            wait = min(self.max_wait, wait if wait is not None else self._backoff(attempt))
            log.warning(
                "%s: %s: %s; retrying in %.1f s (attempt %d of %d)",
                dataset_id,
                what,
                reason,
                wait,
                attempt + 1,
                self.attempts,
            )
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: backoff × 2^(attempt−1) × [1, 1.25)."""
        return min(self.max_wait, self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4))


def _counts(result: Any) -> dict[str, int] | None:
    """The four common count keys of a write response (0 when absent), or None if there are none."""
    if not isinstance(result, dict):
        return None
    return {k: int(result.get(k) or 0) for k in ("Errors", "Rows Created", "Rows Updated", "Rows Deleted")}


def _message(exc: requests.HTTPError) -> str:
    """The server's message on one line (sodapy appends the JSON 'message'; HTML bodies are skipped)."""
    text = " ".join(str(exc).split())
    return text[:300]


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Publishing all datasets
# ---------------------------------------------------------------------------------------------


def publish_all(sink: Sink, payloads: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Publish every payload in the given (publish) order; one log line per dataset.

    Returns rows per dataset. On failure raises one PublishError line naming the dataset, what was
    published and what was not.
    """
    done: dict[str, int] = {}
    ids = list(payloads)
    for position, (dataset_id, frame) in enumerate(payloads.items()):
        started = time.perf_counter()
        try:
            sink.publish(dataset_id, frame)
        except Exception as exc:  # noqa: BLE001 - any failure still becomes one line naming what was done
            if not isinstance(exc, PublishError):
                exc = PublishError(f"{dataset_id}: unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            published = ", ".join(done) or "none"
            rest = ", ".join(ids[position + 1 :])
            not_published = dataset_id + (f", {rest}" if rest else "")
            raise PublishError(f"{exc}; published: {published}; not published: {not_published}") from None
        done[dataset_id] = len(frame)
        log.info(
            "%s: %d rows published to %s in %.1f s",
            dataset_id,
            len(frame),
            sink.description,
            time.perf_counter() - started,
        )
    return done
