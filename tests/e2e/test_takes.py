"""Takes through the CLI (DESIGN section 10), with the local provider and against the fake spark
API: candidates side by side with their own seeds and keys, a pick that moves files instead of
rendering, raised and lowered takes, the lock's shape, sequences and chains from the pick, every
take's tokens counted, a fresh clone changing its pick, and a failed picked take."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cli_runner import start_cli
from fakeapi import FakeSparkAPI
from test_crash import check_creates

from sparkspec.keys import take_seed

from .conftest import Project

SPEC = """\
version: 1
provider: {type: PROVIDER, parallelism: 3, poll: {initial: 0.02, max: 0.1}}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 11}
scenes:
  hero:
    prompt: "a paper boat on a puddle"
    takes: 3
  pour:
    first_frame: {scene: hero}
    prompt: "the boat sails away"
sequences:
  film: {scenes: [hero, pour]}
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(run: Any, event: str) -> list[str]:
    return sorted(e["scene"] for e in run.events() if e["event"] == event and "scene" in e)


class Takes:
    """A project on one provider: `spec()` is SPEC for it, `creates()` what the API was paid for."""

    def __init__(self, project: Project, api: FakeSparkAPI | None) -> None:
        self.project, self.api = project, api
        if api is not None:
            project.env.update(SPARK_API_KEY=api.api_key, SPARK_BASE_URL=api.base_url)

    def spec(self, text: str = SPEC) -> str:
        return text.replace("PROVIDER", "local" if self.api is None else "spark")

    def write(self, text: str = SPEC) -> None:
        self.project.write(self.spec(text))

    def creates(self) -> int | None:
        return None if self.api is None else self.api.total_creates


@pytest.fixture(params=["local", pytest.param("spark", marks=pytest.mark.slow)])
def takes(request: pytest.FixtureRequest, project: Project) -> Takes:
    api = request.getfixturevalue("fake_api") if request.param == "spark" else None
    setup = Takes(project, api)
    setup.write()
    first = project.apply()
    assert names(first, "completed") == ["hero", "hero.take2", "hero.take3", "pour"]
    return setup


def test_takes_render_with_their_own_seeds_and_the_lock_records_every_take(takes: Takes) -> None:
    applied = takes.project
    renders = applied.root / "renders"
    files = [renders / n for n in ("hero.mp4", "hero.take2.mp4", "hero.take3.mp4")]
    assert len({sha256(f) for f in files}) == 3  # three different candidates
    hero = applied.lock()["scenes"]["hero"]
    assert hero["pick"] == 1 and [t["take"] for t in hero["takes"]] == [1, 2, 3]
    assert [t["seed"] for t in hero["takes"]] == [11, take_seed(11, 2), take_seed(11, 3)]
    assert len({t["key"] for t in hero["takes"]}) == 3
    for take, path in zip(hero["takes"], files):
        assert take["video"]["path"] == f"renders/{path.name}" and take["video"]["sha256"] == sha256(path)
        assert take["last_frame"]["path"] == f"renders/{path.name[:-4]}.last.png"
        assert take["last_frame"]["sha256"] == sha256(renders / f"{path.name[:-4]}.last.png")
        assert take["task_id"] and take["tokens"] > 0
    # The scene's own fields are the picked take's, so version-1 readers see the pick.
    assert {k: v for k, v in hero.items() if k not in ("takes", "pick")} == \
        {k: v for k, v in hero["takes"][0].items() if k != "take"}
    pour = applied.lock()["scenes"]["pour"]
    assert "takes" not in pour and "pick" not in pour  # a lone take keeps version 1's shape
    assert pour["inputs"]["first_frame"] == {"sha256": hero["last_frame"]["sha256"]}
    assert applied.lock()["sequences"]["film"]["members"] == [hero["video"]["sha256"], pour["video"]["sha256"]]
    if takes.api is not None:  # every take was its own task, with its own seed
        seeds = sorted(t.params.get("seed") for t in takes.api.tasks.values() if "paper boat" in str(t.params))
        assert seeds == sorted([11, take_seed(11, 2), take_seed(11, 3)])
        assert takes.creates() == 4
    before = applied.lock_bytes()
    again = applied.apply()
    assert [e["event"] for e in again.events()] == ["done"] and applied.lock_bytes() == before
    assert takes.creates() in (None, 4)


@pytest.mark.slow  # three applies of three takes
def test_changing_pick_renders_only_what_is_chained_after_it(takes: Takes) -> None:
    applied = takes.project
    renders = applied.root / "renders"
    old = {n: sha256(renders / n) for n in ("hero.mp4", "hero.take2.mp4", "hero.last.png", "hero.take2.last.png")}
    takes.write(SPEC.replace("    takes: 3\n", "    takes: 3\n    pick: 2\n"))
    plan = applied.run("plan")
    assert "upstream hero pick: 1 -> 2" in plan.out and "pick: 1 -> 2" in plan.out
    second = applied.apply()
    assert names(second, "completed") == ["pour"]
    assert names(second, "restored") == ["hero", "hero.take2"]
    assert takes.creates() in (None, 5)
    assert sha256(renders / "hero.mp4") == old["hero.take2.mp4"]
    assert sha256(renders / "hero.last.png") == old["hero.take2.last.png"]
    assert sha256(renders / "hero.take1.mp4") == old["hero.mp4"]
    assert not (renders / "hero.take2.mp4").exists() and not (renders / "hero.take2.last.png").exists()
    lock = applied.lock()
    hero, pour = lock["scenes"]["hero"], lock["scenes"]["pour"]
    assert hero["pick"] == 2 and hero["video"] == {**hero["takes"][1]["video"], "path": "renders/hero.mp4"}
    assert [t["video"]["path"] for t in hero["takes"]] == [
        "renders/hero.take1.mp4", "renders/hero.mp4", "renders/hero.take3.mp4"]
    assert pour["inputs"]["first_frame"] == {"sha256": old["hero.take2.last.png"]}
    assert lock["sequences"]["film"]["members"][0] == old["hero.take2.mp4"]
    assert sorted(p.name for p in renders.glob("hero*")) == [
        "hero.last.png", "hero.mp4", "hero.take1.last.png", "hero.take1.mp4", "hero.take3.last.png",
        "hero.take3.mp4"]
    # Back to pick 1: nothing renders at all, pour's first render comes back from the cache.
    takes.write()
    third = applied.apply()
    assert names(third, "completed") == []
    assert takes.creates() in (None, 5)
    assert sha256(renders / "hero.mp4") == old["hero.mp4"]


@pytest.mark.slow
def test_raising_takes_renders_only_the_new_ones_and_lowering_deletes_outputs(takes: Takes) -> None:
    applied = takes.project
    renders = applied.root / "renders"
    takes.write(SPEC.replace("takes: 3", "takes: 4"))
    raised = applied.apply()
    assert names(raised, "completed") == ["hero.take4"]
    assert takes.creates() in (None, 5)
    assert [t["take"] for t in applied.lock()["scenes"]["hero"]["takes"]] == [1, 2, 3, 4]
    takes.write(SPEC.replace("takes: 3", "takes: 2"))
    lowered = applied.apply()
    assert names(lowered, "deleted") == ["hero.take3", "hero.take4"]
    assert names(lowered, "completed") == []
    assert sorted(p.name for p in renders.glob("hero*")) == [
        "hero.last.png", "hero.mp4", "hero.take2.last.png", "hero.take2.mp4"]  # both files of a dropped take go
    assert [t["take"] for t in applied.lock()["scenes"]["hero"]["takes"]] == [1, 2]
    # The cache kept them: raising again reuses instead of rendering.
    takes.write(SPEC.replace("takes: 3", "takes: 4"))
    again = applied.apply()
    assert names(again, "reused") == ["hero.take3", "hero.take4"]
    assert names(again, "completed") == [] and takes.creates() in (None, 5)
    # takes: 1 gives back version 1's shape, exactly as a project that never had takes.
    takes.write(SPEC.replace("    takes: 3\n", ""))
    applied.apply()
    hero = applied.lock()["scenes"]["hero"]
    assert "takes" not in hero and "pick" not in hero
    assert sorted(p.name for p in renders.glob("hero*")) == ["hero.last.png", "hero.mp4"]


@pytest.mark.slow
def test_the_takes_of_a_scene_render_at_once(project: Project, fake_api: FakeSparkAPI) -> None:
    fake_api.latency = 1.0
    setup = Takes(project, fake_api)
    setup.write()
    project.apply()
    tasks = [t for t in fake_api.tasks.values() if "paper boat" in str(t.params)]
    assert len(tasks) == 3
    # Every take was created before the first one finished rendering.
    assert max(t.created_mono for t in tasks) < min(t.ready_at for t in tasks)


@pytest.mark.slow
def test_the_budget_counts_every_take(project: Project, fake_api: FakeSparkAPI) -> None:
    setup = Takes(project, fake_api)
    setup.write(SPEC.replace("    takes: 3\n", "    takes: 4\n"))
    refused = project.run("apply", "--auto-approve", "--max-tokens", "1000")
    assert refused.code == 1 and "Traceback" not in refused.err and fake_api.total_creates == 0
    assert "the plan renders 2 scene(s) (5 takes) for an estimated" in refused.err
    done = project.apply()
    tokens = [e["tokens"] for e in done.events() if e["event"] == "completed"]
    assert len(tokens) == 5 and [e for e in done.events() if e["event"] == "done"][0]["tokens"] == sum(tokens)
    lock = project.lock()["scenes"]
    assert sum(t["tokens"] for t in lock["hero"]["takes"]) + lock["pour"]["tokens"] == sum(tokens)
    # One more take of a rendered scene is counted as the take it is, not as a whole scene.
    setup.write(SPEC.replace("    takes: 3\n", "    takes: 5\n"))
    refused = project.run("apply", "--auto-approve", "--max-tokens", "1000")
    assert refused.code == 1 and "the plan renders 1 scene(s) (1 take) for an estimated" in refused.err


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_a_new_pick_leaves_a_hand_edited_take_and_says_so(project: Project) -> None:
    """A pick change moves take 2 to renders/hero.mp4; its file edited by hand stays where it
    was, and the apply says so, as a delete does (the lock no longer names it)."""
    spec = "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\n" \
           "scenes:\n  hero: {prompt: a paper boat, takes: 2}\n"
    project.write(spec)
    project.apply()
    edited = project.root / "renders/hero.take2.mp4"
    edited.write_bytes(edited.read_bytes() + b"my edit")
    project.write(spec.replace("takes: 2", "takes: 2, pick: 2"))
    moved = project.apply()
    warnings = [e for e in moved.events() if e["event"] == "warning"]
    assert [(e["scene"], e["message"]) for e in warnings] == [
        ("hero.take2", "left renders/hero.take2.mp4: changed since sparkspec wrote it; the lock no longer names it")]
    assert edited.read_bytes().endswith(b"my edit")  # nothing of the user's is lost


@pytest.mark.slow  # three applies
def test_the_review_page_marks_what_the_last_apply_rendered_not_an_earlier_ones(project: Project) -> None:
    """An apply that renders only a new take is the last apply: the scene an earlier apply
    changed loses its badge and before/after; the new take is marked."""
    spec = "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\n" \
           "scenes:\n  a: {prompt: a red kite}\n  b: {prompt: a blue kite, takes: 2}\n"
    project.write(spec)
    project.apply()
    page = project.root / "renders/index.html"
    assert "badge" not in page.read_text().split("<h2")[-1]  # the first apply: nothing to compare with
    project.write(spec.replace("a red kite", "a green kite"))
    project.apply()
    cards = page.read_text().split('<article class="card scene"')[1:]
    assert 'badge">changed' in cards[0] and "before (the previous render)" in cards[0] and "badge" not in cards[1]
    project.write(spec.replace("a red kite", "a green kite").replace("takes: 2", "takes: 3"))
    assert names(project.apply(), "completed") == ["b.take3"]
    text = page.read_text()
    a, b = text.split('<article class="card scene"')[1:]
    assert "badge" not in a and "before (the previous render)" not in a
    assert 'badge">new take 3<' in b and "take 3 · new" in b and "take 2 · new" not in b
    assert "1 changed in the last apply" in text
    assert not list((project.root / "renders/before").glob("*.mp4"))
    page.unlink()  # made again by an apply that renders nothing: the same marks
    project.apply()
    assert page.read_text() == text


@pytest.mark.slow  # a render, a clone and two applies
def test_a_clone_without_a_cache_changes_its_pick_without_paying(takes: Takes, tmp_path: Path) -> None:
    """A fresh clone has the lock and renders/ but no cache: a new pick adopts the takes from
    renders/ (checked against the lock's sha256) and moves them; nothing is paid again."""
    origin = takes.project
    clone = Project(tmp_path / "clone")
    clone.root.mkdir()
    clone.env = dict(origin.env, SPARKSPEC_CACHE_DIR=str(tmp_path / "clone-cache"))
    shutil.copy(origin.root / "project.spark.yaml", clone.root)
    shutil.copy(origin.root / "project.spark.lock", clone.root)
    shutil.copytree(origin.root / "renders", clone.root / "renders")
    old = {n: sha256(clone.root / "renders" / n) for n in ("hero.mp4", "hero.take2.mp4")}
    (clone.root / "project.spark.yaml").write_text(
        takes.spec(SPEC.replace("    takes: 3\n", "    takes: 3\n    pick: 2\n").replace(
            "  pour:\n    first_frame: {scene: hero}\n    prompt: \"the boat sails away\"\n", "").replace(
            "[hero, pour]", "[hero]")))
    plan = clone.run("plan")
    assert "restore" in plan.out and "update" not in plan.out, plan.out
    moved = clone.apply()
    assert names(moved, "completed") == [] and names(moved, "restored") == ["hero", "hero.take2"]
    assert takes.creates() in (None, 4)
    renders = clone.root / "renders"
    assert sha256(renders / "hero.mp4") == old["hero.take2.mp4"]
    assert sha256(renders / "hero.take1.mp4") == old["hero.mp4"]
    assert not (renders / "hero.take2.mp4").exists()
    for take in clone.lock()["scenes"]["hero"]["takes"]:
        assert sha256(clone.root / take["video"]["path"]) == take["video"]["sha256"]


@pytest.mark.slow
def test_a_picked_take_that_fails_leaves_no_other_take_in_its_place(project: Project,
                                                                      fake_api: FakeSparkAPI) -> None:
    """A lone take grows to two and picks the new one, which fails: renders/hero.mp4 does not go on showing take 1, the scene fails,
    what is chained after it is skipped, and the lock names every file as it is."""
    setup = Takes(project, fake_api)
    setup.write(SPEC.replace("    takes: 3\n", ""))
    project.apply()
    setup.write(SPEC.replace("    takes: 3\n", "    takes: 2\n    pick: 2\n"))
    fake_api.outcome("failed", code="InternalServiceError", message="render failed",
                     match=lambda params: params.get("seed") == take_seed(11, 2))
    failed = project.run("apply", "--auto-approve", "--json")
    assert failed.code == 1 and "Traceback" not in failed.err
    assert names(failed, "failed") == ["hero.take2"] and names(failed, "skipped") == ["pour"]
    renders = project.root / "renders"
    assert not (renders / "hero.mp4").exists() and not (renders / "hero.last.png").exists()
    hero = project.lock()["scenes"]["hero"]
    assert hero["video"]["path"] == "renders/hero.take1.mp4"
    named = {f["path"] for r in [hero, *hero.get("takes", [])] for f in (r["video"], r["last_frame"])}
    for scene in project.lock()["scenes"].values():
        for record in [scene, *scene.get("takes", [])]:
            for file in (record["video"], record["last_frame"]):
                assert sha256(project.root / file["path"]) == file["sha256"]
    assert "renders/hero.mp4" not in named
    # The review page shows take 1 once, not as the pick, and says the pick did not render.
    card = (renders / "index.html").read_text().split('id="scene-hero"')[1].split("</article>")[0]
    assert card.count('data-src="hero.take1.mp4"') == 1 and "(picked)" not in card
    assert "the picked take 2 did not render" in card
    # The next apply renders only the failed take (and what follows it), then all is in place.
    creates = fake_api.total_creates
    fixed = project.apply()
    assert names(fixed, "completed") == ["hero.take2", "pour"] and fake_api.total_creates == creates + 2
    assert project.lock()["scenes"]["hero"]["video"]["path"] == "renders/hero.mp4"


@pytest.mark.slow
def test_a_picked_take_whose_new_render_fails_is_shown_as_the_old_render_it_is(project: Project,
                                                                               fake_api: FakeSparkAPI) -> None:
    """The prompt changes and the pick moves to take 2, whose new render fails: the page called
    take 2's render from the earlier apply "(picked) · after" under a "changed" badge, and said
    nothing of the failure."""
    setup = Takes(project, fake_api)
    setup.write()
    project.apply()
    setup.write(SPEC.replace("a paper boat on a puddle", "a paper boat in the rain")
                .replace("    takes: 3\n", "    takes: 3\n    pick: 2\n"))
    fake_api.outcome("failed", code="InternalServiceError", message="render failed",
                     match=lambda params: params.get("seed") == take_seed(11, 2))
    failed = project.run("apply", "--auto-approve", "--json")
    assert failed.code == 1 and names(failed, "failed") == ["hero.take2"]
    card = (project.root / "renders/index.html").read_text().split('id="scene-hero"')[1].split("</article>")[0]
    assert "The last apply did not render take 2" in card and "render failed" in card
    assert "· after" not in card and 'badge">changed' not in card and "before (the previous render)" not in card
    assert 'badge">new takes 1, 3<' in card  # those the apply did render anew
    assert '<p class="prompt">a paper boat on a puddle</p>' in card  # what that render was made from


def check_truth(root: Path) -> None:
    """Every file the lock names is in place with the bytes it says."""
    lock = json.loads((root / "project.spark.lock").read_text()) if (root / "project.spark.lock").exists() else {}
    for sid, scene in (lock.get("scenes") or {}).items():
        for record in [scene, *scene.get("takes", [])]:
            for file in (record["video"], record["last_frame"]):
                path = root / file["path"]
                assert path.exists() and sha256(path) == file["sha256"], (sid, file["path"])
    for name, sequence in (lock.get("sequences") or {}).items():
        assert sha256(root / sequence["video"]["path"]) == sequence["video"]["sha256"], name


KILLS_PER_ROUND = 3


@pytest.mark.slow
def test_killed_applies_with_takes_keep_the_lock_true_and_pay_once(project: Project, fake_api: FakeSparkAPI,
                                                                   tmp_path: Path) -> None:
    """SIGKILL at random moments while takes render, picks move files and takes are dropped:
    after every kill the lock names only files that are as it says, and across it all every
    render key is paid once (plus a task made just before a kill whose id never reached the
    journal, as test_crash allows)."""
    rng = random.Random(20261130)
    fake_api.latency = (0.4, 1.2)  # renders long enough that kills in 0.3-1.6 s land inside them
    setup = Takes(project, fake_api)
    log = tmp_path / "apply.log"
    rounds = [SPEC, SPEC.replace("    takes: 3\n", "    takes: 3\n    pick: 2\n"),
              SPEC.replace("    takes: 3\n", "    takes: 4\n    pick: 4\n"),
              SPEC.replace("    takes: 3\n", "    takes: 2\n"),
              SPEC.replace("paper boat", "paper plane").replace("    takes: 3\n", "    takes: 3\n    pick: 3\n")]
    kills: list[float] = []
    for spec in rounds:
        setup.write(spec)
        for attempt in range(KILLS_PER_ROUND + 1):  # the last one is let finish
            with log.open("ab") as out:
                proc = start_cli("apply", "--auto-approve", "--json", cwd=project.root, env=project.env,
                                 stdout=out, stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=rng.uniform(0.3, 1.6) if attempt < KILLS_PER_ROUND else 120)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                kills.append(time.monotonic())
                proc.wait()
                check_truth(project.root)
                continue
            assert code == 0, log.read_text()
            break
        check_truth(project.root)
        creates = fake_api.total_creates
        noop = project.apply()
        assert [e["event"] for e in noop.events()] == ["done"] and fake_api.total_creates == creates
    assert len(kills) >= 3, f"too few kills to say anything: {len(kills)}"
    assert "Traceback" not in log.read_text()
    check_creates(fake_api, kills)


@pytest.mark.slow
def test_push_pull_and_apply_carry_every_take(tmp_path: Path, fake_api: FakeSparkAPI) -> None:
    """With the team's remote: apply uploads every take, `push` sends every recorded take a
    remote lacks, a clone's `pull` brings back every take to its place, and a clone's apply pulls
    them all: nothing is paid twice."""
    def machine(name: str, remote: str) -> Project:
        home = tmp_path / name / "home"
        home.mkdir(parents=True)
        made = Project(tmp_path / name / "project")
        made.root.mkdir(parents=True)
        made.env.update(HOME=str(home), SPARKSPEC_CACHE_DIR=str(tmp_path / name / "cache"),
                        SPARK_API_KEY=fake_api.api_key, SPARK_BASE_URL=fake_api.base_url, SPARKSPEC_REMOTE=remote)
        made.write(SPEC.replace("PROVIDER", "spark").replace("    takes: 3\n", "    takes: 3\n    pick: 2\n"))
        return made

    def copy_lock(source: Project, target: Project) -> None:
        shutil.copy(source.root / "project.spark.lock", target.root / "project.spark.lock")

    # One machine renders with its remote off, then pushes: every take goes.
    first = machine("first", f"file://{tmp_path}/pushed")
    first.apply("--remote", "off")
    pushed = first.run("push")
    assert pushed.code == 0, pushed.err
    assert "Pushed 4 render(s)" in pushed.out, pushed.out
    second = machine("second", f"file://{tmp_path}/pushed")
    copy_lock(first, second)
    pulled = second.run("pull")
    assert pulled.code == 0 and "Pulled 4 render(s)" in pulled.out, pulled.out + pulled.err
    for name in ("hero.mp4", "hero.take1.mp4", "hero.take3.mp4", "hero.take1.last.png", "pour.mp4"):
        assert sha256(second.root / "renders" / name) == sha256(first.root / "renders" / name)
    assert "0 to render" in second.run("plan").out and "4 unchanged" in second.run("plan").out  # film: stitch
    # Apply uploads every take as it renders, and a clone's apply pulls every take.
    third = machine("third", f"file://{tmp_path}/applied")
    made = third.apply()
    assert names(made, "pushed") == ["hero", "hero.take2", "hero.take3", "pour"]
    creates = fake_api.total_creates
    fourth = machine("fourth", f"file://{tmp_path}/applied")
    copy_lock(third, fourth)
    fetched = fourth.apply()
    assert names(fetched, "pulled") == ["hero", "hero.take2", "hero.take3", "pour"]
    assert fake_api.total_creates == creates and fourth.lock_bytes() == third.lock_bytes()
    assert sorted(p.name for p in (fourth.root / "renders").glob("hero*.mp4")) == \
        ["hero.mp4", "hero.take1.mp4", "hero.take3.mp4"]


def _difference(a: Path | Any, b: Path) -> float:
    """Mean absolute difference of two pictures, per channel (0..255), at b's size."""
    from PIL import Image, ImageChops, ImageStat

    other = Image.open(b).convert("RGB")
    mine = (Image.open(a) if isinstance(a, Path) else a).convert("RGB").resize(other.size)
    return float(sum(ImageStat.Stat(ImageChops.difference(mine, other)).mean) / 3)


@pytest.mark.slow  # six local renders
def test_every_take_of_a_chained_scene_starts_from_the_picked_takes_last_frame(project: Project) -> None:
    from sparkspec.media.frames import first_frame

    setup = Takes(project, None)
    setup.write(SPEC.replace("    takes: 3\n", "    takes: 3\n    pick: 2\n").replace(
        '    prompt: "the boat sails away"\n', '    prompt: "the boat sails away"\n    takes: 2\n'))
    project.apply()
    lock = project.lock()["scenes"]
    picked = lock["hero"]["takes"][1]
    assert lock["hero"]["pick"] == 2 and picked["last_frame"]["path"] == "renders/hero.last.png"
    assert [t["inputs"]["first_frame"] for t in lock["pour"]["takes"]] == [
        {"sha256": picked["last_frame"]["sha256"]}] * 2
    renders = project.root / "renders"
    for video in ("pour.mp4", "pour.take2.mp4"):
        start = first_frame(renders / video)
        assert _difference(start, renders / "hero.last.png") < 8, video  # the picked take's last frame
        assert _difference(start, renders / "hero.take1.last.png") > 2 * _difference(start, renders / "hero.last.png")


@pytest.mark.slow  # renders through the fake gateway: kept out of the default run
def test_one_take_is_replaced_by_its_address_and_nothing_else(project: Project, fake_api: FakeSparkAPI) -> None:
    """`--replace scene.hero.take2`, the address the plan prints, was refused naming another id;
    the only way to re-roll one take was to pay for every take and the chain after them."""
    setup = Takes(project, fake_api)
    setup.write()
    project.apply()
    before = {p.name: sha256(p) for p in (project.root / "renders").glob("*.mp4")}
    creates = fake_api.total_creates
    plan = json.loads(project.run("plan", "--json", "--replace", "scene.hero.take2").out)
    assert [(c["address"], c["action"]) for c in plan["changes"] if c["action"] != "no-op"] == \
        [("scene.hero.take2", "replace")]
    done = project.apply("--replace", "hero.take2")
    assert names(done, "completed") == ["hero.take2"] and fake_api.total_creates == creates + 1
    after = {p.name: sha256(p) for p in (project.root / "renders").glob("*.mp4")}
    assert {n for n in before if before[n] != after[n]} <= {"hero.take2.mp4"}
    for args, message in ((("--target", "scene.hero.take2"), "--target scene.hero.take2: a target is a scene or a "
                                                                "sequence, not one take; --target hero selects"),
                          (("--replace", "hero.take4"), "--replace hero.take4: hero has 3 takes (take1 to take3)"),
                          (("--replace", "pour.take2"), "--replace pour.take2: pour has 1 take")):
        refused = project.run("plan", *args)
        assert refused.code == 1 and message in refused.err, refused.err


@pytest.mark.slow  # renders through the fake gateway: kept out of the default run
def test_a_sequence_says_which_members_pick_changed(project: Project, fake_api: FakeSparkAPI) -> None:
    setup = Takes(project, fake_api)
    setup.write()
    project.apply()
    setup.write(SPEC.replace("    takes: 3\n", "    takes: 3\n    pick: 2\n"))
    plan = json.loads(project.run("plan", "--json").out)
    film = next(c for c in plan["changes"] if c["address"] == "sequence.film")
    assert film["action"] == "stitch" and film["reasons"][0] == "member hero pick: 1 -> 2", film
