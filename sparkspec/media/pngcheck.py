"""Is a file a whole, decodable PNG? Checked by the format's own rules, without an image library.

A PNG is its signature, then chunks (length, type, data, CRC-32), IHDR first and IEND last,
the pixels one zlib stream split over IDAT chunks. A whole file has every CRC right and
nothing after IEND; a decodable one has a zlib stream that ends (its Adler-32 checked by
zlib) exactly where the rows IHDR announces end, each row starting with a filter type 0-4.
That is what a decoder needs and all it checks, at half of Pillow's cost for a video frame
(which also unfilters every row and converts the pixels): `check_png` runs on every last
frame an apply downloads. `sound_png` is the cheap half, for pictures made by sparkspec.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 178_956_970  # Pillow's limit for a decompression bomb (twice its warning)
_INFLATE_STEP = 1 << 20  # bytes of rows inflated at a time: memory stays flat for a 4K frame
# channels by colour type, and the bit depths each allows (PNG specification, 11.2.2)
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class NotPng(ValueError):
    """Why the bytes are not a whole, decodable PNG."""


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    depth: int
    colour: int
    interlaced: bool

    def row_bytes(self, width: int) -> int:
        """Bytes of one row `width` pixels wide, its filter type byte included."""
        return 1 + (width * _CHANNELS[self.colour] * self.depth + 7) // 8

    def raw_size(self) -> int:
        """Bytes of the inflated image data: every row (of every Adam7 pass) with its filter byte."""
        if not self.interlaced:
            return self.height * self.row_bytes(self.width)
        total = 0
        for x0, y0, dx, dy in _ADAM7:
            width, height = -(-(self.width - x0) // dx), -(-(self.height - y0) // dy)
            if width > 0 and height > 0:
                total += height * self.row_bytes(width)
        return total


def walk(data: bytes) -> tuple[PngHeader, list[memoryview]]:
    """The header and the IDAT chunks' data of a whole PNG; NotPng when it is not one."""
    if not data.startswith(SIGNATURE):
        raise NotPng("it does not start with the PNG signature")
    view = memoryview(data)
    at, previous, palette = len(SIGNATURE), b"", False
    header: PngHeader | None = None
    idat: list[memoryview] = []
    while at + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        end = at + 12 + length
        if end > len(data):
            raise NotPng(f"it ends inside its {kind!r} chunk (cut off)")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[at + 4:end - 4]) != crc:
            raise NotPng(f"its {kind!r} chunk is damaged (CRC mismatch)")
        body = view[at + 8:end - 4]
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise NotPng("its first chunk is not a header (IHDR)")
            header = _header(body)
        elif kind == b"PLTE":
            palette = True
        elif kind == b"IDAT":
            if idat and previous != b"IDAT":
                raise NotPng("its image data (IDAT) is not in one run of chunks")
            idat.append(body)
        elif kind == b"IEND":
            if end != len(data):
                raise NotPng("it has bytes after its end (IEND)")
            if not idat:
                raise NotPng("it holds no image data (IDAT)")
            if header.colour == 3 and not palette:
                raise NotPng("it is a palette image without a palette (PLTE)")
            return header, idat
        previous, at = kind, end
    raise NotPng("it is cut off before its end (IEND)")


def _header(body: memoryview) -> PngHeader:
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if not (0 < width < 2**31 and 0 < height < 2**31) or width * height > MAX_PIXELS:
        raise NotPng(f"its size {width}x{height} is not a picture's")
    if depth not in _DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise NotPng(f"its header is not valid (bit depth {depth}, colour type {colour})")
    return PngHeader(width, height, depth, colour, interlace == 1)


def sound_png(data: bytes) -> bool:
    """A whole PNG, every CRC right: refuses a cut or damaged picture without inflating it."""
    try:
        walk(data)
    except NotPng:
        return False
    return True


def check_png(path: Path) -> tuple[int, int]:
    """(width, height) of the PNG at `path`; NotPng when it is not a whole, decodable one:
    its chunks and CRCs, and its image data inflated (without keeping it) to exactly the
    size of its rows, every row with a valid filter type."""
    header, idat = walk(path.read_bytes())
    expected = header.raw_size()
    stride = None if header.interlaced else header.row_bytes(header.width)
    inflater = zlib.decompressobj()
    done = 0

    def take(rows: bytes) -> int:
        if done + len(rows) > expected:
            raise NotPng("its image data holds more rows than its header says")
        if stride is not None and rows and max(rows[-done % stride::stride], default=0) > 4:
            raise NotPng("a row of its image data has an unknown filter type")
        return len(rows)

    try:
        for chunk in idat:
            pending: bytes | memoryview = chunk
            while pending:
                done += take(inflater.decompress(pending, _INFLATE_STEP))
                pending = inflater.unconsumed_tail
        while not inflater.eof:  # output still held back by the step's limit
            rows = inflater.decompress(b"", _INFLATE_STEP)
            if not rows:
                break
            done += take(rows)
    except zlib.error as exc:
        raise NotPng(f"its image data does not inflate ({exc})") from None
    if not inflater.eof:
        raise NotPng("its image data stops before its zlib stream ends")
    if done != expected:
        raise NotPng(f"its image data holds {done} bytes of rows where its header says {expected}")
    return header.width, header.height
