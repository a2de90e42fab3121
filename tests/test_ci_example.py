"""examples/ci/sparkspec-plan.yml: a GitHub Actions workflow whose steps are real sparkspec
commands. Its validate and plan steps are run here as the runner would (bash, the same env)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples/ci/sparkspec-plan.yml"


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("name") == name)


def test_plan_on_pull_requests_apply_on_main_with_the_secret_key() -> None:
    flow = workflow()
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "push"} and triggers["push"]["branches"] == ["main"]
    plan, apply = flow["jobs"]["plan"], flow["jobs"]["apply"]
    assert "pull_request" in plan["if"] and "refs/heads/main" in apply["if"]
    assert plan["permissions"]["pull-requests"] == "write"
    assert "--format markdown" in step(plan, "Plan")["run"]
    assert "gh pr comment" in step(plan, "Comment on the pull request")["run"]
    assert step(apply, "Apply")["env"]["SPARK_API_KEY"] == "${{ secrets.SPARK_API_KEY }}"
    assert "apply --auto-approve" in step(apply, "Apply")["run"]
    assert all("SPARK_API_KEY" not in str(s.get("env", {})) for s in plan["steps"])  # PRs never see the key


def test_the_validate_and_plan_steps_run(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    shutil.copytree(ROOT / "examples/espresso-spot", project,
                    ignore=shutil.ignore_patterns("renders", ".sparkspec", "*.lock"))
    runner_temp, summary = tmp_path / "runner", tmp_path / "summary.md"
    runner_temp.mkdir()
    env = {**os.environ, "PROJECT_DIR": str(project), "RUNNER_TEMP": str(runner_temp),
           "GITHUB_STEP_SUMMARY": str(summary),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    plan = workflow()["jobs"]["plan"]
    for name in ("Validate", "Plan"):
        result = subprocess.run(["bash", "-eo", "pipefail", "-c", step(plan, name)["run"]], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stderr)
    comment = (runner_temp / "plan.md").read_text()
    assert comment.startswith("### sparkspec plan: espresso-spot")
    assert "| `+` | create | `scene.intro` |" in comment
    assert summary.read_text() == comment
