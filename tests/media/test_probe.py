from __future__ import annotations

import os
from pathlib import Path

import av
import pytest
from PIL import Image

from sparkspec.errors import MediaError
from sparkspec.media.probe import VideoInfo, probe_video

from conftest import ClipFactory


def test_probe_reads_size_frames_rate_duration_and_codec(clip: ClipFactory) -> None:
    info = probe_video(clip(width=320, height=240, frames=29))
    assert info == VideoInfo(width=320, height=240, frames=29, fps=24.0,
                             duration=pytest.approx(29 / 24), codec="h264")


@pytest.mark.parametrize("fmt", ["matroska", "h264"])
def test_without_a_frame_count_in_the_index_packets_are_counted(clip: ClipFactory, fmt: str) -> None:
    path = clip(fmt=fmt, frames=17)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the container does not say
    info = probe_video(path)
    assert (info.width, info.height, info.frames) == (320, 240, 17)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_a_cut_off_file_fails(clip: ClipFactory, tmp_path: Path, keep: float) -> None:
    data = clip(frames=29).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(MediaError, match="incomplete|damaged"):
        probe_video(cut)


def test_a_file_cut_before_its_first_frame_fails(clip: ClipFactory, tmp_path: Path) -> None:
    data = clip().read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:600])
    with pytest.raises(MediaError):
        probe_video(cut)


def test_a_video_stream_of_an_unknown_codec_is_a_media_error(clip: ClipFactory, tmp_path: Path) -> None:
    """A damaged sample description: libavformat opens a video stream it has no decoder for
    (PyAV gives it no codec context), as some cuts and bit flips of a download do."""
    data = clip().read_bytes()
    at = data.index(b"avc1", data.index(b"stsd"))
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(data[:at] + b"zzzz" + data[at + 4:])
    with pytest.raises(MediaError, match="codec is unknown"):
        probe_video(unknown)


def test_a_probe_analyses_the_stream_without_decoding_and_still_decodes_one_frame(clip: ClipFactory) -> None:
    """The stream analysis decodes nothing (skip_frame); the frame the probe decodes is its own,
    so a clip whose first frame is damaged still fails."""
    path = clip(frames=5)
    assert probe_video(path).width == 320
    data = bytearray(path.read_bytes())
    first = data.index(b"mdat") + 4  # the first frame's first NAL unit, its length made impossible
    data[first:first + 4] = b"\x7f\xff\xff\x00"
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="avcodec_send_packet"):
        probe_video(path)


def test_garbage_empty_and_missing_files_fail(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(50_000))
    with pytest.raises(MediaError, match="not a readable video"):
        probe_video(garbage)
    text = tmp_path / "error.mp4"
    text.write_text('{"error": "Insufficient credits"}')
    with pytest.raises(MediaError):
        probe_video(text)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(MediaError, match="empty"):
        probe_video(empty)
    with pytest.raises(MediaError, match="no such"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="no such"):
        probe_video(tmp_path)


@pytest.mark.parametrize("seed", [1116, 1272])
def test_random_bytes_that_libav_reads_as_a_bare_stream_are_not_a_video(tmp_path: Path, seed: int) -> None:
    """About one random file in 750 probes as a bare H.263 stream whose first frame decodes
    (found by trying 1,500): a download of garbage must never pass as a render."""
    import random

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(f"cgt-{seed:08d}").randbytes(random.Random(seed).randint(20000, 400000)))
    with av.open(str(garbage)) as container:
        assert container.format.name == "h263"  # what libavformat makes of these bytes
    with pytest.raises(MediaError, match="not a readable video .a bare h263 stream"):
        probe_video(garbage)


def test_a_still_image_is_not_a_video(tmp_path: Path) -> None:
    for fmt in ("png", "jpeg", "gif"):
        path = tmp_path / f"still.{fmt}"
        Image.new("RGB", (320, 240), (10, 20, 30)).save(path, format=fmt)
        with pytest.raises(MediaError, match="still image"):
            probe_video(path)


def test_a_file_without_a_video_stream_fails(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=800)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = 8000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(MediaError, match="no video stream"):
        probe_video(path)
