"""The one error tree of sparkspec.

Core code raises these; the CLI is the only place that catches them, prints the
message and maps them to an exit code. Every message says what to do next.

    SparkspecError
     +-- SpecError            the spec did not validate (carries its diagnostics)
     +-- StatePathError       a lock, plan or cache file is unreadable or unsafe
     |    +-- CacheDamaged     a cached file is not the bytes its entry records
     +-- StalePlanError       a saved plan no longer matches spec, vars or lock
     +-- ApplyLockedError     another apply holds the project's lock
     +-- RemoteError          the team's remote cache is misconfigured or answered with an error
     +-- BudgetError          the plan's estimate is over the apply's budget
     +-- DiskError            the file system refused: full, read-only, a file in a folder's place
     +-- MediaError           a video or image cannot be decoded, probed or stitched
     +-- ProviderError        anything a provider reports
          +-- AuthError          the API key is missing or refused (401): stop submitting
          +-- AccountError       out of money or permission (402, 403, 40201-40208): stop submitting
          +-- TransientError     worth retrying (connection, timeout, 429, 5xx, 003021099)
          +-- CreateUnconfirmed  a create may have made a task sparkspec cannot find: not retried
          |    +-- UnreadableCreate  a create answered 2xx without a task to read: stop submitting
          +-- RequestRejected    the API refused a request as given (another 4xx)
          +-- BadAnswer          the API answered something sparkspec cannot read
          +-- BadFirstFrame      the first-frame image cannot be sent (format, changed while sent)
          +-- RenderFailed       the task ended without a video (003021098, expired, ...)
          +-- TaskNotFound       the provider does not know a task (404)
          +-- DownloadError      an output could not be fetched
               +-- UrlExpired      its signed URL has lapsed (403, 404, 410): query the task again
               +-- DamagedOutput   the bytes arrived short or are not what they claim to be

`AuthError` and `AccountError` carry the API's own words; both stop new submissions
while the tasks already running are still collected.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparkspec.diagnostics import Diagnostic


class SparkspecError(Exception):
    """A known failure; its message is shown to the user as is."""


class SpecError(SparkspecError):
    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        errors = sum(1 for d in self.diagnostics if d.severity == "error")
        super().__init__(f"{errors} error(s) in the spec")


class StatePathError(SparkspecError):
    pass


class CacheDamaged(StatePathError):
    pass


class DiskError(SparkspecError):
    """An OSError from the world (not from sparkspec), told as what to do about it."""

    errno: int | None = None

    @classmethod
    def from_os(cls, exc: OSError, path: object = None) -> DiskError:
        """The message for `exc`, naming `path` when the error itself names no file (a failed
        write does not) and a temporary file by the file it was to become."""
        name = exc.filename2 if exc.errno in (errno.EISDIR, errno.ENOTEMPTY) and exc.filename2 else exc.filename
        name = _target(str(name if name is not None else path if path is not None else ""))
        if exc.errno == errno.ENOTDIR and name:
            name = _file_in_the_way(name)
        where = f"{name}: " if name else ""
        reason = exc.strerror or str(exc)
        error = cls(f"{where}{reason}; {_DISK_HINTS.get(exc.errno or 0, 'fix that and run the command again')}")
        error.errno = exc.errno  # what the world said, for a caller that can do something about it
        return error

    @staticmethod
    def is_disk(exc: BaseException) -> bool:
        """Whether `exc` is the file system refusing (full, read-only, ...) rather than a bug."""
        return isinstance(exc, OSError) and exc.errno in _DISK_HINTS


def _file_in_the_way(name: str) -> str:
    """For "Not a directory": the file on the way to `name` that stands where a folder should
    (`.../cache/blobs` a file: the error named `.../cache/blobs/a1`, which does not exist)."""
    import os

    head = name
    while head and head not in ("/", "."):
        head = os.path.dirname(head)
        if os.path.lexists(head) and not os.path.isdir(head):
            return head
    return name


def _target(name: str) -> str:
    """`/x/.film.mp4.k2j3h4g5.tmp` (a temporary file beside its target) -> `/x/film.mp4`."""
    head, _, base = name.rpartition("/")
    if base.startswith(".") and base.endswith(".tmp") and base.count(".") >= 3:
        base = base[1:].rsplit(".", 2)[0]
        return f"{head}/{base}" if head else base
    return name


_DISK_HINTS = {
    errno.ENOSPC: "free some disk space and run the command again (what finished is kept)",
    errno.EDQUOT: "free some of your disk quota and run the command again (what finished is kept)",
    errno.EFBIG: "the file size limit (`ulimit -f`) is too small for this file; raise it and run again",
    errno.EROFS: "make it writable, or work in a writable copy",
    errno.EACCES: "you may not write there; fix its permissions and run the command again",
    errno.EPERM: "you may not write there; fix its permissions and run the command again",
    errno.EISDIR: "a folder stands where sparkspec writes a file; move it away and run again",
    errno.ENOTDIR: "a file stands where sparkspec needs a folder; move it away and run again",
    errno.EEXIST: "a file stands where sparkspec needs a folder; move it away and run again",
    errno.ENOENT: "it is not there (or it went while sparkspec was working); check the path and run the "
                  "command again",
    errno.ENOTEMPTY: "a folder stands where sparkspec writes a file; move it away and run again",
    errno.EIO: "the disk reported an I/O error; check it and run the command again",
}


class StalePlanError(SparkspecError):
    pass


class ApplyLockedError(SparkspecError):
    pass


class RemoteError(SparkspecError):
    """The remote render cache: a bad setting, or the store's own words about a failed request."""


class BudgetError(SparkspecError):
    pass


class ProviderError(SparkspecError):
    pass


class AuthError(ProviderError):
    pass


class AccountError(ProviderError):
    pass


class TransientError(ProviderError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CreateUnconfirmed(ProviderError):
    pass


class UnreadableCreate(CreateUnconfirmed):
    """A create accepted (2xx) with an answer that holds no task sparkspec can read: whatever
    answers is not the API as sparkspec knows it, and each further create could be paid for
    and lost the same way, so the apply submits nothing more. The message ends saying so."""

    def __init__(self, message: str) -> None:
        self.detail = message
        super().__init__(f"{message}. No more tasks are submitted in this apply: check provider.base_url "
                         f"and run `sparkspec doctor`; the next apply submits this scene again.")


class RequestRejected(ProviderError):
    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class BadAnswer(ProviderError):
    pass


class BadFirstFrame(ProviderError):
    pass


class RenderFailed(ProviderError):
    pass


class TaskNotFound(ProviderError):
    pass


class DownloadError(ProviderError):
    pass


class UrlExpired(DownloadError):
    pass


class DamagedOutput(DownloadError):
    pass


class MediaError(SparkspecError):
    """A video or image that cannot be decoded, probed or stitched."""
