"""The examples, applied offline with the local provider, each as a whole `sparkspec` process.

Prints the wall time of a fresh apply of every example (target: all of them under 60 s on a
2-core machine) and of a second apply, which must render nothing (target: under 2 s in all).

    python benchmarks/examples_bench.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def apply(work: Path) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sparkspec", "-C", str(work), "apply", "--auto-approve",
                           "--json"], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    return elapsed, json.loads(proc.stdout.splitlines()[-1])


def main() -> int:
    examples = sorted(p.parent for p in (ROOT / "examples").glob("*/project.spark.yaml"))
    env_cpus = os.cpu_count()
    print(f"{len(examples)} examples, {env_cpus} CPUs, Python {sys.version.split()[0]}")
    fresh = second = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for example in examples:
            work = Path(tmp) / example.name
            shutil.copytree(example, work, ignore=shutil.ignore_patterns("renders", ".sparkspec", "*.lock"))
            t1, done1 = apply(work)
            t2, done2 = apply(work)
            assert done2["completed"] == 0, done2
            fresh += t1
            second += t2
            print(f"  {example.name:<16} fresh apply {t1:6.2f} s ({done1['completed']} rendered, "
                  f"{done1['stitched']} stitched)   second apply {t2:5.2f} s (nothing rendered)")
    ok1, ok2 = fresh < 60, second < 2
    print(f"all examples, fresh apply:  {fresh:6.2f} s  (target < 60 s)  {'PASS' if ok1 else 'FAIL'}")
    print(f"all examples, second apply: {second:6.2f} s  (target < 2 s)   {'PASS' if ok2 else 'FAIL'}")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
