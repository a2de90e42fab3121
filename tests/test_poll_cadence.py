"""When the engine polls a running task (TaskRunner.next_poll): its progress predicts the end,
until the prediction fails; then exponential backoff between poll.initial and poll.max."""

from __future__ import annotations

import random

from sparkspec.apply.tasks import TaskRunner
from sparkspec.config.model import PollConfig
from sparkspec.providers.base import TaskState, TaskStatus


def runner(initial: float = 2.0, most: float = 15.0) -> TaskRunner:
    # Only the cadence is exercised: the two fields it reads.
    bare = object.__new__(TaskRunner)
    bare.poll = PollConfig(initial=initial, max=most)
    bare.rng = random.Random(7)
    return bare


def running(progress: float | None) -> TaskStatus:
    return TaskStatus("cgt-1", TaskState.RUNNING, progress=progress)


def test_a_progress_that_stops_moving_backs_off_instead_of_polling_at_a_quarter_of_initial() -> None:
    """A task reported at 99% for its whole render was polled every 0.5 s (poll.initial/4)."""
    tasks = runner()
    predicted = tasks.next_poll(5, running(0.99), elapsed=10.0)
    assert predicted < 1.0  # a task about to end: looked at soon (the prediction)
    waits = [tasks.next_poll(5 + n, running(0.99), elapsed=10.0 + n, stalled=n) for n in range(1, 7)]
    assert all(2.0 <= w <= 15.0 for w in waits), waits
    assert min(waits[3:]) >= 7.5, waits  # doubling from poll.initial, jitter at most halving it


def test_without_progress_it_is_exponential_backoff_within_the_bounds() -> None:
    tasks = runner(initial=1.0, most=6.0)
    waits = [tasks.next_poll(n, running(None), elapsed=float(n)) for n in range(1, 8)]
    assert all(1.0 <= w <= 6.0 for w in waits) and max(waits[4:]) > 3.0, waits
