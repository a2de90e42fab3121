"""Requests per minute toward the API, shared by every task of an apply.

A token bucket of `per_minute` tokens in which each spent token comes back a
minute after it was spent: no 60-second window ever holds more than
`per_minute` requests (the API's own limit is counted that way, 600 per account
and model), and requests are never held back while that is true. Creates and
queries take a token each; downloads go to a file host and take none.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

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
        self._spent: collections.deque[float] = collections.deque()  # when each token in use was spent
        self._turn = asyncio.Lock()  # first come, first served
        self.waited = 0.0  # seconds callers spent waiting for a token, for reports

    async def acquire(self) -> None:
        """Wait until a request may go out, and count it."""
        async with self._turn:
            while True:
                now = self.clock()
                while self._spent and now - self._spent[0] >= self.period:
                    self._spent.popleft()
                if len(self._spent) < self.per_minute:
                    self._spent.append(now)
                    return
                pause = self.period - (now - self._spent[0])
                self.waited += pause
                await self.sleep(pause)
