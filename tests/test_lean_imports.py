"""What sparkspec's own processes leave unimported, each in a fresh interpreter: httpx's
command-line client (rich's syntax highlighting, pygments) in the `sparkspec` command and a
fetch worker, and the gateway's modules and asyncio in a fetch worker, whose imports stand
between an apply's first renders and their outputs (benchmarks/RESULTS.md, session 21)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
{setup}
import {module}
loaded = sorted(name for name in {absent} if sys.modules.get(name) is not None)
print(",".join(loaded))
"""


def imported(module: str, absent: tuple[str, ...], setup: str = "") -> list[str]:
    code = CHECK.format(setup=setup, module=module, absent=absent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return [name for name in out.split(",") if name]


def test_the_command_and_a_worker_import_httpx_without_its_command_line_client() -> None:
    skip = "from sparkspec.leanimports import skip_unused; skip_unused()"
    assert imported("httpx", ("httpx._main", "pygments", "rich.syntax"), skip) == []
    assert "httpx._main" in imported("httpx", ("httpx._main",))  # what it would import otherwise
    code = f"{skip}; import httpx; print(callable(httpx.main))"  # httpx's own fallback stands in
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"


def test_sparkspec_imported_as_a_library_leaves_httpx_whole() -> None:
    """Only the entry points skip httpx's client: an apply's own modules, the workers' framing
    among them, imported by another program, change nothing in its httpx."""
    assert "httpx._main" in imported("sparkspec.apply.workers; import httpx", ("httpx._main",))


def test_a_fetch_worker_imports_neither_the_gateway_nor_asyncio() -> None:
    absent = ("asyncio", "sparkspec.providers.spark.queue", "sparkspec.providers.spark.provider")
    assert imported("sparkspec.apply.fetchworker", absent) == []
    from sparkspec.providers.spark import SparkGateway, SparkProvider  # still exported, when asked for

    assert issubclass(SparkGateway, SparkProvider)
