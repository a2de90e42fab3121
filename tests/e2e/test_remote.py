"""The team's remote render cache, end to end: real `sparkspec` processes as separate machines
(each its own HOME, cache and project clone) sharing one remote and the fake API on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from blackhole import BlackHole
from cli_runner import start_cli
from fakeapi import FakeSparkAPI
from flaky_proxy import TruncatingProxy
from s3server import MotoServer
from seaweedfs import SeaweedServer
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import open_store

from .conftest import Project

SPEC = """\
version: 1
name: team-film
provider: {type: spark, parallelism: 3, poll: {initial: 0.05, max: 0.2}}
defaults: {resolution: 480p, ratio: "16:9", frames: 29}
scenes:
  intro: {prompt: "a lamp in a dark room"}
  next: {first_frame: {scene: intro}, prompt: "the lamp flickers"}
  logo: {prompt: "a logo glows"}
"""


def machine(tmp_path: Path, name: str, api: FakeSparkAPI, remote: str, extra: dict[str, str] | None = None) -> Project:
    """A machine of its own: project clone, HOME and render cache; the team's remote."""
    home = tmp_path / name / "home"
    home.mkdir(parents=True)
    project = Project(tmp_path / name / "project")
    project.root.mkdir(parents=True)
    project.env.update(HOME=str(home), SPARKSPEC_CACHE_DIR=str(tmp_path / name / "cache"),
                       SPARK_API_KEY=api.api_key, SPARK_BASE_URL=api.base_url, SPARKSPEC_REMOTE=remote,
                       **(extra or {}))
    return project


def clone(source: Project, target: Project) -> None:
    """What git carries: the spec and the lock."""
    for name in ("project.spark.yaml", "project.spark.lock"):
        shutil.copy(source.root / name, target.root / name)


@pytest.mark.slow
@pytest.mark.parametrize("remote_kind", ["file", "seaweedfs"])
def test_a_clone_pulls_the_teams_renders_and_pays_nothing(tmp_path: Path, fake_api: FakeSparkAPI, remote_kind: str,
                                                          request: pytest.FixtureRequest) -> None:
    env: dict[str, str] = {}
    if remote_kind == "file":
        remote = f"file://{tmp_path}/team-remote"
    else:
        server = request.getfixturevalue(f"{remote_kind}_server")
        remote, env = server.bucket(), server.env()
    first = machine(tmp_path, "first", fake_api, remote, env)
    first.write(SPEC)
    made = first.apply()
    assert made.rendered() == ["intro", "logo", "next"]
    assert sorted(e["scene"] for e in made.events() if e["event"] == "pushed") == ["intro", "logo", "next"]
    assert fake_api.total_creates == 3

    second = machine(tmp_path, "second", fake_api, remote, env)
    clone(first, second)
    planned = second.run("plan")
    assert planned.code == 0, planned.err
    assert "< scene.intro (pull)" in planned.out and "on the team's remote" in planned.out
    assert "3 to pull" in planned.out and "0 to render" in planned.out, planned.out
    as_json = json.loads(second.run("plan", "--json").out)
    assert {c["id"]: c["action"] for c in as_json["changes"] if c["kind"] == "scene"} == \
        {"intro": "pull", "next": "pull", "logo": "pull"}
    assert as_json["summary"]["pull"] == 3 and as_json["summary"]["render"] == 0
    assert all(c["key"] for c in as_json["changes"])  # `next` is chained after a pull: its key is known

    lock_before = second.lock_bytes()
    pulled = second.apply()
    assert pulled.rendered() == []
    assert sorted(e["scene"] for e in pulled.events() if e["event"] == "pulled") == ["intro", "logo", "next"]
    assert fake_api.total_creates == 3  # nothing paid again
    assert second.lock_bytes() == lock_before
    for sid, record in second.lock()["scenes"].items():
        assert (second.root / record["video"]["path"]).read_bytes() == \
            (first.root / record["video"]["path"]).read_bytes()
        assert (second.root / record["video"]["path"]).stat().st_nlink == 2  # written once: cache and renders/
    assert second.run("plan").out.startswith("No changes.")

    # An edit in place through renders/ reaches the shared cached copy too: the cache drops
    # it, and the next apply fetches the render again from the remote, never pays for it.
    intro = second.root / second.lock()["scenes"]["intro"]["video"]["path"]
    with intro.open("r+b") as edit:
        edit.write(b"edited")
    again = second.apply()
    assert again.rendered() == [] and fake_api.total_creates == 3, again.events()
    assert intro.read_bytes() == (first.root / "renders" / intro.name).read_bytes()
    assert second.lock_bytes() == lock_before


@pytest.mark.slow
def test_read_only_writes_nothing_to_the_remote(tmp_path: Path, fake_api: FakeSparkAPI) -> None:
    remote_dir = tmp_path / "team-remote"
    ci = machine(tmp_path, "ci", fake_api, f"file://{remote_dir}", {"SPARKSPEC_REMOTE_MODE": "read-only"})
    ci.write(SPEC)
    done = ci.apply()
    assert done.rendered() == ["intro", "logo", "next"]
    assert not remote_dir.exists()  # not even the folder
    assert not (ci.root / ".sparkspec" / "remote-probe.json").exists()
    laptop = machine(tmp_path, "laptop", fake_api, f"file://{remote_dir}")
    clone(ci, laptop)
    laptop.apply("--remote-mode", "read-only")  # renders what is missing (not on the remote)
    assert not remote_dir.exists()


@pytest.mark.slow
def test_remote_off_and_an_unreachable_store_never_fail_a_plan(tmp_path: Path, fake_api: FakeSparkAPI) -> None:
    box = machine(tmp_path, "box", fake_api, "s3://team-bucket/renders",
                  {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                   "AWS_SECRET_ACCESS_KEY": "never-print-this-secret"})
    box.write(SPEC)
    planned = box.run("plan")
    assert planned.code == 0
    assert "3 to render" in planned.out
    warnings = [line for line in planned.err.splitlines() if line.startswith("warning: remote")]
    assert len(warnings) == 1, planned.err
    assert "s3://team-bucket/renders" in warnings[0] and "never-print-this-secret" not in planned.err
    off = box.run("plan", "--remote", "off")
    assert off.code == 0 and "warning" not in off.err


@pytest.mark.slow
def test_a_damaged_remote_blob_is_never_installed(tmp_path: Path, fake_api: FakeSparkAPI) -> None:
    remote_dir = tmp_path / "team-remote"
    first = machine(tmp_path, "first", fake_api, f"file://{remote_dir}")
    first.write(SPEC)
    first.apply()
    logo = first.lock()["scenes"]["logo"]
    blob = remote_dir / "v1" / "blobs" / "sha256" / logo["video"]["sha256"][:2] / logo["video"]["sha256"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x55
    blob.write_bytes(bytes(data))

    second = machine(tmp_path, "second", fake_api, f"file://{remote_dir}")
    clone(first, second)
    broken = second.run("apply", "--auto-approve", "--json")
    assert broken.code == 1
    failed = [e for e in broken.events() if e["event"] == "failed"]
    assert [e["scene"] for e in failed] == ["logo"] and "damaged" in str(failed[0]["error"])
    assert not (second.root / logo["video"]["path"]).exists()
    cache_blob = tmp_path / "second" / "cache" / "blobs" / logo["video"]["sha256"][:2] / logo["video"]["sha256"]
    assert not cache_blob.exists()
    assert fake_api.total_creates == 3
    # Reported once: the next plan renders it (a miss), without a word about the remote.
    planned = second.run("plan")
    assert "~ scene.logo (update)" in planned.out and "warning" not in planned.err, planned.out + planned.err
    second.apply()
    assert fake_api.total_creates == 4


@pytest.mark.slow
def test_a_plan_renders_what_the_remote_holds_cut_short_or_without_its_blob(tmp_path: Path,
                                                                              fake_api: FakeSparkAPI) -> None:
    """The listing tells a blob missing or at another size: the plan says `update` (with the
    reason, once) rather than promising a pull the apply could not make."""
    remote_dir = tmp_path / "team-remote"
    first = machine(tmp_path, "first", fake_api, f"file://{remote_dir}")
    first.write(SPEC)
    first.apply()
    scenes = first.lock()["scenes"]

    def blob(sha: str) -> Path:
        return remote_dir / "v1" / "blobs" / "sha256" / sha[:2] / sha

    video = blob(scenes["logo"]["video"]["sha256"])
    video.write_bytes(video.read_bytes()[:1000])
    blob(scenes["intro"]["last_frame"]["sha256"]).unlink()

    second = machine(tmp_path, "second", fake_api, f"file://{remote_dir}")
    clone(first, second)
    planned = second.run("plan")
    assert planned.code == 0, planned.err
    assert "~ scene.logo (update)" in planned.out and "~ scene.intro (update)" in planned.out, planned.out
    assert "has 1000 bytes on the remote" in planned.err and "is missing on the remote" in planned.err, planned.err
    assert planned.err.count(scenes["logo"]["key"][:12]) == 1
    applied = second.apply()
    # intro and logo rendered again; the fake renders alike, so next's key is the team's: pulled.
    assert fake_api.total_creates == 3 + 2, applied.out
    assert [e["scene"] for e in applied.events() if e["event"] == "pulled"] == ["next"]
    assert "No changes" in second.run("plan").out


@pytest.mark.slow
def test_a_stand_in_last_frame_in_the_lock_is_pulled_as_the_team_s_render(tmp_path: Path,
                                                                            fake_api: FakeSparkAPI) -> None:
    """A machine that lost intro's still decodes a stand-in from the video (the lock keeps the
    render's own frame's sha256 beside it); a teammate cloning that lock, cache empty, pulls
    the team's render of the key (its own frame) and what is chained after it, paying nothing."""
    fake_api.unique = True
    remote_dir = tmp_path / "team-remote"
    first = machine(tmp_path, "first", fake_api, f"file://{remote_dir}")
    first.write(SPEC)
    first.apply()
    own = first.lock()["scenes"]["intro"]["last_frame"]["sha256"]
    (first.root / "renders" / "intro.last.png").unlink()
    shutil.rmtree(tmp_path / "first" / "cache")
    first.apply("--remote", "off")
    stand_in = first.lock()["scenes"]["intro"]
    assert stand_in["rendered_last_frame_sha256"] == own != stand_in["last_frame"]["sha256"]
    assert fake_api.total_creates == 3

    second = machine(tmp_path, "second", fake_api, f"file://{remote_dir}")
    clone(first, second)
    planned = second.run("plan")
    assert "0 to render" in planned.out and "3 to pull" in planned.out, planned.out + planned.err
    second.apply()
    assert fake_api.total_creates == 3
    assert second.lock()["scenes"]["intro"]["last_frame"]["sha256"] == own  # the render's own frame
    assert second.lock()["scenes"]["next"] == first.lock()["scenes"]["next"]
    assert "No changes" in second.run("plan").out


@pytest.mark.slow
def test_a_replace_re_roll_reaches_the_teammate_who_pulls_the_lock(tmp_path: Path, fake_api: FakeSparkAPI) -> None:
    """The remote's entry of a key is write-once (the first render); a --replace re-roll's files
    go up beside it, and a teammate whose lock (from git) names the re-roll pulls it instead of
    restoring the old render from their cache and rewriting the lock back to it."""
    fake_api.unique = True
    remote_dir = tmp_path / "team-remote"
    first = machine(tmp_path, "first", fake_api, f"file://{remote_dir}")
    first.write(SPEC)
    first.apply()
    second = machine(tmp_path, "second", fake_api, f"file://{remote_dir}")
    clone(first, second)
    second.apply()  # pulls the three renders into its cache
    assert fake_api.total_creates == 3

    replaced = first.apply("--replace", "logo")
    assert fake_api.total_creates == 4
    assert "this render's files were uploaded" in replaced.out, replaced.out
    clone(first, second)  # git pull: the lock names the re-roll
    planned = second.run("plan")
    assert "< scene.logo (pull)" in planned.out and "the lock's render is on the team's remote" in planned.out, \
        planned.out
    second.apply()
    assert second.lock_bytes() == first.lock_bytes()
    logo = first.lock()["scenes"]["logo"]["video"]["path"]
    assert (second.root / logo).read_bytes() == (first.root / logo).read_bytes()
    assert fake_api.total_creates == 4


@pytest.mark.slow
def test_failed_uploads_are_queued_and_pushed_by_the_next_apply(tmp_path: Path, fake_api: FakeSparkAPI,
                                                                moto_server: MotoServer) -> None:
    bucket = "later-" + tmp_path.name.lower().replace("_", "-")[-20:]
    box = machine(tmp_path, "box", fake_api, f"s3://{bucket}/renders", moto_server.env())
    box.write(SPEC)
    first = box.apply()  # the bucket does not exist yet: every upload fails, the apply does not
    assert first.rendered() == ["intro", "logo", "next"]
    assert sorted(e["scene"] for e in first.events() if e["event"] == "push_queued") == ["intro", "logo", "next"]
    assert "NoSuchBucket" in str(next(e for e in first.events() if e["event"] == "push_queued")["error"])
    urllib.request.urlopen(urllib.request.Request(f"{moto_server.endpoint}/{bucket}", method="PUT")).close()
    second = box.apply()  # nothing to render: the queue alone is pushed
    assert len([e for e in second.events() if e["event"] == "pushed"]) == 3
    assert json.loads((box.root / ".sparkspec" / "remote-queue.json").read_text()) == {}
    clone_box = machine(tmp_path, "clone", fake_api, f"s3://{bucket}/renders", moto_server.env())
    clone(box, clone_box)
    assert "3 to pull" in clone_box.run("plan").out


@pytest.mark.slow
def test_a_truncated_upload_is_never_installed(tmp_path: Path, fake_api: FakeSparkAPI,
                                               seaweedfs_server: SeaweedServer) -> None:
    """The network drops every upload of a blob halfway: the store keeps nothing of it, no
    entry is written (the commit point comes after a HEAD check), the apply still succeeds
    with its uploads queued, and a teammate is never offered half a render."""
    url = seaweedfs_server.bucket()
    proxy = TruncatingProxy(seaweedfs_server.ports["s3.port"]).start()
    try:
        first = machine(tmp_path, "first", fake_api, url,
                        {**seaweedfs_server.env(), "AWS_ENDPOINT_URL_S3": proxy.endpoint})
        first.write(SPEC)
        made = first.apply()
    finally:
        proxy.stop()
    assert made.rendered() == ["intro", "logo", "next"] and proxy.damaged > 0
    assert sorted(e["scene"] for e in made.events() if e["event"] == "push_queued") == ["intro", "logo", "next"]
    store = open_store(RemoteSettings(url, endpoint=seaweedfs_server.endpoint), seaweedfs_server.env())
    left = [i.path for i in asyncio.run(store.list("")) if not i.path.startswith(("probe/", "claims/"))]
    assert [p for p in left if p.startswith(("blobs/", "renders/"))] == [], left  # nothing half there

    second = machine(tmp_path, "second", fake_api, url, seaweedfs_server.env())
    clone(first, second)
    assert "3 to render" in second.run("plan").out  # no entry: a miss, never a pull of half a file
    pulled = second.run("pull")
    assert pulled.code == 1 and not (second.root / "renders").exists(), pulled.out + pulled.err

    first.env["AWS_ENDPOINT_URL_S3"] = seaweedfs_server.endpoint  # the network is back
    pushed = first.run("push")
    assert pushed.code == 0, pushed.out + pushed.err
    planned = second.run("plan")
    assert "3 to pull" in planned.out, planned.out
    second.apply()
    assert fake_api.total_creates == 3
    for record in second.lock()["scenes"].values():
        path = record["video"]["path"]
        assert (second.root / path).read_bytes() == (first.root / path).read_bytes()


def test_ctrl_c_does_not_wait_out_a_store_that_never_answers(tmp_path: Path, fake_api: FakeSparkAPI) -> None:
    hole = BlackHole()
    try:
        box = machine(tmp_path, "box", fake_api, "s3://team-bucket/renders",
                      {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{hole.port}", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                       "AWS_SECRET_ACCESS_KEY": "secret"})
        box.write(SPEC)
        proc = start_cli("plan", cwd=box.root, env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not hole.held and time.monotonic() < deadline:  # the first request is on its way
            time.sleep(0.05)
        assert hole.held, "sparkspec never reached the store"
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = proc.communicate(timeout=60)
        # The request in flight would time out after minutes; the exit does not wait for it.
        assert time.monotonic() - started < 5, err
        assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err, err
    finally:
        hole.close()
