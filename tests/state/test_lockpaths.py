"""A lock names only sparkspec's own outputs: anything else is refused before a file is touched,
and a delete removes a file only when its bytes are the ones the lock records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_runner import Cli
from test_plan import BASE, SPEC, edit, fake_apply


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / SPEC).write_text(BASE)
    fake_apply(project)
    return project


def set_path(root: Path, scene: str, field: str, path: str) -> None:
    lock_file = root / "project.spark.lock"
    lock = json.loads(lock_file.read_text())
    lock["scenes"][scene][field]["path"] = path
    lock_file.write_text(json.dumps(lock, indent=2, sort_keys=True))


def drop_logo(root: Path) -> None:
    edit(root, '  logo:\n    prompt: "The logo"\n', "")
    edit(root, "sequences:\n  final: {scenes: [intro, pour, logo]}\n", "")


@pytest.mark.parametrize("path", ["../victim.txt", "renders/../../victim.txt", "/tmp/victim.txt",
                                  "renders/./logo.mp4", "project.spark.yaml", "renders\\logo.mp4"])
def test_a_lock_naming_a_foreign_path_is_refused_before_anything_is_deleted(cli: Cli, root: Path, path: str) -> None:
    victim = root.parent / "victim.txt"
    victim.write_text("not sparkspec's")
    drop_logo(root)  # logo is to be deleted: today's bug deleted whatever its lock entry named
    set_path(root, "logo", "video", path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".sparkspec" not in p.parts}
    for command in (["plan"], ["apply", "--auto-approve"]):
        refused = cli(*command, cwd=root)
        assert refused.code == 1, refused.out
        [line] = refused.err.strip().splitlines()
        assert line.startswith(f"error: project.spark.lock: scenes.logo.video.path {path!r} ") and \
            "restore it from git" in line
    assert victim.read_text() == "not sparkspec's"
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".sparkspec" not in p.parts} == before


def test_a_symlink_leaving_the_output_folder_is_refused(cli: Cli, root: Path) -> None:
    outside = root.parent / "elsewhere.mp4"
    outside.write_bytes(b"someone else's video")
    (root / "renders/logo.mp4").unlink()
    os.symlink(outside, root / "renders/logo.mp4")
    refused = cli("plan", cwd=root)
    assert refused.code == 1
    assert "scenes.logo.video.path 'renders/logo.mp4' is a symlink leaving its folder" in refused.err
    assert "remove the symlink" in refused.err and "restore it from git" not in refused.err  # the lock is fine
    (root / "renders/logo.mp4").unlink()
    os.symlink(root.parent, root / "renders/sub")
    set_path(root, "logo", "video", "renders/sub/logo.mp4")
    refused = cli("plan", cwd=root)
    assert refused.code == 1 and "leaves the project folder" in refused.err
    assert outside.read_bytes() == b"someone else's video"


def test_a_delete_leaves_an_altered_file_and_says_so(cli: Cli, root: Path) -> None:
    drop_logo(root)
    (root / "renders/logo.last.png").write_bytes(b"retouched by hand")
    applied = cli("apply", "--auto-approve", cwd=root)
    assert applied.code == 0, applied.err
    assert "logo: deleted from the lock; left renders/logo.last.png: changed since sparkspec wrote it" \
        in applied.out
    assert not (root / "renders/logo.mp4").exists()
    assert (root / "renders/logo.last.png").read_bytes() == b"retouched by hand"
    assert "logo" not in json.loads((root / "project.spark.lock").read_text())["scenes"]


def test_outputs_of_an_earlier_output_dir_are_restored_but_never_deleted(cli: Cli, root: Path) -> None:
    edit(root, "version: 1\n", "version: 1\noutput_dir: ./out/\n")
    drop_logo(root)
    applied = cli("apply", "--auto-approve", "--json", cwd=root)
    assert applied.code == 0, applied.err
    deleted = [e for e in applied.events() if e["event"] == "deleted" and e.get("scene") == "logo"]
    assert deleted[0]["kept"] == ["left renders/logo.mp4: outside the output folder out/",
                                  "left renders/logo.last.png: outside the output folder out/"]
    assert (root / "renders/logo.mp4").exists() and (root / "renders/final.mp4").exists()
    assert (root / "out/intro.mp4").read_bytes() == (root / "renders/intro.mp4").read_bytes()
    lock = json.loads((root / "project.spark.lock").read_text())
    assert lock["scenes"]["intro"]["video"]["path"] == "out/intro.mp4"


@pytest.mark.parametrize("path", ["../victim.txt", "renders/intro.take3.mp4", "renders/logo.mp4"])
def test_a_take_naming_a_foreign_path_is_refused(cli: Cli, root: Path, path: str) -> None:
    """Takes are outputs too: take 2 of intro may be at intro.mp4 or intro.take2.mp4, nowhere else."""
    lock_file = root / "project.spark.lock"
    lock = json.loads(lock_file.read_text())
    intro = lock["scenes"]["intro"]
    second = {**intro, "key": "b" * 64, "video": {**intro["video"], "path": "renders/intro.take2.mp4"},
              "last_frame": {**intro["last_frame"], "path": "renders/intro.take2.last.png"}}
    intro["takes"] = [{**intro, "take": 1}, {**second, "take": 2}]
    intro["pick"] = 1
    lock_file.write_text(json.dumps(lock, indent=2, sort_keys=True))
    assert cli("validate", cwd=root).code == 0
    planned = cli("plan", cwd=root)
    assert "refuses this lock" not in planned.err, planned.err
    intro["takes"][1]["video"]["path"] = path
    lock_file.write_text(json.dumps(lock, indent=2, sort_keys=True))
    refused = cli("plan", cwd=root)
    assert refused.code == 1
    [line] = refused.err.strip().splitlines()
    assert line.startswith(f"error: project.spark.lock: scenes.intro.takes[1].video.path {path!r} "), line


def test_a_lock_where_two_records_name_one_file_is_refused_before_anything_is_deleted(cli: Cli, root: Path) -> None:
    # A sequence named like a scene, its record pointing at the scene's video (an edit, a merge by
    # hand): deleting the sequence, gone from the spec, removed the scene's output.
    lock_file = root / "project.spark.lock"
    lock = json.loads(lock_file.read_text())
    logo = lock["scenes"]["logo"]["video"]
    lock["sequences"]["logo"] = {**lock["sequences"]["final"], "video": dict(logo)}
    lock_file.write_text(json.dumps(lock, indent=2, sort_keys=True))
    before = (root / logo["path"]).read_bytes()
    for command in (["plan"], ["apply", "--auto-approve"]):
        refused = cli(*command, cwd=root)
        assert refused.code == 1, refused.out
        [line] = refused.err.strip().splitlines()
        assert "sequences.logo names 'renders/logo.mp4', which scenes.logo names too" in line, line
    assert (root / logo["path"]).read_bytes() == before


def test_moving_output_dir_is_one_warning(cli: Cli, root: Path) -> None:
    """Each moved scene's files said 'left renders/...' beside the one warning naming the old folder."""
    edit(root, "version: 1\n", "version: 1\noutput_dir: ./out/\n")
    applied = cli("apply", "--auto-approve", cwd=root)  # (its placeholder clips do not stitch)
    said = (applied.out + applied.err).splitlines()
    assert [line for line in said if "left renders/" in line] == [], said
    assert len([line for line in said if line.startswith("warning: output_dir is now out")]) == 1, said
    assert (root / "renders/intro.mp4").exists() and (root / "out/intro.mp4").exists()
