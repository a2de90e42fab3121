"""push, pull and remote status through the CLI against a shared folder (`file://`), fast:
the lock and the cache are made here (random bytes for the renders), not rendered."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import pytest

from cli_runner import run_main
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord, write_lock

SPEC = """\
version: 1
name: folder-team
provider: {type: local}
defaults: {resolution: 480p, frames: 29}  # the smallest render, for the tests that render
scenes:
  intro: {prompt: "a red kite"}
  outro: {prompt: "a blue kite"}
"""


def machine(root: Path, remote: Path, lock: Lock | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "project.spark.yaml").write_text(SPEC + f"remote: {{url: 'file://{remote}'}}\n")
    if lock is not None:
        write_lock(root / "project.spark.lock", lock)
    return root


def rendered(root: Path, keys: dict[str, str] | None = None) -> Lock:
    """Renders in renders/ and the cache, and the lock that records them (under `keys`, else
    random keys)."""
    cache = Cache(root / ".sparkspec" / "cache")
    scenes = {}
    for sid in ("intro", "outro"):
        files = []
        for name, size in ((f"renders/{sid}.mp4", 20_000), (f"renders/{sid}.last.png", 700)):
            data = secrets.token_bytes(size)
            sha = hashlib.sha256(data).hexdigest()
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
            part = root / f"{sha}.part"
            part.write_bytes(data)
            cache.put_blob(part, sha)
            files.append(FileRecord(name, sha, size))
        record = SceneRecord(key=(keys or {}).get(sid) or secrets.token_hex(32), provider="local", model="local", task_id=f"t-{sid}", seed=1,
                             tokens=0, video=files[0], last_frame=files[1])
        cache.record(CachedRender(record.key, "local", "local", record.task_id, 1, 0, files[0].sha256, files[0].bytes,
                                  files[1].sha256, files[1].bytes, {}))
        scenes[sid] = record
    cache.close()
    lock = Lock(scenes)
    write_lock(root / "project.spark.lock", lock)
    return lock


def test_push_pull_and_status_through_a_shared_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    lock = rendered(first)
    code, out, err = run_main(["push"], first, monkeypatch)
    assert code == 0, err
    assert "Pushed 2 render(s)" in out and "registered roots/folder-team/" in out
    assert len(list((remote / "v1" / "renders").rglob("*.unsigned.json"))) == 2

    second = machine(tmp_path / "second", remote, lock)
    code, out, err = run_main(["remote", "status", "--json"], second, monkeypatch)
    assert code == 0, err
    assert json.loads(out)["renders"]["remote_only"]["count"] == 2
    code, out, err = run_main(["pull", "--remote-mode", "read-only"], second, monkeypatch)
    assert code == 0, err + out
    assert "Pulled 2 render(s)" in out
    for sid in ("intro", "outro"):
        assert (second / f"renders/{sid}.mp4").read_bytes() == (first / f"renders/{sid}.mp4").read_bytes()
    code, out, _ = run_main(["remote", "status", "--json"], second, monkeypatch)
    assert json.loads(out)["renders"]["both"]["count"] == 2
    assert indexed(second) == {record.key for record in lock.scenes.values()}  # in one batch, after the flush

    # Off: pull restores from the local cache only; push has nothing to talk to.
    (second / "renders" / "intro.mp4").unlink()
    code, out, err = run_main(["pull", "--remote", "off"], second, monkeypatch)
    assert code == 0 and "restored intro from the local cache" in out
    code, _, err = run_main(["push", "--remote", "off"], second, monkeypatch)
    assert code == 1 and "no remote in use" in err


def indexed(root: Path) -> set[str]:
    cache = Cache(root / ".sparkspec" / "cache")
    try:
        return {key for key in cache.keys() if cache.entry(key) is not None}
    finally:
        cache.close()


@pytest.mark.slow  # two local renders: 7 s
def test_an_apply_that_pulls_indexes_its_pulls_in_the_local_cache(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Pulls are indexed with the lock writer's batches, not one by one: they are there after it.
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    assert run_main(["apply", "--auto-approve"], first, monkeypatch)[0] == 0  # renders and pushes
    lock = (first / "project.spark.lock").read_text()
    second = machine(tmp_path / "second", remote)
    (second / "project.spark.lock").write_text(lock)
    code, out, err = run_main(["apply", "--auto-approve", "--json"], second, monkeypatch)
    assert code == 0, err + out
    assert sorted(json.loads(line)["scene"] for line in out.splitlines()
                  if json.loads(line)["event"] == "pulled") == ["intro", "outro"]
    assert indexed(second) == {scene["key"] for scene in json.loads(lock)["scenes"].values()}
    (second / "renders" / "intro.mp4").unlink()  # the local cache alone restores it now
    code, out, err = run_main(["plan", "--remote", "off"], second, monkeypatch)
    assert code == 0 and "< scene.intro (restore)" in out, err + out


def test_pull_names_what_is_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "shared"
    lock = rendered(tmp_path / "elsewhere")
    second = machine(tmp_path / "second", remote, lock)
    code, out, err = run_main(["pull"], second, monkeypatch)
    assert code == 1, out
    assert "scene intro:" in out and "has no render of key" in out and "push it" in out
    assert not (second / "renders" / "intro.mp4").exists()
    assert "Traceback" not in err


def test_a_claim_another_machine_wrote_prints_without_its_control_characters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim's user, host and task id come from the remote: plan and apply show them, and
    a terminal obeys the escape sequences a hostile writer put in them."""
    remote = tmp_path / "shared"
    root = machine(tmp_path / "box", remote)
    code, out, err = run_main(["plan", "--json"], root, monkeypatch)
    assert code == 0, err
    key = next(c["key"] for c in json.loads(out)["changes"] if c["id"] == "intro")
    claim = remote / "v1" / "claims" / key[:2] / f"{key}.json"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"key": key, "owner": "o", "user": "bob\x1b]0;pwned\x07\x1b[2J", "host": "lap\ntop",
                                 "pid": 1, "ttl": 600, "beat": 0,
                                 "task": {"id": "cgt-1\x1b[31m", "provider": "spark", "submitted_at": 1.0,
                                          "expires_after": 86400}}))
    code, out, err = run_main(["plan"], root, monkeypatch)
    assert code == 0, err
    assert "rendering on bob]0;pwned[2J@laptop, task cgt-1[31m" in out, out
    code, out, err = run_main(["plan", "--json"], root, monkeypatch)
    reasons = next(c["reasons"] for c in json.loads(out)["changes"] if c["id"] == "intro")
    assert reasons == ["rendering on bob]0;pwned[2J@laptop, task cgt-1[31m"]
    code, out, err = run_main(["apply", "--target", "intro", "--auto-approve", "--no-wait", "--json"], root, monkeypatch)
    skipped = next(e for e in map(json.loads, out.splitlines()) if e.get("scene") == "intro" and e["event"] == "skipped")
    assert "rendering on bob]0;pwned[2J@laptop" in json.dumps(skipped), skipped
    assert not any(c in out + err for c in "\x1b\x07"), (out, err)


def test_push_writes_nothing_into_a_remote_of_another_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads already refuse a remote whose format.json names a layout this sparkspec does not
    know; a push wrote its entries and root into it all the same."""
    remote = tmp_path / "shared"
    (remote / "v1").mkdir(parents=True)
    (remote / "v1" / "format.json").write_text('{"layout": 2}')
    first = machine(tmp_path / "first", remote)
    rendered(first)
    code, out, err = run_main(["push"], first, monkeypatch)
    assert code == 1, out
    assert "format.json names layout 2; this sparkspec reads layout 1" in out + err
    assert sorted(p.name for p in (remote / "v1").iterdir()) == ["format.json"]


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_apply_neither_pulls_from_nor_claims_in_a_remote_of_another_layout(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan refused the remote ("planned without it": two renders), and apply then pulled
    both scenes from it all the same: what the user approved was not what ran."""
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    code, _, err = run_main(["apply", "--auto-approve"], first, monkeypatch)
    assert code == 0, err
    (remote / "v1" / "format.json").write_text('{"layout": 2}')
    before = sorted(str(p.relative_to(remote)) for p in remote.rglob("*"))
    second = machine(tmp_path / "second", remote)
    code, out, err = run_main(["apply", "--auto-approve", "--json"], second, monkeypatch)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert sorted(e["scene"] for e in events if e["event"] == "completed") == ["intro", "outro"]
    assert not [e for e in events if e["event"] == "pulled"]
    assert "names layout 2" in err
    assert sorted(str(p.relative_to(remote)) for p in remote.rglob("*")) == before  # no claim, entry or blob


def test_a_saved_plan_that_pulls_names_the_remote_when_this_run_does_not_use_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`apply --remote off PLAN` of a plan that pulls was 'the renders or the cache changed',
    which sent the user looking in the wrong place."""
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    code, out, err = run_main(["plan", "--json"], first, monkeypatch)
    lock = rendered(first, {c["id"]: c["key"] for c in json.loads(out)["changes"]})  # the spec's own keys
    assert run_main(["push"], first, monkeypatch)[0] == 0
    second = machine(tmp_path / "second", remote, lock)
    code, out, err = run_main(["plan", "--out", "pulls.plan"], second, monkeypatch)
    assert code == 0, err
    code, out, err = run_main(["apply", "--remote", "off", "pulls.plan"], second, monkeypatch)
    assert code == 1
    assert "the plan is stale: scene.intro was 'pull' when it was made and is 'update' now (the team's remote answers " \
           "otherwise in this run" in err, err
    assert not (second / "renders").exists()


def test_gc_dry_run_works_in_read_only_mode_and_gc_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run only reads, so pull-request CI (read-only) may ask what gc would delete."""
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    rendered(first)
    assert run_main(["push"], first, monkeypatch)[0] == 0
    before = sorted(p.relative_to(remote) for p in remote.rglob("*"))
    code, out, err = run_main(["remote", "gc", "--dry-run", "--grace", "0s", "--remote-mode", "read-only"], first,
                              monkeypatch)
    assert code == 0, err
    assert "Would delete 0 entries and 0 blob(s)" in out and "kept 2 entries and 4 blob(s) (1 root(s)" in out, out
    code, out, err = run_main(["remote", "gc", "--grace", "0s", "--remote-mode", "read-only"], first, monkeypatch)
    assert code == 1 and "is read-only here" in err and "--dry-run" in err
    assert sorted(p.relative_to(remote) for p in remote.rglob("*")) == before


def test_a_folder_remote_where_a_file_stands_is_an_error_not_an_empty_remote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("not a folder")
    root = machine(tmp_path / "m", tmp_path / "afile" / "team")
    code, out, err = run_main(["plan"], root, monkeypatch)
    assert code == 0 and f"{tmp_path / 'afile'} is a file, where the remote's folder would be" in err, err


@pytest.mark.parametrize("entries", ["signed, read without the key", "damaged", "never written"])
def test_a_clone_pulls_the_locks_renders_by_their_blobs_when_it_cannot_use_their_entries(
        entries: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pull` fetched them by the lock's digests while plan and apply rendered them again: one
    command paid for what the other got free."""
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    code, out, err = run_main(["plan", "--json"], first, monkeypatch)
    lock = rendered(first, {c["id"]: c["key"] for c in json.loads(out)["changes"]})  # the spec's own keys
    if entries == "signed, read without the key":
        monkeypatch.setenv("SPARKSPEC_REMOTE_SIGNING_KEY", "team-secret")
    assert run_main(["push"], first, monkeypatch)[0] == 0
    monkeypatch.delenv("SPARKSPEC_REMOTE_SIGNING_KEY", raising=False)
    written = sorted((remote / "v1" / "renders").rglob("*.json"))
    assert len(written) == 2
    if entries == "damaged":
        written[0].write_bytes(written[0].read_bytes()[:100])
    elif entries == "never written":  # a push cut short after the blobs
        for entry in written:
            entry.unlink()
    second = machine(tmp_path / "second", remote, lock)
    code, out, err = run_main(["plan", "--json"], second, monkeypatch)
    assert code == 0, err
    assert {c["id"]: c["action"] for c in json.loads(out)["changes"]} == {"intro": "pull", "outro": "pull"}, out
    assert json.loads(out)["summary"]["estimated_tokens"] == 0
    code, out, err = run_main(["apply", "--auto-approve", "--json"], second, monkeypatch)
    assert code == 0, err + out
    events = [json.loads(line) for line in out.splitlines()]
    assert sorted(e["scene"] for e in events if e["event"] == "pulled") == ["intro", "outro"]
    assert not [e for e in events if e["event"] in ("submitted", "completed")]
    for record in lock.scenes.values():
        for file in (record.video, record.last_frame):
            assert hashlib.sha256((second / file.path).read_bytes()).hexdigest() == file.sha256
    if entries == "damaged":
        assert "ignored" in err  # the damaged entry is still reported


def test_push_reports_a_damaged_entry_it_cannot_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries are write-once: a damaged one was 'already on the remote', exit 0, and every
    clone paid for the render again."""
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    rendered(first)
    assert run_main(["push"], first, monkeypatch)[0] == 0
    entry = sorted((remote / "v1" / "renders").rglob("*.json"))[0]
    entry.write_bytes(entry.read_bytes()[:100])
    code, out, err = run_main(["push"], first, monkeypatch)
    assert code == 1, out + err
    assert f"{entry.name[:12]}: the team's remote has an entry of this key that cannot be used (not JSON)" in out
    assert "`sparkspec remote gc` removes it" in out and "1 not pushed" in out
    code, out, _ = run_main(["remote", "gc", "--grace", "0s"], first, monkeypatch)
    assert code == 0, out
    code, out, err = run_main(["push"], first, monkeypatch)  # gone: written again
    assert code == 0 and "Pushed 1 render(s)" in out, out + err


def test_an_apply_that_uploads_registers_the_locks_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `push` wrote roots: a team that only ever applied had every render swept by
    `remote gc` once past its grace period."""
    remote = tmp_path / "shared"
    root = tmp_path / "only-applies"
    root.mkdir()
    (root / "project.spark.yaml").write_text(
        "version: 1\nname: appliers\nprovider: {type: local}\n"
        'defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 1}\n'
        f'scenes:\n  kite: {{prompt: "a kite"}}\nremote: {{url: "file://{remote}"}}\n')
    code, out, err = run_main(["apply", "--auto-approve", "--json"], root, monkeypatch)
    assert code == 0, err
    assert [json.loads(line)["event"] for line in out.splitlines()].count("pushed") == 1
    roots = list((remote / "v1" / "roots").rglob("*.json"))
    assert len(roots) == 1
    lock = json.loads((root / "project.spark.lock").read_text())
    assert json.loads(roots[0].read_text())["keys"] == [lock["scenes"]["kite"]["key"]]
    code, out, err = run_main(["remote", "gc", "--grace", "0s"], root, monkeypatch)
    assert code == 0 and "Deleted 0 entries" in out and "(1 root(s)" in out, out + err
    assert "no lock has registered a root" not in out
    for path in roots:
        path.unlink()
    code, out, err = run_main(["remote", "gc", "--dry-run", "--grace", "0s"], root, monkeypatch)
    assert "Would delete 1 entry" in out and "note: no lock has registered a root on this remote" in out, out


def test_gc_keeps_the_entry_of_a_live_claim_and_not_of_a_dead_one(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Any claim file, however dead, kept its key's entry for ever."""
    import os
    import time

    from sparkspec.remote.layout import claim_path

    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    lock = rendered(first)
    assert run_main(["push"], first, monkeypatch)[0] == 0
    for root in (remote / "v1" / "roots").rglob("*.json"):
        root.unlink()
    claims = []
    for record in lock.scenes.values():
        claim = remote / "v1" / claim_path(record.key)
        claim.parent.mkdir(parents=True, exist_ok=True)
        claim.write_text('{"owner": "gone"}')
        claims.append(claim)
    old = time.time() - 3 * 86400
    os.utime(claims[0], (old, old))  # intro's holder died three days ago; outro's renews it now
    code, out, err = run_main(["remote", "gc", "--grace", "0s"], first, monkeypatch)
    assert code == 0, err
    assert "Deleted 1 entry" in out and "kept 1 entry" in out, out
    assert all(c.exists() for c in claims)  # claims themselves are never deleted by gc


def test_gc_removes_what_uploads_cut_short_left_in_a_folder_remote(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A push killed mid-upload leaves `<sha>#1` beside where the blob goes: no listing shows it,
    and nothing ever removed it."""
    import os
    import time

    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    rendered(first)
    assert run_main(["push"], first, monkeypatch)[0] == 0
    blob = next(p for p in (remote / "v1" / "blobs").rglob("*") if p.is_file())
    old_part, new_part = blob.parent / f"{'e' * 64}#1", blob.parent / f"{'f' * 64}#3"
    old_part.write_bytes(b"x" * 5000)
    new_part.write_bytes(b"y" * 10)
    old = time.time() - 30 * 86400
    os.utime(old_part, (old, old))
    code, out, err = run_main(["remote", "gc", "--dry-run"], first, monkeypatch)
    assert code == 0 and f"would delete blobs/sha256/{blob.parent.name}/{'e' * 64}#1 (an upload cut short)" in out, out
    assert old_part.exists()
    code, out, err = run_main(["remote", "gc"], first, monkeypatch)
    assert code == 0, err
    assert not old_part.exists() and new_part.exists() and blob.exists()  # a young one may be an upload under way


def test_status_counts_what_a_pull_can_get_and_refuses_another_layout(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A render whose entry was listed counted as on the remote with its blob gone; a remote of
    another layout answered with counts where verify and push refuse it."""
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    lock = rendered(first)
    assert run_main(["push"], first, monkeypatch)[0] == 0
    second = machine(tmp_path / "second", remote, lock)

    def places() -> dict[str, int]:
        code, out, err = run_main(["remote", "status", "--json"], second, monkeypatch)
        assert code == 0, err
        return {p: t["count"] for p, t in json.loads(out)["renders"].items() if t["count"]}

    assert places() == {"remote_only": 2}
    video = lock.scenes["outro"].video.sha256
    (remote / "v1" / "blobs" / "sha256" / video[:2] / video).unlink()
    assert places() == {"remote_only": 1, "neither": 1}
    # A blob of the same size and other bytes: a pull here finds it damaged, and from then on
    # status says what plan says, a miss (it went on calling it "remote only").
    intro = lock.scenes["intro"].video
    blob = remote / "v1" / "blobs" / "sha256" / intro.sha256[:2] / intro.sha256
    blob.write_bytes(bytes(len(blob.read_bytes())))
    assert run_main(["pull"], second, monkeypatch)[0] == 1
    assert places() == {"neither": 2}
    (remote / "v1" / "format.json").write_text('{"layout": 9}')
    code, out, err = run_main(["remote", "status"], second, monkeypatch)
    assert code == 1 and "layout 9" in err, out + err


def _appliers(tmp_path: Path) -> tuple[Path, Path]:
    remote = tmp_path / "shared"
    root = tmp_path / "only-applies"
    root.mkdir()
    (root / "project.spark.yaml").write_text(
        "version: 1\nname: appliers\nprovider: {type: local}\n"
        'defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 1}\n'
        f'scenes:\n  kite: {{prompt: "a kite"}}\nremote: {{url: "file://{remote}"}}\n')
    return root, remote


def test_a_root_the_apply_could_not_register_is_registered_by_the_next_apply(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An apply that uploaded and then did not register its lock's root (a store that stopped
    answering, a kill) left it to no one: later applies were no-ops, and `remote gc` swept the
    renders the committed lock names once past the grace period."""
    import sparkspec.remote.sync as sync
    from sparkspec.errors import RemoteError

    root, remote = _appliers(tmp_path)

    async def refused(*_: object) -> str:
        raise RemoteError("remote: PUT roots/...: HTTP 503")

    with monkeypatch.context() as patched:
        patched.setattr(sync, "register_lock_root", refused)
        code, out, err = run_main(["apply", "--auto-approve"], root, monkeypatch)
    assert code == 0, out + err
    assert "the lock's root was not registered" in err and "the next apply or `sparkspec push` registers it" in err
    assert not (remote / "v1" / "roots").exists()
    code, out, _ = run_main(["remote", "status"], root, monkeypatch)
    assert code == 0 and "the lock's root is not registered yet" in out, out
    code, out, err = run_main(["apply", "--auto-approve"], root, monkeypatch)  # nothing to render
    assert code == 0 and "No changes" in out and err == "", out + err
    roots = list((remote / "v1" / "roots").rglob("*.json"))
    assert len(roots) == 1
    lock = json.loads((root / "project.spark.lock").read_text())
    assert json.loads(roots[0].read_text())["keys"] == [lock["scenes"]["kite"]["key"]]
    code, out, _ = run_main(["remote", "gc", "--grace", "0s"], root, monkeypatch)
    assert code == 0 and "Deleted 0 entries" in out, out
    code, out, _ = run_main(["remote", "status", "--json"], root, monkeypatch)
    assert json.loads(out)["root_pending"] is False


def test_a_root_left_pending_is_registered_by_push(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sparkspec.remote.sync as sync

    root, remote = _appliers(tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(sync, "register_lock_root", lambda *_: (_ for _ in ()).throw(TimeoutError()))
        assert run_main(["apply", "--auto-approve"], root, monkeypatch)[0] == 0
    code, out, _ = run_main(["remote", "status", "--json"], root, monkeypatch)
    assert json.loads(out)["root_pending"] is True
    code, out, err = run_main(["push"], root, monkeypatch)
    assert code == 0, out + err
    assert len(list((remote / "v1" / "roots").rglob("*.json"))) == 1
    code, out, _ = run_main(["remote", "status"], root, monkeypatch)
    assert "root is not registered" not in out


@pytest.mark.slow
def test_an_apply_killed_after_its_uploads_leaves_the_root_to_the_next_apply(tmp_path: Path) -> None:
    """The audit's reproduction: SIGKILL as the engine says done (the review page and the root
    are still to come); the next apply, a no-op, registers the root and gc sweeps nothing."""
    import signal
    import subprocess

    from cli_runner import run_cli, start_cli

    root, remote = _appliers(tmp_path)
    proc = start_cli("apply", "--auto-approve", "--json", cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "done":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    again = run_cli("apply", "--auto-approve", cwd=root)
    assert again.code == 0 and "No changes" in again.out, again.out + again.err
    assert len(list((remote / "v1" / "roots").rglob("*.json"))) == 1
    gc = run_cli("remote", "gc", "--grace", "0s", cwd=root)
    assert gc.code == 0 and "Deleted 0 entries" in gc.out, gc.out + gc.err


@pytest.mark.slow  # local renders
def test_replace_renders_afresh_though_the_remote_has_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan said `replace` with its cost; apply pulled the team's copy and rendered nothing:
    a bad render on the remote could be replaced only with --remote off."""
    remote = tmp_path / "shared"
    first = machine(tmp_path / "first", remote)
    assert run_main(["apply", "--auto-approve"], first, monkeypatch)[0] == 0  # renders and pushes
    second = machine(tmp_path / "second", remote)
    (second / "project.spark.lock").write_text((first / "project.spark.lock").read_text())
    code, out, err = run_main(["apply", "--auto-approve", "--json", "--replace", "intro"], second, monkeypatch)
    assert code == 0, err + out
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["scene"] for e in events if e["event"] == "completed"] == ["intro"]
    assert [e["scene"] for e in events if e["event"] == "pulled"] == ["outro"]
