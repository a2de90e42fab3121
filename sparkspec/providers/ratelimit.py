"""Requests per minute toward the API, shared by every task of an apply.

A token bucket of `per_minute` tokens in which each spent token comes back a
minute after its request was answered: no 60-second window ever holds more
than `per_minute` requests, even as the server counts them (the API's own limit
is counted that way, 600 per account and model), and requests are not held back
otherwise. Creates and queries take a token each; downloads go to a file host
and take none.

When the API says the account is over its limit (a 429, or a 503 with Retry-After),
the call that heard it `pause`s the whole bucket for the time the API asked: no
request of any task of the apply is sent until that time has passed, as the limit is
the account's, not one task's. Requests already on the wire are not called back.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from sparkspec.config.model import DEFAULT_REQUESTS_PER_MINUTE

DEFAULT_PER_MINUTE = DEFAULT_REQUESTS_PER_MINUTE
PERIOD = 60.0


class RateLimiter:
    def __init__(self, per_minute: int = DEFAULT_PER_MINUTE, *, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.period = period
        self.clock = clock
        self.sleep = sleep
        self._answered: list[float] = []  # a heap: when each request of the last minute was answered
        self._in_flight = 0
        self._changed: asyncio.Condition | None = None
        self._pauses = 0  # pauses in force: no token is handed out while any is
        self.waited = 0.0  # seconds callers spent waiting for a token, for reports
        self.paused = 0.0  # seconds of pauses the API asked for, for reports

    async def pause(self, seconds: float) -> None:
        """Hold every request of the apply for `seconds`, and return when they have passed.

        Overlapping pauses hold requests until the last one ends. The wait is the
        injected sleep's, so tests that do not sleep do not wait either."""
        changed = self._changed = self._changed or asyncio.Condition()
        self._pauses += 1
        self.paused += seconds
        try:
            await self.sleep(seconds)
        finally:
            async with changed:
                self._pauses -= 1
                changed.notify_all()

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Hold a token for one request. It comes back a minute after the request's answer
        (or failure), not after its start: the server saw the request before that, so a
        slow network cannot squeeze two minutes' requests into one of the server's."""
        changed = self._changed = self._changed or asyncio.Condition()
        async with changed:
            while True:
                if self._pauses:  # the API asked the whole account to wait
                    await changed.wait()
                    continue
                now = self.clock()
                while self._answered and now - self._answered[0] >= self.period:
                    heapq.heappop(self._answered)
                if len(self._answered) + self._in_flight < self.per_minute:
                    self._in_flight += 1
                    break
                if not self._answered:  # every token is in flight: wait for an answer
                    await changed.wait()
                    continue
                pause = self.period - (now - self._answered[0])
                self.waited += pause
                changed.release()
                try:
                    await self.sleep(pause)
                finally:
                    await changed.acquire()
        try:
            yield
        finally:
            async with changed:
                self._in_flight -= 1
                heapq.heappush(self._answered, self.clock())
                changed.notify_all()
