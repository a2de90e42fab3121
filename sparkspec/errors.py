"""The one error tree of sparkspec.

Core code raises these; the CLI is the only place that catches them, prints the
message and maps them to an exit code. Every message says what to do next.

    SparkspecError
     +-- SpecError            the spec did not validate (carries its diagnostics)
     +-- StatePathError       a lock, plan or cache file is unreadable or unsafe
     +-- StalePlanError       a saved plan no longer matches spec, vars or lock
     +-- ApplyLockedError     another apply holds the project's lock
     +-- RemoteError          the team's remote cache is misconfigured or answered with an error
     +-- BudgetError          the plan's estimate is over the apply's budget
     +-- ProviderError        anything a provider reports
          +-- AuthError        the API key is missing or refused: stop submitting
          +-- TransientError   worth retrying (connection, timeout, 429, 5xx, 003021099)
          +-- RenderFailed     the task ended without a video (003021098, expired, ...)
          +-- TaskNotFound     the provider no longer knows a task: submit again
          +-- DownloadError    an output could not be fetched or failed its checks
"""

from __future__ import annotations

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


class StalePlanError(SparkspecError):
    pass


class ApplyLockedError(SparkspecError):
    pass


class RemoteError(SparkspecError):
    """The remote render cache: a bad setting, or the store's own words about a failed request."""


class BudgetError(SparkspecError):
    pass


class ProviderError(SparkspecError):
    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AuthError(ProviderError):
    pass


class TransientError(ProviderError):
    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RenderFailed(ProviderError):
    pass


class TaskNotFound(ProviderError):
    pass


class DownloadError(ProviderError):
    pass


class MediaError(SparkspecError):
    """A video or image that cannot be decoded, probed or stitched."""
