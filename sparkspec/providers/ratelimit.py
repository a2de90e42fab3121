"""Requests per minute toward the API, shared by every task of an apply.

A token bucket of `per_minute` tokens in which each spent token comes back a
minute after its request was answered: no 60-second window ever holds more
than `per_minute` requests, even as the server counts them (the API's own limit
is counted that way, 600 per account and model), and requests are not held back
otherwise. Creates and queries take a token each; downloads go to a file host
and take none.
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
        self.waited = 0.0  # seconds callers spent waiting for a token, for reports

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Hold a token for one request. It comes back a minute after the request's answer
        (or failure), not after its start: the server saw the request before that, so a
        slow network cannot squeeze two minutes' requests into one of the server's."""
        changed = self._changed = self._changed or asyncio.Condition()
        async with changed:
            while True:
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
