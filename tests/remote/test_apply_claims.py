"""The claims an apply makes, against a store that has gone away: what it says, and how often."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from sparkspec.errors import RemoteError
from sparkspec.remote.applying import RemoteApply
from sparkspec.remote.session import Remote
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import ObjectInfo, Store, open_store
from sparkspec.state.cache import Cache
from sparkspec.state.journal import Journal


class Gone(Store):
    """A store every request to fails, as when its endpoint stops answering mid-apply."""

    def _fail(self, doing: str) -> RemoteError:
        return RemoteError(f"remote {self.display}: {doing}: error sending request")

    async def get(self, path: str) -> tuple[bytes, str | None] | None:
        raise self._fail(f"GET {path}")

    async def head(self, path: str) -> ObjectInfo | None:
        raise self._fail(f"HEAD {path}")

    async def create(self, path: str, data: bytes) -> str | None:
        raise self._fail(f"PUT {path} (If-None-Match)")

    async def delete(self, path: str) -> None:
        raise self._fail(f"DELETE {path}")


def test_a_store_that_is_gone_is_one_warning_however_many_scenes_start(tmp_path: Path) -> None:
    settings = RemoteSettings("memory://gone")
    inner = open_store(settings, {})
    remote = Remote(settings, Gone(inner.backend, inner.display), tmp_path)
    events: list[dict[str, Any]] = []
    applying = RemoteApply(remote, Cache(tmp_path / "cache"), Journal(tmp_path / "journal"), tmp_path / "tmp",
                           events.append)

    async def scenes() -> list[Any]:
        return list(await asyncio.gather(*(applying.claim(f"s{n}", secrets.token_hex(32)) for n in range(5))))

    assert asyncio.run(scenes()) == [None] * 5  # each renders, without a claim
    warnings = [e for e in events if e["event"] == "remote_warning"]
    assert len(warnings) == 1, warnings
    # The first request that fails says so: the layout check (format.json) before the probe.
    assert "memory://gone: GET format.json" in warnings[0]["message"] and "rendering without a claim" in \
        warnings[0]["message"]
