"""First-frame images: the API's bounds, checked before anything is sent."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sparkspec.apifacts import (
    IMAGE_ASPECT_EXCLUSIVE,
    IMAGE_FORMATS,
    IMAGE_MAX_BYTES,
    IMAGE_SIDE_EXCLUSIVE,
)

_DATA_URL = re.compile(r"^data:image/([a-z]+);base64,(.*)$", re.DOTALL)


class ImageProblem(Exception):
    pass


@dataclass(frozen=True)
class ImageInfo:
    format: str  # lower case, one of IMAGE_FORMATS
    width: int
    height: int
    size: int  # bytes


def inspect_stream(stream: BinaryIO, size: int) -> ImageInfo:
    """Read an image's header and check it against the API's bounds. Width and height are as
    the image is shown: a photo's EXIF orientation turned a quarter is applied (as the local
    renderer does, and as the plan's `adaptive` ratio and its token estimate need)."""
    import warnings

    from PIL import Image

    if size >= IMAGE_MAX_BYTES:
        raise ImageProblem(f"image is {size:,} bytes; the API takes images smaller than 30 MB ({IMAGE_MAX_BYTES:,} bytes)")
    with warnings.catch_warnings():
        # A header claiming tens of megapixels: Pillow warns (or refuses, past twice its limit);
        # the bounds below say what is wrong with it in the API's terms.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _inspect(stream, size)


def _inspect(stream: BinaryIO, size: int) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    low, high = IMAGE_SIDE_EXCLUSIVE
    try:
        with Image.open(stream) as image:
            fmt = (image.format or "").lower()
            width, height = image.size
            if _quarter_turned(image):
                width, height = height, width
    except Image.DecompressionBombError:
        raise ImageProblem(f"image is larger than the API takes (width and height must each be more than {low} "
                           f"and less than {high} px)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageProblem(f"not a readable image ({exc.__class__.__name__})") from None
    if fmt not in IMAGE_FORMATS:
        raise ImageProblem(f"image format {fmt or 'unknown'} is not one of {', '.join(IMAGE_FORMATS)}")
    if not (low < width < high and low < height < high):
        raise ImageProblem(f"image is {width}x{height}; width and height must each be more than {low} and less "
                           f"than {high} px ({low + 1} to {high - 1})")
    aspect = width / height
    if not IMAGE_ASPECT_EXCLUSIVE[0] < aspect < IMAGE_ASPECT_EXCLUSIVE[1]:
        raise ImageProblem(f"image aspect {aspect:.2f} ({width}x{height}) must be more than 0.4 and less than 2.5 "
                           "(width / height)")
    # Its pixels decoded, not only its header: a file cut short or damaged would pass as valid,
    # then fail the render, or be sent to the API in a paid request. Within the bounds above it
    # is at most 36 megapixels.
    stream.seek(0)
    try:
        with Image.open(stream) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageProblem(f"the image is damaged or cut short ({exc})") from None
    return ImageInfo(fmt, width, height, size)


def _quarter_turned(image: Any) -> bool:
    """Whether its EXIF orientation (tag 274) turns it by a quarter: shown, width and height swap."""
    try:
        return image.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the image as stored
        return False


def inspect_file(path: Path) -> ImageInfo:
    try:
        with path.open("rb") as stream:
            return inspect_stream(stream, path.stat().st_size)
    except FileNotFoundError:
        raise ImageProblem("image not found") from None
    except IsADirectoryError:
        raise ImageProblem("is a folder, not an image") from None
    except OSError as exc:  # a name too long, no permission: said at its line, with the spec's other problems
        raise ImageProblem(f"cannot read it ({exc.strerror or exc})") from None


def decode_data_url(url: str) -> bytes:
    return _data_url_parts(url)[1]


def _data_url_parts(url: str) -> tuple[str, bytes]:
    """A data URL's format label and its decoded bytes: the URL (up to 40 MB) is read once."""
    match = _DATA_URL.match(url)
    if match is None:
        raise ImageProblem("a data URL must read data:image/<format>;base64,<data> with a lower-case format")
    try:
        return match.group(1), base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise ImageProblem("the data URL's base64 does not decode") from None


_LABELS = {"jpg": "jpeg", "tif": "tiff"}


def inspect_data_url(url: str) -> ImageInfo:
    """As `inspect_stream`; and the format the URL names must be the bytes' own (the API
    reads the label, and a PNG sent as image/jpeg may be refused there)."""
    label, data = _data_url_parts(url)
    info = inspect_stream(io.BytesIO(data), len(data))
    if _LABELS.get(label, label) != info.format:
        raise ImageProblem(f"it says image/{label}, but its bytes are a {info.format.upper()} image; "
                           f"label it data:image/{info.format}")
    return info
