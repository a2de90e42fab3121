"""How `sparkspec apply` scales with the number of scenes: bytes written and per-scene overhead.

    python benchmarks/apply_scale.py                 # 100, 1000 and 5000 scenes
    python benchmarks/apply_scale.py 100 1000        # or the counts given
    python benchmarks/apply_scale.py --runs 3 100    # each count 3 times: the best wall counts
    python benchmarks/apply_scale.py --journaled-ext4   # projects on a fresh ext4 with its journal (root)

For each count N: a project of N independent scenes (provider spark, parallelism 16) is
applied with the real CLI in a subprocess against the fake gateway (tests/fakeapi), which
runs in a process of its own with zero render latency and serves one pre-rendered clip
per shape ("template" mode), so what is measured is the apply's own work: plan, submit,
poll, download, check, cache, copy into renders/, lock, review page. Each task's files are
its own bytes (the fake's `unique`: the template's pictures, tagged with the task id), as
real renders are: a distinct blob each in the cache, a contact-sheet strip each to decode.
Until session 22 every task got the same bytes (`--same-bytes`), which hid both.

Where the projects are written matters to the bytes: on an ext4 without a journal (this
VM's root disk) the kernel charges the filesystem's own metadata (inode tables, bitmaps,
the blocks of each new directory) to the process whose file dirtied it, a few hundred bytes
a file and 4 KB a new folder; on an ext4 with its journal (mkfs.ext4's default) jbd2 writes
those and the apply is charged its data alone. The header line says which it is;
`--journaled-ext4` makes one on a loop device for the run.

Printed per N:
- wall: the apply's wall time, and per scene (the per-scene overhead; target <= 20 ms at
  5,000 scenes, flat from 100 to 5,000); and beyond a no-op apply of the same project right
  after it (start-up, reading the spec and the lock, the plan), per scene: the cost each
  scene adds, without the fixed costs that a 100-scene apply spreads over fewer scenes;
- written: the apply process's `write_bytes` (what it sent to storage) and `wchar`
  (every byte it passed to write(), sockets and pipes included) from /proc/self/io, read
  by the process as it exits; its fetch worker processes (sparkspec/apply/workers.py) are
  reaped by then, and the kernel adds a reaped child's counters to its parent's;
- the bound: outputs' bytes times the copies apply keeps of them, plus 4 x the final lock;
  `write_bytes` must stay under it. The scenes' videos and last frames are kept twice (the
  cache's copy and renders/); the review page (renders/index.html and contact.png) once, in
  renders/ alone. (Until session 21 this counted contact.png twice, as if it were cached,
  and index.html not at all.) write_bytes counts whole pages, so the outputs are counted as
  the space they take on disk (st_blocks), and their content size is shown beside it;
- the lock: how many times it was written and the bytes of all those writes, against
  the final lock (counted inside the apply process by wrapping the lock writer's
  `write_lock`);
- CPU: the apply process's user + system time per scene, its fetch workers' included, the
  per-scene cost that does not depend on how busy the machine is.

And across the counts, the marginal cost of a scene: the wall time between two counts over
the scenes between them. A per-scene overhead that grows with the project (each scene
rewriting a lock that grows with it: 27-40 ms from 100 to 1,600 scenes before issue 7)
shows as marginal costs that rise with the count; flat is each within 1.25x of the first.
The wall per scene at a small count is higher than the marginal cost by the fixed costs
(start-up, the plan, the workers' start, the review page) spread over few scenes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench"
REVIEW_PAGE = ("index.html", "contact.png")  # kept in renders/ alone
PARALLELISM = 16

# The fake gateway, alone in its process: prints its URL, serves until stdin closes.
SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from fakeapi import FakeSparkAPI, Task
api = FakeSparkAPI(api_key=sys.argv[2], latency=0.0, render="template", render_workers=1,
                   unique=sys.argv[3] == "unique").start()
params = {"content": [{"type": "text", "text": "warm"}], "resolution": "480p", "ratio": "16:9", "frames": 29}
api._schedule_render(Task("warm", "warm", params, "m", time.time(), 0.0, 0.0)).result()
print(api.base_url, flush=True)
sys.stdin.read()
api.stop()
"""

# The CLI, writing its own /proc/self/io, CPU time and the bytes it wrote to the lock as it exits.
CHILD = """
import atexit, json, os, resource, sys
import sparkspec.apply.lockwriter as lockwriter
lock_bytes = [0, 0]
_write_lock = lockwriter.write_lock
def _counted(path, lock):
    _write_lock(path, lock)
    lock_bytes[0] += path.stat().st_size
    lock_bytes[1] += 1
lockwriter.write_lock = _counted
def _io():
    # The fetch workers are reaped by now: their CPU is in RUSAGE_CHILDREN, and the kernel has
    # added their I/O counters to this process's /proc/self/io as it reaped them.
    usage, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/self/io") as src, open(os.environ["BENCH_IO_FILE"], "w") as out:
        counters = dict(line.split(": ") for line in src.read().splitlines())
        counters.update(cpu=usage.ru_utime + usage.ru_stime + workers.ru_utime + workers.ru_stime, lock_bytes=lock_bytes[0], lock_writes=lock_bytes[1])
        json.dump(counters, out)
atexit.register(_io)
sys.argv[0] = "sparkspec"
from sparkspec.cli import run  # the console script's entry point: what `sparkspec` runs
run()
"""


def spec(count: int) -> str:
    # The account's rate limit (500 a minute by default) would bind from about 250 scenes on and
    # make this a measure of the limiter; the per-scene overhead is the apply's own work.
    lines = ["version: 1",
             f"provider: {{type: spark, parallelism: {PARALLELISM}, requests_per_minute: 100000, "
             "poll: {initial: 0.01, max: 0.05}}",
             'defaults: {resolution: 480p, ratio: "16:9", frames: 29}', "scenes:"]
    lines += [f'  s{i:05d}: {{prompt: "shot number {i} of the scale test"}}' for i in range(count)]
    return "\n".join(lines) + "\n"


def apply(root: Path, env: dict[str, str]) -> tuple[float, dict[str, float], list[dict[str, Any]]]:
    # Its output goes to pipes, as in CI or a terminal: a file here would count as its writes.
    io = root / "apply.io"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, "apply", "--auto-approve", "--json"], cwd=root,
                          env=dict(env, BENCH_IO_FILE=str(io)), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"apply failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    counters = {k: float(v) for k, v in json.loads(io.read_text()).items()}
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return wall, counters, events


def process_cpu(pid: int) -> float:
    """A process's user + system CPU seconds so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def filesystem(folder: str) -> str:
    """What the projects are written on, and whether ext4 keeps a journal there: without one
    (as on some VMs' root disks), the kernel charges the inode tables, bitmaps and directory
    blocks a new file dirties to the process that writes it; with one, jbd2 writes them."""
    found = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", folder], capture_output=True, text=True)
    source, _, kind = found.stdout.strip().partition(" ")
    kind = kind.strip() or "unknown"
    if kind == "ext4" and source.startswith("/dev/"):
        journal = Path("/proc/fs/jbd2") / f"{Path(source).name}-8"
        return f"ext4 {'with' if journal.exists() else 'without'} a journal ({source})"
    return f"{kind} ({source or folder})"


@contextlib.contextmanager
def journaled_ext4(size_gb: int) -> Iterator[str]:
    """A folder on a fresh ext4 made as mkfs.ext4 makes it (with its journal), on a loop
    device: root only. Removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="apply-scale-fs-"))
    image, mount = work / "ext4.img", work / "mnt"
    mount.mkdir()
    with image.open("wb") as out:
        out.truncate(size_gb << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def measure(count: int, base_url: str, server_pid: int | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="apply-scale-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        (root / "project.spark.yaml").write_text(spec(count))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SPARKSPEC_"))}
        env.update(SPARK_API_KEY=KEY, SPARK_BASE_URL=base_url, PYTHONPATH=str(ROOT))
        server_cpu = process_cpu(server_pid) if server_pid else 0.0
        wall, io, events = apply(root, env)
        server_cpu = process_cpu(server_pid) - server_cpu if server_pid else 0.0
        done = events[-1]
        assert done["event"] == "done" and done["completed"] == count, done
        review = [root / "renders" / name for name in REVIEW_PAGE]
        files = [p.stat() for p in (root / "renders").iterdir() if p.suffix in (".mp4", ".png") and p not in review]
        page = [p.stat() for p in review]
        outputs = sum(st.st_size for st in files)
        allocated = sum(st.st_blocks * 512 for st in files)  # what write_bytes counts: whole pages
        page_allocated = sum(st.st_blocks * 512 for st in page)
        lock = (root / "project.spark.lock").stat().st_size
        noop_wall, _, _ = apply(root, env)
        return {"scenes": count, "wall": wall, "per_scene_ms": wall / count * 1000,
                "beyond_noop_ms": (wall - noop_wall) / count * 1000,
                "cpu_per_scene_ms": io["cpu"] / count * 1000,
                "server_cpu_per_scene_ms": server_cpu / count * 1000, "noop_wall": noop_wall,
                "write_bytes": io["write_bytes"], "wchar": io["wchar"], "lock_bytes": io["lock_bytes"],
                "lock_writes": io["lock_writes"], "outputs": outputs, "allocated": allocated, "lock": lock,
                "page": page_allocated, "bound_allocated": allocated * 2 + page_allocated + 4 * lock}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("counts", nargs="*", type=int, default=[100, 1000, 5000])
    parser.add_argument("--runs", type=int, default=1, help="applies of each count: the best wall counts "
                                                             "(this machine's walls swing by a third), every "
                                                             "run's bytes are checked")
    parser.add_argument("--same-bytes", action="store_true",
                        help="serve every task of a shape the same bytes (as until session 22): one blob in "
                             "the cache, one strip for the contact sheet")
    parser.add_argument("--journaled-ext4", action="store_true",
                        help="write the projects on a fresh ext4 with its journal (a loop device; root only), "
                             "where the filesystem's own metadata is written by jbd2, not charged to the apply")
    args = parser.parse_args()
    if args.journaled_ext4:
        with journaled_ext4(max(2, max(args.counts) * 3 // 5000 + 2)) as folder:
            os.environ["BENCH_DIR"] = folder
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    # Byte code compiled first, as an installed package has it: the first apply after an edit
    # of the source would otherwise count the .pyc files it writes as its own writes.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "sparkspec")], check=True)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT / "tests"), KEY,
                               "same" if args.same_bytes else "unique"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        print(f"apply scale: N independent scenes, parallelism {PARALLELISM}, zero render latency, "
              f"fake gateway in process {server.pid}; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs; projects on {filesystem(os.environ.get('BENCH_DIR') or tempfile.gettempdir())}")
        mb = 1024 * 1024
        best: dict[int, float] = {}
        for count in [c for c in args.counts for _ in range(args.runs)]:
            m = measure(count, base_url, server.pid)
            best[count] = min(best.get(count, m["wall"]), m["wall"])
            margin = (m["bound_allocated"] - m["write_bytes"]) / (1024 * 1024)
            verdict = f"ok, {margin:.2f} MB under" if margin >= 0 else f"OVER by {-margin:.2f} MB"
            print(f"  {count:>5} scenes: wall {m['wall']:7.1f} s = {m['per_scene_ms']:5.1f} ms/scene, CPU "
                  f"{m['cpu_per_scene_ms']:5.1f} ms/scene, fake gateway's CPU "
                  f"{m['server_cpu_per_scene_ms']:5.1f} ms/scene (no-op apply after it: {m['noop_wall']:.1f} s; "
                  f"beyond it: {m['beyond_noop_ms']:5.1f} ms/scene)\n"
                  f"         written {m['write_bytes'] / mb:8.1f} MB (wchar {m['wchar'] / mb:.1f} MB); bound "
                  f"{m['bound_allocated'] / mb:.1f} MB = outputs {m['allocated'] / mb:.1f} MB on disk "
                  f"({m['outputs'] / mb:.1f} MB of content) x 2 + review page {m['page'] / mb:.1f} MB + 4 x lock "
                  f"{m['lock'] / mb:.2f} MB: {verdict}\n"
                  f"         lock: {m['lock_writes']:.0f} writes, {m['lock_bytes'] / mb:.2f} MB in all = "
                  f"{m['lock_bytes'] / m['lock']:.2f} x the final lock", flush=True)
        walls = sorted(best.items())
        if args.runs > 1:
            print(f"  best of {args.runs}: " + ", ".join(f"{n:,} scenes {w / n * 1000:.1f} ms/scene" for n, w in walls))
        margins = [((b - a) / (n - m) * 1000, m, n) for (m, a), (n, b) in zip(walls, walls[1:]) if n > m]
        if margins:
            flat = all(cost <= 1.25 * margins[0][0] for cost, _, _ in margins)
            print("  marginal cost of a scene: " + ", ".join(f"{m:,} -> {n:,} scenes {cost:.1f} ms"
                                                           for cost, m, n in margins)
                  + f" ({'flat' if flat else 'GROWS'}: each within 1.25x of the first; fixed costs "
                    f"{walls[0][1] - margins[0][0] * walls[0][0] / 1000:.2f} s)")
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
