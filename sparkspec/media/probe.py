"""What a video file holds, read cheaply and checked for real.

`probe_video` is the gate every downloaded render passes before it enters the cache:
it opens the container, decodes the first frame of the video stream and reads the
last packets, so an empty, truncated or mislabelled file fails here with a message
rather than later in a player. It never decodes the whole video: frame count and
duration come from the container's index, and only when the container has none are
packets counted (demuxed, not decoded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import DamagedOutput, MediaError

if TYPE_CHECKING:
    import av.container
    import av.video.stream


# What a render comes as (libavformat's demuxer names): MP4/MOV, Matroska/WebM, or a bare
# H.264/HEVC stream (these need a parameter set to be recognised). Other bare streams are
# recognised on far less: libavformat takes about one random file in 750 for H.263.
CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "h264", "hevc"})


_ANALYSE_WITHOUT_DECODING = {"skip_frame": "all"}


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int
    fps: float
    duration: float  # seconds
    codec: str


def probe_video(path: Path) -> VideoInfo:
    """Open `path`, decode its first frame and check its tail; raise MediaError if it fails."""
    import av

    if not path.is_file():
        raise MediaError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the video file is empty")
    try:
        # skip_frame: libavformat's stream analysis decodes no frame (the index and the
        # parameter sets say what it needs); the one frame this check decodes is decoded below.
        with av.open(str(path), mode="r", options=_ANALYSE_WITHOUT_DECODING) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: the file holds no video stream")
            if _is_still_image(container.format.name):
                raise MediaError(f"{path}: is a still image ({container.format.name}), not a video")
            if container.format.name not in CONTAINERS:  # and its first "frame" may well decode
                raise MediaError(f"{path}: not a readable video (a bare {container.format.name} stream, "
                                 "not an MP4 or WebM file); the file is damaged, incomplete or not a video")
            stream = container.streams.video[0]
            if stream.codec_context is None:  # a codec libavcodec cannot decode, or a mangled header
                raise MediaError(f"{path}: its video stream's codec is unknown; the file is damaged "
                                 "or not a video sparkspec can read")
            # One frame: a decoder of its own threads (one a core) costs more than it saves.
            stream.codec_context.thread_count = 1
            stream.codec_context.skip_frame = "DEFAULT"
            first = _first_frame(container, stream)
            if first is None:
                raise MediaError(f"{path}: no frame of the video stream decodes; "
                                 "the file is damaged or incomplete")
            fps = _fps(stream)
            frames = stream.frames
            if frames > 0:
                _check_tail(container, stream, path)
            else:
                frames = _count_packets(path)
            if container.format.name.startswith("mov,"):
                _check_boxes(path)
            duration = _duration(container, stream, frames, fps)
            return VideoInfo(width=first.width, height=first.height, frames=frames, fps=fps,
                             duration=duration, codec=stream.codec_context.name)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise MediaError(f"{path}: not a readable video ({media_reason(exc)}); "
                         "the file is damaged, incomplete or not a video") from None


def _is_still_image(format_name: str) -> bool:
    # libavformat opens pictures as one-frame videos through these demuxers.
    return format_name.endswith("_pipe") or format_name in ("image2", "gif", "apng")


def _first_frame(container: av.container.InputContainer,
                 stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    for frame in container.decode(stream):
        return frame
    return None


def _check_tail(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                path: Path) -> None:
    """Seek to the last packet by the index and read it: a cut-off file fails here.

    libavformat hands a short last packet over flagged corrupt, and none at all when
    the cut falls before it.
    """
    duration = stream.duration
    if duration is None or duration <= 0:
        _count_packets(path)
        return
    container.seek(max(0, duration - 1), stream=stream, backward=True, any_frame=True)
    read = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.is_corrupt:
            raise MediaError(f"{path}: the video's last packets are damaged; "
                             "the file is incomplete")
        read += 1
    if read == 0:
        raise MediaError(f"{path}: the video ends before its index says; the file is incomplete")


def _count_packets(path: Path) -> int:
    """Frames by demuxing every packet, from a fresh open: raw streams cannot seek back."""
    import av

    count = 0
    with av.open(str(path), mode="r") as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size > 0:
                if packet.is_corrupt:
                    raise MediaError(f"{path}: a video packet is damaged; the file is incomplete")
                count += 1
    if count == 0:
        raise MediaError(f"{path}: the video stream holds no frames")
    return count


def _check_boxes(path: Path) -> None:
    """An mp4's top-level boxes must tile the file exactly; a cut anywhere breaks that.

    libavformat forgives a missing tail of the index when the frames it needs are there,
    so this catches what decoding would not: a download that stopped a few bytes short.
    """
    size = path.stat().st_size
    offset = 0
    with path.open("rb") as stream:
        while offset < size:
            stream.seek(offset)
            header = stream.read(16)
            if len(header) < 8:
                break
            length = int.from_bytes(header[:4], "big")
            if length == 1 and len(header) == 16:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - offset  # "to the end of the file"
            if length < 8:
                break
            offset += length
    if offset > size:
        raise MediaError(f"{path}: the file ends inside its last box; the file is incomplete")
    if offset < size:
        raise MediaError(f"{path}: the file ends with bytes that are not an mp4 box; "
                         "the file is damaged")


def _fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
              frames: int, fps: float) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * Fraction(stream.time_base))
    if container.duration is not None:
        return container.duration / 1_000_000
    return frames / fps if fps else 0.0


def media_reason(exc: BaseException) -> str:
    """What a media library or the system said, without its errno number: "Invalid data
    found when processing input ...", not "[Errno 1094995529] Invalid data ..."."""
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc).strip())
    return text or exc.__class__.__name__


def check_png(path: Path) -> tuple[int, int]:
    """A delivered last frame must be a whole, decodable PNG; returns its size."""
    from sparkspec.media import pngcheck

    try:
        return pngcheck.check_png(path)
    except pngcheck.NotPng as exc:
        raise DamagedOutput(f"the last frame is not a readable PNG image: {exc}") from None
    except OSError as exc:
        raise DamagedOutput(f"the last frame is not a readable image ({exc.strerror or exc})") from None
