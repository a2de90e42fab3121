"""`sparkspec apply` against the fake Spark gateway on loopback: makespan, requests, memory.

    python benchmarks/apply_bench.py            # all three parts
    python benchmarks/apply_bench.py makespan   # or: downloads, image

Every apply is the real CLI in a subprocess (`python -m sparkspec apply --auto-approve`),
talking HTTP to the fake gateway that runs in this process (tests/fakeapi/).

1. makespan: 200 scenes in 40 chains of five, render latency per scene drawn from a
   seeded 0.2-1.0 s range, parallelism 16. Prints the apply's wall time and its lower
   bound, max(longest chain's render time, total render time / 16), their ratio, and
   the HTTP requests per scene. The fake serves one pre-rendered clip per output shape
   ("template" mode) so its own encoding does not compete with the apply for the CPU.
2. downloads: 20 scenes whose videos are 50 MB each, all in flight at once; peak RSS
   of the apply process. Each video is a real H.264 mp4 from the local renderer followed
   by a 50 MB ISO BMFF `free` box: a valid file of that size, which the engine's probe
   decodes like any other, streamed by the fake from zeros.
3. image: one scene whose first frame is a 25 MB PNG (incompressible noise, 2960x2960),
   sent as a data URL; peak RSS against the same apply with a 640x640 first frame.
4. journal: the time from a create's answer to its fsync'd journal entry (Journal.record
   returns), for the 200 scenes of part 1, with both cores kept busy by two spinning
   processes; p50/p99/max. Target p99 <= 20 ms. Measured from the moment the answer is
   in hand: httpx has read it (its `send` returns the response, body and all), so the
   provider's checks, the parsing of the task id and everything the engine does in front
   of the write is counted. Also shown: from the moment the transport hands over the
   answer's headers (the body still to be read, through the event loop), from the
   provider's submit returning (the write alone, in the apply), and the floor:
   Journal.record alone, in a loop, on the same disk under the same load.
5. ratelimit: 200 independent scenes with requests_per_minute: 120 against the fake.
   Time is scaled by --scale (default 10): the limiter's minute lasts 60/scale s, and
   the render latency (0.5 s) and poll interval (2 s) are divided by the same factor,
   so the run takes ~20 s instead of ~3 min and every ratio is unchanged. Prints the
   most creates+queries in any (scaled) minute (target <= 120) and the makespan against
   the bound the limit allows: request k can go no earlier than minute floor(k/120),
   and every scene needs at least a create and a query, so the last of the 2 x 200
   requests waits floor((400-1)/120) = 3 minutes. Target: within 1.15x of that bound.

Peak RSS is the apply process's own high-water mark (VmHWM, read by the process as it
exits), so the fake in this process is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeapi import FakeSparkAPI  # noqa: E402

KEY = "sk-bench"
SEED = 4242
MB = 1024 * 1024


def environment(api: FakeSparkAPI, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SPARKSPEC_"))}
    env.update(SPARK_API_KEY=KEY, SPARK_BASE_URL=api.base_url, SPARKSPEC_CACHE_DIR=str(cache))
    return env


# The CLI, with its own peak RSS written at exit. VmHWM belongs to the process's own
# address space; ru_maxrss would also count the parent's pages at fork (Linux keeps the
# larger of the two across exec), and the parent here holds the fake gateway.
CHILD = """
import atexit, os, sys
def _hwm():
    with open("/proc/self/status") as status, open(os.environ["BENCH_HWM_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(_hwm)
sys.argv[0] = "sparkspec"
from sparkspec.cli import run  # the console script's entry point: what `sparkspec` runs
run()
"""


# Part 4: stamps when each create's answer is in hand (at the transport, and when the
# provider's submit returns) and when its journal entry is durable.
JOURNAL_CHILD = """
import atexit, json, os, time
import httpx
from sparkspec.providers.spark import provider as sp
from sparkspec.state import journal as jr
heard, read, answered, journalled = {}, {}, {}, {}
_handle = httpx.AsyncHTTPTransport.handle_async_request
async def handle(self, request):
    response = await _handle(self, request)
    response.bench_heard = time.perf_counter()
    return response
_send = httpx.AsyncClient.send
async def send(self, request, **kwargs):
    response = await _send(self, request, **kwargs)
    response.bench_read = time.perf_counter()
    return response
_task = sp.SparkProvider._task
def task(self, response, what):
    status = _task(self, response, what)
    if response.request.method == "POST":
        heard[status.task_id] = response.bench_heard
        read[status.task_id] = response.bench_read
    return status
_submit, _put = sp.SparkProvider.submit, jr.Journal.put
async def submit(self, request):
    status = await _submit(self, request)
    answered[status.task_id] = time.perf_counter()
    return status
def put(self, entry):  # the apply's runner writes each entry through it
    _put(self, entry)
    journalled[entry.task_id] = time.perf_counter()
httpx.AsyncHTTPTransport.handle_async_request, httpx.AsyncClient.send = handle, send
sp.SparkProvider._task, sp.SparkProvider.submit, jr.Journal.put = task, submit, put
def _dump():
    with open(os.environ["BENCH_JOURNAL_FILE"], "w") as out:
        json.dump({"heard": [journalled[t] - heard[t] for t in heard if t in journalled],
                   "read": [journalled[t] - read[t] for t in read if t in journalled],
                   "submitted": [journalled[t] - answered[t] for t in answered if t in journalled]}, out)
atexit.register(_dump)
""" + CHILD

# Part 4's floor: the journal write alone, in a loop, in a fresh process.
FLOOR_CHILD = """
import json, sys, time
from pathlib import Path
from sparkspec.state.journal import Journal
journal, took = Journal(Path(sys.argv[1])), []
for i in range(int(sys.argv[2])):
    started = time.perf_counter()
    journal.record(f"{i:064x}", "s", "spark", f"cgt-{i}", 172800)
    took.append(time.perf_counter() - started)
    time.sleep(0.005)
print(json.dumps(took))
"""

# Part 5: the limiter's minute, scaled.
RATE_CHILD = """
import os
from sparkspec.providers.ratelimit import RateLimiter
RateLimiter.__init__.__kwdefaults__["period"] = float(os.environ["BENCH_PERIOD"])
""" + CHILD


def apply(root: Path, env: dict[str, str], *args: str, child: str = CHILD) -> tuple[float, int, list[dict[str, Any]]]:
    """Run one apply; its wall time, its peak RSS in bytes, and its JSON events."""
    out, err, hwm = root / "apply.out", root / "apply.err", root / "apply.hwm"
    started = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.run([sys.executable, "-c", child, "apply", "--auto-approve", "--json", *args],
                              cwd=root, env=dict(env, BENCH_HWM_FILE=str(hwm)), stdout=stdout, stderr=stderr)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"apply failed ({proc.returncode}):\n{err.read_text()[-3000:]}")
    events = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return elapsed, int(hwm.read_text()) * 1024, events


# -- 1. makespan -----------------------------------------------------------------------------
CHAINS, LENGTH, PARALLELISM = 40, 5, 16


def chains_spec(poll_initial: float, poll_max: float) -> list[str]:
    # The account's rate limit (500 requests a minute by default, creates and queries) would make
    # this a measure of the limiter: 200 scenes ask about 1,000 times (the `ratelimit` part
    # measures the limiter). The makespan is the engine's scheduling against the chains.
    lines = ["version: 1", "provider: {type: spark, parallelism: %d, requests_per_minute: 100000, "
             "poll: {initial: %s, max: %s}}" % (PARALLELISM, poll_initial, poll_max),
             'defaults: {resolution: 480p, ratio: "16:9", frames: 29}', "scenes:"]
    for chain in range(CHAINS):
        for step in range(LENGTH):
            scene = f"c{chain:02d}-{step}"
            first = f", first_frame: {{scene: c{chain:02d}-{step - 1}}}" if step else ""
            lines.append(f'  {scene}: {{prompt: "shot {step} of story {chain}"{first}}}')
    return lines


def makespan(poll_initial: float, poll_max: float) -> dict[str, float]:
    lines = chains_spec(poll_initial, poll_max)
    with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp, \
            FakeSparkAPI(api_key=KEY, latency=(0.2, 1.0), seed=SEED, render="template", render_workers=1) as api:
        root = Path(tmp)
        (root / "project.spark.yaml").write_text("\n".join(lines) + "\n")
        api._schedule_render(_template_task(api)).result()  # the one clip, before the clock starts
        wall, _, events = apply(root, environment(api, root / "cache"))
        latency = {api.prompt_of_key[t.key]: t.latency for t in api.tasks.values()}
        chains = [sum(latency[f"shot {s} of story {c}"] for s in range(LENGTH)) for c in range(CHAINS)]
        total = sum(latency.values())
        bound = max(max(chains), total / PARALLELISM)
        completed = sum(1 for e in events if e["event"] == "completed")
        requests = sum(api.requests.values())
        assert completed == CHAINS * LENGTH and len(latency) == CHAINS * LENGTH, (completed, len(latency))
        render_phase = max(m for m, _, _ in api.events) - min(m for m, _, _ in api.events)
        return {"wall": wall, "render_phase": render_phase, "bound": bound, "longest_chain": max(chains),
                "total_over_p": total / PARALLELISM, "ratio": wall / bound, "ratio_render_phase": render_phase / bound,
                "requests_per_scene": requests / completed, "creates": api.requests["create"],
                "queries": api.requests["query"], "downloads": api.requests["download"]}


def _template_task(api: FakeSparkAPI) -> Any:
    from fakeapi import Task

    params = {"content": [{"type": "text", "text": "warm"}], "resolution": "480p", "ratio": "16:9", "frames": 29}
    return Task("warm", "warm", params, "m", time.time(), 0.0, 0.0)


# -- 2. downloads ------------------------------------------------------------------------------
def downloads(count: int = 20, size: int = 50 * MB) -> dict[str, float]:
    lines = ["version: 1", "provider: {type: spark, parallelism: %d, poll: {initial: 0.05, max: 0.2}}" % count,
             'defaults: {resolution: 480p, ratio: "16:9", frames: 29}', "scenes:"]
    lines += [f'  s{i:02d}: {{prompt: "clip number {i}"}}' for i in range(count)]
    with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp, \
            FakeSparkAPI(api_key=KEY, latency=0.1, render="template", render_workers=1) as api:
        root = Path(tmp)
        (root / "project.spark.yaml").write_text("\n".join(lines) + "\n")
        clip, *_ = api._schedule_render(_template_task(api)).result()
        api.video_padding = size - clip.stat().st_size - 8
        wall, rss, _ = apply(root, environment(api, root / "cache"))
        sizes = [p.stat().st_size for p in (root / "renders").glob("*.mp4")]
        assert len(sizes) == count and all(s == size for s in sizes), sizes
        return {"videos": count, "video_mb": size / MB, "peak_rss_mb": rss / MB, "wall": wall}


# -- 3. a 25 MB first frame --------------------------------------------------------------------
def image() -> dict[str, float]:
    from PIL import Image

    results = {}
    with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp:
        for name, side in (("small", 640), ("large", 2960)):
            root = Path(tmp) / name
            (root / "assets").mkdir(parents=True)
            noise = random.Random(SEED).randbytes(side * side * 3)
            Image.frombytes("RGB", (side, side), noise).save(root / "assets" / "first.png", compress_level=1)
            del noise
            (root / "project.spark.yaml").write_text(
                "version: 1\nprovider: {type: spark, poll: {initial: 0.05, max: 0.2}}\n"
                'defaults: {resolution: 480p, ratio: "1:1", frames: 29}\n'
                'scenes:\n  hero: {first_frame: {image: assets/first.png}, prompt: "the image comes alive"}\n')
            with FakeSparkAPI(api_key=KEY, latency=0.1, render="template", render_workers=1,
                              keep_bodies=False) as api:
                _, rss, _ = apply(root, environment(api, root / "cache"))
                sent = api.create_body_bytes[0]
            results[name] = {"image_mb": (root / "assets" / "first.png").stat().st_size / MB,
                             "body_mb": sent / MB, "peak_rss_mb": rss / MB}
    return {"image_mb": results["large"]["image_mb"], "body_mb": results["large"]["body_mb"],
            "peak_rss_mb": results["large"]["peak_rss_mb"], "baseline_rss_mb": results["small"]["peak_rss_mb"],
            "above_baseline_mb": results["large"]["peak_rss_mb"] - results["small"]["peak_rss_mb"]}


# -- 4. journal -----------------------------------------------------------------------------------
def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"count": len(ms), "p50": ms[len(ms) // 2], "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
            "max": ms[-1]}


def journal(poll_initial: float, poll_max: float) -> dict[str, dict[str, float]]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp, \
                FakeSparkAPI(api_key=KEY, latency=(0.2, 1.0), seed=SEED, render="template", render_workers=1) as api:
            root = Path(tmp)
            (root / "project.spark.yaml").write_text("\n".join(chains_spec(poll_initial, poll_max)) + "\n")
            api._schedule_render(_template_task(api)).result()
            stamps = root / "journal.json"
            env = dict(environment(api, root / "cache"), BENCH_JOURNAL_FILE=str(stamps))
            apply(root, env, child=JOURNAL_CHILD)
            delays = json.loads(stamps.read_text())
            floor = subprocess.run([sys.executable, "-c", FLOOR_CHILD, str(root / "floor"), str(CHAINS * LENGTH)],
                                   cwd=root, check=True, capture_output=True, text=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert len(delays["heard"]) == len(delays["submitted"]) == CHAINS * LENGTH, len(delays["heard"])
    return {"heard": percentiles(delays["heard"]), "read": percentiles(delays["read"]),
            "submitted": percentiles(delays["submitted"]),
            "floor": percentiles(json.loads(floor.stdout))}


# -- 5. ratelimit ----------------------------------------------------------------------------------
def ratelimit(scale: float, scenes: int = 200, per_minute: int = 120) -> dict[str, float]:
    period = 60.0 / scale
    lines = ["version: 1", "provider: {type: spark, requests_per_minute: %d, poll: {initial: %s, max: %s}}"
             % (per_minute, 2.0 / scale, 15.0 / scale),
             'defaults: {resolution: 480p, ratio: "16:9", frames: 29}', "scenes:"]
    lines += [f'  s{i:03d}: {{prompt: "independent shot {i}"}}' for i in range(scenes)]
    with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp, \
            FakeSparkAPI(api_key=KEY, latency=0.5 / scale, render="template", render_workers=1) as api:
        root = Path(tmp)
        (root / "project.spark.yaml").write_text("\n".join(lines) + "\n")
        api._schedule_render(_template_task(api)).result()
        env = dict(environment(api, root / "cache"), BENCH_PERIOD=str(period))
        wall, _, events = apply(root, env, child=RATE_CHILD)
        times = sorted(m for m, endpoint, _ in api.events if endpoint in ("create", "query"))
        assert sum(1 for e in events if e["event"] == "completed") == scenes
    busiest, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= period:
            start += 1
        busiest = max(busiest, end - start + 1)
    bound = period * ((2 * scenes - 1) // per_minute)
    span = times[-1] - times[0]
    return {"scale": scale, "requests": len(times), "busiest_minute": busiest, "span_minutes": span / period,
            "bound_minutes": bound / period, "ratio": span / bound, "wall_minutes": wall / period,
            "creates": api.requests["create"], "queries": api.requests["query"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", metavar="PART",
                        help="makespan, downloads, image, journal, ratelimit (default: all)")
    parser.add_argument("--scale", type=float, default=10.0, help="time scale of the ratelimit part")
    parser.add_argument("--poll", nargs=2, type=float, default=(0.1, 1.0), metavar=("INITIAL", "MAX"),
                        help="provider.poll for the makespan run")
    args = parser.parse_args()
    known = ["makespan", "downloads", "image", "journal", "ratelimit"]
    args.parts = args.parts or known
    if set(args.parts) - set(known):
        parser.error(f"unknown part(s): {sorted(set(args.parts) - set(known))}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    if "makespan" in args.parts:
        m = makespan(*args.poll)
        print(f"makespan: {CHAINS} chains x {LENGTH} scenes, latency 0.2-1.0 s (seed {SEED}), "
              f"parallelism {PARALLELISM}, poll {args.poll[0]}-{args.poll[1]} s")
        print(f"  apply wall time      {m['wall']:.2f} s  (ratio {m['ratio']:.3f}, target <= 1.15)")
        print(f"  first to last request {m['render_phase']:.2f} s  (ratio {m['ratio_render_phase']:.3f})")
        print(f"  lower bound          {m['bound']:.2f} s  = max(longest chain {m['longest_chain']:.2f} s, "
              f"total / {PARALLELISM} = {m['total_over_p']:.2f} s)")
        print(f"  HTTP requests/scene  {m['requests_per_scene']:.2f}  (target <= 8; {m['creates']} creates, "
              f"{m['queries']} queries, {m['downloads']} downloads)")
    if "downloads" in args.parts:
        d = downloads()
        print(f"downloads: {d['videos']} x {d['video_mb']:.0f} MB videos, all in flight: peak RSS "
              f"{d['peak_rss_mb']:.1f} MB (target <= 150), {d['wall']:.1f} s")
    if "image" in args.parts:
        i = image()
        print(f"image: a {i['image_mb']:.1f} MB first frame ({i['body_mb']:.1f} MB request body): peak RSS "
              f"{i['peak_rss_mb']:.1f} MB, {i['above_baseline_mb']:.1f} MB above the {i['baseline_rss_mb']:.1f} MB "
              f"of a 640x640 first frame (target <= 120)")
    if "journal" in args.parts:
        j = journal(*args.poll)
        print(f"journal: {j['heard']['count']} creates, both cores busy (load average "
              f"{os.getloadavg()[0]:.1f}); create's answer -> journal entry fsync'd:")
        for name, label in (("read", "from the answer read"), ("heard", "(from its headers)"),
                            ("submitted", "(from submit's return)"), ("floor", "(floor: the write alone)")):
            target = " (target <= 20)" if name == "read" else ""
            print(f"  {label:26} p50 {j[name]['p50']:7.2f} ms, p99 {j[name]['p99']:7.2f} ms{target}, "
                  f"max {j[name]['max']:7.2f} ms")
    if "ratelimit" in args.parts:
        r = ratelimit(args.scale)
        print(f"ratelimit: 200 scenes, requests_per_minute 120, time scaled {r['scale']:g}x: "
              f"{r['requests']} creates+queries ({r['creates']} creates, {r['queries']} queries)")
        print(f"  busiest minute       {r['busiest_minute']} requests (target <= 120)")
        print(f"  first to last request {r['span_minutes']:.2f} min against a bound of {r['bound_minutes']:.0f} min "
              f"(ratio {r['ratio']:.3f}, target <= 1.15); apply wall time {r['wall_minutes']:.2f} min")


if __name__ == "__main__":
    main()
