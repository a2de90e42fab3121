"""Planning takes (DESIGN section 10): one change per take, picks, raising and lowering takes.

States are built with `fake_apply` (test_plan.py), which records every take the way apply does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run_main
from test_plan import SPEC, TOKENS, actions, edit, fake_apply, plan_of, reasons

from sparkspec.keys import scene_key
from sparkspec.state.lockfile import read_lock
from sparkspec.state.workspace import open_workspace

CHAIN = """\
version: 1
provider: {type: local}
defaults: {resolution: 720p, ratio: "1:1", seed: 7}
scenes:
  hero:
    prompt: "A cup on a marble counter"
    takes: 3
  pour:
    first_frame: {scene: hero}
    prompt: "Coffee pours"
  logo:
    prompt: "The logo"
sequences:
  final: {scenes: [hero, pour]}
  brand: {scenes: [logo]}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / SPEC).write_text(CHAIN)
    return tmp_path


def test_every_take_is_planned_with_its_own_key_and_tokens(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_of(root)
    assert actions(plan) == {"scene.hero": "create", "scene.hero.take2": "create", "scene.hero.take3": "create",
                             "scene.pour": "create", "scene.logo": "create", "sequence.final": "stitch",
                             "sequence.brand": "stitch"}
    hero = [plan.scene("hero", take) for take in (1, 2, 3)]
    assert len({c.key for c in hero if c is not None}) == 3
    assert plan.scene("pour").key is None  # its upstream's pick renders in this apply
    assert plan.estimated_tokens == 5 * TOKENS
    workspace = open_workspace(root / SPEC)
    try:
        project = workspace.project
        assert [c.key for c in hero if c] == [scene_key(project, project.scenes["hero"], None, t).hex
                                                for t in (1, 2, 3)]
    finally:
        workspace.close()
    code, out, _ = run_main(["plan"], root, monkeypatch)
    assert "  + scene.hero (create)" in out and "  + scene.hero take 2 (create)" in out
    assert "  + scene.hero take 3 (create)" in out
    assert "Plan: 5 to render (~544,500 tokens)" in out
    code, out, _ = run_main(["plan", "--json"], root, monkeypatch)
    changes = {c["address"]: c for c in json.loads(out)["changes"]}
    assert changes["scene.hero.take2"]["id"] == "hero" and changes["scene.hero.take2"]["estimated_tokens"] == TOKENS
    assert json.loads(out)["summary"]["render"] == 5


def test_a_single_take_project_plans_exactly_as_before(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit(root, "    takes: 3\n", "")
    plain = [run_main(["plan", *args], root, monkeypatch)[1] for args in ([], ["--json"])]
    edit(root, '    prompt: "A cup on a marble counter"\n',
         '    prompt: "A cup on a marble counter"\n    takes: 1\n    pick: 1\n')
    assert [run_main(["plan", *args], root, monkeypatch)[1] for args in ([], ["--json"])] == plain
    assert all(c["address"].count(".") == 1 for c in json.loads(plain[1])["changes"])
    lock = fake_apply(root)
    assert "takes" not in lock.scenes["hero"].to_json() and "pick" not in lock.scenes["hero"].to_json()
    assert not plan_of(root).has_changes


def test_changing_pick_renders_nothing_and_only_downstream_re_renders(root: Path) -> None:
    before = fake_apply(root)
    assert [t["video"]["path"] for t in before.scenes["hero"].to_json()["takes"]] == \
        ["renders/hero.mp4", "renders/hero.take2.mp4", "renders/hero.take3.mp4"]
    assert not plan_of(root).has_changes
    edit(root, "    takes: 3\n", "    takes: 3\n    pick: 3\n")
    plan = plan_of(root)
    assert actions(plan) == {"scene.hero": "restore", "scene.hero.take2": "no-op", "scene.hero.take3": "restore",
                             "scene.pour": "update", "scene.logo": "no-op", "sequence.final": "stitch",
                             "sequence.brand": "no-op"}
    assert reasons(plan, "scene.hero") == reasons(plan, "scene.hero.take3") == ["pick: 1 -> 3"]
    assert reasons(plan, "scene.pour") == ["upstream hero pick: 1 -> 3"]
    assert plan.scene("pour").key is not None  # the picked take's last frame is known: its key too
    assert sum(c.estimated_tokens for c in plan.changes) == TOKENS  # pour alone renders


def test_raising_takes_plans_only_the_new_takes(root: Path) -> None:
    fake_apply(root)
    edit(root, "    takes: 3\n", "    takes: 5\n")
    plan = plan_of(root)
    assert {a: x for a, x in actions(plan).items() if x != "no-op"} == {
        "scene.hero.take4": "create", "scene.hero.take5": "create"}
    assert plan.estimated_tokens == 2 * TOKENS


def test_lowering_takes_deletes_the_dropped_takes_only(root: Path) -> None:
    fake_apply(root)
    edit(root, "    takes: 3\n", "    takes: 2\n    pick: 2\n")
    plan = plan_of(root)
    assert {a: x for a, x in actions(plan).items() if x != "no-op"} == {
        "scene.hero": "restore", "scene.hero.take2": "restore", "scene.hero.take3": "delete",
        "scene.pour": "update", "sequence.final": "stitch"}
    assert reasons(plan, "scene.hero.take3") == ["takes lowered to 2"]
    assert plan.estimated_tokens == TOKENS


def test_a_lone_take_grows_into_takes_without_re_rendering_it(root: Path) -> None:
    edit(root, "    takes: 3\n", "")
    lock = fake_apply(root)
    assert "takes" not in lock.scenes["hero"].to_json()
    edit(root, '    prompt: "A cup on a marble counter"\n',
         '    prompt: "A cup on a marble counter"\n    takes: 2\n    pick: 2\n')
    plan = plan_of(root)
    assert {a: x for a, x in actions(plan).items() if x != "no-op"} == {
        "scene.hero": "restore", "scene.hero.take2": "create", "scene.pour": "update", "sequence.final": "stitch"}
    assert reasons(plan, "scene.hero") == ["pick: 1 -> 2"]
    assert reasons(plan, "scene.pour") == ["upstream hero re-renders"]


def test_a_changed_prompt_updates_every_take_and_a_replace_replaces_them(root: Path) -> None:
    fake_apply(root)
    edit(root, "A cup on a marble counter", "A cup on a granite counter")
    plan = plan_of(root)
    assert [actions(plan)[a] for a in ("scene.hero", "scene.hero.take2", "scene.hero.take3")] == ["update"] * 3
    assert reasons(plan, "scene.hero.take2") == ["prompt: A cup on a [-marble-] {+granite+} counter"]
    edit(root, "A cup on a granite counter", "A cup on a marble counter")
    workspace = open_workspace(root / SPEC)
    try:
        from sparkspec.plan.model import PlanOptions

        plan = workspace.plan(PlanOptions(replace=("hero",)))
    finally:
        workspace.close()
    assert [actions(plan)[a] for a in ("scene.hero", "scene.hero.take2", "scene.hero.take3")] == ["replace"] * 3
    assert read_lock(root / "project.spark.lock")[0].scenes["hero"].pick == 1


def test_gc_keeps_every_recorded_take(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = fake_apply(root)
    keys = [t.key for t in lock.scenes["hero"].take_records().values()]
    assert len(keys) == 3
    code, out, err = run_main(["gc"], root, monkeypatch)
    assert code == 0, err
    assert "dropped render" not in out and "dropped blob" not in out
    workspace = open_workspace(root / SPEC)
    try:
        assert all(workspace.cache.lookup(k) is not None for k in keys)
    finally:
        workspace.close()


def test_show_lists_every_take_and_counts_its_tokens(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit(root, "    takes: 3\n", "    takes: 3\n    pick: 2\n")
    lock = fake_apply(root)
    code, out, err = run_main(["show"], root, monkeypatch)
    assert code == 0, err
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert [row[:2] for row in rows] == [["hero", "2 (picked)"], ["", "1"], ["", "3"], ["logo", "1"],
                                         ["pour", "1"]]
    takes = lock.scenes["hero"].take_records()
    assert [row[6] for row in rows[:3]] == [takes[n].video.path for n in (2, 1, 3)]
    assert rows[1][7] == takes[1].key[:12]
    assert out.rstrip().endswith(f"3 scene(s) (5 takes), {5 * TOKENS:,} tokens in all.")


def test_takes_and_pick_in_defaults_reach_every_scene_a_scene_overrides_them(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit(root, 'seed: 7}\n', 'seed: 7, takes: 2, pick: 2}\n')
    edit(root, "    takes: 3\n", "    takes: 3\n    pick: 1\n")
    edit(root, '    prompt: "The logo"\n', '    prompt: "The logo {{ tone }}"\n    matrix: {tone: [warm, cold]}\n'
                                           '    takes: 1\n    pick: 1\n')
    edit(root, "brand: {scenes: [logo]}", "brand: {scenes: [logo-warm]}")
    code, out, err = run_main(["plan", "--json"], root, monkeypatch)
    assert code == 0, err
    rendered = sorted(c["address"] for c in json.loads(out)["changes"] if c["action"] == "create")
    assert rendered == ["scene.hero", "scene.hero.take2", "scene.hero.take3", "scene.logo-cold", "scene.logo-warm",
                        "scene.pour", "scene.pour.take2"]
    lock = fake_apply(root)
    assert lock.scenes["pour"].pick == 2 and lock.scenes["hero"].pick == 1
    assert [n for n in lock.scenes["pour"].take_records()] == [1, 2]


def test_a_target_brings_what_it_needs_and_no_other(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every take of the target; of an upstream it needs, the picked take (what it starts
    from) and a take --replace names: its other takes would be paid for and not needed."""
    edit(root, '    prompt: "Coffee pours"\n', '    prompt: "Coffee pours"\n    takes: 2\n')
    edit(root, "    takes: 3\n", "    takes: 3\n    pick: 2\n")
    code, out, err = run_main(["plan", "--json", "--target", "pour"], root, monkeypatch)
    assert code == 0, err
    planned = {c["address"]: c["action"] for c in json.loads(out)["changes"]}
    assert {a for a, x in planned.items() if x == "create"} == {"scene.hero.take2", "scene.pour", "scene.pour.take2"}
    assert "scene.logo" not in planned
    code, out, err = run_main(["plan", "--json", "--target", "pour", "--replace", "hero.take3"], root, monkeypatch)
    assert code == 0, err
    assert {c["address"] for c in json.loads(out)["changes"] if c["id"] == "hero"} == {
        "scene.hero.take2", "scene.hero.take3"}
    code, out, err = run_main(["plan", "--json", "--target", "pour", "--target", "hero"], root, monkeypatch)
    assert len([c for c in json.loads(out)["changes"] if c["id"] == "hero"]) == 3


def test_a_target_downstream_of_a_new_pick_moves_the_take_picked_before(root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The new pick takes renders/hero.mp4 from the old one, whose record must move with its
    files: a plan with the new pick alone left the old take's record naming renders/hero.mp4."""
    fake_apply(root)
    edit(root, "    takes: 3\n", "    takes: 3\n    pick: 2\n")
    code, out, err = run_main(["plan", "--json", "--target", "pour"], root, monkeypatch)
    assert code == 0, err
    assert {c["address"]: c["action"] for c in json.loads(out)["changes"] if c["id"] == "hero"} == {
        "scene.hero": "restore", "scene.hero.take2": "restore"}
    fake_apply(root)
    edit(root, "    takes: 3\n    pick: 2\n", "")  # one take now: take 2, the pick before, is dropped
    code, out, err = run_main(["plan", "--json", "--target", "pour"], root, monkeypatch)
    assert code == 0, err
    assert {c["address"]: c["action"] for c in json.loads(out)["changes"] if c["id"] == "hero"} == {
        "scene.hero": "restore", "scene.hero.take2": "delete"}
    code, out, err = run_main(["plan", "--json", "--target", "logo"], root, monkeypatch)
    assert code == 0, err
    assert [c["address"] for c in json.loads(out)["changes"] if c["kind"] == "scene"] == ["scene.logo"]


def test_with_a_derived_seed_take_1_is_the_scene_and_take_k_derives_from_it(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkspec.keys import take_seed

    edit(root, ", seed: 7}", "}")
    edit(root, "    takes: 3\n", "")
    alone = json.loads(run_main(["plan", "--json"], root, monkeypatch)[1])["changes"]
    edit(root, '    prompt: "A cup on a marble counter"\n', '    prompt: "A cup on a marble counter"\n    takes: 3\n')
    taken = json.loads(run_main(["plan", "--json"], root, monkeypatch)[1])["changes"]
    assert [c["key"] for c in taken if c["address"] == "scene.hero"] == \
        [c["key"] for c in alone if c["address"] == "scene.hero"]
    hero = fake_apply(root).scenes["hero"].take_records()
    assert hero[1].seed_derived
    assert [hero[k].seed for k in (1, 2, 3)] == [hero[1].seed, take_seed(hero[1].seed, 2), take_seed(hero[1].seed, 3)]
