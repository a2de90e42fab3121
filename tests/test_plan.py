"""`sparkspec plan`: every action with its reasons, the summary, --json, exit codes, saved plans.

States that need a lock and a cache are built with the lockfile and cache APIs
directly (`fake_apply`), the way apply leaves them: outputs in renders/, blobs
and an index entry in the cache, a lock entry per scene and sequence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from applied import Render, leave_applied
from cli_runner import run_main

from sparkspec.config.model import Project
from sparkspec.errors import SparkspecError, StalePlanError
from sparkspec.keys import SceneKey
from sparkspec.state.lockfile import Lock, read_lock
from sparkspec.plan.model import Action, Plan, PlanOptions
from sparkspec.plan.planfile import check_fresh, load_plan
from sparkspec.plan.view import plan_json, render_text, summary_line
from sparkspec.config.loader import LoadOptions
from sparkspec.state.workspace import open_workspace

SPEC = "project.spark.yaml"
TOKENS = 108_900  # 720p 1:1 (960x960), 5 s = 121 frames: 960*960*121/1024

BASE = """\
version: 1
provider: {type: local}
defaults: {resolution: 720p, ratio: "1:1", seed: 7}
scenes:
  intro:
    prompt: "A cup on a marble counter"
  pour:
    first_frame: {scene: intro}
    prompt: "Coffee pours"
  logo:
    prompt: "The logo"
sequences:
  final: {scenes: [intro, pour, logo]}
"""


@pytest.fixture(autouse=True)
def _no_cache_override_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKSPEC_CACHE_DIR", raising=False)
    monkeypatch.delenv("SPARK_API_KEY", raising=False)  # plan never needs one


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / SPEC).write_text(BASE)
    return project


def fake_apply(root: Path, *, cache: bool = True, load: LoadOptions = LoadOptions()) -> Lock:
    """Leave the project as a successful apply of its current spec would (every take)."""
    def render_of(project: Project, sid: str, key: SceneKey, take: int) -> Render:
        return Render(f"video {key.hex}".encode(), f"frame {key.hex}".encode(), f"task-{sid}", TOKENS,
                      project.provider.type)

    def sequence_of(root: Path, project: Project, name: str, members: tuple[str, ...]) -> bytes:
        return ("sequence " + " ".join(members)).encode()

    return leave_applied(root, render_of, sequence_of, cache=cache, load=load)


def plan_of(root: Path, options: PlanOptions = PlanOptions(), load: LoadOptions = LoadOptions()) -> Plan:
    workspace = open_workspace(root / SPEC, load)
    try:
        return workspace.plan(options)
    finally:
        workspace.close()


def actions(plan: Plan) -> dict[str, str]:
    return {c.address: c.action.value for c in plan.changes}


def reasons(plan: Plan, address: str) -> list[str]:
    return next(list(c.reasons) for c in plan.changes if c.address == address)


def edit(root: Path, old: str, new: str) -> None:
    text = (root / SPEC).read_text()
    assert old in text, old
    (root / SPEC).write_text(text.replace(old, new))


run = run_main


# -- create and no-op --------------------------------------------------------------------------


def test_fresh_project_creates_every_scene(root: Path) -> None:
    plan = plan_of(root)
    assert actions(plan) == {"scene.intro": "create", "scene.pour": "create", "scene.logo": "create",
                             "sequence.final": "stitch"}
    intro, pour = plan.scene("intro"), plan.scene("pour")
    assert intro is not None and pour is not None
    assert intro.key is not None and len(intro.key) == 64
    assert (pour.key, pour.reasons) == (None, ("upstream intro re-renders",))
    assert [c.estimated_tokens for c in plan.changes] == [TOKENS, TOKENS, TOKENS, 0]
    assert reasons(plan, "sequence.final") == ["member intro re-renders", "member pour re-renders",
                                               "member logo re-renders"]
    assert summary_line(plan) == "Plan: 3 to render (~326,700 tokens), 0 to reuse, 0 to delete, " \
                                 "0 unchanged. Also 1 to stitch."
    text = render_text(plan)
    assert "    + scene.intro (create)  ~108,900 tokens\n" in text
    assert "    + scene.pour (create)  ~108,900 tokens  [key known after apply]\n" \
           "        upstream intro re-renders\n" in text


def test_no_op_after_apply(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apply(root)
    plan = plan_of(root)
    assert set(actions(plan).values()) == {"no-op"}
    assert not plan.has_changes
    assert render_text(plan) == ("No changes. The renders match the spec.\n\n"
                                 "Plan: 0 to render (~0 tokens), 0 to reuse, 0 to delete, 4 unchanged.")
    code, out, _ = run(["plan", "--detailed-exitcode"], root, monkeypatch)
    assert code == 0 and out.endswith("4 unchanged.\n")
    lock_text = (root / "project.spark.lock").read_text()
    run(["plan"], root, monkeypatch)
    assert (root / "project.spark.lock").read_text() == lock_text  # plan never writes the lock


# -- update and its reasons ------------------------------------------------------------------------


def test_prompt_change_is_a_word_diff_and_re_renders_downstream(root: Path) -> None:
    fake_apply(root)
    edit(root, "A cup on a marble counter", "A mug on a marble counter")
    plan = plan_of(root)
    assert actions(plan) == {"scene.intro": "update", "scene.pour": "update", "scene.logo": "no-op",
                             "sequence.final": "stitch"}
    assert reasons(plan, "scene.intro") == ["prompt: A [-cup-] {+mug+} on a marble counter"]
    assert reasons(plan, "scene.pour") == ["upstream intro re-renders"]
    pour = plan.scene("pour")
    assert pour is not None and pour.key is None and pour.estimated_tokens == TOKENS
    assert reasons(plan, "sequence.final") == ["member intro re-renders", "member pour re-renders"]
    assert summary_line(plan) == ("Plan: 2 to render (~217,800 tokens), 0 to reuse, 0 to delete, "
                                  "1 unchanged. Also 1 to stitch.")
    assert "    ~ scene.intro (update)" in render_text(plan)


def test_a_multi_line_prompts_diff_stays_under_its_scene(root: Path) -> None:
    fake_apply(root)
    edit(root, 'prompt: "A cup on a marble counter"', 'prompt: "A cup\\non a marble counter\\nat dawn"')
    text = render_text(plan_of(root))
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "~ scene.intro (update)" in line) + 1
    block = lines[start:next(i for i, line in enumerate(lines) if "~ scene.pour" in line)]
    assert len(block) > 1 and all(line.startswith("        ") for line in block if line), block


def test_seed_change(root: Path) -> None:
    fake_apply(root)
    edit(root, "seed: 7", "seed: 8")
    plan = plan_of(root)
    assert reasons(plan, "scene.intro") == ["seed: 7 -> 8"]
    assert reasons(plan, "scene.logo") == ["seed: 7 -> 8"]
    assert reasons(plan, "scene.pour") == ["upstream intro re-renders", "seed: 7 -> 8"]


def test_parameter_changes_are_listed_old_to_new(root: Path) -> None:
    fake_apply(root)
    edit(root, '  logo:\n    prompt: "The logo"',
         '  logo:\n    prompt: "The logo"\n    resolution: 1080p\n    frames: 97\n    camera_fixed: true')
    assert reasons(plan_of(root), "scene.logo") == [
        "resolution: 720p -> 1080p", "duration: 5 -> (unset)", "frames: (unset) -> 97",
        "camera_fixed: false -> true"]


def test_salt_changes_every_key(root: Path) -> None:
    fake_apply(root)
    edit(root, "version: 1\n", "version: 1\nsalt: v2\n")
    plan = plan_of(root)
    assert reasons(plan, "scene.intro") == ['salt: "" -> v2']
    assert plan.count(Action.UPDATE) == 3


def test_provider_change(root: Path) -> None:
    fake_apply(root)
    plan = plan_of(root, load=LoadOptions(provider="spark"))
    assert reasons(plan, "scene.intro") == ["provider: local -> spark"]
    assert reasons(plan, "scene.logo") == ["provider: local -> spark"]
    assert reasons(plan, "scene.pour") == ["upstream intro re-renders", "provider: local -> spark"]


def test_first_frame_change(root: Path) -> None:
    from PIL import Image

    (root / "assets").mkdir()
    Image.new("RGB", (640, 480), (1, 2, 3)).save(root / "assets" / "logo.png")
    edit(root, '    prompt: "The logo"', '    prompt: "The logo"\n    first_frame: {image: assets/logo.png}')
    fake_apply(root)
    assert not plan_of(root).has_changes
    Image.new("RGB", (640, 480), (9, 9, 9)).save(root / "assets" / "logo.png")
    (root / "assets" / "logo.png").write_bytes((root / "assets" / "logo.png").read_bytes() + b"\0")
    plan = plan_of(root)
    assert reasons(plan, "scene.logo") == ["first frame changed"]
    assert actions(plan)["scene.intro"] == "no-op"


def test_image_estimate_uses_the_ratio_nearest_the_first_frame(root: Path) -> None:
    from PIL import Image

    (root / "assets").mkdir()
    Image.new("RGB", (480, 640), (1, 2, 3)).save(root / "assets" / "tall.png")  # 0.75: 3:4
    edit(root, '    prompt: "The logo"',
         '    prompt: "The logo"\n    ratio: adaptive\n    first_frame: {image: assets/tall.png}')
    logo = plan_of(root).scene("logo")
    assert logo is not None and logo.estimated_tokens == 832 * 1120 * 121 // 1024


def test_an_image_only_the_api_sees_is_estimated_at_the_largest_frame(root: Path) -> None:
    """`adaptive` from an https URL: the ratio is the API's to find; the estimate never falls
    below the bill (it took 16:9, 9 % under 21:9 at 720p)."""
    from sparkspec.apifacts import PIXEL_SIZES

    edit(root, '    prompt: "The logo"',
         '    prompt: "The logo"\n    ratio: adaptive\n    first_frame: {image: "https://example.com/logo.png"}')
    logo = plan_of(root).scene("logo")
    largest = max(w * h for w, h in PIXEL_SIZES["720p"].values())
    assert logo is not None and logo.estimated_tokens == largest * 121 // 1024


def test_image_estimate_follows_the_photos_exif_orientation(root: Path) -> None:
    """A photo stored 2000x900 with orientation 6 (turned a quarter) is shown, and rendered by
    the local renderer, 900x2000 (nearest ratio 9:16): the plan estimated it as the 21:9
    landscape it is stored as, another pixel count."""
    from PIL import Image

    from sparkspec.apifacts import estimate_tokens, pixel_size

    (root / "assets").mkdir()
    photo = Image.new("RGB", (2000, 900), (1, 2, 3))
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(root / "assets" / "turned.jpg", exif=exif)
    edit(root, '    prompt: "The logo"',
         '    prompt: "The logo"\n    ratio: adaptive\n    first_frame: {image: assets/turned.jpg}')
    logo = plan_of(root).scene("logo")
    assert pixel_size("720p", "9:16")[0] * pixel_size("720p", "9:16")[1] != \
        pixel_size("720p", "21:9")[0] * pixel_size("720p", "21:9")[1]
    assert logo is not None and logo.estimated_tokens == estimate_tokens(*pixel_size("720p", "9:16"), 121)


def test_cost_estimate(root: Path) -> None:
    edit(root, "provider: {type: local}", "provider: {type: local, price_per_million_tokens: 4.2}")
    edit(root, '    prompt: "The logo"', '    prompt: "The logo"\n    service_tier: flex')
    plan = plan_of(root)
    intro, logo = plan.scene("intro"), plan.scene("logo")
    assert intro is not None and logo is not None
    assert intro.estimated_cost == pytest.approx(TOKENS / 1e6 * 4.2)
    assert logo.estimated_cost == pytest.approx(TOKENS / 1e6 * 4.2 / 2)
    assert summary_line(plan).startswith("Plan: 3 to render (~326,700 tokens), ")
    assert summary_line(plan).endswith("; ~1.14 to pay.")


# -- replace, reuse, restore, delete ---------------------------------------------------------------


def test_replace(root: Path) -> None:
    fake_apply(root)
    plan = plan_of(root, PlanOptions(replace=("intro",)))
    assert actions(plan) == {"scene.intro": "replace", "scene.pour": "update", "scene.logo": "no-op",
                             "sequence.final": "stitch"}
    intro = plan.scene("intro")
    assert intro is not None and intro.reasons == ("forced by --replace",) and intro.key is not None
    assert reasons(plan, "scene.pour") == ["upstream intro re-renders"]
    assert "  -/+ scene.intro (replace)" in render_text(plan)
    fresh = plan_of(root, PlanOptions(replace=("logo",)))
    assert fresh.count(Action.REPLACE) == 1 and fresh.count(Action.UPDATE) == 0


def test_replace_still_says_what_changed(root: Path) -> None:
    fake_apply(root)
    edit(root, "A cup on", "A mug on")
    fake_apply(root)  # the lock holds the mug; the cache has both
    edit(root, "A mug on", "A cup on")
    assert reasons(plan_of(root), "scene.intro") == ["prompt: A [-mug-] {+cup+} on a marble counter",
                                                     "already rendered: in the cache"]
    assert reasons(plan_of(root, PlanOptions(replace=("intro",))), "scene.intro") == [
        "forced by --replace", "prompt: A [-mug-] {+cup+} on a marble counter",
        "its render is in the cache (without --replace it would be reused, free)"]


def test_reuse_from_the_cache(root: Path) -> None:
    first = fake_apply(root)
    edit(root, "A cup on", "A mug on")
    fake_apply(root)  # the lock now holds the mug; the cache has both
    edit(root, "A mug on", "A cup on")
    plan = plan_of(root)
    assert actions(plan) == {"scene.intro": "reuse", "scene.pour": "reuse", "scene.logo": "no-op",
                             "sequence.final": "stitch"}
    assert reasons(plan, "scene.intro") == ["prompt: A [-mug-] {+cup+} on a marble counter",
                                            "already rendered: in the cache"]
    assert reasons(plan, "scene.pour") == ["first frame changed", "already rendered: in the cache"]
    assert [plan.scene(s).key for s in ("intro", "pour")] == [first.scenes["intro"].key,  # type: ignore[union-attr]
                                                               first.scenes["pour"].key]
    assert plan.estimated_tokens == 0
    assert reasons(plan, "sequence.final") == ["member intro is reused from the cache",
                                               "member pour is reused from the cache"]
    assert summary_line(plan) == ("Plan: 0 to render (~0 tokens), 2 to reuse, 0 to delete, 1 unchanged. "
                                  "Also 1 to stitch.")
    assert "    = scene.intro (reuse)" in render_text(plan)


def test_restore_missing_or_altered_outputs(root: Path) -> None:
    fake_apply(root)
    (root / "renders" / "logo.mp4").unlink()
    (root / "renders" / "intro.last.png").write_bytes(b"edited by hand, longer than before")
    plan = plan_of(root)
    assert actions(plan) == {"scene.intro": "restore", "scene.pour": "no-op", "scene.logo": "restore",
                             "sequence.final": "no-op"}
    assert reasons(plan, "scene.logo") == ["renders/logo.mp4 is missing"]
    assert reasons(plan, "scene.intro") == ["renders/intro.last.png was altered"]
    assert plan.estimated_tokens == 0
    assert summary_line(plan) == ("Plan: 0 to render (~0 tokens), 0 to reuse, 0 to delete, 2 unchanged. "
                                  "Also 2 to restore.")
    (root / "renders" / "final.mp4").unlink()
    assert reasons(plan_of(root), "sequence.final") == ["renders/final.mp4 is missing"]


def test_missing_output_not_in_the_cache_renders_again(root: Path) -> None:
    fake_apply(root, cache=False)
    (root / "renders" / "logo.mp4").unlink()
    plan = plan_of(root)
    assert actions(plan)["scene.logo"] == "update"
    assert reasons(plan, "scene.logo") == ["renders/logo.mp4 is missing and not in the cache"]


def test_output_dir_change_restores_from_the_cache(root: Path) -> None:
    fake_apply(root)
    edit(root, "version: 1\n", "version: 1\noutput_dir: out\n")
    plan = plan_of(root)
    assert actions(plan)["scene.intro"] == "restore"
    assert reasons(plan, "scene.intro") == ["out/intro.mp4 is not materialised yet"]


def test_delete(root: Path) -> None:
    fake_apply(root)
    edit(root, '  logo:\n    prompt: "The logo"\n', "")
    edit(root, "sequences:\n  final: {scenes: [intro, pour, logo]}\n", "")
    plan = plan_of(root)
    assert actions(plan) == {"scene.intro": "no-op", "scene.pour": "no-op", "scene.logo": "delete",
                             "sequence.final": "delete"}
    assert reasons(plan, "scene.logo") == ["not in the spec"]
    logo = next(c for c in plan.changes if c.address == "scene.logo")
    assert logo.key == read_lock(root / "project.spark.lock")[0].scenes["logo"].key  # known: the lock's
    assert summary_line(plan) == "Plan: 0 to render (~0 tokens), 0 to reuse, 2 to delete, 2 unchanged."
    assert "    - scene.logo (delete)" in render_text(plan)


def test_stitch_new_sequence_and_changed_members(root: Path) -> None:
    fake_apply(root)
    edit(root, "  final: {scenes: [intro, pour, logo]}",
         "  final: {scenes: [intro, pour, logo]}\n  short: {scenes: [logo, intro]}")
    plan = plan_of(root)
    assert actions(plan)["sequence.short"] == "stitch"
    assert reasons(plan, "sequence.short") == ["new sequence"]
    edit(root, "  final: {scenes: [intro, pour, logo]}", "  final: {scenes: [logo, intro, pour]}")
    assert reasons(plan_of(root), "sequence.final") == ["its members changed"]


def test_the_summary_line_of_design(root: Path) -> None:
    """`Plan: 2 to render (~217,800 tokens), 1 to reuse, 1 to delete, 5 unchanged.`"""
    scenes = "".join(f"  {s}:\n    prompt: \"scene {s}\"\n" for s in "abcdefgh")
    (root / SPEC).write_text("version: 1\nprovider: {type: local}\n"
                             "defaults: {resolution: 720p, ratio: \"1:1\"}\nscenes:\n" + scenes)
    fake_apply(root)
    edit(root, 'scene c"', 'scene C"')
    fake_apply(root)
    edit(root, 'scene C"', 'scene c"')  # c: back to what the cache has
    edit(root, 'scene a"', 'scene A"')  # a: update
    edit(root, '  h:\n    prompt: "scene h"\n', '  i:\n    prompt: "scene i"\n')  # h deleted, i created
    plan = plan_of(root)
    assert summary_line(plan) == "Plan: 2 to render (~217,800 tokens), 1 to reuse, 1 to delete, 5 unchanged."
    assert sorted(actions(plan).items()) == [
        ("scene.a", "update"), ("scene.b", "no-op"), ("scene.c", "reuse"), ("scene.d", "no-op"),
        ("scene.e", "no-op"), ("scene.f", "no-op"), ("scene.g", "no-op"), ("scene.h", "delete"),
        ("scene.i", "create")]


# -- --json ---------------------------------------------------------------------------------------


def test_plan_json(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apply(root)
    edit(root, "A cup on", "A mug on")
    edit(root, '  logo:\n    prompt: "The logo"\n', "")
    edit(root, "[intro, pour, logo]", "[intro, pour]")
    code, out, err = run(["plan", "--json"], root, monkeypatch)
    assert code == 0, err
    payload = json.loads(out)
    assert list(payload) == ["format_version", "changes", "summary"]
    assert payload["format_version"] == "1"
    by_address = {c["address"]: c for c in payload["changes"]}
    assert list(by_address) == ["scene.intro", "scene.pour", "scene.logo", "sequence.final"]
    pour = by_address["scene.pour"]
    assert {k: pour[k] for k in ("address", "kind", "id", "action", "reasons", "key", "estimated_tokens")} == {
        "address": "scene.pour", "kind": "scene", "id": "pour", "action": "update",
        "reasons": ["upstream intro re-renders"], "key": None, "estimated_tokens": TOKENS}
    assert by_address["scene.intro"]["key"] == plan_of(root).scene("intro").key  # type: ignore[union-attr]
    assert by_address["scene.logo"]["action"] == "delete"
    assert by_address["sequence.final"]["kind"] == "sequence"
    assert by_address["sequence.final"]["action"] == "stitch"
    summary = payload["summary"]
    assert {k: summary[k] for k in ("render", "reuse", "restore", "delete", "unchanged", "estimated_tokens")} == {
        "render": 2, "reuse": 0, "restore": 0, "delete": 1, "unchanged": 0, "estimated_tokens": 217_800}
    for change in payload["changes"]:
        assert change["action"] in {"create", "update", "replace", "reuse", "restore", "delete", "no-op",
                                    "stitch"}


def test_plan_json_gives_costs_to_a_millionth(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit(root, "provider: {type: local}", "provider: {type: local, price_per_million_tokens: 0.7}")
    code, out, err = run(["plan", "--json"], root, monkeypatch)
    assert code == 0, err
    payload = json.loads(out)
    costs = [c["estimated_cost"] for c in payload["changes"] if c["estimated_cost"] is not None]
    costs.append(payload["summary"]["estimated_cost"])
    assert costs and all(len(repr(cost)) <= 10 for cost in costs), costs  # 0.07622999999999999 unrounded


def test_a_priced_plan_with_nothing_to_render_costs_zero_not_unknown(root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With a price set and nothing to render, the summary's estimated_cost was null, which
    otherwise means "no price known"."""
    fake_apply(root)
    edit(root, "provider: {type: local}", "provider: {type: local, price_per_million_tokens: 0.7}")
    code, out, err = run(["plan", "--json"], root, monkeypatch)
    assert code == 0, err
    assert json.loads(out)["summary"]["estimated_cost"] == 0.0
    code, out, err = run(["plan"], root, monkeypatch)
    assert "to pay" not in out  # the text says nothing of a 0.00 bill
    edit(root, "provider: {type: local, price_per_million_tokens: 0.7}", "provider: {type: local}")
    code, out, err = run(["plan", "--json"], root, monkeypatch)
    assert json.loads(out)["summary"]["estimated_cost"] is None


def test_plan_json_lists_no_ops(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apply(root)
    code, out, _ = run(["plan", "--json", "--detailed-exitcode"], root, monkeypatch)
    assert code == 0
    payload = json.loads(out)
    assert [(c["address"], c["action"], c["reasons"]) for c in payload["changes"]] == [
        ("scene.intro", "no-op", []), ("scene.pour", "no-op", []), ("scene.logo", "no-op", []),
        ("sequence.final", "no-op", [])]
    assert payload["summary"]["unchanged"] == 4
    assert all(c["key"] for c in payload["changes"] if c["kind"] == "scene")


# -- exit codes -----------------------------------------------------------------------------------


def test_detailed_exitcode(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(["plan", "--detailed-exitcode"], root, monkeypatch)[0] == 2
    assert run(["plan"], root, monkeypatch)[0] == 0
    fake_apply(root)
    assert run(["plan", "--detailed-exitcode"], root, monkeypatch)[0] == 0
    edit(root, "seed: 7", "seed: 99999999999")
    code, out, err = run(["plan", "--detailed-exitcode"], root, monkeypatch)
    assert code == 1 and out == ""
    assert err.startswith("project.spark.yaml:3:50: error: defaults.seed: 99999999999 is not in")


def test_unknown_target_or_replace(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("--target", "--replace"):
        code, out, err = run(["plan", flag, "nope"], root, monkeypatch)
        assert code == 1 and "Traceback" not in err
        assert err == (f"error: {flag} nope: no scene or sequence of that id in project.spark.yaml; "
                       "see `sparkspec graph`\n")


def test_an_address_of_the_wrong_kind_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sequence.intro` names a sequence: when intro is a scene it must not quietly act on the scene."""
    for flag in ("--target", "--replace"):
        code, _, err = run(["plan", flag, "sequence.intro"], root, monkeypatch)
        assert code == 1 and err == (f"error: {flag} sequence.intro: intro is a scene, not a sequence, in "
                                     "project.spark.yaml; did you mean scene.intro?\n")
        code, _, err = run(["plan", flag, "scene.final"], root, monkeypatch)
        assert code == 1 and "final is a sequence, not a scene" in err
    code, out, err = run(["plan", "--replace", "scene.intro", "--target", "sequence.final"], root, monkeypatch)
    assert code == 0, err


def test_a_replace_outside_the_targets_is_refused_not_ignored(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apply(root)
    code, _, err = run(["plan", "--target", "logo", "--replace", "intro"], root, monkeypatch)
    assert code == 1 and err.startswith("error: --replace intro: not among what --target logo selects")
    code, out, err = run(["plan", "--target", "pour", "--replace", "intro"], root, monkeypatch)  # an upstream
    assert code == 0 and "forced by --replace" in out, err


# -- --target -----------------------------------------------------------------------------------


def test_target_plans_the_upstream_closure_only(root: Path) -> None:
    plan = plan_of(root, PlanOptions(targets=("pour",)))
    assert actions(plan) == {"scene.intro": "create", "scene.pour": "create"}
    plan = plan_of(root, PlanOptions(targets=("logo",)))
    assert actions(plan) == {"scene.logo": "create"}
    plan = plan_of(root, PlanOptions(targets=("final",)))
    assert actions(plan) == {"scene.intro": "create", "scene.pour": "create", "scene.logo": "create",
                             "sequence.final": "stitch"}


def test_a_targeted_plan_with_nothing_to_do_does_not_vouch_for_the_rest(root: Path) -> None:
    """`--target a` with `a` up to date said "The renders match the spec" while others were not."""
    from sparkspec.plan.markdown import render_markdown
    from sparkspec.plan.view import render_text

    fake_apply(root)
    edit(root, '"The logo"', '"The new logo"')
    targeted = plan_of(root, PlanOptions(targets=("pour",)))
    for text in (render_text(targeted), render_markdown(targeted)):
        assert "No changes for pour (and what they need upstream)" in text
        assert "the rest of the spec may still differ" in text and "The renders match the spec" not in text
    assert "No changes. The renders match the spec." not in render_text(plan_of(root))


def test_target_never_deletes(root: Path) -> None:
    fake_apply(root)
    edit(root, '  logo:\n    prompt: "The logo"\n', "")
    edit(root, "[intro, pour, logo]", "[intro, pour]")
    edit(root, "A cup on", "A mug on")
    plan = plan_of(root, PlanOptions(targets=("intro",)))
    assert actions(plan) == {"scene.intro": "update"}


def test_a_target_removed_from_the_spec_is_deleted_alone(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As terraform's -target destroys a resource removed from its configuration."""
    fake_apply(root)
    edit(root, '  logo:\n    prompt: "The logo"\n', "")
    edit(root, "[intro, pour, logo]", "[intro, pour]")
    edit(root, "A cup on", "A mug on")
    assert actions(plan_of(root, PlanOptions(targets=("logo",)))) == {"scene.logo": "delete"}
    code, out, err = run(["plan", "--target", "scene.logo"], root, monkeypatch)
    assert code == 0 and "- scene.logo (delete)" in out and "intro" not in out, out + err
    code, _, err = run(["plan", "--target", "nothere"], root, monkeypatch)
    assert code == 1 and "no scene or sequence of that id" in err
    code, _, err = run(["plan", "--replace", "logo"], root, monkeypatch)
    assert code == 1 and "no scene or sequence of that id" in err  # nothing to render again


# -- saved plans ---------------------------------------------------------------------------------


def test_plan_out_writes_a_file_and_never_replaces_a_pipe_device_or_link(root: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(root / "pipe")
    for out in ("pipe", "/dev/null", ""):
        code, _, err = run_main(["plan", "--out", out], root, monkeypatch)
        assert code == 1 and "--out" in err and "Traceback" not in err, err
    assert (root / "pipe").exists() and not (root / "pipe").is_file()
    (root / "link.plan").symlink_to("real.plan")  # through a link: its target, the link kept
    assert run_main(["plan", "--out", "link.plan"], root, monkeypatch)[0] == 0
    assert (root / "link.plan").is_symlink() and load_plan(root / "real.plan").spec == SPEC


def test_plan_out_overwrites_an_earlier_plan_and_nothing_else(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`plan --out project.spark.yaml` replaced the spec with the plan, exit 0; `--out a/b/x`
    made the folders, at the filesystem's root too."""
    spec = (root / SPEC).read_text()
    for out in (SPEC, "project.spark.lock", "notes.txt", "no/such/folder/x.plan"):
        if out == "notes.txt":
            (root / out).write_text("my notes\n")
        if out == "project.spark.lock":
            (root / out).write_text('{"version": 1, "scenes": {}}\n')
        code, _, err = run_main(["plan", "--out", out], root, monkeypatch)
        assert code == 1 and f"--out {out}:" in err and "Traceback" not in err, err
    assert (root / SPEC).read_text() == spec and (root / "notes.txt").read_text() == "my notes\n"
    assert not (root / "no").exists()
    assert run_main(["plan", "--out", "x.plan"], root, monkeypatch)[0] == 0
    assert run_main(["plan", "--out", "x.plan"], root, monkeypatch)[0] == 0  # an earlier plan: replaced
    assert load_plan(root / "x.plan").spec == SPEC


def test_saved_plan_and_stale_detection(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apply(root)
    edit(root, "A cup on", "A mug on")
    code, out, _ = run(["plan", "--out", "mug.plan", "--var", "unused=1"], root, monkeypatch)
    assert code == 0
    assert out.rstrip().endswith("Saved the plan to mug.plan; run `sparkspec apply mug.plan` to carry it out.")
    saved = load_plan(root / "mug.plan")
    assert saved.spec == SPEC
    assert saved.load_options == LoadOptions(variables=("unused=1",))
    assert [c["action"] for c in saved.changes] == ["update", "update", "no-op", "stitch"]
    load = saved.load_options

    def fresh() -> Plan:
        return plan_of(root, saved.plan_options, load)

    check_fresh(saved, fresh(), root / "mug.plan")  # nothing changed: fine

    original = (root / SPEC).read_text()
    (root / SPEC).write_text(original + "# a comment\n")
    with pytest.raises(StalePlanError, match="the spec changed"):
        check_fresh(saved, fresh(), root / "mug.plan")
    (root / SPEC).write_text(original)

    load = LoadOptions(variables=("unused=2",))
    with pytest.raises(StalePlanError, match="the variables changed"):
        check_fresh(saved, fresh(), root / "mug.plan")
    load = saved.load_options

    lock_text = (root / "project.spark.lock").read_text()
    (root / "project.spark.lock").write_text(lock_text.replace('"task-logo"', '"task-logo-2"'))
    with pytest.raises(StalePlanError, match="the lock changed"):
        check_fresh(saved, fresh(), root / "mug.plan")
    (root / "project.spark.lock").write_text(lock_text)

    load = LoadOptions(variables=("unused=1",), provider="spark")
    with pytest.raises(StalePlanError, match="(the provider|the variables) changed"):
        check_fresh(saved, fresh(), root / "mug.plan")
    load = saved.load_options

    # The mug appears in the cache (another checkout applied it): same spec and lock, other changes.
    lock_before = read_lock(root / "project.spark.lock")[1]
    fake_apply(root)
    (root / "project.spark.lock").write_text(lock_before)
    with pytest.raises(StalePlanError, match="the renders or the cache changed"):
        check_fresh(saved, fresh(), root / "mug.plan")


def test_saved_plan_json_matches_plan_json(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["plan", "--json", "--out", "p.json", "--target", "pour"], root, monkeypatch)
    assert code == 0
    saved = json.loads((root / "p.json").read_text())
    printed = json.loads(out)
    assert saved["changes"] == printed["changes"]
    assert saved["options"]["targets"] == ["pour"]
    assert set(saved["fingerprint"]) == {"spec_sha256", "vars_sha256", "templates_sha256", "lock_sha256",
                                        "provider"}
    assert load_plan(root / "p.json").plan_options == PlanOptions(targets=("pour",))


def test_unreadable_saved_plan(tmp_path: Path) -> None:
    (tmp_path / "bad.plan").write_text("{not json")
    with pytest.raises(SparkspecError, match="not a readable sparkspec plan"):
        load_plan(tmp_path / "bad.plan")
    with pytest.raises(SparkspecError, match="no such plan file"):
        load_plan(tmp_path / "none.plan")


def test_plan_json_is_a_pure_function_of_the_plan(root: Path) -> None:
    plan = plan_of(root)
    assert plan_json(plan) == plan_json(plan_of(root))


def test_a_saved_plan_is_stale_when_a_template_file_changed(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # A chained scene's key is unknown before apply, so its change in the plan does not show an
    # edit of its prompt file: the fingerprint must.
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts/part.j2").write_text("slowly")
    (tmp_path / "prompts/next.j2").write_text('the boat sails {% include "prompts/part.j2" %}')
    (tmp_path / SPEC).write_text(
        "version: 1\nprovider: {type: local}\nscenes:\n"
        "  first: {prompt: a boat}\n"
        "  next: {first_frame: {scene: first}, prompt_file: prompts/next.j2}\n")
    code, _, _ = run(["plan", "--out", "p.plan"], tmp_path, monkeypatch)
    assert code == 0
    saved = load_plan(tmp_path / "p.plan")
    check_fresh(saved, plan_of(tmp_path, saved.plan_options, saved.load_options), tmp_path / "p.plan")
    (tmp_path / "prompts/part.j2").write_text("quickly")  # an include of the prompt file
    with pytest.raises(StalePlanError, match="a template file changed"):
        check_fresh(saved, plan_of(tmp_path, saved.plan_options, saved.load_options), tmp_path / "p.plan")
