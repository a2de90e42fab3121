"""An RGB PNG written a band of rows at a time, so a tall picture is never whole in memory.

Pillow encodes only a whole image, and its encoder picks a filter for every row by trying
them all: for the contact sheet of 100 scenes (2,000 x 4,700 pixels) that took 0.72 s and
a 37 MB image; rows with no filter through zlib at level 1 take a third of that for a file
2% larger. The format is the PNG specification's: signature, IHDR, IDAT chunks holding one
zlib stream of the rows (each prefixed by its filter type, 0), IEND; each chunk with its CRC.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import BinaryIO

SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEVEL = 1  # zlib's fastest: the sheet is pasted in a chat, not archived


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def write_rgb_rows(out: BinaryIO, width: int, height: int, bands: Iterable[bytes]) -> None:
    """Write an 8-bit RGB PNG of `width` x `height` to `out` from `bands`: each one or more
    whole rows of packed RGB (3 bytes a pixel), top to bottom, `height` rows in all."""
    stride = 3 * width
    out.write(SIGNATURE)
    out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    stream = zlib.compressobj(LEVEL)
    rows = 0
    for band in bands:
        count, rest = divmod(len(band), stride)
        if rest or not count:
            raise ValueError(f"a band of {len(band)} bytes is not whole rows of {stride}")
        view = memoryview(band)
        packed = stream.compress(b"\x00" + b"\x00".join(view[i * stride:(i + 1) * stride] for i in range(count)))
        if packed:
            out.write(_chunk(b"IDAT", packed))
        rows += count
    if rows != height:
        raise ValueError(f"{rows} rows written for a picture {height} high")
    out.write(_chunk(b"IDAT", stream.flush()))
    out.write(_chunk(b"IEND", b""))
