"""A finished task's outputs, fetched and checked: the video (probed) and its last frame.

One attempt at it is a `FetchJob`; its outcome a `Fetched`. The same steps run either here,
on the event loop with the provider's own async download (`fetch_here`), or in a fetch
worker process with a blocking client (`fetch_blocking`, see `apply.workers`): download the
video and probe it, then download the last frame the task gave and check it by the PNG
rules. A last frame that is missing, cannot be downloaded or is not a sound PNG is decoded
from the video instead: a paid render never fails for want of it, and the caller says why.
A damaged video or a lapsed URL is the caller's to retry (`DamagedOutput`, `MediaError`,
`UrlExpired`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import DamagedOutput, DownloadError, MediaError
from sparkspec.media.frames import extract_last_frame
from sparkspec.media.probe import VideoInfo, check_png, probe_video
from sparkspec.providers.base import Downloaded, Provider

if TYPE_CHECKING:
    from sparkspec.review.contact import Strip


@dataclass(frozen=True)
class FetchJob:
    video_url: str
    frame_url: str | None  # the task's own last-frame image, when it gave one
    video_dest: Path  # temporary files, unique to this task
    frame_dest: Path
    # The scene is on renders/contact.png: its strip of thumbnails (review.contact) is made
    # here, while the apply goes on, rather than after it.
    on_sheet: bool = False
    scene: str = ""


@dataclass(frozen=True)
class Fetched:
    video: Downloaded
    info: VideoInfo
    frame: Downloaded
    # Why the frame was decoded from the video rather than taken from the task; None: it was not.
    frame_extracted: str | None
    strip: Strip | None = None  # the scene's contact-sheet strip, when it is on the sheet


def with_frame(job: FetchJob, video: Downloaded, info: VideoInfo, frame: Downloaded | None,
               problem: str) -> Fetched:
    """Check the frame, or decode it from the video (`problem`: why)."""
    if frame is not None:
        try:
            check_png(frame.path)
            return Fetched(video, info, frame, None)
        except (DamagedOutput, MediaError) as exc:
            job.frame_dest.unlink(missing_ok=True)
            problem = frame_problem(exc)
    sha256, size = extract_last_frame(video.path, job.frame_dest)
    return Fetched(video, info, Downloaded(job.frame_dest, sha256, size), problem)


def sheet_strip(job: FetchJob, fetched: Fetched) -> Strip | None:
    """The scene's contact-sheet strip. A video that cannot give one is the review's to report
    (it tries again): the render itself is sound."""
    if not job.on_sheet:
        return None
    from sparkspec.review.contact import SheetEntry, make_strip

    try:
        return make_strip(SheetEntry(job.scene, fetched.video.path, fetched.video.sha256, fetched.frame.path))
    except (MediaError, OSError):
        return None


def fetched_with_strip(job: FetchJob, video: Downloaded, info: VideoInfo, frame: Downloaded | None,
                       problem: str) -> Fetched:
    fetched = with_frame(job, video, info, frame, problem)
    strip = sheet_strip(job, fetched)
    return replace(fetched, strip=strip) if strip is not None else fetched


NO_FRAME = "it gave no last frame"


def frame_problem(exc: Exception) -> str:
    return f"its last frame could not be used ({exc})"


async def fetch_here(provider: Provider, job: FetchJob) -> Fetched:
    """The job on this event loop: the provider's async downloads, the checks in a thread."""
    import asyncio  # here: a fetch worker process, which imports this module, has no event loop

    video = await provider.download(job.video_url, job.video_dest)
    info = await asyncio.to_thread(probe_video, video.path)
    frame, problem = None, NO_FRAME
    if job.frame_url:
        try:
            frame = await provider.download(job.frame_url, job.frame_dest)
        except DownloadError as exc:
            job.frame_dest.unlink(missing_ok=True)
            problem = frame_problem(exc)
    return await asyncio.to_thread(fetched_with_strip, job, video, info, frame, problem)
