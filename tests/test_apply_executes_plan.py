"""Apply carries out the plan it is given: two scenes with one key render once, a key the
plan left unknown is decided by the planner's rule when it becomes known (and shared the
same way), and a world that changed since the plan fails the scene as stale."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sparkspec.apply.engine import ApplyResult, Engine
from sparkspec.plan.model import Action, Plan
from sparkspec.plan.view import render_text
from sparkspec.providers.base import RenderRequest, TaskStatus
from sparkspec.providers.local import LocalProvider
from sparkspec.state.lockfile import read_lock
from sparkspec.state.workspace import Workspace, open_workspace

SPEC = """\
version: 1
provider: {type: local, parallelism: 4, poll: {initial: 0.01, max: 0.02}}
defaults: {resolution: 480p, frames: 29, seed: 5}
scenes:
  a: {prompt: "a lantern floats up", description: "the first take"}
  twin: {prompt: "a lantern floats up", description: "the same shot, for the trailer"}
  b: {first_frame: {scene: a}, prompt: "the lantern drifts away"}
  b2: {first_frame: {scene: twin}, prompt: "the lantern drifts away"}
  solo: {prompt: "a moth circles a flame"}
"""


class CountingProvider(LocalProvider):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.submitted: list[str] = []

    async def submit(self, request: RenderRequest) -> TaskStatus:
        self.submitted.append(request.scene)
        return await super().submit(request)


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def opened(root: Path, spec: str = SPEC) -> Workspace:
    path = root / "project.spark.yaml"
    if not path.exists():
        path.write_text(spec)
    return open_workspace(path)


def execute(workspace: Workspace, plan: Plan, provider: Any) -> tuple[ApplyResult, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    engine = Engine(workspace, plan, provider, events.append, parallelism=4, sleep=_no_sleep)
    try:
        return asyncio.run(engine.run()), events
    finally:
        workspace.close()


def apply_all(root: Path) -> tuple[ApplyResult, CountingProvider]:
    workspace = opened(root)
    provider = CountingProvider(workspace.state_dir / "local")
    result, _ = execute(workspace, workspace.plan(), provider)
    return result, provider


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_two_scenes_with_one_key_are_rendered_once(tmp_path: Path) -> None:
    workspace = opened(tmp_path)
    plan = workspace.plan()
    workspace.close()
    twin = plan.scene("twin")
    assert twin is not None and twin.action is Action.REUSE and twin.same_as == "a"
    assert twin.reasons == ("same render as scene.a",) and twin.estimated_tokens == 0
    a, solo = plan.scene("a"), plan.scene("solo")
    assert a is not None and solo is not None and twin.key == a.key
    b2 = plan.scene("b2")  # its key is known only after apply, but it is made as b is
    assert b2 is not None and b2.action is Action.REUSE and b2.key is None and b2.same_as == "b"
    assert plan.estimated_tokens == a.estimated_tokens * 2 + solo.estimated_tokens  # a, b, solo
    assert "= scene.twin (reuse)" in render_text(plan) and "same render as scene.a" in render_text(plan)

    result, provider = apply_all(tmp_path)
    assert result.ok
    assert sorted(provider.submitted) == ["a", "b", "solo"]
    assert sorted(result.reused) == ["b2", "twin"]
    assert result.tokens == sum(read_lock(tmp_path / "project.spark.lock")[0].scenes[s].tokens
                                for s in provider.submitted)
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert lock.scenes["a"].video.sha256 == lock.scenes["twin"].video.sha256
    assert lock.scenes["b"].video.sha256 == lock.scenes["b2"].video.sha256
    assert (tmp_path / "renders/twin.mp4").read_bytes() == (tmp_path / "renders/a.mp4").read_bytes()

    again, provider = apply_all(tmp_path)
    assert again.ok and provider.submitted == [] and not again.reused


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_cached_render_gone_since_the_plan_fails_as_stale_and_renders_nothing(tmp_path: Path) -> None:
    assert apply_all(tmp_path)[0].ok
    (tmp_path / "renders/solo.mp4").unlink()
    workspace = opened(tmp_path)
    plan = workspace.plan()
    solo = plan.scene("solo")
    assert solo is not None and solo.action is Action.RESTORE
    record = workspace.lock.scenes["solo"]
    workspace.cache.blob_path(record.video.sha256).unlink()  # gone between plan and apply

    result, events = execute(workspace, plan, None)  # no provider: this plan renders nothing
    assert set(result.failed) == {"solo"}
    assert result.failed["solo"].startswith("the plan is stale: run plan again")
    assert {"event": "failed", "scene": "solo", "error": result.failed["solo"]} in events
    assert not (tmp_path / "renders/solo.mp4").exists()
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert lock.scenes["solo"] == record  # the lock still tells the truth: unchanged


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_scene_planned_unchanged_is_not_skipped_when_its_upstreams_restore_fails(tmp_path: Path) -> None:
    """b was planned unchanged (a's recorded last frame is as it was); a's restore failed, and b
    was reported "skipped: upstream a did not render", counted and shown as a change."""
    assert apply_all(tmp_path)[0].ok
    (tmp_path / "renders/a.mp4").unlink()
    (tmp_path / "renders/twin.mp4").unlink()  # the same render: no copy of it left to adopt
    workspace = opened(tmp_path)
    plan = workspace.plan()
    a, b = plan.scene("a"), plan.scene("b")
    assert a is not None and a.action is Action.RESTORE and b is not None and b.action is Action.NOOP
    workspace.cache.blob_path(workspace.lock.scenes["a"].video.sha256).unlink()  # gone between plan and apply
    result, events = execute(workspace, plan, None)
    assert set(result.failed) == {"a", "twin"} and result.skipped == {}
    assert not [e for e in events if e.get("scene") in ("b", "b2")]
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert lock.scenes["b"] == workspace.lock.scenes["b"]


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_an_upstream_frame_altered_since_the_plan_fails_its_render_as_stale(tmp_path: Path) -> None:
    assert apply_all(tmp_path)[0].ok
    text = (tmp_path / "project.spark.yaml").read_text()
    (tmp_path / "project.spark.yaml").write_text(text.replace('prompt: "the lantern drifts away"}\n  b2',
                                                              'prompt: "the lantern drifts far away"}\n  b2'))
    workspace = opened(tmp_path)
    plan = workspace.plan()
    b = plan.scene("b")
    assert b is not None and b.action is Action.UPDATE and b.key is not None
    frame = workspace.lock.scenes["a"].last_frame
    (tmp_path / frame.path).write_bytes(b"not the frame the key was made of")
    workspace.cache.blob_path(frame.sha256).unlink()
    provider = CountingProvider(workspace.state_dir / "local")

    result, _ = execute(workspace, plan, provider)
    assert result.failed == {"b": f"the plan is stale: run plan again ({frame.path} changed since the plan)"}
    assert provider.submitted == []


def test_one_render_in_flight_per_key_the_others_wait_and_share_it(tmp_path: Path) -> None:
    """Keys the plan could not foresee as equal meet at apply time: one task, the rest share it."""
    workspace = opened(tmp_path)
    plan = workspace.plan()
    change = plan.scene("solo")
    assert change is not None and change.scene_key is not None
    provider = CountingProvider(workspace.state_dir / "local")
    engine = Engine(workspace, plan, provider, lambda event: None, parallelism=4, sleep=_no_sleep)
    scene = workspace.project.scenes["solo"]
    request = engine.request(scene, change.scene_key, None)

    async def three_at_once() -> list[Any]:
        engine.tmp_dir.mkdir(parents=True, exist_ok=True)
        return await asyncio.gather(*(engine.runner.obtain(change.scene_key, request) for _ in range(3)))

    try:
        outcomes = asyncio.run(three_at_once())
    finally:
        workspace.close()
    assert provider.submitted == ["solo"]
    assert [shared for _, shared in outcomes] == [False, True, True]
    assert len({cached.video_sha256 for cached, _ in outcomes}) == 1


def test_a_scene_sharing_a_render_is_installed_when_only_the_first_scenes_install_failed(tmp_path: Path) -> None:
    """a's render was made and cached; only its own output path was in the way (a folder that
    came after the plan). twin, which shares the render, was skipped as if a had not rendered."""
    workspace = opened(tmp_path)
    plan = workspace.plan()
    (tmp_path / "renders/a.mp4").mkdir(parents=True)  # after the plan: apply's own check is the CLI's
    result, events = execute(workspace, plan, CountingProvider(workspace.state_dir / "local"))
    assert list(result.failed) == ["a"] and "Is a directory" in result.failed["a"], result.failed
    assert "twin" not in result.skipped and "twin" in result.reused, (result.skipped, result.reused)
    assert {"b", "b2"} <= set(result.skipped)  # b starts from a's installed frame; b2 shares b's render
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert sorted(lock.scenes) == ["solo", "twin"]


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_show_counts_a_shared_render_once(tmp_path: Path, monkeypatch: Any) -> None:
    """a and twin share one render (one task, paid once): show's total counted it twice."""
    from cli_runner import run_main

    result, provider = apply_all(tmp_path)
    assert result.ok and provider.submitted.count("a") + provider.submitted.count("twin") == 1
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    paid = {(r.key, r.task_id): r.tokens for r in lock.scenes.values()}
    assert len(paid) == len(lock.scenes) - 2  # twin shares a's render, b2 shares b's
    code, out, err = run_main(["show"], tmp_path, monkeypatch)
    assert code == 0, err
    assert out.rstrip().endswith(f"{len(lock.scenes)} scene(s), {sum(paid.values()):,} tokens in all."), out


@pytest.mark.slow  # two applies of a chain and a sequence
def test_a_planned_render_that_turns_out_unchanged_is_said_not_left_out(tmp_path: Path) -> None:
    """--replace of an upstream whose render comes out the same (the local renderer's same
    key gives the same bytes): the downstream planned `update` and the sequence's planned
    stitch turn out to have nothing to do, and apply says so rather than saying nothing."""
    from sparkspec.apply.progress import describe
    from sparkspec.plan.model import PlanOptions

    spec = SPEC.replace("scenes:\n", "sequences:\n  film: {scenes: [a, b]}\nscenes:\n")
    assert apply_all_of(tmp_path, spec)[0].ok
    workspace = opened(tmp_path, spec)
    plan = workspace.plan(PlanOptions(replace=("a",)))
    planned = plan.scene("b")
    assert planned is not None and planned.action is Action.UPDATE
    provider = CountingProvider(workspace.state_dir / "local")
    result, events = execute(workspace, plan, provider)
    assert result.ok and provider.submitted == ["a"] and result.stitched == []
    notes = [describe(e) for e in events if e.get("state") == "unchanged"]
    assert notes == ["b: unchanged: a's new last frame is the one it had, so its key is unchanged: nothing to render",
                     "sequence film: unchanged: its members' videos are the ones it was stitched from: "
                     "nothing to stitch"]


def apply_all_of(root: Path, spec: str) -> tuple[ApplyResult, CountingProvider]:
    workspace = opened(root, spec)
    provider = CountingProvider(workspace.state_dir / "local")
    result, _ = execute(workspace, workspace.plan(), provider)
    return result, provider
