"""`sparkspec apply` end to end through the CLI with the offline `local` provider."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from sparkspec.state.applylock import apply_lock
from sparkspec.media.frames import first_frame, last_frame
from sparkspec.media.probe import probe_video

from .conftest import Project

CHAIN = """\
version: 1
provider: {type: local, parallelism: 2}
vars: {subject: a paper boat}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 5}
scenes:
  a: {prompt: "{{ subject }} on a rain puddle"}
  b:
    first_frame: {scene: a}
    prompt: "{{ subject }} sails across the puddle"
  c:
    first_frame: {scene: b}
    prompt: "{{ subject }} reaches the gutter"
  solo: {prompt: "a lighthouse at dusk", ratio: "1:1", duration: 2, description: a lone shot}
sequences:
  film: {scenes: [a, b, c]}
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mean_difference(one: Image.Image, other: Image.Image) -> float:
    assert one.size == other.size
    return sum(ImageStat.Stat(ImageChops.difference(one.convert("RGB"), other.convert("RGB"))).mean) / 3


@pytest.fixture(scope="module")
def applied_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CHAIN rendered once for the module; each test gets its own copy of the project."""
    project = Project(tmp_path_factory.mktemp("chain"))
    project.write(CHAIN)
    first = project.apply()
    assert first.rendered() == ["a", "b", "c", "solo"]
    assert [e["sequence"] for e in first.events() if e["event"] == "stitched"] == ["film"]
    return project.root


@pytest.fixture
def applied(applied_once: Path, tmp_path: Path) -> Project:
    root = tmp_path / "project"
    shutil.copytree(applied_once, root, symlinks=True)
    # The copy is a project of its own: the original's registration with the cache (what gc
    # keeps alive) is not the copy's; its first apply registers it.
    shutil.rmtree(root / ".sparkspec/cache/projects", ignore_errors=True)
    return Project(root)


def test_fresh_apply_writes_outputs_and_lock(applied: Project) -> None:
    lock = applied.lock()
    assert sorted(lock["scenes"]) == ["a", "b", "c", "solo"]
    for sid, record in lock["scenes"].items():
        assert record["provider"] == "local"
        for kind, suffix in (("video", ".mp4"), ("last_frame", ".last.png")):
            path = applied.root / record[kind]["path"]
            assert record[kind]["path"] == f"renders/{sid}{suffix}"
            assert sha256(path) == record[kind]["sha256"]
            assert path.stat().st_size == record[kind]["bytes"]
    film = lock["sequences"]["film"]
    assert film["members"] == [lock["scenes"][s]["video"]["sha256"] for s in ("a", "b", "c")]
    assert sha256(applied.root / film["video"]["path"]) == film["video"]["sha256"]
    text = (applied.root / "project.spark.lock").read_text()
    assert str(applied.root) not in text


def test_second_apply_renders_nothing_and_keeps_the_lock_byte_identical(applied: Project) -> None:
    before = applied.lock_bytes()
    again = applied.apply()
    assert again.rendered() == []
    assert [e["event"] for e in again.events()] == ["done"]
    assert applied.lock_bytes() == before
    assert applied.run("plan", "--detailed-exitcode").code == 0


def test_outputs_have_the_size_frames_and_duration_asked_for(applied: Project) -> None:
    for sid, size, frames in (("a", (864, 480), 29), ("b", (864, 480), 29), ("solo", (640, 640), 49)):
        info = probe_video(applied.root / f"renders/{sid}.mp4")
        assert (info.width, info.height) == size
        assert info.frames == frames
        assert info.fps == pytest.approx(24)
        assert info.duration == pytest.approx(frames / 24, abs=0.05)
        with Image.open(applied.root / f"renders/{sid}.last.png") as png:
            assert png.size == size
    film = probe_video(applied.root / "renders/film.mp4")
    assert film.frames == 3 * 29
    assert film.duration == pytest.approx(3 * 29 / 24, abs=0.1)


def test_a_chained_scene_starts_from_its_upstreams_last_frame(applied: Project) -> None:
    for upstream, scene in (("a", "b"), ("b", "c")):
        with Image.open(applied.root / f"renders/{upstream}.last.png") as png:
            handed_over = png.convert("RGB")
        # The PNG is the upstream video's own last frame ...
        assert mean_difference(handed_over, last_frame(applied.root / f"renders/{upstream}.mp4")) < 3
        # ... and the downstream video opens on it.
        assert mean_difference(handed_over, first_frame(applied.root / f"renders/{scene}.mp4")) < 3
    with Image.open(applied.root / "renders/solo.last.png") as other:
        # A control: an unrelated frame is far from it.
        assert mean_difference(other.convert("RGB").resize((864, 480)),
                               first_frame(applied.root / "renders/b.mp4")) > 10


@pytest.mark.slow  # about 3 s
def test_editing_a_prompt_rerenders_it_and_its_chain_and_reverting_renders_nothing(applied: Project) -> None:
    original_lock = applied.lock_bytes()
    applied.write(CHAIN.replace("sails across the puddle", "sails across the flooded street"))
    plan = applied.run("plan")
    assert "~ scene.b (update)" in plan.out
    assert "a paper boat sails across the [-puddle-] {+flooded street+}" in plan.out
    assert "upstream b re-renders" in plan.out
    edited = applied.apply()
    assert edited.rendered() == ["b", "c"]
    assert [e["sequence"] for e in edited.events() if e["event"] == "stitched"] == ["film"]

    applied.write(CHAIN)
    reverted = applied.apply()
    assert reverted.rendered() == []
    assert sorted(e["scene"] for e in reverted.events() if e["event"] == "reused") == ["b", "c"]
    assert applied.lock_bytes() == original_lock


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_renaming_a_scene_renders_nothing(applied: Project) -> None:
    video = applied.lock()["scenes"]["solo"]["video"]["sha256"]
    applied.write(CHAIN.replace("  solo:", "  lighthouse:"))
    renamed = applied.apply()
    assert renamed.rendered() == []
    events = {(e["event"], e.get("scene")) for e in renamed.events()}
    assert ("reused", "lighthouse") in events and ("deleted", "solo") in events
    lock = applied.lock()
    assert "solo" not in lock["scenes"] and lock["scenes"]["lighthouse"]["video"]["sha256"] == video
    assert not (applied.root / "renders/solo.mp4").exists()
    assert sha256(applied.root / "renders/lighthouse.mp4") == video


def test_describing_a_scene_or_changing_its_tier_renders_nothing(applied: Project) -> None:
    applied.write(CHAIN.replace("description: a lone shot", "description: another text, service_tier: flex"))
    assert applied.apply().rendered() == []


@pytest.mark.slow  # a whole apply or two; the default run keeps its siblings
def test_deleting_a_scene_removes_its_files_and_lock_entry(applied: Project) -> None:
    blob = applied.lock()["scenes"]["solo"]["video"]["sha256"]
    applied.write(CHAIN.replace('  solo: {prompt: "a lighthouse at dusk", ratio: "1:1", duration: 2, '
                                "description: a lone shot}\n", ""))
    assert "- scene.solo (delete)" in applied.run("plan").out
    result = applied.apply()
    assert ("deleted", "solo") in {(e["event"], e.get("scene")) for e in result.events()}
    assert "solo" not in applied.lock()["scenes"]
    assert not (applied.root / "renders/solo.mp4").exists()
    assert not (applied.root / "renders/solo.last.png").exists()
    assert (applied.root / ".sparkspec/cache/blobs" / blob[:2] / blob).exists()  # the cache keeps it


@pytest.mark.slow  # over a second: the default run stays under 90 s
def test_deleted_renders_are_restored_from_the_cache_without_rendering(applied: Project) -> None:
    lock = applied.lock_bytes()
    shutil.rmtree(applied.root / "renders")
    assert "restore" in applied.run("plan").out
    restored = applied.apply()
    assert restored.rendered() == []
    assert sorted(e["scene"] for e in restored.events() if e["event"] == "restored") == ["a", "b", "c", "solo"]
    assert applied.lock_bytes() == lock
    for record in applied.lock()["scenes"].values():
        assert sha256(applied.root / record["video"]["path"]) == record["video"]["sha256"]
    assert sha256(applied.root / "renders/film.mp4") == applied.lock()["sequences"]["film"]["video"]["sha256"]


def test_an_altered_render_is_restored(applied: Project) -> None:
    path = applied.root / "renders/solo.mp4"
    path.write_bytes(b"not the render")
    result = applied.apply()
    assert ("restored", "solo") in {(e["event"], e.get("scene")) for e in result.events()}
    assert sha256(path) == applied.lock()["scenes"]["solo"]["video"]["sha256"]


def test_apply_without_a_terminal_refuses_unless_approved(project: Project) -> None:
    project.write(CHAIN)
    refused = project.run("apply")
    assert refused.code == 1
    assert "--auto-approve" in refused.err
    assert not (project.root / "project.spark.lock").exists()
    assert not (project.root / "renders").exists()


@pytest.mark.slow
def test_a_saved_plan_applies_and_a_stale_one_is_refused(project: Project) -> None:
    project.write(CHAIN)
    assert project.run("plan", "--out", "tfplan").code == 0
    project.write(CHAIN.replace("rain puddle", "frozen puddle"))
    stale = project.run("apply", "tfplan")
    assert stale.code == 1
    assert "the plan is stale: the spec changed" in stale.err
    assert not (project.root / "project.spark.lock").exists()

    assert project.run("plan", "--out", "tfplan").code == 0
    fresh = project.run("apply", "tfplan", "--json")
    assert fresh.code == 0, fresh.err
    assert fresh.rendered() == ["a", "b", "c", "solo"]
    # Applying it again: the lock moved on, so the plan is stale.
    again = project.run("apply", "tfplan")
    assert again.code == 1 and "the plan is stale: the lock changed" in again.err


def test_a_second_apply_fails_at_once_naming_the_holder(project: Project) -> None:
    project.write(CHAIN)
    with apply_lock(project.root / ".sparkspec"):
        started = time.monotonic()
        blocked = project.run("apply", "--auto-approve")
        elapsed = time.monotonic() - started
    assert blocked.code == 1
    assert f"pid {os.getpid()}" in blocked.err and "started" in blocked.err
    assert elapsed < 10
    assert not (project.root / "project.spark.lock").exists()


@pytest.mark.slow  # a whole apply or two; the default run keeps its siblings
def test_target_renders_only_the_scene_and_its_upstreams(project: Project) -> None:
    project.write(CHAIN)
    assert project.apply("--target", "b").rendered() == ["a", "b"]
    assert sorted(project.lock()["scenes"]) == ["a", "b"]


@pytest.mark.slow  # over a second: the default run stays under 90 s
def test_replace_renders_again_and_plain_lines_are_printed(applied: Project) -> None:
    result = applied.run("apply", "--auto-approve", "--replace", "solo")
    assert result.code == 0, result.err
    assert "scene.solo (replace)" in result.out
    assert "solo: rendered" in result.out
    assert "Apply complete: 1 rendered" in result.out


def test_show_prints_the_lock_as_a_table(applied: Project) -> None:
    shown = applied.run("show")
    assert shown.code == 0
    for sid in ("a", "b", "c", "solo"):
        assert sid in shown.out
    assert "renders/solo.mp4" in shown.out
    assert "sequence film" in shown.out


@pytest.mark.slow
def test_gc_drops_only_what_no_lock_refers_to(applied: Project) -> None:
    old_solo = applied.lock()["scenes"]["solo"]
    applied.write(CHAIN.replace("a lighthouse at dusk", "a lighthouse at dawn"))
    applied.apply()
    dry = applied.run("gc", "--dry-run")
    assert dry.code == 0
    assert f"would drop render {old_solo['key'][:12]}" in dry.out
    assert f"would drop blob {old_solo['video']['sha256'][:12]}" in dry.out
    assert "Would drop 1 render(s) and 2 blob(s)" in dry.out
    blob = applied.root / ".sparkspec/cache/blobs" / old_solo["video"]["sha256"][:2] / old_solo["video"]["sha256"]
    assert blob.exists()
    assert "would drop local task local-" in dry.out  # the local renderer's copies
    # The old solo's task folder is no copy of anything the cache keeps: gc drops that render.
    assert f"would drop local task {old_solo['task_id']} (" in dry.out
    assert f"{old_solo['task_id']} " not in " ".join(line for line in dry.out.splitlines()
                                                     if "already in the cache" in line)
    assert "no lock refers to its render" in dry.out
    done = applied.run("gc")
    assert "Dropped 1 render(s) and 2 blob(s)" in done.out
    assert not blob.exists()
    assert not any((applied.root / ".sparkspec/local").iterdir())
    # What the lock refers to survives: deleting renders/ still restores without rendering.
    shutil.rmtree(applied.root / "renders")
    assert applied.apply().rendered() == []


@pytest.mark.slow  # three applies and two stitches
def test_a_sequence_is_stitched_again_only_when_a_member_changes(applied: Project) -> None:
    film = applied.lock()["sequences"]["film"]
    applied.write(CHAIN.replace("a lighthouse at dusk", "a lighthouse in fog"))  # solo is no member
    result = applied.apply()
    assert result.rendered() == ["solo"]
    assert not [e for e in result.events() if e["event"] == "stitched"]
    assert applied.lock()["sequences"]["film"] == film
    applied.write(CHAIN.replace("reaches the gutter", "reaches the river"))  # c is
    result = applied.apply()
    assert result.rendered() == ["c"]
    assert [e["sequence"] for e in result.events() if e["event"] == "stitched"] == ["film"]
    assert applied.lock()["sequences"]["film"]["members"][2] == applied.lock()["scenes"]["c"]["video"]["sha256"]


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_moving_output_dir_says_the_old_folder_stays(applied: Project) -> None:
    """The outputs were restored into the new folder and the old ones left without a word."""
    applied.write("output_dir: out\n" + CHAIN)
    moved = applied.run("apply", "--auto-approve")
    assert moved.code == 0, moved.err
    assert "warning: output_dir is now out; the outputs in renders/ stay there" in moved.err
    assert (applied.root / "renders/a.mp4").is_file() and (applied.root / "out/a.mp4").is_file()
    assert "output_dir is now" not in applied.run("apply", "--auto-approve").err  # said once


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_a_removed_sequence_goes_before_any_render_starts(applied: Project) -> None:
    """Its video was deleted only after every scene had rendered, its record long gone from the
    lock: a kill in between left renders/film.mp4 recorded nowhere, for good."""
    applied.write(CHAIN.replace("sequences:\n  film: {scenes: [a, b, c]}\n", "")
                  .replace("a lighthouse at dusk", "a lighthouse in fog"))
    events = [e for e in applied.apply().events() if e["event"] in ("deleted", "submitted")]
    assert events[0] == {"event": "deleted", "sequence": "film"}, events
    assert [e["scene"] for e in events[1:]] == ["solo"]
    assert not (applied.root / "renders/film.mp4").exists()


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_saved_plan_stale_from_a_changed_image_says_which_scene_and_why(project: Project) -> None:
    """It said 'the renders or the cache changed', when neither had."""
    from PIL import Image

    (project.root / "assets").mkdir()
    Image.new("RGB", (480, 320), (200, 120, 40)).save(project.root / "assets/f.png")
    project.write('version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29, seed: 3}\n'
                  'scenes:\n  im: {prompt: "from image", first_frame: {image: assets/f.png}}\n')
    assert project.run("plan", "--out", "tfplan").code == 0
    Image.new("RGB", (480, 320), (20, 120, 240)).save(project.root / "assets/f.png")
    stale = project.run("apply", "tfplan")
    assert stale.code == 1
    assert "the plan is stale: scene.im would render another key now (an input it reads changed" in stale.err, stale.err


@pytest.mark.slow  # three applies
def test_a_stitch_names_every_member_changed_since_the_last_one(project: Project) -> None:
    """A --target apply renders a member without stitching: the next plan's stitch says so,
    beside the member it renders now, instead of naming only the latter."""
    spec = """\
version: 1
provider: {type: local}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 3}
scenes:
  intro: {prompt: "a heron"}
  pour: {prompt: "coffee pours", first_frame: {scene: intro}}
  logo: {prompt: "the logo"}
sequences:
  final: {scenes: [intro, pour, logo]}
"""
    project.write(spec)
    project.apply()
    project.write(spec.replace("a heron", "a grey heron").replace("the logo", "the new logo"))
    project.apply("--target", "logo")
    plan = json.loads(project.run("plan", "--json").out)
    final = next(c for c in plan["changes"] if c["address"] == "sequence.final")
    assert final["reasons"] == ["member logo changed since the last stitch", "member intro re-renders",
                                "member pour re-renders"]
