from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sparkspec.errors import MediaError
from sparkspec.media.frames import first_frame, last_frame

from conftest import ClipFactory, color_for, mean_difference, write_clip


def expected(index: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    image = Image.new("RGB", size, color_for(index))
    image.paste((255, 255, 255), (index * 4, 8, index * 4 + 16, 24))
    return image


@pytest.mark.parametrize("gop", [None, 5])
def test_first_and_last_frames_are_the_clips_own(clip: ClipFactory, gop: int | None) -> None:
    # With a short GOP the last frame is decoded from the last keyframe on, not from 0.
    path = clip(frames=23, gop=gop)
    first, last = first_frame(path), last_frame(path)
    assert first.mode == last.mode == "RGB"
    assert first.size == last.size == (320, 240)
    assert mean_difference(first, expected(0)) < 3
    assert mean_difference(last, expected(22)) < 3
    assert mean_difference(last, expected(21)) > 10


def test_last_frame_of_a_stream_without_an_index(clip: ClipFactory) -> None:
    path = clip(fmt="matroska", frames=9)
    assert mean_difference(last_frame(path), expected(8)) < 3


def test_frames_of_a_broken_file_raise_media_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(MediaError):
        first_frame(bad)
    with pytest.raises(MediaError):
        last_frame(bad)
    with pytest.raises(MediaError):
        last_frame(tmp_path / "missing.mp4")


def test_a_one_frame_clip_has_the_same_first_and_last_frame(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "one.mp4", frames=1)
    assert mean_difference(first_frame(path), last_frame(path)) < 0.5
