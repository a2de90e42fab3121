"""The shipped examples: valid against the JSON Schema as an editor sees it, and they render
offline end to end (a second apply renders nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from cli_runner import Run, run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/project.spark.yaml"))


def test_there_are_the_three_kinds_of_example() -> None:
    assert {p.name for p in EXAMPLES} >= {"espresso-spot", "latte-matrix", "logo-reveal"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_schema_with_jsonschema_itself(example: Path) -> None:
    schema = json.loads((ROOT / "schemas/project.spark.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    document = yaml.safe_load((example / "project.spark.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)


def test_the_printed_schema_is_the_shipped_file() -> None:
    printed = run_cli("schema", cwd=ROOT).stdout
    assert json.loads(printed) == json.loads((ROOT / "schemas/project.spark.schema.json").read_text())


@pytest.mark.slow  # 10-30 s each on two cores; the README's first command runs espresso-spot too
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_applies_offline_and_then_is_up_to_date(example: Path, tmp_path: Path) -> None:
    work = tmp_path / example.name
    shutil.copytree(example, work, ignore=shutil.ignore_patterns("renders", ".sparkspec", "*.lock"))

    def sparkspec(*args: str) -> Run:
        return run_cli("-C", str(work), *args, cwd=work)

    assert sparkspec("validate").returncode == 0
    first = sparkspec("apply", "--auto-approve", "--json")
    assert first.returncode == 0, first.stderr
    events = [json.loads(line) for line in first.stdout.splitlines()]
    done = events[-1]
    assert done["event"] == "done" and done["ok"] and done["failed"] == 0
    spec = yaml.safe_load((work / "project.spark.yaml").read_text())
    lock = json.loads((work / "project.spark.lock").read_text())
    assert done["completed"] == len(lock["scenes"]) >= len(spec["scenes"])
    for record in lock["scenes"].values():
        assert (work / record["video"]["path"]).stat().st_size == record["video"]["bytes"]
    for name in spec.get("sequences", {}):
        assert (work / lock["sequences"][name]["video"]["path"]).exists()
    before = (work / "project.spark.lock").read_bytes()
    second = sparkspec("plan", "--detailed-exitcode")
    assert second.returncode == 0, second.stdout
    assert (work / "project.spark.lock").read_bytes() == before
