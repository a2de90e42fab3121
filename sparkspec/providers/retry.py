"""When a call to a provider's API is tried again, and how long to wait first.

One policy serves the three calls (create, query, download). Queries and downloads
change nothing on the server, so any fault that may pass (a broken connection, a
timeout, 408/409/429/5xx) is retried. A create is different: the API has no
idempotency key, so a create retried after it reached the server may be a second
paid task. `create_may_be_retried` is that money rule, in one place.

The server may say better: `x-should-retry: false` stops retrying any call, and
`x-should-retry: true` allows it (for a create, only on an error answer, which
makes no task); `Retry-After` (seconds or an HTTP date) replaces the backoff.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

from sparkspec.apifacts import UNAVAILABLE

# The connection never reached the server: nothing can have been created.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Answers that refuse a create outright; 504 is absent: the gateway may have passed it on.
CREATE_REFUSED = frozenset({429, 500, 502, 503})
# Answers worth asking again for a query or a download (the upstream SDKs use the same set).
PASSING = frozenset({408, 409, 429})
# UNAVAILABLE, the API's own "service unavailable", said in an error answer is a refusal: no
# task was made.


def is_unavailable(code: str | None) -> bool:
    """The API's error code 003021099, however it was written (a number loses its zeros)."""
    return code is not None and code.strip().isdigit() and code.strip().zfill(len(UNAVAILABLE)) == UNAVAILABLE


def should_retry_header(headers: httpx.Headers | None) -> bool | None:
    """The server's own word (`x-should-retry`), or None when it gave none."""
    value = (headers or httpx.Headers()).get("x-should-retry", "").strip().lower()
    return {"true": True, "false": False}.get(value)


def create_may_be_retried(exc: httpx.TransportError | None = None, status: int | None = None,
                          headers: httpx.Headers | None = None, code: str | None = None) -> bool:
    """The money rule: retry a create only where the server cannot have made a task.

    That is a connection never established, or an error answer the server gives
    instead of a task (429, 500, 502, 503, the API's code 003021099 under any error
    status, or any error it marks `x-should-retry: true`). A timeout after the body
    was sent, a dropped connection, a 504 or an unreadable 2xx may hide a created
    task: retrying could pay twice.
    """
    if exc is not None:
        return isinstance(exc, NOT_SENT)
    if status is None or status < 400:
        return False
    said = should_retry_header(headers)
    if said is not None:
        return said
    return status in CREATE_REFUSED or is_unavailable(code)


def read_may_be_retried(exc: httpx.TransportError | None = None, status: int | None = None,
                        headers: httpx.Headers | None = None, code: str | None = None) -> bool:
    """A query or a download changes nothing: any fault that may pass is retried."""
    if exc is not None:
        return True
    said = should_retry_header(headers)
    if said is not None:
        return said
    return status is not None and (status in PASSING or status >= 500 or is_unavailable(code))


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, and how long in all, one call may be tried again."""

    max_retries: int = 5
    max_wait: float = 120.0  # seconds of sleeps one call may spend

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter (0.25 s, 0.5 s, ... up to 8 s), or the server's Retry-After."""
        if retry_after is not None:
            return retry_after
        base: float = min(8.0, 0.5 * 2 ** (attempt - 1))
        return base * (0.5 + rng.random() / 2)

    def gives_up(self, attempt: int, waited: float, delay: float) -> bool:
        return attempt > self.max_retries or waited + delay > self.max_wait


def retry_after(headers: httpx.Headers) -> float | None:
    """`Retry-After` in seconds: a number, or an HTTP date from now."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
