"""The team's remote render cache on a real S3 server (SeaweedFS on loopback): DESIGN section 9.

    python benchmarks/remote_bench.py                    # every part
    python benchmarks/remote_bench.py second-machine     # or: four-machines, plan

1. second-machine: machine A renders 100 scenes with the `local` provider and pushes them;
   each video is padded to --video-mb with an mp4 `free` box of its own random bytes (a valid
   file; real renders are megabytes, and transfer should dominate as it does for them); A's
   push makes and uploads the padded lock's contact sheet, as an apply would have.
   Machine B has the spec and the lock and an empty cache, and runs `sparkspec apply` (or
   `pull`, --verb): renders made (target 0), wall time against a plain concurrent download
   of the same objects with obstore in its own process (target <= 1.3x, best of --runs each,
   taking turns), the process's peak RSS (VmHWM, target <= 150 MB), and, in one more cold
   run through a counting proxy, HTTP requests to the store per scene (target <= 3).
2. four-machines: 4 `sparkspec apply` processes, each its own project folder, cache and
   HOME, apply the same 40-scene spec at once against the fake Spark API and one store:
   creates at the API (target exactly 40).
3. plan: `sparkspec plan` of 1,000 scenes whose renders are only on the remote, against the
   plan of the same spec with every render in the local cache (target <= 3x, best of --runs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from flaky_proxy import LoopbackProxy  # noqa: E402
from seaweedfs import SeaweedServer  # noqa: E402

MB = 1024 * 1024
KEY = "sk-bench"

# The CLI, with its own peak RSS written at exit (VmHWM: this process's own high-water mark),
# the seconds apply spent writing the review page (renders/index.html, contact.png), the
# peak RSS before that page was begun, and how many contact-sheet strips were made by then.
CHILD = """
import atexit, os, sys, time
review = [0.0, 0, -1]
def _kb():
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
def _hwm():
    with open(os.environ["BENCH_HWM_FILE"], "w") as out:
        out.write("%d %.3f %d %d" % (_kb(), review[0], review[1] or _kb(), review[2]))
atexit.register(_hwm)
sys.argv[0] = "sparkspec"
import sparkspec.commands.apply as apply_command
_review = apply_command._review
def _timed(*args, **kwargs):
    review[1] = review[1] or _kb()
    if review[2] < 0:  # contact-sheet strips already made while the pulls streamed
        review[2] = len([n for n in os.listdir(".sparkspec/review") if n.endswith(".png")]) if os.path.isdir(".sparkspec/review") else 0
    started = time.perf_counter()
    try:
        return _review(*args, **kwargs)
    finally:
        review[0] += time.perf_counter() - started
apply_command._review = _timed
from sparkspec.cli import run  # the console script's entry point: what `sparkspec` runs
run()
"""

# The baseline: the same objects, downloaded concurrently with obstore, streamed to files.
BASELINE = """
import asyncio, json, os, sys
import obstore
from obstore.store import S3Store

async def main():
    spec = json.loads(sys.argv[1])
    store = S3Store(spec["bucket"], prefix=spec["prefix"], endpoint=spec["endpoint"], region="us-east-1",
                    access_key_id=os.environ["AWS_ACCESS_KEY_ID"], secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                    client_options={"allow_http": True})
    gate = asyncio.Semaphore(spec["concurrency"])
    async def one(i, path):
        async with gate:
            result = await obstore.get_async(store, path)
            with open(os.path.join(spec["dest"], str(i)), "wb") as out:
                async for chunk in result.stream(min_chunk_size=1 << 20):
                    out.write(chunk)
    await asyncio.gather(*(one(i, p) for i, p in enumerate(spec["paths"])))

asyncio.run(main())
"""


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SPARKSPEC_", "AWS_"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    return env


REVIEW: list[tuple[float, int, int]] = []  # each run: seconds on the review page, peak RSS (bytes) before it,
# strips made before it (-1: no review page)


def sparkspec(root: Path, env: dict[str, str], *args: str, check: bool = True) -> tuple[float, int, str, str]:
    """Run the CLI: wall time, peak RSS in bytes, stdout, stderr (REVIEW gets the review page's time)."""
    hwm = root.parent / f".{root.name}.hwm"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=root, env=dict(env, BENCH_HWM_FILE=str(hwm)),
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if check and proc.returncode != 0:
        raise SystemExit(f"sparkspec {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
                         f"\n{proc.stdout[-2000:]}")
    rss, review, before, strips = hwm.read_text().split()
    REVIEW.append((float(review), int(before) * 1024, int(strips)))
    return wall, int(rss) * 1024, proc.stdout, proc.stderr


# -- 1. a second machine ------------------------------------------------------------------------
def pad_renders(root: Path, size: int) -> None:
    """Grow each scene's video to `size` with an mp4 `free` box of its own random bytes, and
    make the cache, renders/ and the lock say so (as if the renders had been that big)."""
    sys.path.insert(0, str(ROOT))
    from sparkspec.state.cache import Cache
    from sparkspec.state.lockfile import FileRecord, read_lock, write_lock

    lock_file = root / "project.spark.lock"
    lock, _ = read_lock(lock_file)
    cache = Cache(root / ".sparkspec" / "cache")
    scenes = {}
    for sid, record in lock.scenes.items():
        video = root / record.video.path
        data = video.read_bytes()
        pad = size - len(data)
        if pad > 8:
            data += (pad).to_bytes(4, "big") + b"free" + os.urandom(pad - 8)
        video.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        part = root / f".{sid}.part"
        part.write_bytes(data)
        cache.put_blob(part, sha)
        old = cache.lookup(record.key)
        assert old is not None
        from dataclasses import replace

        cache.record(replace(old, video_sha256=sha, video_bytes=len(data)))
        scenes[sid] = replace(record, video=FileRecord(record.video.path, sha, len(data)))
    cache.close()
    write_lock(lock_file, type(lock)(scenes, dict(lock.sequences)))


def second_machine(work: Path, server: SeaweedServer, scenes: int, video_mb: float, runs: int,
                   verb: str) -> dict[str, Any]:
    url = server.bucket("team")
    remote_env = dict(server.env(), SPARKSPEC_REMOTE=url)
    spec = ["version: 1", "name: second-machine", "provider: {type: local, parallelism: 2}",
            'defaults: {resolution: 480p, ratio: "1:1", frames: 29}', "scenes:"]
    spec += [f'  s{i:03d}: {{prompt: "clip number {i} of the bench"}}' for i in range(scenes)]
    first = work / "first"
    first.mkdir(parents=True)
    (first / "project.spark.yaml").write_text("\n".join(spec) + "\n")
    env = clean_env(work / "home-first")
    print(f"  machine A renders {scenes} scenes with the local provider ...", flush=True)
    sparkspec(first, env, "apply", "--auto-approve", "--json")
    pad_renders(first, int(video_mb * MB))
    sparkspec(first, dict(env, **remote_env), "push")

    lock = json.loads((first / "project.spark.lock").read_text())
    blobs = sorted({f["sha256"] for r in lock["scenes"].values() for f in (r["video"], r["last_frame"])})
    total = sum(f["bytes"] for r in lock["scenes"].values() for f in (r["video"], r["last_frame"]))
    bucket, prefix = url[len("s3://"):].split("/", 1)

    def clone(name: str) -> Path:
        root = work / name
        root.mkdir()
        for file in ("project.spark.yaml", "project.spark.lock"):
            shutil.copy(first / file, root / file)
        return root

    def machine_b(name: str, endpoint: str) -> tuple[float, int, str]:
        root = clone(name)
        env_b = {**clean_env(work / f"home-{name}"), **remote_env, "AWS_ENDPOINT_URL_S3": endpoint}
        wall, rss, out, _ = sparkspec(root, env_b, verb, *(["--auto-approve", "--json"] if verb == "apply" else []))
        for record in lock["scenes"].values():
            got = hashlib.sha256((root / record["video"]["path"]).read_bytes()).hexdigest()
            assert got == record["video"]["sha256"], f"{name}: {record['video']['path']} differs"
        assert (root / "project.spark.lock").read_text() == (first / "project.spark.lock").read_text()
        # Gone before the next run, as the baseline's files are: left, their pages would be
        # written back (30 s on) during whichever run comes then.
        shutil.rmtree(root)
        shutil.rmtree(work / f"home-{name}")
        return wall, rss, out

    def baseline(i: int) -> float:
        dest = work / f"plain-{i}"
        dest.mkdir()
        job = {"bucket": bucket, "prefix": f"{prefix}/v1", "endpoint": server.endpoint, "concurrency": 8,
               "paths": [f"blobs/sha256/{b[:2]}/{b}" for b in blobs], "dest": str(dest)}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", BASELINE, json.dumps(job)], check=True,
                       env=dict(clean_env(work / "home-plain"), **server.env()))
        wall = time.perf_counter() - started
        assert sum(p.stat().st_size for p in dest.iterdir()) == total
        shutil.rmtree(dest)
        return wall

    walls, plains, rss_max, renders, reviews, rss_before, early = [], [], 0, 0, [], 0, []
    for i in range(runs):
        plains.append(baseline(i))
        wall, rss, out = machine_b(f"second-{i}", server.endpoint)
        walls.append(wall)
        reviews.append(REVIEW[-1][0])
        early.append(REVIEW[-1][2])
        rss_before = max(rss_before, REVIEW[-1][1])
        rss_max = max(rss_max, rss)
        if verb == "apply":
            renders += sum(1 for line in out.splitlines() if line.strip() and
                           json.loads(line).get("event") in ("submitted", "completed"))
    proxy = LoopbackProxy(server.ports["s3.port"]).start()
    try:
        machine_b("counted", proxy.endpoint)
    finally:
        proxy.stop()
    requests = sum(proxy.requests.values())
    print("  walls", [round(w, 2) for w in walls], "plains", [round(p, 2) for p in plains])
    best = walls.index(min(walls))
    return {"scenes": scenes, "objects": len(blobs), "mb": total / MB, "wall": min(walls), "plain": min(plains),
            "ratio": min(walls) / min(plains), "peak_rss_mb": rss_max / MB, "renders": renders,
            "review": reviews[best], "ratio_without_review": (walls[best] - reviews[best]) / min(plains),
            "rss_before_review_mb": rss_before / MB, "strips_early": early[best],
            "requests": requests, "per_scene": requests / scenes, "by_method": dict(proxy.requests)}


# -- 2. four machines at once ------------------------------------------------------------------
def spark_spec(name: str, scenes: int, parallelism: int) -> str:
    lines = ["version: 1", f"name: {name}",
             f"provider: {{type: spark, parallelism: {parallelism}, poll: {{initial: 0.05, max: 0.3}}}}",
             'defaults: {resolution: 480p, ratio: "16:9", frames: 29}', "scenes:"]
    lines += [f'  s{i:04d}: {{prompt: "shot {i} of the shared spec"}}' for i in range(scenes)]
    return "\n".join(lines) + "\n"


def api_env(api: Any, home: Path) -> dict[str, str]:
    return dict(clean_env(home), SPARK_API_KEY=KEY, SPARK_BASE_URL=api.base_url)


def warm_templates(api: Any) -> None:
    """The fake serves one pre-rendered clip per shape; render it before any clock starts."""
    from fakeapi import Task

    params = {"content": [{"type": "text", "text": "warm"}], "resolution": "480p", "ratio": "16:9", "frames": 29}
    api._schedule_render(Task("warm", "warm", params, "m", time.time(), 0.0, 0.0)).result()


def four_machines(work: Path, server: SeaweedServer, machines: int = 4, scenes: int = 40) -> dict[str, Any]:
    from fakeapi import FakeSparkAPI

    url = server.bucket("team")
    with FakeSparkAPI(api_key=KEY, latency=(1.0, 3.0), seed=7, render="template", render_workers=1) as api:
        warm_templates(api)
        procs = []
        started = time.perf_counter()
        for m in range(machines):
            root = work / f"machine-{m}"
            root.mkdir(parents=True)
            (root / "project.spark.yaml").write_text(spark_spec("four-machines", scenes, 8))
            env = dict(api_env(api, work / f"home-{m}"), **server.env(), SPARKSPEC_REMOTE=url,
                       SPARKSPEC_REMOTE_CLAIM_TTL="10")
            out = (root / "apply.out").open("w")
            procs.append((root, out, subprocess.Popen(
                [sys.executable, "-m", "sparkspec", "apply", "--auto-approve", "--json"], cwd=root, env=env,
                stdout=out, stderr=subprocess.STDOUT)))
        codes = []
        for root, out, proc in procs:
            codes.append(proc.wait(timeout=900))
            out.close()
        wall = time.perf_counter() - started
        locks = [json.loads((root / "project.spark.lock").read_text()) if (root / "project.spark.lock").exists()
                 else {"scenes": {}} for root, _, _ in procs]
        complete = sum(1 for lock in locks if len(lock["scenes"]) == scenes)
        events: dict[str, int] = {}
        for root, _, _ in procs:
            for line in (root / "apply.out").read_text().splitlines():
                try:
                    event = json.loads(line).get("event", "?")
                except ValueError:
                    continue
                events[event] = events.get(event, 0) + 1
        return {"machines": machines, "scenes": scenes, "creates": api.total_creates, "codes": codes,
                "complete": complete, "wall": wall, "events": events,
                "max_creates_per_key": max(api.creates_by_key.values(), default=0)}


# -- 3. plan against the remote ----------------------------------------------------------------
def plan_remote(work: Path, server: SeaweedServer, scenes: int, runs: int) -> dict[str, Any]:
    from fakeapi import FakeSparkAPI

    url = server.bucket("team")
    first = work / "first"
    first.mkdir(parents=True)
    (first / "project.spark.yaml").write_text(spark_spec("plan-bench", scenes, 32))
    with FakeSparkAPI(api_key=KEY, latency=0.0, render="template", render_workers=1) as api:
        warm_templates(api)
        print(f"  machine A renders {scenes} scenes against the fake API and pushes them ...", flush=True)
        sparkspec(first, api_env(api, work / "home-first"), "apply", "--auto-approve", "--json")
    sparkspec(first, dict(clean_env(work / "home-first"), **server.env(), SPARKSPEC_REMOTE=url), "push")

    def clone(name: str, with_cache: bool) -> Path:
        root = work / name
        root.mkdir()
        for file in ("project.spark.yaml", "project.spark.lock"):
            shutil.copy(first / file, root / file)
        if with_cache:
            shutil.copytree(first / ".sparkspec" / "cache", root / ".sparkspec" / "cache")
        return root

    remote_only, local = clone("remote-only", False), clone("local", True)
    env_remote = dict(clean_env(work / "home-remote"), **server.env(), SPARKSPEC_REMOTE=url)
    env_local = clean_env(work / "home-local")
    remote_walls, local_walls = [], []
    summary_remote: dict[str, Any] = {}
    summary_local: dict[str, Any] = {}
    for _ in range(runs):
        wall, _, out, _ = sparkspec(remote_only, env_remote, "plan", "--json")
        remote_walls.append(wall)
        summary_remote = json.loads(out)["summary"]
        wall, _, out, _ = sparkspec(local, env_local, "plan", "--json")
        local_walls.append(wall)
        summary_local = json.loads(out)["summary"]
    return {"scenes": scenes, "remote": min(remote_walls), "local": min(local_walls),
            "ratio": min(remote_walls) / min(local_walls), "summary_remote": summary_remote,
            "summary_local": summary_local}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", metavar="PART", help="second-machine, four-machines, plan (default: all)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--video-mb", type=float, default=4.0)
    parser.add_argument("--plan-scenes", type=int, default=1000)
    parser.add_argument("--verb", choices=["apply", "pull"], default="apply",
                        help="what machine B runs in second-machine")
    args = parser.parse_args()
    parts = args.parts or ["second-machine", "four-machines", "plan"]
    # Installed, sparkspec has its bytecode (pip compiles it); a checkout installed editable has
    # none, and every CLI run here (PYTHONDONTWRITEBYTECODE) would compile its ~100 modules
    # again: 0.17 s of CPU a run that the baseline, importing only obstore, never pays.
    import sparkspec

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(sparkspec.__file__).parent)], check=True)
    with tempfile.TemporaryDirectory(prefix="remote-bench-") as tmp, SeaweedServer() as server:
        work = Path(tmp)
        if "second-machine" in parts:
            print(f"second-machine: {args.scenes} cached scenes, videos {args.video_mb:g} MB, SeaweedFS on loopback")
            r = second_machine(work / "second", server, args.scenes, args.video_mb, args.runs, args.verb)
            print(f"  `sparkspec {args.verb}` on a cold cache: {r['wall']:.2f} s for {r['objects']} objects, "
                  f"{r['mb']:.0f} MB; plain obstore download {r['plain']:.2f} s: {r['ratio']:.2f}x (target <= 1.3)")
            print(f"  of which the review page (renders/index.html, contact.png from the remote or decoded here) "
                  f"{r['review']:.2f} s; without it {r['ratio_without_review']:.2f}x; "
                  f"{r['strips_early']} of {r['scenes']} strips were made while the pulls streamed")
            print(f"  renders {r['renders']} (target 0); peak RSS {r['peak_rss_mb']:.1f} MB (target <= 150), "
                  f"{r['rss_before_review_mb']:.1f} MB before the review page")
            print(f"  requests to the store {r['requests']} = {r['per_scene']:.2f} per scene (target <= 3) "
                  f"{r['by_method']}")
        if "four-machines" in parts:
            print("four-machines: 4 applies of one 40-scene spec at once, fake Spark API (1-3 s a render), one store")
            f = four_machines(work / "four", server)
            print(f"  creates at the API {f['creates']} (target exactly {f['scenes']}); most for one key "
                  f"{f['max_creates_per_key']}; exit codes {f['codes']}; complete locks {f['complete']}/"
                  f"{f['machines']}; {f['wall']:.1f} s; events {f['events']}")
        if "plan" in parts:
            print(f"plan: {args.plan_scenes} scenes whose renders are only on the remote, against all in the local cache")
            p = plan_remote(work / "plan", server, args.plan_scenes, args.runs)
            print(f"  remote only {p['remote']:.2f} s, local cache {p['local']:.2f} s: {p['ratio']:.2f}x (target <= 3)")
            print(f"  summaries: remote {p['summary_remote']}; local {p['summary_local']}")


if __name__ == "__main__":
    main()
