"""A task an earlier apply submitted and did not collect (it failed or was killed after the
create) is in the journal: `plan` says apply collects it, at no new cost, in text, JSON and
markdown alike, and apply does just that, past the task's expiry too (it may have finished,
paid for, before it expired: the API says); a damaged entry is named by the plan (apply fails
the scene).
A saved plan and the journal must agree when it is applied. Against the fake gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cli_runner import Cli
from fakeapi import FakeSparkAPI
from sparkspec.state.journal import Journal

SPEC = """\
version: 1
provider: {type: spark, parallelism: 2, poll: {initial: 0.05, max: 0.2}}
defaults: {resolution: 480p, frames: 29, seed: 11}
scenes:
  a: {prompt: "a heron stands in reeds"}
  b: {prompt: "a heron takes flight"}
"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[FakeSparkAPI]:
    # A little latency: the create answers "running", so the apply queries the task (and fails).
    with FakeSparkAPI(api_key="sk-collect", render="template", latency=0.2) as fake:
        yield fake


@pytest.fixture
def fake_api(gateway: FakeSparkAPI) -> FakeSparkAPI:
    gateway.faults.clear()
    gateway.outcomes.clear()
    gateway.reset_counters()
    return gateway


@pytest.fixture
def project(tmp_path: Path, fake_api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPARK_API_KEY", fake_api.api_key)
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    return tmp_path


def journal(root: Path) -> dict[str, Path]:
    """scene -> the journal file that holds its entry (the log, which an apply leaves holding
    only the entries alive: here a's alone)."""
    folder = Journal(root / ".sparkspec" / "journal")
    return {e.scene: folder.log_path for e in folder.entries()}


def failed_after_create(cli: Cli, root: Path, api: FakeSparkAPI) -> str:
    """An apply that creates a's task and then fails (the API refuses to tell its status):
    the task id stays in the journal. b renders. The task id of a."""
    api.inject("query", "status", status=400, body={"error": {"code": "bad", "message": "no"}}, times=1)
    run = cli("apply", "--auto-approve", "--target", "a", cwd=root)
    assert run.code == 1, run.out + run.err
    entries = Journal(root / ".sparkspec/journal").entries()
    assert [e.scene for e in entries] == ["a"] and api.total_creates == 1
    return entries[0].task_id


def test_plan_says_a_journalled_task_is_collected_at_no_new_cost(cli: Cli, project: Path,
                                                                fake_api: FakeSparkAPI) -> None:
    task = failed_after_create(cli, project, fake_api)

    text = cli("plan", cwd=project)
    assert text.code == 0, text.err
    assert "< scene.a (collect)" in text.out and "+ scene.b (create)" in text.out
    assert f"task {task} of an earlier apply is in the journal: collected at no new cost" in text.out
    head_a = next(line for line in text.out.splitlines() if "scene.a" in line)
    assert "tokens" not in head_a
    as_json = json.loads(cli("plan", "--json", cwd=project).out)
    a, b = (next(c for c in as_json["changes"] if c["id"] == s) for s in ("a", "b"))
    assert a["action"] == "collect" and a["estimated_tokens"] == 0 and a["key"]
    assert b["action"] == "create" and b["estimated_tokens"] > 0
    summary = as_json["summary"]
    assert summary["collect"] == 1 and summary["render"] == 1
    assert summary["estimated_tokens"] == b["estimated_tokens"]  # a's tokens are not to pay again
    total = f"1 to render (~{b['estimated_tokens']:,} tokens), 0 to reuse, 0 to delete, 0 unchanged. Also 1 to collect (already paid)"
    assert total in text.out
    markdown = cli("plan", "--format", "markdown", cwd=project).out
    assert total in markdown and "| `<` | collect | `scene.a` |" in markdown
    assert f"task {task} of an earlier apply is in the journal" in markdown

    done = cli("apply", "--auto-approve", "--json", cwd=project)
    assert done.code == 0, done.out + done.err
    events = done.events()
    assert {"event": "progress", "scene": "a", "task_id": task, "state": "collecting"} in events
    assert fake_api.creates_by_prompt() == {"a heron stands in reeds": 1, "a heron takes flight": 1}
    assert journal(project) == {}
    # The summary tells what this apply paid from what it only collected.
    lock = json.loads((project / "project.spark.lock").read_text())
    last = events[-1]
    assert last["event"] == "done" and last["completed"] == 2 and last["collected"] == 1
    assert last["collected_tokens"] == lock["scenes"]["a"]["tokens"]
    assert last["tokens"] == lock["scenes"]["a"]["tokens"] + lock["scenes"]["b"]["tokens"]
    assert "No changes" in cli("plan", cwd=project).out


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
@pytest.mark.parametrize("age_days", [3, 8])
def test_a_journalled_task_past_its_expiry_is_collected_not_paid_again(cli: Cli, project: Path,
                                                                      fake_api: FakeSparkAPI, age_days: int) -> None:
    """Its task finished before it expired: submitting again blind paid for it twice. Past the
    7 days the API answers about a task, the plan says what happens if it is unknown there."""
    task = failed_after_create(cli, project, fake_api)
    folder = Journal(project / ".sparkspec" / "journal")
    [entry] = folder.entries()
    folder.put(replace(entry, submitted_at=time.time() - age_days * 86400))  # past its 48 h expiry

    text = cli("plan", cwd=project)
    assert "< scene.a (collect)" in text.out and "+ scene.a" not in text.out
    assert f"task {task} of an earlier apply is in the journal: collected at no new cost" in text.out
    assert ("older than the 7 days the API answers about tasks" in text.out) == (age_days > 7)
    summary = json.loads(cli("plan", "--json", cwd=project).out)["summary"]
    assert summary["render"] == 1 and summary["collect"] == 1
    done = cli("apply", "--auto-approve", "--json", cwd=project)
    assert done.code == 0, done.out + done.err
    assert not [e for e in done.events() if e["event"] == "resubmitted"]
    assert fake_api.creates_by_prompt()["a heron stands in reeds"] == 1
    assert json.loads((project / "project.spark.lock").read_text())["scenes"]["a"]["task_id"] == task


def test_a_journalled_task_past_its_expiry_that_the_api_no_longer_knows_is_not_submitted_again(
        cli: Cli, project: Path, fake_api: FakeSparkAPI) -> None:
    """Older than the API keeps tasks: unknown there, it may still have been paid for."""
    task = failed_after_create(cli, project, fake_api)
    folder = Journal(project / ".sparkspec" / "journal")
    [entry] = folder.entries()
    folder.put(replace(entry, submitted_at=time.time() - 9 * 86400))
    del fake_api.tasks[task]  # the API forgot it

    done = cli("apply", "--auto-approve", cwd=project)
    assert done.code == 1
    assert f"task {task} is unknown to the API" in done.err and "--replace a" in done.err
    assert fake_api.creates_by_prompt()["a heron stands in reeds"] == 1
    assert [e.task_id for e in folder.entries()] == [task]
    again = cli("apply", "--auto-approve", "--replace", "a", cwd=project)
    assert again.code == 0, again.err
    assert fake_api.creates_by_prompt()["a heron stands in reeds"] == 2


def test_a_damaged_journal_entry_is_named_by_the_plan(cli: Cli, project: Path, fake_api: FakeSparkAPI) -> None:
    failed_after_create(cli, project, fake_api)
    path = journal(project)["a"]
    path.write_text(path.read_text()[:100])  # torn after its key

    text = cli("plan", cwd=project)
    assert text.code == 0, text.err
    assert "+ scene.a (create)" in text.out
    assert f"{path}: damaged journal entry" in text.out and "apply fails this scene" in text.out
    done = cli("apply", "--auto-approve", cwd=project)
    assert done.code == 1 and f"{path}: damaged journal entry" in done.out + done.err
    assert fake_api.creates_by_prompt() == {"a heron stands in reeds": 1, "a heron takes flight": 1}


def test_a_journalled_task_of_another_key_is_not_collected(cli: Cli, project: Path, fake_api: FakeSparkAPI) -> None:
    task = failed_after_create(cli, project, fake_api)
    (project / "project.spark.yaml").write_text(SPEC.replace("stands in reeds", "stands in the rain"))
    planned = cli("plan", "--json", cwd=project)
    as_json = json.loads(planned.out)
    assert {c["id"]: c["action"] for c in as_json["changes"] if c["kind"] == "scene"} == {"a": "create",
                                                                                          "b": "create"}
    assert as_json["summary"]["collect"] == 0
    # Said, though: the task was paid for, and putting the spec back collects it.
    assert f"task {task} (a, a render the spec no longer asks for, paid for) is in the journal" in planned.err
    assert "task" not in cli("plan", "--target", "b", cwd=project).err  # a targeted plan does not judge it
    (project / "project.spark.yaml").write_text(SPEC)
    assert "< scene.a (collect)" in cli("plan", cwd=project).out


def test_an_entry_of_another_provider_under_a_key_is_damaged_reported_and_kept(cli: Cli, project: Path,
                                                                               fake_api: FakeSparkAPI) -> None:
    """A key is one provider's render, so an entry of another provider's under it was not written
    by sparkspec; it names a task that may exist. It was planned as a plain create, and apply
    paid for a new task and overwrote the entry."""
    failed_after_create(cli, project, fake_api)
    path = journal(project)["a"]
    path.write_text(path.read_text().replace('"provider": "spark"', '"provider": "ark"'))
    entry = path.read_text()
    plan = cli("plan", cwd=project)
    assert plan.code == 0 and "damaged journal entry" in plan.out and str(path) in plan.out, plan.out
    done = cli("apply", "--auto-approve", "--target", "a", cwd=project)
    assert done.code == 1 and "damaged journal entry" in done.err and "--replace a" in done.err, done.err
    assert fake_api.total_creates == 1 and path.read_text() == entry  # the earlier apply's, and left in place
    again = cli("apply", "--auto-approve", "--target", "a", "--replace", "a", cwd=project)
    assert again.code == 0, again.err
    assert fake_api.total_creates == 2


def test_a_saved_plan_and_the_journal_must_agree(cli: Cli, project: Path, fake_api: FakeSparkAPI) -> None:
    failed_after_create(cli, project, fake_api)
    path = journal(project)["a"]
    entry = path.read_text()
    path.unlink()
    assert cli("plan", "--out", "create.plan", cwd=project).code == 0  # a to create: nothing journalled
    path.write_text(entry)  # back (an apply killed after its create, say): applying it would not pay
    stale = cli("apply", "create.plan", cwd=project)
    assert stale.code == 1 and "the plan is stale" in stale.err
    assert "scene.a was 'create' when it was made and is 'collect' now" in stale.err
    assert "the journal of submitted tasks changed" in stale.err

    assert cli("plan", "--out", "collect.plan", cwd=project).code == 0
    path.unlink()  # gone since the plan: applying it would pay for a task the plan did not
    stale = cli("apply", "collect.plan", cwd=project)
    assert stale.code == 1 and "scene.a was 'collect' when it was made and is 'create' now" in stale.err
    assert fake_api.total_creates == 1

    path.write_text(entry)
    done = cli("apply", "collect.plan", "--json", cwd=project)
    assert done.code == 0, done.out + done.err
    assert fake_api.creates_by_prompt() == {"a heron stands in reeds": 1, "a heron takes flight": 1}


def run_engine(project: Path, api: FakeSparkAPI, *, stopped: str | None = None,
               before: Callable[[], None] | None = None) -> tuple[Any, Any]:
    """The engine on a fresh plan of `project` (`before` runs between the plan and the apply;
    `stopped`: submissions already stopped, as by a reached budget): (the plan, the result)."""
    import asyncio

    from sparkspec.apply.engine import Engine
    from sparkspec.providers import make_provider
    from sparkspec.state.workspace import open_workspace

    workspace = open_workspace(project / "project.spark.yaml")
    plan = workspace.plan()
    if before is not None:
        before()
    provider = make_provider(workspace.project.provider, workspace.state_dir,
                             {"SPARK_API_KEY": api.api_key, "SPARK_BASE_URL": api.base_url})

    async def run() -> Any:
        try:
            engine = Engine(workspace, plan, provider, lambda e: None, parallelism=2)
            engine.stop_submitting = stopped
            return await engine.run()
        finally:
            await provider.aclose()

    try:
        return plan, asyncio.run(run())
    finally:
        workspace.close()


def test_apply_never_pays_for_a_collect_whose_task_left_the_journal(cli: Cli, project: Path,
                                                                     fake_api: FakeSparkAPI) -> None:
    """The plan's `collect` is carried out as planned: with the task gone from the journal
    since the plan, the scene fails as stale instead of a new task being paid for."""
    failed_after_create(cli, project, fake_api)
    plan, result = run_engine(project, fake_api, before=lambda: journal(project)["a"].unlink())
    assert plan.scene("a").action.value == "collect"
    assert result.failed["a"].startswith("the plan is stale: run plan again")
    assert fake_api.creates_by_prompt() == {"a heron stands in reeds": 1, "a heron takes flight": 1}


def test_a_collect_goes_on_when_submissions_have_stopped(cli: Cli, project: Path, fake_api: FakeSparkAPI) -> None:
    """A reached budget or --fail-fast stops new submissions; collecting submits nothing, and
    the task is paid for already."""
    task = failed_after_create(cli, project, fake_api)
    _, result = run_engine(project, fake_api, stopped="budget reached: renders reported 1 tokens")
    assert result.completed == ["a"] and set(result.skipped) == {"b"}
    assert fake_api.total_creates == 1 and journal(project) == {}
    assert json.loads((project / "project.spark.lock").read_text())["scenes"]["a"]["task_id"] == task


def test_a_collected_task_is_not_charged_to_this_applys_budget(cli: Cli, project: Path,
                                                               fake_api: FakeSparkAPI) -> None:
    """The plan counts a collect as already paid; the meter counted its reported usage as this
    apply's, and a budget the plan was inside stopped b."""
    failed_after_create(cli, project, fake_api)
    (project / "project.spark.yaml").write_text(SPEC.replace("parallelism: 2", "parallelism: 1"))  # a, then b
    summary = json.loads(cli("plan", "--json", cwd=project).out)["summary"]
    assert summary["collect"] == 1 and summary["render"] == 1
    done = cli("apply", "--auto-approve", "--json", "--max-tokens", str(summary["estimated_tokens"]), cwd=project)
    assert done.code == 0, done.out + done.err
    assert sorted(e["scene"] for e in done.events() if e["event"] == "completed") == ["a", "b"]
    assert fake_api.total_creates == 2  # a's, by the earlier apply, and b's


@pytest.mark.parametrize("outcome", [{"kind": "failed", "code": "003021099"}, {"kind": "expired"}])
def test_a_collected_task_that_did_not_render_is_not_submitted_again_past_the_budget(
        cli: Cli, project: Path, fake_api: FakeSparkAPI, outcome: dict[str, str]) -> None:
    """The plan counts a collect at no cost; when its task did not render (the service was busy,
    it expired) apply submits the scene again, which costs what the plan did not count: with a
    budget of 0 it paid for a new render all the same."""
    fake_api.outcome(**outcome, times=1)  # a's task, made by the apply below, does not render
    failed_after_create(cli, project, fake_api)
    assert "collect" in cli("plan", "--target", "a", cwd=project).out
    done = cli("apply", "--auto-approve", "--target", "a", "--max-tokens", "0", cwd=project)
    assert done.code == 1, done.out + done.err
    assert "the task it was to collect did not render" in done.err and "over the budget of 0" in done.err, done.err
    assert fake_api.total_creates == 1  # the earlier apply's only
    within = cli("apply", "--auto-approve", "--target", "a", cwd=project)  # no budget: rendered
    assert within.code == 0 and fake_api.total_creates == 2, within.err


def test_a_damaged_journal_entry_of_the_local_provider_is_dropped_not_a_failure(cli: Cli, tmp_path: Path) -> None:
    """A kill in the middle of an entry's write left it empty, and every later apply failed the
    scene (exit 1) until it was deleted by hand: for a provider that costs nothing."""
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\n"
        "scenes:\n  a: {prompt: \"a heron stands in reeds\"}\n")
    key = json.loads(cli("plan", "--json", cwd=tmp_path).out)["changes"][0]["key"]
    entry = tmp_path / ".sparkspec" / "journal" / f"{key}.json"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"")  # torn
    assert "dropped, and rendered again" in cli("plan", cwd=tmp_path).out
    done = cli("apply", "--auto-approve", "--json", cwd=tmp_path)
    assert done.code == 0, done.out + done.err
    assert [e["scene"] for e in done.events() if e["event"] == "completed"] == ["a"]
    assert not entry.exists()


def test_a_local_create_cut_off_by_a_kill_is_not_a_possible_payment(cli: Cli, tmp_path: Path) -> None:
    """The plan of a local project after a kill talked of a task 'paid for' at 'the API' and of
    looking in 'the provider's console'."""
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\n"
        "scenes:\n  a: {prompt: \"a heron stands in reeds\"}\n")
    key = json.loads(cli("plan", "--json", cwd=tmp_path).out)["changes"][0]["key"]
    Journal(tmp_path / ".sparkspec" / "journal").mark_unconfirmed(key, "a", "local", time.time())
    plan = cli("plan", cwd=tmp_path)
    assert plan.code == 0 and "+ scene.a (create)" in plan.out
    assert "no readable answer" not in plan.out and "paid" not in plan.out


def test_a_scene_chained_after_a_collected_one_says_so(cli: Cli, project: Path, fake_api: FakeSparkAPI) -> None:
    """It said 'upstream a re-renders', which reads as a second payment for a."""
    spec = project / "project.spark.yaml"
    spec.write_text(spec.read_text().replace('b: {prompt: "a heron takes flight"}',
                                             'b: {prompt: "a heron takes flight", first_frame: {scene: a}}'))
    failed_after_create(cli, project, fake_api)
    b = next(c for c in json.loads(cli("plan", "--json", cwd=project).out)["changes"] if c["id"] == "b")
    assert b["reasons"] == ["upstream a is collected from its task"] and b["key"] is None


def test_a_sequence_of_a_collected_scene_says_so(cli: Cli, project: Path, fake_api: FakeSparkAPI) -> None:
    """It said 'member a re-renders', which reads as a second payment for a."""
    spec = project / "project.spark.yaml"
    spec.write_text(spec.read_text() + "sequences:\n  film: {scenes: [a, b]}\n")
    failed_after_create(cli, project, fake_api)
    film = next(c for c in json.loads(cli("plan", "--json", cwd=project).out)["changes"] if c["id"] == "film")
    assert film["reasons"] == ["member a is collected from its task", "member b re-renders"]


def test_plan_says_when_an_apply_is_running_on_the_project(cli: Cli, project: Path, fake_api: FakeSparkAPI,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The running apply's tasks read as 'of an earlier apply' and its renders as still to buy,
    and nothing said an apply held the project."""
    from cli_runner import run_main
    from sparkspec.state.applylock import apply_lock

    failed_after_create(cli, project, fake_api)
    with apply_lock(project / ".sparkspec"):
        code, out, err = run_main(["plan"], project, monkeypatch)
    assert code == 0 and "< scene.a (collect)" in out, out + err
    assert err.startswith("warning: another sparkspec apply (pid ") and "plan again once it is done" in err
    code, out, err = run_main(["plan"], project, monkeypatch)
    assert code == 0 and "another sparkspec" not in err, err


def test_a_chained_scene_whose_task_is_journalled_says_so_though_its_key_waits(cli: Cli, project: Path,
                                                                              fake_api: FakeSparkAPI) -> None:
    """A killed apply journalled a task for a scene chained after one it had not collected:
    the scene's key waits for its upstream, so the plan cannot know it will be collected (and
    counts its cost), but it says the task is there and is collected if the key comes out the
    same."""
    (project / "project.spark.yaml").write_text(SPEC + '  c: {prompt: "the heron lands", first_frame: {scene: a}}\n')
    failed_after_create(cli, project, fake_api)
    Journal(project / ".sparkspec/journal").record("cc" * 32, "c", "spark", "cgt-earlier-c", 86400)
    plan = json.loads(cli("plan", "--json", cwd=project).out)
    c = next(change for change in plan["changes"] if change["id"] == "c")
    assert c["action"] == "create" and c["key"] is None and c["estimated_tokens"] > 0
    assert c["reasons"][-1] == ("task cgt-earlier-c of an earlier apply for it is in the journal: collected at "
                                "no new cost if its key is unchanged")
