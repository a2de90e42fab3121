"""No secret written anywhere: a canary API key through every command, success and failure.

The canary goes through validate, plan (text, --json, --out), apply (fresh, from a saved
plan, --json, with the debug log on), show, and failing applies whose API answers echo the
key back (a refused key, no credits, a failed render). Afterwards no file under the
project, the cache, HOME or TMPDIR, and no stdout or stderr, holds the key, raw or base64.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
from PIL import Image

from cli_runner import Run, run_cli
from fakeapi import FakeSparkAPI

SPEC = """\
version: 1
name: canary
provider: {type: spark, parallelism: 2, poll: {initial: 0.05, max: 0.2}}
defaults: {resolution: 480p, ratio: "16:9", frames: 29}
scenes:
  intro: {prompt: "a lamp in a dark room"}
  next: {first_frame: {scene: intro}, prompt: "the lamp flickers"}
  logo: {first_frame: {image: assets/logo.png}, prompt: "a logo glows"}
sequences:
  film: {scenes: [intro, next]}
"""


class Runner:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.outputs: list[tuple[str, str]] = []

    def __call__(self, *args: str, code: int | None = 0, **extra_env: str) -> Run:
        proc = run_cli(*args, cwd=self.root, env=dict(self.env, **extra_env), timeout=180)
        self.outputs.append((" ".join(args), proc.stdout + proc.stderr))
        if code is not None:
            assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        return proc


@pytest.mark.slow
def test_a_canary_key_appears_in_no_file_and_no_output(tmp_path: Path) -> None:
    canary = "sk-canary-" + secrets.token_hex(16)
    forms = [canary, base64.b64encode(canary.encode()).decode(), canary.encode().hex()]
    root, cache, home, tmp = (tmp_path / name for name in ("project", "cache", "home", "tmp"))
    for folder in (root / "assets", cache, home, tmp):
        folder.mkdir(parents=True)
    (root / "project.spark.yaml").write_text(SPEC)
    Image.new("RGB", (640, 360), (20, 120, 200)).save(root / "assets" / "logo.png")
    api = FakeSparkAPI(api_key=canary, latency=(0.1, 0.3), seed=3).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SPARKSPEC_"))}
    env.update(SPARK_API_KEY=canary, SPARK_BASE_URL=api.base_url, SPARKSPEC_CACHE_DIR=str(cache),
               HOME=str(home), TMPDIR=str(tmp))
    run = Runner(root, env)
    try:
        run("validate")
        run("plan")
        run("plan", "--json")
        run("plan", "--out", "saved.plan")
        run("apply", "saved.plan", SPARKSPEC_DEBUG="1")
        run("show")
        run("apply", "--auto-approve", "--json")  # a no-op
        # Failures whose API answers carry the key back.
        api.inject("create", "status", status=401, body={"message": f"key {canary} was revoked"})
        failed = run("apply", "--auto-approve", "--replace", "intro", code=1)
        assert "revoked" in failed.stderr
        api.inject("create", "status", status=402, body={"message": f"Insufficient credits for {canary}"})
        failed = run("apply", "--auto-approve", "--json", "--replace", "logo", code=1)
        assert "Insufficient credits" in failed.stdout
        api.outcome("failed", code="003021098", message=f"generation failed ({canary})")
        run("apply", "--auto-approve", "--replace", "logo", code=1, SPARKSPEC_DEBUG="1")
        api.inject("video", "status", status=404, times=10)
        run("apply", "--auto-approve", "--json", "--replace", "intro", code=1, SPARKSPEC_DEBUG="1")
        api.faults.clear()
        run("apply", "--auto-approve", "--replace", "intro", "--replace", "logo")
        run("show")
        # The wrong key: the error names the variable, never the value.
        refused = run("apply", "--auto-approve", "--replace", "logo", code=1, SPARK_API_KEY="sk-wrong-" + canary[-6:])
        assert "refused" in refused.stderr
        missing = run("apply", "--auto-approve", "--replace", "logo", code=1, SPARK_API_KEY="")
        assert "SPARK_API_KEY" in missing.stderr and "--provider local" in missing.stderr
    finally:
        api.stop()
    assert any(h == f"Bearer {canary}" for h in api.api_authorization), "the key was never sent at all"
    assert all(h is None for h in api.download_authorization), "a download carried the key"
    leaks = [f"output of `{cmd}`" for cmd, text in run.outputs if any(f in text for f in forms)]
    scanned = 0
    for folder in (root, cache, home, tmp):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                data = path.read_bytes()
                if any(f.encode() in data for f in forms):
                    leaks.append(str(path.relative_to(tmp_path)))
    assert scanned > 10
    assert (root / "project.spark.lock").exists() and list((root / ".sparkspec").rglob("*"))
    assert not leaks, f"the key leaked into: {leaks}"
