"""Fixtures shared by every test folder: the fake Spark API on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeapi import FakeSparkAPI  # noqa: E402


@pytest.fixture
def fake_api() -> Iterator[FakeSparkAPI]:
    """A fake gateway on 127.0.0.1 with key "test-key", no render latency and the local renderer.

    Tests change `latency`, `dialect`, `report_seed` etc. on the object, inject faults with
    `inject` and task outcomes with `outcome`, and read its counters.
    """
    api = FakeSparkAPI(api_key="test-key").start()
    try:
        yield api
    finally:
        api.stop()
