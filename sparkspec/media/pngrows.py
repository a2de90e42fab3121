"""An RGB PNG written a band of rows at a time, so a tall picture is never whole in memory.

Pillow encodes only a whole image, and its encoder picks a filter for every row by trying
them all: for the contact sheet of 100 scenes (2,000 x 4,700 pixels) that took 0.72 s and
a 37 MB image; rows with no filter through zlib at a low level take a third of that for a
file 2% larger. The format is the PNG specification's: signature, IHDR, IDAT chunks holding one
zlib stream of the rows (each prefixed by its filter type, 0), IEND; each chunk with its CRC.

The bands are compressed on threads (zlib lets go of the GIL), while the caller draws the
next ones, as pigz does: each band on its own into raw deflate blocks that end on a byte
boundary (a sync flush), so that they join into one stream; the stream's header, its final
empty block and the Adler-32 of all the rows are written around them.

`read_rgb_rows` reads such a PNG back a row at a time (the contact sheet is the cache of its
own thumbnails: review.contact crops them out of it).
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The sheet is pasted in a chat, not archived: a fast level. On two threads the sheet of 256
# scenes took 0.074 s at level 3 (2.30 MB) against 0.082 s at 1 (2.67 MB), 0.10 s at 4 (1.98 MB).
LEVEL = 3
THREADS = 2
AHEAD = 4  # bands being compressed at once: each about a megabyte, with its output
RAW = -zlib.MAX_WBITS  # deflate blocks without zlib's header and checksum


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _deflate(rows: bytes) -> bytes:
    stream = zlib.compressobj(LEVEL, zlib.DEFLATED, RAW)
    return stream.compress(rows) + stream.flush(zlib.Z_SYNC_FLUSH)


def write_rgb_rows(out: BinaryIO, width: int, height: int, bands: Iterable[bytes]) -> None:
    """Write an 8-bit RGB PNG of `width` x `height` to `out` from `bands`: each one or more
    whole rows of packed RGB (3 bytes a pixel), top to bottom, `height` rows in all."""
    stride = 3 * width
    out.write(SIGNATURE)
    out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    out.write(_chunk(b"IDAT", zlib.compress(b"", LEVEL)[:2]))  # the zlib stream's header
    checksum = zlib.adler32(b"")
    rows = 0
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(THREADS, thread_name_prefix="sparkspec-png") as pool:
        try:
            for band in bands:
                count, rest = divmod(len(band), stride)
                if rest or not count:
                    raise ValueError(f"a band of {len(band)} bytes is not whole rows of {stride}")
                view = memoryview(band)
                filtered = b"\x00" + b"\x00".join(view[i * stride:(i + 1) * stride] for i in range(count))
                checksum = zlib.adler32(filtered, checksum)
                pending.append(pool.submit(_deflate, filtered))
                while pending and (len(pending) >= AHEAD or pending[0].done()):
                    out.write(_chunk(b"IDAT", pending.popleft().result()))
                rows += count
            while pending:
                out.write(_chunk(b"IDAT", pending.popleft().result()))
        finally:
            for future in pending:
                future.cancel()
    if rows != height:
        raise ValueError(f"{rows} rows written for a picture {height} high")
    final = zlib.compressobj(LEVEL, zlib.DEFLATED, RAW).flush()  # an empty last block
    out.write(_chunk(b"IDAT", final + struct.pack(">I", checksum)))
    out.write(_chunk(b"IEND", b""))


def read_rgb_rows(data: bytes) -> tuple[int, int, Iterator[bytes]]:
    """The width, height and rows (packed RGB, top to bottom) of a PNG as `write_rgb_rows`
    writes it: 8-bit RGB, not interlaced, every row unfiltered. Its chunks are walked and their
    CRCs checked by `pngcheck.walk`; the rows are inflated as they are read, so the picture is
    never whole in memory. Raises ValueError for any other PNG (one Pillow or a viewer saved)
    or a damaged one, also part way through the rows."""
    from sparkspec.media.pngcheck import walk

    header, idat = walk(data)  # NotPng is a ValueError
    if (header.depth, header.colour, header.interlaced) != (8, 2, False):
        raise ValueError("not an 8-bit RGB PNG without interlace")
    return header.width, header.height, _rows(idat, header.width, header.height)


def _rows(idat: list[memoryview], width: int, height: int) -> Iterator[bytes]:
    stride = 1 + 3 * width
    inflate = zlib.decompressobj()
    pending = b""
    produced = 0
    for piece in idat:
        try:
            pending += inflate.decompress(piece)
        except zlib.error as exc:
            raise ValueError(f"the rows do not inflate ({exc})") from None
        whole = len(pending) // stride
        for n in range(min(whole, height - produced)):
            row = pending[n * stride:(n + 1) * stride]
            if row[0] != 0:
                raise ValueError("a row is filtered: not a PNG sparkspec wrote")
            yield row[1:]
        produced += min(whole, height - produced)
        pending = pending[whole * stride:]
    if produced != height:
        raise ValueError(f"{produced} rows of {height}")
