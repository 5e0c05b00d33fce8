"""The one retry/backoff helper: call a function again on transient failures, with a bound.

Built on ``tenacity``: exponential backoff (``backoff``, 2×, 4×, … seconds, optionally stretched by
a random ``jitter``, or the server's ``Retry-After`` when the failure carries one), at most
``attempts`` calls and, when ``within`` is given, no new attempt once that many seconds have passed
since the first one. Each retry logs one line (WARNING unless ``level`` says otherwise: polling for
a queued result is expected to repeat); giving up raises :class:`GaveUp` carrying the last reason,
which the caller turns into its own one-line domain error. Only the exception types named in ``on`` are retried:
anything else (a refused request, Ctrl-C, SIGTERM) goes straight through.

Domain rules (log in again and restart a MicroStrategy download from row 0; restart a Socrata
dataset from its replacing chunk) stay in the domain modules: this module only waits and repeats.

    from bond_reporting import retry

    def get():
        response = session.get(url, timeout=(10, 60))
        if response.status_code == 429 or response.status_code >= 500:
            raise retry.Transient(f"HTTP {response.status_code}", retry_after=retry.retry_after(response))
        return response

    try:
        response = retry.call(get, what=f"GET {url}", attempts=4, backoff=1.0, logger=log,
                              on=(retry.Transient, requests.ConnectionError, requests.Timeout))
    except retry.GaveUp as exc:
        raise SourceError(str(exc)) from None   # "GET …: HTTP 503; gave up after 4 attempts in 7 s"
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import tenacity

T = TypeVar("T")

log = logging.getLogger(__name__)


class Transient(Exception):
    """A failure worth another attempt (e.g. HTTP 429/5xx); ``str()`` is its one-line reason.

    ``retry_after``: seconds the server asked to wait (HTTP ``Retry-After``), used instead of the
    backoff for the next wait.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every allowed attempt failed. ``str()``: ``<what>: <last reason>; gave up after N attempts in S s``.

    ``last`` is the last exception, ``attempts`` how many calls were made.
    """

    def __init__(self, what: str, reason: str, attempts: int, seconds: float, last: BaseException) -> None:
        plural = "s" * (attempts > 1)
        super().__init__(f"{what}: {reason}; gave up after {attempts} attempt{plural} in {seconds:.0f} s")
        self.what, self.reason, self.attempts, self.seconds, self.last = what, reason, attempts, seconds, last


def call(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int | None,
    backoff: float,
    on: tuple[type[BaseException], ...] = (Transient,),
    within: float | None = None,
    describe: Callable[[BaseException], str] = str,
    logger: logging.Logger | None = None,
    max_wait: float = 60.0,
    jitter: float = 0.0,
    level: int = logging.WARNING,
    sleep: Callable[[float], Any] | None = None,
) -> T:
    """Return ``fn()``, calling it again after an exception of a type in ``on``.

    ``attempts``: most calls in all (≥ 1; None: as many as ``within`` allows, which is then
    required). ``backoff``: seconds before the second call, doubled after each failure and
    multiplied by a random factor in [1, 1 + ``jitter``) (0: none), each wait at most ``max_wait``
    (a ``Transient.retry_after`` wins, not stretched, also capped). ``within``: seconds after the
    first call's start past which no new call is started and no wait goes beyond (None: no time
    bound); a call already started ends by its own time-out, so the worst case is ``within`` plus
    one call's time-out. ``describe(exc)`` is the one-line reason used in log lines and in
    :class:`GaveUp`; ``level`` the level of the line logged before each wait. Raises
    :class:`GaveUp` when the attempts or the time are used up; exceptions not in ``on`` propagate
    unchanged.
    """
    if attempts is None and within is None:
        raise ValueError("retry.call needs attempts or within (or both): an unbounded retry never gives up")
    logger = logger or log
    started = time.monotonic()
    exponential = tenacity.wait_exponential(multiplier=backoff, max=max_wait)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        seconds = min(exponential(state) * (1 + jitter * random.random()), max_wait)
        if isinstance(exc, Transient) and exc.retry_after is not None:
            seconds = min(max(exc.retry_after, 0.0), max_wait)
        if within is not None:
            seconds = min(seconds, max(within - (time.monotonic() - started), 0.0))
        return seconds

    stop: tenacity.stop.stop_base = (
        tenacity.stop_after_attempt(max(attempts, 1)) if attempts is not None else tenacity.stop_never
    )
    if within is not None:
        # No new attempt once the time is used up (a wait is never longer than what is left).
        stop = stop | tenacity.stop_after_delay(within)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        logger.log(
            level,
            "%s: %s; attempt %d%s, retrying in %.3g s",
            what,
            describe(exc) if exc else "failed",
            state.attempt_number,
            f" of {attempts}" if attempts is not None else "",
            wait_s,
        )

    retrying = tenacity.Retrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception_type(on),
        before_sleep=before_sleep,
        sleep=sleep or (lambda seconds: time.sleep(seconds)),  # looked up per call: tests may patch it
        reraise=False,
    )
    try:
        return retrying(fn)
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        assert last is not None
        raise GaveUp(what, describe(last), exc.last_attempt.attempt_number, time.monotonic() - started, last) from None


def retry_after(headers: Any) -> float | None:
    """Seconds from an HTTP ``Retry-After`` header: delta-seconds, or an HTTP date (seconds from now,
    0 when past; RFC 9110 §10.2.3). None when absent or unreadable."""
    value = (headers or {}).get("Retry-After")
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
