"""The malformed-spec corpus: every case through the real CLI, `validate` and `plan`.

A case is `corpus/<name>.yaml` (the spec alone) or `corpus/<name>/project.spark.yaml`
(the spec with the templates and images it needs). Its header comments say what
to expect:

    # expect: 7:15 scenes.pour.duration: 14 is not in 2..12
    # expect: prompts/bad.j2:3:1 scenes.logo.prompt_file: undefined variable
    # args: --var oops              (extra CLI arguments)
    # commands: validate            (default: validate plan)
    # symlink: assets/a.png -> ../outside.png
    # bigfile: assets/big.png 31457280

An `expect` line is `[FILE:]LINE:COL PATH: MESSAGE` where FILE defaults to the
spec, PATH is the diagnostic's key path (`-` for none) and MESSAGE must occur
in the message. Every case must exit 1 with no traceback, print each expected
line and no other error, and leave the project folder exactly as it was.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli_runner
from cli_runner import Run
from sparkspec import cli

CORPUS = Path(__file__).parent / "corpus"
SPEC = "project.spark.yaml"
_EXPECT = re.compile(r"^#\s*expect:\s*(?:(?P<file>[^\s:]+):)?(?P<line>\d+):(?P<col>\d+)\s+"
                     r"(?P<path>\S+):\s+(?P<message>.+?)\s*$")


@dataclass
class Expected:
    file: str
    line: int
    column: int
    path: str
    message: str

    @property
    def prefix(self) -> str:
        where = f"{self.path}: " if self.path != "-" else ""
        return f"{self.file}:{self.line}:{self.column}: error: {where}"


@dataclass
class Case:
    name: str
    source: Path  # the spec file, or the folder holding it
    expected: list[Expected] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=lambda: ["validate", "plan"])
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    bigfiles: list[tuple[str, int]] = field(default_factory=list)


def _read_case(source: Path) -> Case:
    spec = source / SPEC if source.is_dir() else source
    case = Case(source.stem if source.is_file() else source.name, source)
    for raw in spec.read_bytes().decode("utf-8", "replace").splitlines():
        if not raw.startswith("#"):
            continue
        if match := _EXPECT.match(raw):
            case.expected.append(Expected(match["file"] or SPEC, int(match["line"]), int(match["col"]),
                                          match["path"], match["message"]))
        elif raw.startswith("# expect:"):
            raise ValueError(f"{spec}: unreadable expect line: {raw}")
        elif raw.startswith("# args:"):
            case.args = shlex.split(raw.split(":", 1)[1])
        elif raw.startswith("# commands:"):
            case.commands = raw.split(":", 1)[1].split()
        elif raw.startswith("# symlink:"):
            link, target = raw.split(":", 1)[1].split("->")
            case.symlinks.append((link.strip(), target.strip()))
        elif raw.startswith("# bigfile:"):
            name, size = raw.split(":", 1)[1].split()
            case.bigfiles.append((name, int(size)))
    return case


def _cases() -> list[Case]:
    found = sorted(p for p in CORPUS.iterdir() if p.suffix == ".yaml" or (p / SPEC).is_file())
    return [_read_case(p) for p in found]


CASES = _cases()


def _outside_image(path: Path) -> None:
    """A valid first frame that sits outside the project folder."""
    from PIL import Image

    Image.new("RGB", (480, 320), (200, 120, 40)).save(path)


def _materialise(case: Case, tmp_path: Path) -> Path:
    project = tmp_path / "project"
    if case.source.is_dir():
        shutil.copytree(case.source, project, symlinks=True)
    else:
        project.mkdir()
        shutil.copyfile(case.source, project / SPEC)
    _outside_image(tmp_path / "outside.png")
    (tmp_path / "outside.j2").write_text("a secret from outside the project\n")
    for link, target in case.symlinks:
        (project / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, project / link)
    for name, size in case.bigfiles:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        with open(project / name, "wb") as stream:
            stream.truncate(size)
    return project


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `root` (hidden ones too) with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@dataclass
class Result:
    exit_code: int
    output: str  # stdout and stderr together


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, cwd: Path) -> Result:
    """`sparkspec ARGS` in-process through the console script's entry point (its error boundary)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["sparkspec", *args])
    runner = CliRunner()
    code = 0
    with runner.isolation() as streams:
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        output = streams[0].getvalue().decode() + streams[1].getvalue().decode()
    return Result(code, output)


def check_failure(result: Result, command: str, case: Case) -> None:
    assert result.exit_code == 1, f"{case.name} {command}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, result.output
    assert "internal error" not in result.output, result.output
    lines = result.output.splitlines()
    for want in case.expected:
        hits = [ln for ln in lines if ln.startswith(want.prefix) and want.message in ln[len(want.prefix):]]
        assert hits, (f"{case.name} {command}: no line `{want.prefix}...{want.message}...` in:\n"
                      f"{result.output}")
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == len(case.expected), f"{case.name} {command}: unexpected errors:\n{result.output}"


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 45
    assert all(case.expected for case in CASES), [c.name for c in CASES if not c.expected]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_spec(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _materialise(case, tmp_path)
    monkeypatch.setenv("SPARKSPEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARK_API_KEY", raising=False)
    before = listing(tmp_path)
    for command in case.commands:
        started = time.monotonic()
        result = run_cli([command, *case.args], monkeypatch, project)
        assert time.monotonic() - started < 10, f"{case.name} {command} took too long"
        check_failure(result, command, case)
    assert listing(tmp_path) == before, f"{case.name}: something was written"
    assert not (project / ".sparkspec").exists()
    assert not (tmp_path / "cache").exists()


MANY_PROBLEMS = """\
version: 1
provider:
  type: local
  paralelism: 2
defaults:
  resolution: 4k
scenes:
  intro:
    prompt: "A {{ prodcut }} on a counter"
    duration: 14
  pour:
    first_frame: {scene: intr}
    prompt: "Coffee pours"
    frames: 30
  a:
    prompt: "one"
    first_frame: {scene: b}
  b:
    prompt: "two"
    first_frame: {scene: a}
  logo:
    prompt: "logo"
    ratio: adaptive
    seed: -1
  logo:
    prompt: "again"
sequences:
  final: {scenes: [intro, pour, nope]}
output_dir: ../out
"""


def test_every_problem_is_reported_in_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / SPEC).write_text(MANY_PROBLEMS)
    before = listing(tmp_path)
    for command in ("validate", "plan"):
        result = run_cli([command], monkeypatch, tmp_path)
        assert result.exit_code == 1
        errors = [ln for ln in result.output.splitlines() if ": error: " in ln]
        assert errors == [
            "project.spark.yaml:4:3: error: provider.paralelism: unknown key 'paralelism'; "
            "did you mean 'parallelism'?",
            "project.spark.yaml:6:15: error: defaults.resolution: '4k' is not one of 480p, 720p, 1080p",
            "project.spark.yaml:9:13: error: scenes.intro.prompt: undefined variable: 'prodcut' is undefined",
            "project.spark.yaml:10:15: error: scenes.intro.duration: 14 is not in 2..12",
            "project.spark.yaml:12:26: error: scenes.pour.first_frame.scene: no scene 'intr'; "
            "did you mean 'intro'?",
            "project.spark.yaml:14:13: error: scenes.pour.frames: 30 is not 25+4n in [29, 289]; use 29 or 33",
            "project.spark.yaml:15:3: error: scenes.a: first_frame cycle: a -> b -> a; "
            "a scene cannot start from its own last frame",
            "project.spark.yaml:21:3: error: scenes.logo: ratio: adaptive needs a first_frame "
            "to take the ratio from",
            "project.spark.yaml:25:3: error: scenes.logo: duplicate key 'logo'; each key may appear once "
            "in a mapping",
            "project.spark.yaml:28:33: error: sequences.final.scenes[2]: no scene 'nope'",
            "project.spark.yaml:29:13: error: output_dir: '../out' must be a folder inside the project",
        ], result.output
        assert "project.spark.yaml:24:11: warning: scenes.logo.seed: seed -1 asks the API" in result.output
    assert listing(tmp_path) == before


def test_missing_spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (["validate"], ["plan"], ["plan", "-f", "other.spark.yaml"]):
        result = run_cli(args, monkeypatch, tmp_path)
        assert result.exit_code == 1, result.output
        name = args[-1] if args[-1].endswith(".yaml") else SPEC
        assert result.output.startswith(f"error: {name}: no such file; run `sparkspec init`"), result.output
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_positions_name_the_file_as_given_with_f(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _materialise(next(c for c in CASES if c.name == "template-syntax-file"), tmp_path)
    (project / SPEC).rename(project / "spot.spark.yaml")
    result = run_cli(["validate", "-f", "project/spot.spark.yaml"], monkeypatch, tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith(
        "project/prompts/logo.j2:3:1: error: scenes.logo.prompt_file: template syntax: unexpected '}'")


def _subprocess(args: list[str], cwd: Path, timeout: float = 30) -> Run:
    env = dict(os.environ, SPARKSPEC_CACHE_DIR=str(cwd.parent / "cache"))
    return cli_runner.run_cli(*args, cwd=cwd, env=env, timeout=timeout, traceback_ok=True)


@pytest.mark.parametrize("name", ["alias-bomb", "python-object-tag", "include-escape", "var-malformed"])
def test_as_a_process(name: str, tmp_path: Path) -> None:
    """The console entry point end to end: stderr lines, exit 1, no traceback, nothing written."""
    case = next(c for c in CASES if c.name == name)
    project = _materialise(case, tmp_path)
    before = listing(tmp_path)
    started = time.monotonic()
    proc = _subprocess(["-C", "project", "plan", *case.args], tmp_path)
    assert time.monotonic() - started < 20
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    for want in case.expected:
        assert any(ln.startswith(want.prefix) and want.message in ln for ln in lines), proc.stderr
    assert listing(tmp_path) == before
    assert not (project / "pwned").exists()


# -- no spec crashes sparkspec -------------------------------------------------------------------

_SEEDS = [(c.source / SPEC if c.source.is_dir() else c.source).read_text("utf-8", "replace") for c in CASES]
_TOKENS = ["{{", "}}", "{%", "%}", ":", "- ", "[", "]", "{", "}", "&a ", "*a", "<<: ", "!!int ", "!!str ",
           "!!float ", "!!bool ", "!!binary ", "!!timestamp ", "!!set ", "\n  ", "\t", "'", '"', "#", "~", "? ",
           "|", ">", "null", "-1", "1e9", "0x10", ".inf", "2001-12-14", "4.0", "scene: ", "image: ", "../",
           "data:image/png;base64,", "matrix: {a: [1, {}]}", "first_frame: {scene: a}", "{{ x | nofilter }}",
           '{% include "prompts/p.j2" %}', "{{ product.upper() }}", "{% for a in b %}", "{{ 1/0 }}",
           "{{ ''.__class__ }}", "{% macro m() %}", "{{ super() }}"]


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "copy"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(_TOKENS)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 10)):]
        else:
            start = draw(st.integers(0, len(text)))
            text = text[:at] + text[start:start + draw(st.integers(1, 20))] + text[at:]
    return text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_no_spec_crashes_the_loader_or_the_planner(text: str) -> None:
    """Whatever the bytes, sparkspec answers with diagnostics or a plan, never an internal error."""
    from sparkspec.errors import SparkspecError
    from sparkspec.config.loader import LoadOptions
    from sparkspec.state.workspace import open_workspace

    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        (root / "prompts").mkdir()
        (root / "prompts" / "p.j2").write_text("a {{ product }}\n")
        (root / SPEC).write_text(text)
        try:
            workspace = open_workspace(root / SPEC, LoadOptions(variables=("product=x",)))
            workspace.plan()
        except SparkspecError:
            pass
