"""The contact sheet's PNG writer: bands of rows in, a PNG that Pillow reads back pixel for pixel."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from sparkspec.media.pngrows import write_rgb_rows


def noise(width: int, height: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), bytes(rng.randrange(256) for _ in range(3 * width * height)))


def test_bands_of_rows_make_the_picture_they_came_from() -> None:
    picture = noise(37, 23, 1)
    data = picture.tobytes()
    stride = 3 * picture.width
    bands = [data[:5 * stride], data[5 * stride:6 * stride], data[6 * stride:]]  # uneven bands
    out = io.BytesIO()
    write_rgb_rows(out, picture.width, picture.height, bands)
    out.seek(0)
    with Image.open(out) as read:
        assert read.format == "PNG" and read.mode == "RGB" and read.size == picture.size
        read.load()  # checks the chunks' CRCs and the zlib stream
        assert read.tobytes() == data


@pytest.mark.parametrize("bands, problem", [
    ([b"\x00" * (3 * 4 * 2)], "2 rows written for a picture 3 high"),
    ([b"\x00" * (3 * 4 * 4)], "4 rows written for a picture 3 high"),
    ([b"\x00" * 13], "not whole rows of 12"),
])
def test_rows_that_do_not_fill_the_picture_are_refused(bands: list[bytes], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        write_rgb_rows(io.BytesIO(), 4, 3, bands)


def test_many_bands_compressed_apart_join_into_one_stream() -> None:
    """More bands than are compressed at once, each on its own (pngrows.AHEAD): the zlib
    stream they join into decodes, checksum and all, to the picture they came from."""
    import zlib

    from sparkspec.media.pngrows import AHEAD

    picture = noise(29, 3 * AHEAD + 2, 2)
    data, stride = picture.tobytes(), 3 * picture.width
    bands = [data[row * stride:(row + 1) * stride] for row in range(picture.height)]
    out = io.BytesIO()
    write_rgb_rows(out, picture.width, picture.height, bands)
    png = out.getvalue()
    idat, at = b"", 8
    while at < len(png):  # the chunks' data, as a decoder joins them
        length = int.from_bytes(png[at:at + 4], "big")
        if png[at + 4:at + 8] == b"IDAT":
            idat += png[at + 8:at + 8 + length]
        at += 12 + length
    rows = zlib.decompress(idat)  # raises on a bad Adler-32
    assert rows == b"".join(b"\x00" + band for band in bands)
    with Image.open(io.BytesIO(png)) as read:
        assert read.tobytes() == data


def test_rows_read_back_a_row_at_a_time_and_other_pngs_are_refused() -> None:
    from sparkspec.media.pngrows import read_rgb_rows

    width, height = 41, 67
    pixels = bytes(random.Random(3).randrange(256) for _ in range(width * height * 3))
    out = io.BytesIO()
    write_rgb_rows(out, width, height, [pixels[: width * 3 * 30], pixels[width * 3 * 30:]])
    data = out.getvalue()
    got_w, got_h, rows = read_rgb_rows(data)
    assert (got_w, got_h) == (width, height) and b"".join(rows) == pixels
    saved = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(saved, format="PNG")  # Pillow filters its rows
    with pytest.raises(ValueError):
        list(read_rgb_rows(saved.getvalue())[2])
    with pytest.raises(ValueError):  # cut short: fewer rows than the header says
        list(read_rgb_rows(data[: len(data) // 2])[2])
    with pytest.raises(ValueError):
        read_rgb_rows(b"GIF89a" + data[6:])
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # inside the deflate stream
    with pytest.raises(ValueError):
        list(read_rgb_rows(bytes(damaged))[2])
