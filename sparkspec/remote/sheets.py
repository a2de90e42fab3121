"""Contact sheets on the team's remote: made once, by the machine that rendered, and fetched
by a clone applying the same lock instead of decoding three frames of every video it pulls.

    sheets/<aa>/<digest>.<signer>.png

The digest names what the sheet shows (`sparkspec.review.sheetid`). The object is the PNG;
with a signing key, the PNG followed by HMAC-SHA256 over the digest and the PNG (32 bytes),
checked before use. A sheet is a picture: one that is missing, unsigned where a signature is
wanted, or not a sound PNG is simply not used, and the sheet is decoded here as without a
remote. Written once (If-None-Match), so two machines making the same sheet do not race.
"""

from __future__ import annotations

import hashlib
import hmac

from sparkspec.errors import RemoteError
from sparkspec.media.pngcheck import sound_png
from sparkspec.remote.layout import sheet_path
from sparkspec.remote.store import Store

MAX_BYTES = 64 * 1024 * 1024  # a 256-scene sheet is a few MB
_MAC = 32


def _mac(signing_key: bytes, digest: str, png: bytes) -> bytes:
    return hmac.new(signing_key, digest.encode() + png, hashlib.sha256).digest()


def encode_sheet(digest: str, png: bytes, signing_key: bytes | None) -> bytes:
    return png + _mac(signing_key, digest, png) if signing_key else png


def decode_sheet(data: bytes, digest: str, signing_key: bytes | None) -> bytes | None:
    """The PNG in `data`, or None when it is not one this machine can trust."""
    if signing_key:
        png, mac = data[:-_MAC], data[-_MAC:]
        if len(data) <= _MAC or not hmac.compare_digest(mac, _mac(signing_key, digest, png)):
            return None
    else:
        png = data
    return png if len(png) <= MAX_BYTES and sound_png(png) else None


async def fetch_sheet(store: Store, digest: str, signing_key: bytes | None, signer: str) -> bytes | None:
    """The sheet `digest` names, checked; None when the remote has no usable one.
    Raises RemoteError when the store fails."""
    got = await store.get(sheet_path(digest, signer))
    return None if got is None else decode_sheet(got[0], digest, signing_key)


async def push_sheet(store: Store, digest: str, png: bytes, signing_key: bytes | None, signer: str) -> bool:
    """Upload a sheet unless one is there: True if this call wrote it. Raises RemoteError."""
    if not sound_png(png):
        raise RemoteError(f"the contact sheet for {digest[:12]} is not a sound PNG; not pushed")
    return await store.create(sheet_path(digest, signer), encode_sheet(digest, png, signing_key)) is not None
