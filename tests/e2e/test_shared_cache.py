"""Two projects sharing one cache (SPARKSPEC_CACHE_DIR), applied at the same time by two
processes: both finish with identical renders, and a third project renders nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli_runner import start_cli

from .conftest import Project

SPEC = """\
version: 1
provider: {type: local, parallelism: 2}
defaults: {resolution: 480p, frames: 29, seed: 11}
scenes:
""" + "".join(f"  s{i}: {{prompt: \"lantern number {i} floating on a lake\"}}\n" for i in range(4))


@pytest.mark.slow  # two whole applies racing
def test_two_processes_share_a_cache_safely(tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    projects = []
    for name in ("one", "two", "three"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write(SPEC)
        project.env["SPARKSPEC_CACHE_DIR"] = str(cache)
        projects.append(project)
    running = [start_cli("apply", "--auto-approve", "--json", cwd=p.root, env=p.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True) for p in projects[:2]]
    for proc in running:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["ok"] is True
    one, two, three = projects
    assert one.lock()["scenes"].keys() == two.lock()["scenes"].keys()
    for sid, record in one.lock()["scenes"].items():
        assert two.lock()["scenes"][sid]["video"]["sha256"] == record["video"]["sha256"]
    assert not (one.root / ".sparkspec/cache").exists()  # the cache is where it was told to be
    third = three.apply()
    assert third.rendered() == []
    assert sorted(e["scene"] for e in third.events() if e["event"] == "reused") == ["s0", "s1", "s2", "s3"]
    # gc in one project keeps what the others' locks refer to.
    collected = one.run("gc")
    assert collected.code == 0 and "Dropped 0 render(s) and 0 blob(s)" in collected.out
    assert "kept what 3 lock(s) refer to" in collected.out


@pytest.mark.slow  # renders through the fake gateway: kept out of the default run
def test_gc_waits_for_no_one_and_sweeps_nothing_while_another_project_applies(tmp_path: Path,
                                                                               fake_api: object) -> None:
    """gc in one project dropped the renders another project's running apply had just paid for
    (in the shared cache, not yet in its lock): they were paid for again."""
    import time

    from fakeapi import FakeSparkAPI

    assert isinstance(fake_api, FakeSparkAPI)
    fake_api.latency = 1.5
    cache = tmp_path / "shared-cache"
    spark, other = Project(tmp_path / "busy"), Project(tmp_path / "idle")
    for project, spec in ((spark, SPEC.replace("{type: local, parallelism: 2}",
                                               "{type: spark, parallelism: 4, poll: {initial: 0.05, max: 0.2}}")),
                          (other, SPEC)):
        project.root.mkdir()
        project.write(spec)
        project.env.update(SPARKSPEC_CACHE_DIR=str(cache), SPARK_API_KEY=fake_api.api_key,
                           SPARK_BASE_URL=fake_api.base_url)
    running = start_cli("apply", "--auto-approve", "--json", cwd=spark.root, env=spark.env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while fake_api.total_creates < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = other.run("gc")
    assert refused.code == 1, refused.out
    assert f"{cache}: an apply, pull or push is using this cache" in refused.err
    out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    assert other.run("gc").code == 0  # free again
    assert "0 to render" in spark.run("plan").out or "No changes" in spark.run("plan").out
    assert fake_api.total_creates == 4


def test_gc_names_the_other_projects_lock_it_cannot_read(tmp_path: Path) -> None:
    """It said `project.spark.lock has merge conflicts`, which reads as this project's own."""
    from sparkspec.commands.gc import register_project
    from sparkspec.state.cache import Cache, CachedRender
    from sparkspec.state.lockfile import Lock, write_lock

    cache = tmp_path / "shared-cache"
    Cache(cache).record(CachedRender("a" * 64, "local", "m", "t", 1, 0, "b" * 64, 1, "c" * 64, 1, {}))
    projects = []
    for name in ("mine", "theirs"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write(SPEC)
        project.env["SPARKSPEC_CACHE_DIR"] = str(cache)
        write_lock(project.root / "project.spark.lock", Lock({}))
        register_project(cache, project.root / "project.spark.lock")
        projects.append(project)
    mine, theirs = projects
    broken = theirs.root / "project.spark.lock"
    broken.write_text("<<<<<<< HEAD\n" + broken.read_text())
    refused = mine.run("gc")
    assert refused.code == 1
    assert refused.err.startswith(f"error: {broken}: the lock of another project that shares this cache cannot be "
                                  "read, so gc stops"), refused.err
