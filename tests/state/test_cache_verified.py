"""The cache is trusted only once checked: a damaged blob never reaches renders/ and is never
planned as `reuse` or `restore`; the scene renders instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import Cli
from test_plan import BASE, SPEC, actions, fake_apply, plan_of, reasons

SMALL = """\
version: 1
provider: {type: local}
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 3}
scenes:
  kite: {prompt: "a red kite"}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / SPEC).write_text(BASE)
    fake_apply(project)
    return project


def blob(root: Path, sha: str) -> Path:
    return root / ".sparkspec/cache/blobs" / sha[:2] / sha


def lock(root: Path) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    return dict(json.loads((root / "project.spark.lock").read_text()))


def damage(path: Path, vouched_by: Path | None = None) -> None:
    """Flip a byte in place. With `vouched_by` (the project), as bit rot would: no stamp of the
    file tells (the digest memo, which stamps size, ctime and inode, still vouches for its old
    digest; a write from user space always moves the ctime, so the memo is told here)."""
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    if vouched_by is not None:
        memo = vouched_by / ".sparkspec" / "digests.json"
        entries = json.loads(memo.read_text())
        st = path.stat()
        entries[str(path.relative_to(vouched_by))] = [st.st_size, st.st_ctime_ns, st.st_ino, sha]
        memo.write_text(json.dumps(entries))


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_a_damaged_blob_is_dropped_and_the_scene_planned_to_render(root: Path, how: str) -> None:
    sha = lock(root)["scenes"]["logo"]["video"]["sha256"]
    (root / "project.spark.lock").unlink()  # every scene is now a reuse from the cache
    if how == "flipped":
        damage(blob(root, sha))
    else:
        blob(root, sha).write_bytes(blob(root, sha).read_bytes()[:-3])
    plan = plan_of(root)
    assert actions(plan)["scene.logo"] == "create" and actions(plan)["scene.intro"] == "reuse"
    assert reasons(plan, "scene.logo") == ["cached copy damaged"]
    assert not blob(root, sha).exists()


def test_a_restore_from_a_damaged_blob_renders_instead(root: Path) -> None:
    sha = lock(root)["scenes"]["logo"]["video"]["sha256"]
    (root / "renders/logo.mp4").unlink()
    damage(blob(root, sha))
    plan = plan_of(root)
    assert actions(plan)["scene.logo"] == "update"
    assert reasons(plan, "scene.logo") == ["renders/logo.mp4 is missing and cached copy damaged"]


@pytest.mark.slow
def test_apply_checks_the_bytes_it_copies_even_when_the_memo_vouched(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / SPEC).write_text(SMALL)
    assert cli("apply", "--auto-approve", cwd=tmp_path).code == 0
    first = lock(tmp_path)["scenes"]["kite"]
    (tmp_path / "renders/kite.mp4").unlink()
    assert cli("plan", cwd=tmp_path).code == 0  # the memo now vouches for the blobs
    damage(blob(tmp_path, first["video"]["sha256"]), vouched_by=tmp_path)  # bit rot: no stamp changes
    failed = cli("apply", "--auto-approve", cwd=tmp_path)
    assert failed.code == 1
    assert "the cached copy of kite.mp4 is damaged and was dropped" in failed.err
    assert not (tmp_path / "renders/kite.mp4").exists()
    assert lock(tmp_path)["scenes"]["kite"] == first  # the lock still tells the truth
    again = cli("apply", "--auto-approve", "--json", cwd=tmp_path)
    assert again.code == 0 and again.rendered() == ["kite"]
    assert lock(tmp_path)["scenes"]["kite"]["video"] == first["video"]  # the same bytes, rendered again


@pytest.mark.slow
def test_a_render_replaces_a_damaged_blob_of_the_same_name(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / SPEC).write_text(SMALL)
    assert cli("apply", "--auto-approve", cwd=tmp_path).code == 0
    video = lock(tmp_path)["scenes"]["kite"]["video"]
    damage(blob(tmp_path, video["sha256"]))
    again = cli("apply", "--auto-approve", "--json", "--replace", "kite", cwd=tmp_path)
    assert again.code == 0 and again.rendered() == ["kite"]
    assert blob(tmp_path, video["sha256"]).read_bytes() == (tmp_path / "renders/kite.mp4").read_bytes()


def test_a_cache_entry_from_a_newer_sparkspec_is_read(root: Path) -> None:
    import diskcache

    key = lock(root)["scenes"]["logo"]["key"]
    (root / "project.spark.lock").unlink()
    with diskcache.Cache(str(root / ".sparkspec/cache/index")) as index:
        entry = dict(index[key])
        index[key] = {**entry, "field_from_the_future": {"x": 1}}
    assert actions(plan_of(root))["scene.logo"] == "reuse"


def _damage_index(root: Path, how: str) -> None:
    import sqlite3

    db = root / ".sparkspec/cache/index/cache.db"
    if how == "garbage":
        db.write_bytes(b"not a database at all " * 400)
    else:  # every entry's pickled record cut short, as a torn page leaves it
        with sqlite3.connect(db) as con:
            con.execute("UPDATE Cache SET value = x'80049502', mode = 4")


@pytest.mark.parametrize("how", ["garbage", "bad-record"])
def test_a_damaged_cache_index_is_one_line_naming_it_never_a_crash(cli: Cli, root: Path, how: str) -> None:
    (root / SPEC).write_text(BASE.replace("Coffee pours", "Tea pours"))
    fake_apply(root)
    (root / SPEC).write_text(BASE)  # reverted: the plan needs the index to find the old render
    fake_apply(root, cache=False)
    (root / SPEC).write_text(BASE.replace("Coffee pours", "Tea pours"))
    _damage_index(root, how)
    for args in (("plan",), ("gc", "--dry-run")):
        result = cli(*args, cwd=root)
        assert result.code == 1, (args, result.err)
        assert "Traceback" not in result.err and "internal error" not in result.err
        assert "cache/index: the cache index is damaged" in result.err and "mv " in result.err
    assert (root / "project.spark.lock").is_file()
