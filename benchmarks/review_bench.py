"""The review page and the markdown plan at size (issue 10's figures).

1. A 200-scene project (local provider, 480p 16:9, chains of four through
   `first_frame: {scene: ...}`, a sequence of the first ten). Its lock and renders/ are built
   synthetically for speed: four clips are really rendered by the local provider and reused
   for every scene (each scene's lock entry carries a digest of its own, so the contact sheet's
   thumbnail cache sees 200 different videos, as after a real apply). Every scene has TAKES
   takes (issue 10 section 1), recorded as apply records them (scene_entry).
   Then, as `sparkspec apply` does after its last render:
     - index.html written (gather from lock + project, render, write): target < 0.5 s;
     - contact.png with a cold thumbnail cache (every clip decoded) and a warm one;
     - the HTML's size: target < 2 MB;
     - first paint in headless Chromium (lifecycle event firstContentfulPaint after the
       navigation's init), best of --runs: target < 1 s; and the load event.
2. `plan --format markdown` of 1,000 changes: the rendering of a 1,000-change plan (every
   change with reasons, half of them a prompt diff), best of --runs: target < 1 s; and the
   whole command on a 1,000-scene spec with nothing rendered (spec load + plan + markdown).

Run:  python benchmarks/review_bench.py [--runs 3] [--keep DIR]
Exit status 0 when every target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SCENES = 200
CHAIN = 4
TAKES = 4
CLIPS = 4


def spec_text(scenes: int) -> str:
    lines = ["version: 1", "name: review-bench", "provider: {type: local, price_per_million_tokens: 4.2}",
             'defaults: {resolution: 480p, ratio: "16:9", duration: 2}', "scenes:"]
    for n in range(scenes):
        lines.append(f"  s{n:04d}:")
        lines.append(f'    prompt: "Shot {n}: a chrome espresso machine, angle {n % 7}, light {n % 5}"')
        if n % CHAIN:
            lines.append(f"    first_frame: {{scene: s{n - 1:04d}}}")
    lines += ["sequences:", "  opening: {scenes: [" + ", ".join(f"s{n:04d}" for n in range(10)) + "]}"]
    return "\n".join(lines) + "\n"


def render_clips(folder: Path) -> list[tuple[Path, Path]]:
    """CLIPS real 480p clips from the local provider."""
    from sparkspec.providers.base import RenderRequest
    from sparkspec.providers.local import LocalProvider

    async def run() -> list[tuple[Path, Path]]:
        provider = LocalProvider(folder / "local")
        out = []
        for n in range(CLIPS):
            request = RenderRequest(key=f"{n:064x}", scene=f"clip{n}", model="m", prompt=f"clip {n}",
                                    resolution="480p", ratio="16:9", duration=2, frames=None, seed=n,
                                    camera_fixed=False, watermark=False, first_frame=None)
            status = await provider.submit(request)
            while status.video_url is None:
                status = await provider.poll(status.task_id)
            video, frame = folder / f"clip{n}.mp4", folder / f"clip{n}.png"
            await provider.download(status.video_url, video)
            assert status.last_frame_url is not None
            await provider.download(status.last_frame_url, frame)
            out.append((video, frame))
        return out

    return asyncio.run(run())


def build_project(root: Path, clips: list[tuple[Path, Path]]) -> tuple[int, str]:
    """The spec, renders/ and a lock as an apply of every scene (and take) would leave them."""
    from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord, scene_entry, write_lock
    from sparkspec.state.workspace import open_workspace

    root.mkdir(parents=True, exist_ok=True)
    (root / "project.spark.yaml").write_text(spec_text(SCENES))
    renders = root / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    workspace = open_workspace(root / "project.spark.yaml")
    project = workspace.project
    takes = TAKES
    scenes: dict[str, SceneRecord] = {}
    for n, sid in enumerate(project.scenes):
        records = []
        for take in range(1, takes + 1):
            video, frame = clips[(n + take) % len(clips)]
            suffix = "" if take == 1 else f".take{take}"
            video_path, frame_path = f"renders/{sid}{suffix}.mp4", f"renders/{sid}{suffix}.last.png"
            shutil.copyfile(video, root / video_path)
            shutil.copyfile(frame, root / frame_path)
            digest = hashlib.sha256(f"{sid} take {take}".encode()).hexdigest()
            records.append(SceneRecord(
                key=hashlib.sha256(f"key {sid} {take}".encode()).hexdigest(), provider="local",
                model=project.provider.model, task_id=f"local-{digest[:24]}", seed=1000 * n + take,
                tokens=39_744, video=FileRecord(video_path, digest, video.stat().st_size),
                last_frame=FileRecord(frame_path, digest[::-1], frame.stat().st_size),
                inputs={"prompt": project.scenes[sid].prompt, "resolution": "480p", "ratio": "16:9",
                        "duration": 2, "provider": "local", "model": project.provider.model,
                        "camera_fixed": False, "watermark": False, "seed": 1000 * n + take},
                cost=0.17, take=take))
        scenes[sid] = scene_entry({r.take: r for r in records}, pick=1)
    write_lock(workspace.lock_path, Lock(scenes, {}))
    workspace.close()
    return takes, "recorded in the lock"


def first_paint(page: Path, runs: int) -> tuple[float, float]:
    from browser import Chromium, find_chromium

    binary = find_chromium()
    if binary is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    best_paint, best_load = float("inf"), float("inf")
    browser = Chromium(binary, width=1280, height=900)
    try:
        browser.call("Page.setLifecycleEventsEnabled", {"enabled": True})
        for _ in range(runs):
            browser.open("about:blank")
            browser.open(page.as_uri())
            # The load event can come after the first paint: wait for both.
            browser.wait_for(lambda: {"firstContentfulPaint", "load"} <= {
                e["params"]["name"] for e in browser.events if e["method"] == "Page.lifecycleEvent"}, timeout=30)
            stamps = {e["params"]["name"]: e["params"]["timestamp"] for e in browser.events
                      if e["method"] == "Page.lifecycleEvent"}
            best_paint = min(best_paint, stamps["firstContentfulPaint"] - stamps["init"])
            best_load = min(best_load, stamps["load"] - stamps["init"])
            assert browser.console_errors() == [], browser.console_errors()
    finally:
        browser.close()
    return best_paint, best_load


def markdown_render(runs: int) -> float:
    from sparkspec.plan.markdown import render_markdown
    from sparkspec.plan.model import Action, Change, Plan

    changes = []
    for n in range(1000):
        reasons: tuple[str, ...]
        if n % 2:
            reasons = (f"prompt: A chrome espresso machine [-on a marble-] {{+beside a walnut+}} counter, shot {n}",
                       f"seed: {n} -> {n + 1}")
        else:
            reasons = (f"upstream s{n - 1:04d} re-renders",)
        changes.append(Change("scene", f"s{n:04d}", Action.UPDATE, reasons, None if n % 2 == 0 else "k" * 64,
                              103_818, 0.44))
    plan = Plan(tuple(changes))
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        text = render_markdown(plan, "sparkspec plan: bench")
        best = min(best, time.perf_counter() - start)
    assert text.count("<details>") == 500
    return best


def markdown_command(folder: Path, runs: int) -> float:
    (folder / "project.spark.yaml").write_text(spec_text(1000))
    command = [str(Path(sys.executable).with_name("sparkspec")), "-C", str(folder), "plan", "--format", "markdown"]
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        best = min(best, time.perf_counter() - start)
    assert out.count("| `+` | create |") == 1000
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    from sparkspec.review import write_review
    from sparkspec.review.contact import SHEET, SheetEntry, strips_on_sheet, write_contact_sheet
    from sparkspec.review.model import gather
    from sparkspec.state.lockfile import Lock
    from sparkspec.state.workspace import open_workspace

    work = Path(tempfile.mkdtemp(prefix="review-bench-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, float, float | None, str]] = []
    try:
        clips = render_clips(work / "clips")
        root = work / "project"
        takes, how = build_project(root, clips)
        print(f"{SCENES} scenes x {takes} take(s) ({how}); {CLIPS} rendered 480p clips reused")

        workspace = open_workspace(root / "project.spark.yaml")
        best = float("inf")
        for _ in range(args.runs):
            (root / "renders/index.html").unlink(missing_ok=True)
            start = time.perf_counter()
            write_review(workspace, Lock(), contact_sheet=False)
            best = min(best, time.perf_counter() - start)
        results.append(("index.html written after the last render", best, 0.5, "s"))
        size = (root / "renders/index.html").stat().st_size
        results.append(("index.html size", size / 1e6, 2.0, "MB"))

        review = gather(workspace.project, workspace.lock, {})
        entries = [SheetEntry(s.id, root / "renders" / s.picked.video, workspace.lock.scenes[s.id].video.sha256,
                              root / "renders" / s.picked.poster) for s in review.scenes]
        start = time.perf_counter()
        drawn = write_contact_sheet(root / "renders" / SHEET, entries)
        results.append(("contact.png, every clip decoded (cold)", time.perf_counter() - start, None, "s"))
        assert drawn is not None
        start = time.perf_counter()
        # The next apply's: every strip cropped from the sheet it replaces (none decoded).
        strips = strips_on_sheet(drawn[0].read_bytes(), drawn[1], {e.video_sha256 for e in entries})
        write_contact_sheet(root / "renders" / SHEET, entries, strips)
        results.append(("contact.png, strips cropped from the last sheet (warm)", time.perf_counter() - start,
                        None, "s"))
        workspace.close()

        paint, load = first_paint(root / "renders/index.html", args.runs)
        results.append(("first contentful paint, headless Chromium", paint, 1.0, "s"))
        results.append(("load event, headless Chromium", load, None, "s"))

        results.append(("plan --format markdown render, 1,000 changes", markdown_render(args.runs), 1.0, "s"))
        cold = work / "plan1000"
        cold.mkdir(exist_ok=True)
        results.append(("sparkspec plan --format markdown, 1,000-scene spec (process)",
                        markdown_command(cold, args.runs), None, "s"))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    ok = True
    for name, value, target, unit in results:
        verdict = ""
        if target is not None:
            passed = value < target
            ok &= passed
            verdict = f"  (target < {target} {unit}: {'PASS' if passed else 'FAIL'})"
        print(f"{name:<62} {value:8.3f} {unit}{verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
