"""Does the store really honour conditional writes? Asked once per machine and remote.

Some S3 emulators and gateways accept `If-None-Match: *` and `If-Match` and ignore them
(incus #3651); claims on such a store would let two machines both pay. The probe creates
`probe/<random>`, creates it again (must be refused), updates it with a wrong ETag (must be
refused), and removes it. The answer is remembered in `.sparkspec/remote-probe.json`; it is
never asked in read-only mode (which writes nothing and claims nothing).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from sparkspec.errors import RemoteError
from sparkspec.fsutil import atomic_write_text
from sparkspec.jsontext import load_json
from sparkspec.remote.layout import PROBES
from sparkspec.remote.store import Store

MEMO_NAME = "remote-probe.json"


@dataclass(frozen=True)
class ProbeResult:
    conditional: bool
    detail: str = ""  # which condition the store ignored


async def probe_conditional_writes(store: Store) -> ProbeResult:
    """Raises RemoteError when the store cannot be reached or refuses the writes."""
    path = f"{PROBES}/{secrets.token_hex(16)}"
    try:
        result = await _ask(store, path)
    except RemoteError:
        with contextlib.suppress(RemoteError):  # the first failure is the one to report
            await store.delete(path)
        raise
    await store.delete(path)
    return result


async def _ask(store: Store, path: str) -> ProbeResult:
    if await store.create(path, b"1") is None:
        return ProbeResult(False, "a fresh random name already existed")
    if await store.create(path, b"2") is not None:
        return ProbeResult(False, "a second create with If-None-Match: * succeeded")
    if await store.update(path, b"3", '"sparkspec-not-an-etag"') is not None:
        return ProbeResult(False, "a write with If-Match on a wrong ETag succeeded")
    return ProbeResult(True)


def remembered(state_dir: Path, identity: str) -> ProbeResult | None:
    try:
        raw = load_json((state_dir / MEMO_NAME).read_text(encoding="utf-8"))[identity]
        return ProbeResult(bool(raw["conditional"]), str(raw.get("detail", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(state_dir: Path, identity: str, result: ProbeResult) -> None:
    path = state_dir / MEMO_NAME
    try:
        memo = load_json(path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    memo[identity] = {"conditional": result.conditional, "detail": result.detail}
    atomic_write_text(path, json.dumps(memo, sort_keys=True, indent=2) + "\n")
