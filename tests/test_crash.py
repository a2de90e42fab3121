"""Crash safety: a real `sparkspec apply` killed with SIGKILL at random moments, then run again.

Against the fake gateway on loopback (real HTTP, real local renders). After every kill
the next apply must collect what the killed one submitted instead of paying again. The
only creates allowed twice for one render key are those whose first task nobody ever
heard of: the kill fell after the server made the task and before the journal held its
id. Such orphans are counted, shown, and each must lie just before a kill.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_cli, start_cli
from dialects import Dialect, every_dialect
from fakeapi import FakeSparkAPI
from sparkspec.media.probe import check_png, probe_video
from sparkspec.state.journal import Journal

KILLS = 12
SEED = 20261125
# The fake gateway runs in this process: a create the killed apply sent just before its kill can
# be read and made by the server's thread just after `kills` noted the kill (seen once in CI,
# under load: an orphan "made after the last kill").
IN_FLIGHT = 0.5
KEY = "sk-crash-test"

SPEC = """\
version: 1
vars: {{take: "{take}"}}  # a new take is a new set of render keys
provider: {{{provider}, parallelism: 3, poll: {{initial: 0.05, max: 0.25}}}}
defaults: {{resolution: 480p, ratio: "16:9", frames: 29}}
scenes:
  a: {{prompt: "a paper boat on a puddle, {{{{ take }}}}"}}
  b: {{first_frame: {{scene: a}}, prompt: "the boat drifts to the gutter, {{{{ take }}}}"}}
  c: {{first_frame: {{scene: b}}, prompt: "the boat tips over the edge, {{{{ take }}}}"}}
  d: {{first_frame: {{scene: c}}, prompt: "the boat lands in a canal, {{{{ take }}}}"}}
  e: {{prompt: "a lighthouse at dusk, {{{{ take }}}}", ratio: "1:1"}}
  f: {{first_frame: {{scene: e}}, prompt: "the lighthouse beam sweeps the sea, {{{{ take }}}}", ratio: "1:1"}}
  g: {{prompt: "a red kite over dunes, {{{{ take }}}}", seed: 7}}
  h: {{prompt: "a fox in snow, {{{{ take }}}}", ratio: "9:16"}}
"""
SCENES = "abcdefgh"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_apply(root: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return start_cli("apply", "--auto-approve", "--json", cwd=root, env=env, stdout=out,
                         stderr=subprocess.STDOUT)


@pytest.mark.slow
@every_dialect()
def test_apply_killed_at_random_moments_pays_once_per_render(tmp_path: Path, dialect: Dialect) -> None:
    rng = random.Random(SEED)
    root = tmp_path / "project"
    root.mkdir()
    log = tmp_path / "apply.log"
    api = FakeSparkAPI(api_key=KEY, latency=(0.3, 1.0), seed=SEED).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SPARKSPEC_", "ARK_"))}
    env.update(dialect.env(api), SPARKSPEC_CACHE_DIR=str(tmp_path / "cache"))
    kills: list[float] = []  # monotonic time of each SIGKILL
    rounds = 0
    try:
        (root / "project.spark.yaml").write_text(SPEC.format(take=f"take {rounds}", provider=dialect.inline()))
        while len(kills) < KILLS:
            proc = start_apply(root, env, log)
            delay = rng.uniform(0.2, 2.0)
            try:
                code = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                kills.append(time.monotonic())
                proc.wait()
                continue
            assert code == 0, log.read_text()
            # Everything rendered before the kills ran out: render a new take.
            rounds += 1
            (root / "project.spark.yaml").write_text(SPEC.format(take=f"take {rounds}", provider=dialect.inline()))
        final = run_cli("apply", "--auto-approve", "--json", cwd=root, env=env, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        creates_before_noop = api.total_creates
        again = run_cli("apply", "--auto-approve", "--json", cwd=root, env=env, timeout=120)
        assert again.returncode == 0 and api.total_creates == creates_before_noop
        check_outputs(root, dialect)
        orphans = check_creates(api, kills)
    finally:
        api.stop()
    assert "Traceback" not in log.read_text()
    print(f"\n{len(kills)} SIGKILLs over {rounds + 1} round(s); {api.total_creates} creates for "
          f"{len(api.creates_by_key)} render keys; {len(orphans)} orphan task(s) (killed between the "
          f"server's reply and the journal write):")
    for task_id, prompt, gap in orphans:
        print(f"  {task_id} ({prompt!r}) created {gap * 1000:.0f} ms before a kill")


def check_outputs(root: Path, dialect: Dialect) -> None:
    lock: dict[str, Any] = json.loads((root / "project.spark.lock").read_text())
    assert sorted(lock["scenes"]) == list(SCENES)
    for scene_id, record in lock["scenes"].items():
        video, frame = root / record["video"]["path"], root / record["last_frame"]["path"]
        assert (sha256(video), video.stat().st_size) == (record["video"]["sha256"], record["video"]["bytes"])
        assert (sha256(frame), frame.stat().st_size) == \
            (record["last_frame"]["sha256"], record["last_frame"]["bytes"])
        info = probe_video(video)
        assert (info.width, info.height) == check_png(frame), scene_id
        assert info.frames == 29 and record["provider"] == dialect.provider and record["task_id"]
    assert Journal(root / ".sparkspec" / "journal").keys() == set(), "tasks left uncollected"
    assert not list((root / ".sparkspec" / "tmp").glob("*.part")), "partial downloads left behind"


def check_creates(api: FakeSparkAPI, kills: list[float]) -> list[tuple[str, str, float]]:
    """Every key created once, plus one per orphan; every orphan made just before a kill (or
    within IN_FLIGHT after it: its request was on the wire)."""
    orphans: list[tuple[str, str, float]] = []
    orphans_by_key: dict[str, int] = {}
    for task in api.tasks.values():
        if task.queries == 0 and task.downloads == 0:
            gaps = [kill - task.created_mono for kill in kills if kill >= task.created_mono - IN_FLIGHT]
            assert gaps and min(gaps) < 2.0, f"task {task.id} was never collected and no kill explains it"
            orphans.append((task.id, api.prompt_of_key[task.key], min(gaps)))
            orphans_by_key[task.key] = orphans_by_key.get(task.key, 0) + 1
    for key, creates in api.creates_by_key.items():
        assert creates == 1 + orphans_by_key.get(key, 0), (api.prompt_of_key[key], creates)
    assert len(orphans) <= len(kills)
    return orphans
