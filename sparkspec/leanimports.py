"""What sparkspec's own processes (the `sparkspec` command, a fetch worker) leave unimported.

httpx imports its command-line client (`httpx._main`: rich's console and syntax highlighting,
pygments, click) whenever it is imported, and keeps a fallback for installs without its `cli`
extra. sparkspec never runs that client, and the import cost 30-60 ms in every process that
talks to the API (benchmarks/RESULTS.md, session 21). An entry in `sys.modules` of None is
Python's documented way to make an import fail (the import system raises ImportError), so
`import httpx` takes that fallback. Only the entry points call this: sparkspec imported as a
library leaves its host's modules alone.
"""

from __future__ import annotations

import sys

SKIPPED = ("httpx._main",)


def skip_unused() -> None:
    for name in SKIPPED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
