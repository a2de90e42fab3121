"""A render's cache entry on the remote: what the local cache keeps, as JSON, optionally signed.

    {"format": 1, "signer": "<16 hex>|unsigned", "render": {...CachedRender...},
     "signature": "<hmac-sha256 hex>"|null}

The signature is HMAC-SHA256 (key: SPARKSPEC_REMOTE_SIGNING_KEY) over the canonical JSON of
everything else, so it covers the key, both blob digests and sizes, and the metadata. An entry
is read as hostile input: every field is checked (digests are hex, sizes whole numbers, the
key the one its path names), and with a signing key an entry without a valid signature is
not an entry at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

from sparkspec.jsontext import load_json
from sparkspec.remote.layout import UNSIGNED, is_digest
from sparkspec.state.cache import CachedRender

ENTRY_FORMAT = 1
_FIELDS = {f.name for f in dataclasses.fields(CachedRender)}


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signer_of(signing_key: bytes | None) -> str:
    return hashlib.sha256(signing_key).hexdigest()[:16] if signing_key else UNSIGNED


def _signature(body: dict[str, Any], signing_key: bytes) -> str:
    return hmac.new(signing_key, _canonical(body), hashlib.sha256).hexdigest()


def encode_entry(render: CachedRender, signing_key: bytes | None) -> bytes:
    body: dict[str, Any] = {"format": ENTRY_FORMAT, "signer": signer_of(signing_key), "render": render.to_json()}
    body["signature"] = _signature(body, signing_key) if signing_key else None
    return _canonical(body)


def decode_entry(data: bytes, key: str, signing_key: bytes | None) -> CachedRender | str:
    """The render an entry describes, or why it is not usable (a short reason to report)."""
    try:
        body = load_json(data)
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or body.get("format") != ENTRY_FORMAT:
        return "not an entry of format 1"
    if body.get("signer") != signer_of(signing_key):
        if body.get("signer") == UNSIGNED:  # and this reader has a key
            return "unsigned, and SPARKSPEC_REMOTE_SIGNING_KEY is set here (unsigned entries are ignored)"
        if not isinstance(body.get("signer"), str):
            return "it names no signer"
        return "signed by another key" if signing_key else "signed, and no SPARKSPEC_REMOTE_SIGNING_KEY here"
    if signing_key is not None:
        signature = body.get("signature")
        unsigned = {k: v for k, v in body.items() if k != "signature"}
        if not isinstance(signature, str) or not hmac.compare_digest(signature, _signature(unsigned, signing_key)):
            return "its signature does not match"
    raw = body.get("render")
    if not isinstance(raw, dict):
        return "no render in it"
    return _render(raw, key)


def _render(raw: dict[str, Any], key: str) -> CachedRender | str:
    if raw.get("key") != key:
        return "it names another key"
    for name in ("video_sha256", "last_frame_sha256"):
        if not is_digest(raw.get(name)):
            return f"{name} is not a sha256"
    if raw.get("rendered_frame_sha256") is not None and not is_digest(raw["rendered_frame_sha256"]):
        return "rendered_frame_sha256 is not a sha256"
    for name in ("video_bytes", "last_frame_bytes", "tokens", "seed"):
        value = raw.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or (name != "seed" and value < 0):
            return f"{name} is not a whole number"
    for name in ("provider", "model", "task_id"):
        if not isinstance(raw.get(name), str):
            return f"{name} is not text"
        if not raw[name].isprintable():  # printed by plan, apply and show, and kept in the lock
            return f"{name} is not printable text"
    if not isinstance(raw.get("inputs"), dict):
        return "inputs is not a mapping"
    cost = raw.get("cost")
    if cost is not None and (not isinstance(cost, (int, float)) or isinstance(cost, bool)):
        return "cost is not a number"
    known = {k: v for k, v in raw.items() if k in _FIELDS}
    try:
        return CachedRender.from_json(known)
    except TypeError as exc:
        return f"fields missing ({exc})"
