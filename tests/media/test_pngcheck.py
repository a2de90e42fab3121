"""The last-frame check reads PNGs by the format's rules: whatever Pillow writes passes with its
size; anything cut, flipped or malformed fails, including damage that keeps every CRC right."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sparkspec.errors import DamagedOutput
from sparkspec.media.pngcheck import SIGNATURE, NotPng, check_png, sound_png
from sparkspec.media.probe import check_png as check_last_frame

MODES = ("RGB", "RGBA", "L", "LA", "P", "1", "I;16")


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png(width: int, height: int, rows: bytes, *, colour: int = 2, header: bytes | None = None,
        idat: bytes | None = None, tail: bytes = b"") -> bytes:
    """An 8-bit PNG built by hand, every CRC right, from raw rows (each with its filter byte)."""
    ihdr = header if header is not None else struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    body = zlib.compress(rows) if idat is None else idat
    return SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"") + tail


def saved(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **options)
    return out.getvalue()


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "last.png"
    path.write_bytes(data)
    return path


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(MODES), width=st.integers(1, 70), height=st.integers(1, 40),
       interlace=st.booleans(), seed=st.integers(0, 2**16))
def test_whatever_pillow_writes_passes_with_its_size(tmp_path_factory: pytest.TempPathFactory, mode: str,
                                                      width: int, height: int, interlace: bool, seed: int) -> None:
    noise = random.Random(seed).randbytes(width * height * 4)
    image = Image.frombytes("RGBA", (width, height), noise).convert(mode if mode != "I;16" else "I")
    if mode == "I;16":
        image = image.convert("I;16")
    path = write(tmp_path_factory.mktemp("png"), saved(image, interlace=int(interlace)))
    assert check_png(path) == (width, height)


def test_a_cut_or_a_flipped_bit_anywhere_fails(tmp_path: Path) -> None:
    data = saved(Image.frombytes("RGB", (96, 54), random.Random(7).randbytes(96 * 54 * 3)))
    rng = random.Random(3)
    cuts = set(range(1, 120)) | set(range(len(data) - 120, len(data))) | {rng.randrange(1, len(data)) for _ in range(300)}
    for cut in sorted(cuts):  # every cut in the signature, the header and the end chunks; 300 others
        with pytest.raises(NotPng):
            check_png(write(tmp_path, data[:cut]))
    for _ in range(400):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        with pytest.raises(NotPng):
            check_png(write(tmp_path, bytes(flipped)))


def test_damage_that_keeps_every_crc_right_fails(tmp_path: Path) -> None:
    width, height = 4, 3
    rows = b"".join(b"\x01" + bytes(range(12)) for _ in range(height))
    assert check_png(write(tmp_path, png(width, height, rows))) == (width, height)
    cases = {
        "does not inflate": png(width, height, rows, idat=b"\x78\x9c" + bytes(20)),
        "stops before its zlib stream ends": png(width, height, rows, idat=zlib.compress(rows)[:-6]),
        "unknown filter type": png(width, height, rows.replace(b"\x01", b"\x05", 1)),
        "more rows than its header": png(width, height, rows + rows[:13]),
        "where its header says": png(width, height, rows[:-13]),
        "bytes after its end": png(width, height, rows, tail=b"\x00"),
        "not a picture's": png(0, height, rows),
        "header is not valid": png(width, height, rows, header=struct.pack(">IIBBBBB", width, height, 3, 2, 0, 0, 0)),
        "without a palette": png(width, height, b"".join(b"\x00" + bytes(4) for _ in range(height)), colour=3),
        "PNG signature": b"\xff\xd8\xff\xe0" + bytes(100),
    }
    for reason, data in cases.items():
        with pytest.raises(NotPng, match=reason):
            check_png(write(tmp_path, data))


def test_a_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    with pytest.raises(NotPng, match="not a picture's"):
        check_png(write(tmp_path, png(1, 1, b"\x00" * 4, header=header)))


def test_a_delivered_last_frame_that_is_not_a_png_is_damaged_output(tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    with pytest.raises(DamagedOutput, match="not a readable PNG image: it does not start with the PNG signature"):
        check_last_frame(write(tmp_path, jpeg.getvalue()))
    with pytest.raises(DamagedOutput, match="not a readable image"):
        check_last_frame(tmp_path / "missing.png")


def test_sound_png_checks_chunks_without_inflating() -> None:
    data = saved(Image.new("RGB", (5, 5)))
    assert sound_png(data)
    assert not sound_png(data[:-1])
    assert not sound_png(b"not a png")
