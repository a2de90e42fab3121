"""push, pull, remote status|verify|gc as a team uses them, against a real S3 server (moto on
127.0.0.1). Two project folders with their own caches act as two machines; the renders are
made once per module by the offline `local` provider."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_cli, run_main
from s3server import MotoServer
from sparkspec.remote import layout
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import Store, open_store

SPEC = """\
version: 1
name: kites
provider: {type: local, parallelism: 2}
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 3}
scenes:
  intro: {prompt: "a red kite over a beach"}
  outro: {prompt: "a blue kite lands in the sand"}
sequences:
  film: {scenes: [intro, outro]}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project applied once with the local provider: spec, lock, renders/ and its cache."""
    root = tmp_path_factory.mktemp("rendered")
    (root / "project.spark.yaml").write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "AWS_"))}
    done = run_cli("apply", "--auto-approve", "--json", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    return root


class Team:
    """One bucket on the S3 server, and machines (project folders) that use it."""

    def __init__(self, server: MotoServer, rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.url = server.bucket()
        self.rendered = rendered
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)

    def machine(self, name: str, *, with_renders: bool) -> Path:
        """A clone: the spec (naming the remote) and the lock; renders/ and the cache if asked."""
        root = self.tmp_path / name
        if with_renders:
            shutil.copytree(self.rendered, root)
        else:
            root.mkdir()
            shutil.copy(self.rendered / "project.spark.lock", root)
        (root / "project.spark.yaml").write_text(SPEC + f"remote: {{url: '{self.url}'}}\n")
        return root

    def run(self, root: Path, *args: str) -> tuple[int, str, str]:
        code, out, err = run_main(list(args), root, self.monkeypatch)
        assert "Traceback" not in err, err
        return code, out, err

    def store(self) -> Store:
        settings = RemoteSettings(self.url, endpoint=self.server.endpoint, region="us-east-1")
        return open_store(settings, self.server.env())

    def lose(self, file: dict[str, Any]) -> None:
        """The remote loses the blob of one of the lock's file records."""
        asyncio.run(self.store().delete(layout.blob_path(file["sha256"])))

    def damage(self, file: dict[str, Any]) -> None:
        """The remote's blob of one of the lock's file records turns into other bytes of its
        size: a listing cannot tell, a rehash can."""
        asyncio.run(self.store().put(layout.blob_path(file["sha256"]), secrets.token_bytes(file["bytes"])))

    def listing(self) -> list[str]:
        return sorted(i.path for i in asyncio.run(self.store().list("")))


@pytest.fixture
def team(moto_server: MotoServer, rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Team:
    return Team(moto_server, rendered, tmp_path, monkeypatch)


def lock_of(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / "project.spark.lock").read_text()))


def status(team: Team, root: Path) -> dict[str, Any]:
    code, out, err = team.run(root, "remote", "status", "--json")
    assert code == 0, err
    return dict(json.loads(out))


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_push_then_a_second_machine_pulls_and_renders_nothing(team: Team) -> None:
    first = team.machine("first", with_renders=True)
    assert status(team, first)["renders"]["local_only"] == {"count": 2, "bytes": _bytes(first)}
    code, out, err = team.run(first, "push")
    assert code == 0, err
    assert "Pushed 2 render(s)" in out and "0 already on the remote" in out
    root_line = next(line for line in out.splitlines() if line.startswith("registered roots/kites/"))
    root_path = root_line.split()[1]
    keys = sorted(r["key"] for r in lock_of(first)["scenes"].values())
    data, _ = asyncio.run(team.store().get(root_path))  # type: ignore[misc]
    assert json.loads(data)["keys"] == keys
    assert status(team, first)["renders"]["both"]["count"] == 2
    assert "Pushed 0 render(s)" in team.run(first, "push")[1]  # nothing twice

    second = team.machine("second", with_renders=False)
    before = (second / "project.spark.lock").read_bytes()
    assert status(team, second)["renders"]["remote_only"] == {"count": 2, "bytes": _bytes(first)}
    code, out, err = team.run(second, "pull")
    assert code == 0, err + out
    assert "Pulled 2 render(s)" in out and "sequence(s) film: `sparkspec apply` stitches them" in out
    for record in lock_of(second)["scenes"].values():
        for file in (record["video"], record["last_frame"]):
            assert hashlib.sha256((second / file["path"]).read_bytes()).hexdigest() == file["sha256"]
    assert (second / "project.spark.lock").read_bytes() == before
    assert status(team, second)["renders"]["both"]["count"] == 2
    code, out, err = team.run(second, "plan", "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["render"] == 0
    code, out, _ = team.run(second, "pull")
    assert code == 0 and "Pulled 0 render(s)" in out and "2 already in place" in out


def _bytes(root: Path) -> int:
    return sum(r["video"]["bytes"] + r["last_frame"]["bytes"] for r in lock_of(root)["scenes"].values())


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_push_takes_renders_from_renders_folder_when_the_cache_lost_them(team: Team) -> None:
    first = team.machine("first", with_renders=True)
    shutil.rmtree(first / ".sparkspec" / "cache")
    code, out, err = team.run(first, "push")
    assert code == 0, err + out
    assert "Pushed 2 render(s)" in out
    # An altered render is never pushed as if it were the lock's.
    other = team.machine("other", with_renders=True)
    shutil.rmtree(other / ".sparkspec" / "cache")
    team.url = team.server.bucket()
    (other / "project.spark.yaml").write_text(SPEC + f"remote: {{url: '{team.url}'}}\n")
    video = other / "renders" / "intro.mp4"
    video.write_bytes(video.read_bytes()[:-1] + b"\x00")
    code, out, _ = team.run(other, "push")
    assert code == 1 and "scene intro: not in the local cache" in out and "Pushed 1 render(s)" in out


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_read_only_and_off_write_nothing(team: Team) -> None:
    first = team.machine("first", with_renders=True)
    code, _, err = team.run(first, "push", "--remote-mode", "read-only")
    assert code == 1 and "read-only" in err and len(err.strip().splitlines()) == 1
    code, _, err = team.run(first, "push", "--remote", "off")
    assert code == 1 and "no remote in use" in err
    team.monkeypatch.setenv("SPARKSPEC_REMOTE_MODE", "read-only")
    assert team.run(first, "remote", "gc")[0] == 1
    assert team.run(first, "remote", "status")[0] == 0
    assert team.listing() == []


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_queued_uploads_are_pushed(team: Team) -> None:
    from sparkspec.remote.queue import PushQueue

    first = team.machine("first", with_renders=True)
    settings = RemoteSettings(team.url, endpoint=team.server.endpoint)
    extra = _extra_render(first)
    PushQueue(first / ".sparkspec", settings.identity).add(extra)
    assert status(team, first)["queued"] == 1
    code, out, err = team.run(first, "push")
    assert code == 0, err
    assert "Pushed 3 render(s)" in out
    assert PushQueue(first / ".sparkspec", settings.identity).keys() == []
    assert any(extra in path for path in team.listing())


def _extra_render(root: Path) -> str:
    """A render in the machine's cache that no lock refers to (an experiment); its key."""
    from sparkspec.state.cache import Cache, CachedRender

    cache = Cache(root / ".sparkspec" / "cache")
    blobs = []
    for data in (secrets.token_bytes(4000), secrets.token_bytes(200)):
        sha = hashlib.sha256(data).hexdigest()
        part = root / f"{sha}.part"
        part.write_bytes(data)
        cache.put_blob(part, sha)
        blobs.append((sha, len(data)))
    render = CachedRender(key=secrets.token_hex(32), provider="local", model="m", task_id="t", seed=1, tokens=0,
                          video_sha256=blobs[0][0], video_bytes=blobs[0][1], last_frame_sha256=blobs[1][0],
                          last_frame_bytes=blobs[1][1], inputs={})
    cache.record(render)
    cache.close()
    return render.key


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_verify_finds_missing_and_damaged_blobs(team: Team) -> None:
    first = team.machine("first", with_renders=True)
    code, out, _ = team.run(first, "remote", "verify")
    assert code == 0 and "2 of the lock's render(s) not on the remote" in out
    assert "the lock's root is not on the remote" in out  # remote gc would not keep them
    assert team.run(first, "push")[0] == 0
    code, out, err = team.run(first, "remote", "verify", "--deep")
    assert code == 0, out + err
    assert "Verified 2 entries (re-hashed 4 of 4 blob(s)" in out and "0 problem(s)" in out
    assert "root" not in out

    record = lock_of(first)["scenes"]["intro"]
    team.damage(record["video"])  # same size: only --deep sees it
    assert team.run(first, "remote", "verify")[0] == 0
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 1 and f"{record['key'][:12]}: blob {record['video']['sha256'][:12]} is damaged" in out

    team.lose(record["last_frame"])
    code, out, _ = team.run(first, "remote", "verify")
    assert code == 1 and f"blob {record['last_frame']['sha256'][:12]} is missing" in out

    # The damaged render is never installed on a machine that pulls it.
    second = team.machine("second", with_renders=False)
    code, out, _ = team.run(second, "pull")
    assert code == 1 and "scene intro:" in out and "Pulled 1 render(s)" in out
    assert not (second / "renders" / "intro.mp4").exists()


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_gc_sweeps_only_old_unreferenced_entries_and_blobs(team: Team) -> None:
    first = team.machine("first", with_renders=True)
    settings = RemoteSettings(team.url, endpoint=team.server.endpoint)
    from sparkspec.remote.queue import PushQueue

    orphan, claimed = _extra_render(first), _extra_render(first)
    for key in (orphan, claimed):
        PushQueue(first / ".sparkspec", settings.identity).add(key)
    assert team.run(first, "push")[0] == 0  # 2 rooted renders + 2 queued ones (not in the root)
    from sparkspec.remote.claims import Claims, new_claim

    asyncio.run(Claims(team.store()).acquire(new_claim(claimed, 120.0)))
    everything = team.listing()

    code, out, err = team.run(first, "remote", "gc", "--dry-run")
    assert code == 0, err
    assert "Would delete 0 entries and 0 blob(s)" in out  # all younger than the grace period
    code, out, err = team.run(first, "remote", "gc", "--dry-run", "--grace", "0s")
    assert code == 0, err
    assert f"would delete renders/{orphan[:2]}/{orphan}.unsigned.json" in out
    assert "Would delete 1 entry and 2 blob(s)" in out
    assert team.listing() == everything

    code, out, err = team.run(first, "remote", "gc", "--grace", "0s")
    assert code == 0, err
    assert "Deleted 1 entry and 2 blob(s)" in out
    left = team.listing()
    assert not any(orphan in p for p in left)
    assert any(claimed in p and p.startswith("renders/") for p in left)  # a live claim protects it
    assert any(p.startswith("claims/") for p in left) and any(p.startswith("roots/") for p in left)
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 0, out  # what the lock refers to is whole
    second = team.machine("second", with_renders=False)
    assert team.run(second, "pull")[0] == 0


def test_bad_grace_is_one_line() -> None:
    from sparkspec.commands.remote import parse_grace
    from sparkspec.errors import RemoteError

    assert parse_grace("7d").total_seconds() == 7 * 86400 and parse_grace("90s").total_seconds() == 90
    assert parse_grace("0").total_seconds() == 0 == parse_grace("0h").total_seconds()
    for bad in ("soon", "90", "7", "-1d", "nand", "infd", "100000000d", "1e400s", ""):
        with pytest.raises(RemoteError, match=f"--grace {bad!r}: give a duration with its unit"):
            parse_grace(bad)


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_gc_sweeps_no_blob_a_rooted_but_unreadable_entry_may_name(team: Team) -> None:
    """The entry of a rooted key turned to junk: gc removed it and then the render's intact
    blobs, which no readable entry named, and the team had to pay for it again."""
    first = team.machine("first", with_renders=True)
    assert team.run(first, "push")[0] == 0
    intro = lock_of(first)["scenes"]["intro"]
    intro_entry = f"renders/{intro['key'][:2]}/{intro['key']}.unsigned.json"
    asyncio.run(team.store().put(intro_entry, b'{"provider": "local", broken'))
    code, out, err = team.run(first, "remote", "gc", "--grace", "0s")
    assert code == 0, err
    assert f"deleted {intro_entry} (broken: not a readable entry)" in out
    assert f"the entry of rooted key {intro['key'][:12]} did not read" in out
    left = team.listing()
    assert all(layout.blob_path(intro[f]["sha256"]) in left for f in ("video", "last_frame"))
    assert team.run(first, "push")[0] == 0  # the entry is written again, and names its blobs
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 0 and "0 problem(s)" in out, out


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_gc_removes_broken_entries_past_the_grace_period(team: Team) -> None:
    """A write-once entry whose blob is missing or damaged would stay a miss for the whole
    team forever (every push of its key finds it present): gc removes it, rooted or not."""
    first = team.machine("first", with_renders=True)
    assert team.run(first, "push")[0] == 0
    scenes = lock_of(first)["scenes"]
    intro, outro = scenes["intro"], scenes["outro"]
    team.lose(intro["last_frame"])  # missing: the listings show it
    team.damage(outro["video"])  # same size: only a rehash shows it
    intro_entry = f"renders/{intro['key'][:2]}/{intro['key']}.unsigned.json"
    outro_entry = f"renders/{outro['key'][:2]}/{outro['key']}.unsigned.json"

    everything = team.listing()
    code, out, err = team.run(first, "remote", "gc", "--dry-run", "--grace", "0s")
    assert code == 0, err
    assert f"would delete {intro_entry} (broken: blob {intro['last_frame']['sha256'][:12]} is missing)" in out
    assert outro_entry not in out  # not known to be damaged yet
    assert team.listing() == everything

    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 1 and f"blob {outro['video']['sha256'][:12]} is damaged" in out
    code, out, err = team.run(first, "remote", "gc")
    assert code == 0, err
    assert "Deleted 0 entries" in out and "2 broken entries younger than the grace period kept" in out
    assert team.listing() == everything

    code, out, err = team.run(first, "remote", "gc", "--grace", "0s")
    assert code == 0, err
    assert f"deleted {intro_entry} (broken: blob {intro['last_frame']['sha256'][:12]} is missing)" in out
    assert f"deleted {outro_entry} (broken: blob {outro['video']['sha256'][:12]} is damaged" in out
    left = team.listing()
    assert intro_entry not in left and outro_entry not in left
    assert layout.blob_path(outro["video"]["sha256"]) not in left  # the damaged blob goes too
    assert not json.loads((first / ".sparkspec" / "remote-bad.json").read_text()).get(
        RemoteSettings(team.url, endpoint=team.server.endpoint).identity)

    # The entries are write-once no more: a push of the lock puts both renders back whole.
    code, out, err = team.run(first, "push")
    assert code == 0, out + err
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 0 and "0 problem(s)" in out, out
    second = team.machine("second", with_renders=False)
    assert team.run(second, "pull")[0] == 0
    assert (second / "renders" / "outro.mp4").read_bytes() == (first / "renders" / "outro.mp4").read_bytes()


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_status_counts_renders_intact_in_renders_as_on_this_machine(team: Team) -> None:
    # A checkout with its renders/ but a cleared cache: push can take them from renders/, so
    # they are not "in neither (render again)".
    first = team.machine("first", with_renders=True)
    shutil.rmtree(first / ".sparkspec")
    assert status(team, first)["renders"]["local_only"] == {"count": 2, "bytes": _bytes(first)}
    intro = lock_of(first)["scenes"]["intro"]
    (first / intro["video"]["path"]).write_bytes(b"edited by hand")
    counts = status(team, first)["renders"]
    assert counts["local_only"]["count"] == 1 and counts["neither"]["count"] == 1


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_push_puts_back_the_blobs_the_remote_lost(team: Team) -> None:
    # An entry whose blob was deleted or damaged is a miss for every teammate, who would pay
    # for the render again: a push from a machine that has the very render mends it.
    first = team.machine("first", with_renders=True)
    assert team.run(first, "push")[0] == 0
    intro, outro = lock_of(first)["scenes"]["intro"], lock_of(first)["scenes"]["outro"]
    team.lose(intro["video"])
    team.damage(outro["last_frame"])  # same size

    code, out, err = team.run(first, "push")
    assert code == 0, out + err
    assert f"repaired {intro['key'][:12]}" in out and "(1 repaired)" in out
    assert f"repaired {outro['key'][:12]}" not in out  # a listing cannot see a same-size damage
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 1 and f"{outro['key'][:12]}: blob {outro['last_frame']['sha256'][:12]} is damaged" in out
    assert intro["key"][:12] not in out
    code, out, err = team.run(first, "push")  # verify marked it: now mended too
    assert code == 0 and f"repaired {outro['key'][:12]}" in out, out + err
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 0 and "0 problem(s)" in out, out


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_a_clone_that_renders_a_lost_blob_again_puts_it_back(team: Team) -> None:
    first = team.machine("first", with_renders=True)
    assert team.run(first, "push")[0] == 0
    intro = lock_of(first)["scenes"]["intro"]
    team.lose(intro["video"])
    second = team.machine("second", with_renders=False)
    code, out, err = team.run(second, "apply", "--auto-approve")  # the listing shows the blob gone: rendered
    assert code == 0, out + err
    assert f"entry for key {intro['key'][:12]} ignored: its video" in err and "is missing on the remote" in err
    assert "intro: rendered" in out and "intro: pushed to the team's remote" in out and "not pushed" not in out
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 0 and "0 problem(s)" in out, out


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_verify_deep_reports_every_problem_of_a_render(team: Team) -> None:
    first = team.machine("first", with_renders=True)
    assert team.run(first, "push")[0] == 0
    intro = lock_of(first)["scenes"]["intro"]
    team.lose(intro["video"])
    team.damage(intro["last_frame"])
    code, out, _ = team.run(first, "remote", "verify", "--deep")
    assert code == 1
    assert f"blob {intro['video']['sha256'][:12]} is missing" in out
    assert f"blob {intro['last_frame']['sha256'][:12]} is damaged" in out
    assert "re-hashed 3 of 4 blob(s)" in out and "1 problem(s)" in out


@pytest.mark.slow  # renders two takes, then S3 round trips
def test_status_and_verify_count_every_take(team: Team, tmp_path: Path) -> None:
    root = tmp_path / "takes"
    root.mkdir()
    (root / "project.spark.yaml").write_text(
        SPEC.replace('  outro: {prompt: "a blue kite lands in the sand"}\n', "")
            .replace("sequences:\n  film: {scenes: [intro, outro]}\n", "")
            .replace('intro: {prompt: "a red kite over a beach"}', 'intro: {prompt: "a red kite over a beach", takes: 2, pick: 2}')
        + f"remote: {{url: '{team.url}'}}\n")
    code, out, err = team.run(root, "apply", "--auto-approve")
    assert code == 0, out + err
    takes = lock_of(root)["scenes"]["intro"]["takes"]
    assert status(team, root)["renders"]["both"]["count"] == 2
    other = next(t for t in takes if t["take"] == 1)
    team.lose(other["video"])
    code, out, _ = team.run(root, "remote", "verify")
    assert code == 1 and f"{other['key'][:12]}: blob {other['video']['sha256'][:12]} is missing" in out


@pytest.mark.slow  # a real render once per module, then S3 round trips
def test_a_damage_found_here_ends_once_the_blob_is_mended(team: Team) -> None:
    """A clone that found outro's blob damaged went on planning to pay for outro after a push
    from another machine had mended it, though `remote verify --deep` and `pull` found it sound."""
    first = team.machine("first", with_renders=True)
    assert team.run(first, "push")[0] == 0
    outro = lock_of(first)["scenes"]["outro"]
    team.damage(outro["video"])  # same size: only a rehash shows it
    second = team.machine("second", with_renders=False)
    code, out, err = team.run(second, "apply", "--auto-approve")
    assert code == 1 and f"blob {outro['video']['sha256'][:12]} is damaged" in out + err
    code, out, _ = team.run(second, "plan")
    assert "scene.outro (pull)" not in out  # marked here: a miss, reported once

    assert team.run(first, "remote", "verify", "--deep")[0] == 1  # first sees it too, and its push mends it
    code, out, err = team.run(first, "push")
    assert code == 0 and f"repaired {outro['key'][:12]}" in out, out + err
    code, out, _ = team.run(second, "plan")
    assert "< scene.outro (pull)" in out and "Plan: 0 to render" in out, out
    code, out, err = team.run(second, "apply", "--auto-approve")
    assert code == 0 and "outro: pulled" in out and "rendered" not in out.replace("0 rendered", ""), out + err

    # A mark without what the store held then (an earlier version's) ends with a sound rehash.
    identity = RemoteSettings(team.url, endpoint=team.server.endpoint).identity
    third = team.machine("third", with_renders=False)
    (third / ".sparkspec").mkdir()
    (third / ".sparkspec" / "remote-bad.json").write_text(json.dumps({identity: {outro["key"]: "damaged"}}))
    assert "scene.outro (pull)" not in team.run(third, "plan")[1]
    code, out, _ = team.run(third, "remote", "verify", "--deep")
    assert code == 0 and "0 problem(s)" in out, out
    assert "< scene.outro (pull)" in team.run(third, "plan")[1]
