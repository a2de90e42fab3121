"""What every provider is: submit a render, poll its task, download its outputs.

The apply engine drives providers only through `Provider`, so it cannot tell the
offline `local` renderer from the hosted `spark` API. Providers never sleep
between polls and never touch the journal, the cache or the lock: those belong
to the engine. A provider may retry its own transient transport faults.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sparkspec.providers.spark.filehost import FileHostSettings


@dataclass(frozen=True)
class FirstFrame:
    """The image a render starts from: a file on disk, or a URL passed through."""

    path: Path | None = None  # a project image, or the upstream's last-frame PNG
    url: str | None = None  # an https URL or a data URL from the spec
    # The sha256 of the file's bytes that the render's key was made of: the provider checks the
    # bytes it sends against it, so that a file changed after the plan (while the scene waited
    # for a render slot) is never rendered and cached under the key of what it was.
    sha256: str | None = None


@dataclass(frozen=True)
class RenderRequest:
    """One render, fully resolved. Exactly one of `duration` and `frames` is set."""

    key: str
    scene: str
    model: str
    prompt: str
    resolution: str
    ratio: str  # one of apifacts.ALL_RATIOS
    duration: int | None
    frames: int | None
    seed: int
    camera_fixed: bool = False
    watermark: bool = False
    first_frame: FirstFrame | None = None
    service_tier: str | None = None
    execution_expires_after: int | None = None
    callback_url: str | None = None
    # The seed was derived from the render's own inputs (its key's), not given by the spec:
    # no other render asks for it, so a task that reports it is this render's.
    seed_derived: bool = False


class TaskState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class TaskStatus:
    task_id: str
    state: TaskState
    progress: float | None = None
    video_url: str | None = None
    last_frame_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    tokens: int | None = None  # as reported by the provider
    cost: float | None = None
    seed: int | None = None  # as reported by the provider, when it does
    created_at: float | None = None  # unix seconds
    # What the provider needs, besides the id, to find the task again (the queue protocol's
    # status, response and cancel URLs); journalled with the id and handed back to `poll`.
    locator: str | None = None
    unknown_status: str | None = None  # RUNNING because the status is new to sparkspec (named here)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int


class Provider(Protocol):
    type: str
    # Its tasks cost money: each task's id is journalled before it is polled, and a task the
    # journal cannot vouch for (a damaged entry) is never submitted again in its place. The
    # offline renderer's are not: nothing is paid, and a task is found again by its key.
    paid: bool
    # `poll` itself waits a short while for the task to move, so the engine polls again at once
    # instead of sleeping between polls.
    poll_waits: bool

    async def submit(self, request: RenderRequest) -> TaskStatus:
        """Create the task. The returned status carries the task id (and may be final)."""
        ...

    async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
        """Read the task (`locator`: as its submit reported it). Raises TaskNotFound when the
        provider no longer knows it."""
        ...

    async def download(self, url: str, dest: Path) -> Downloaded:
        """Stream `url` into `dest` (a temporary path), hashing while it streams."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class HasFileHost(Protocol):
    """A provider whose outputs any process can download (`apply.fetch`'s workers)."""

    def file_host(self) -> FileHostSettings | None: ...


@runtime_checkable
class CancelsQueued(Protocol):
    """A provider whose API can cancel a task that still waits in its queue (nothing is paid
    for it yet). Ctrl-C cancels those; tasks already rendering are left to finish."""

    async def cancel_queued(self, task_id: str, locator: str | None = None) -> bool:
        """Cancel the task if it still waits in the queue; True when it was cancelled."""
        ...
