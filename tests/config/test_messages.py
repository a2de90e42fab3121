"""Spec messages that tell the truth: a blank prompt is an error at its line, a `--var` no
template reads is a warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import Cli


@pytest.mark.parametrize("scene, where", [
    ('prompt: "   "', "4:19"),
    ('prompt: "{{ nothing }}"', "4:19"),
    ('prompt: "{% if false %}x{% endif %}"', "4:19"),
    ("prompt_file: empty.j2", "4:24"),
])
def test_a_blank_rendered_prompt_is_an_error_at_its_line(cli: Cli, tmp_path: Path, scene: str, where: str) -> None:
    (tmp_path / "empty.j2").write_text("\n  \n")
    (tmp_path / "project.spark.yaml").write_text(
        f'version: 1\nvars: {{nothing: " "}}\nscenes:\n  blank: {{{scene}}}\n  fine: {{prompt: "a kite"}}\n')
    result = cli("validate", cwd=tmp_path)
    assert result.code == 1
    [line] = result.err.splitlines()
    assert line.startswith(f"project.spark.yaml:{where}: error: scenes.blank.prompt")
    assert "renders to nothing" in line


def test_a_var_no_template_reads_is_a_warning(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "prompt.j2").write_text("{% include 'part.j2' %} at dusk")
    (tmp_path / "part.j2").write_text("{{ subjekt_in_include }}")
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\nvars: {subject: a kite, subjekt_in_include: a boat}\n'
        'scenes:\n  a: {prompt: "{{ subject }} in the sky"}\n  b: {prompt_file: prompt.j2}\n')
    for command in ("validate", "plan"):
        result = cli(command, "--var", "subjet=a plane", "--var", "subject=a bird",
                         "--var", "subjekt_in_include=a ship", cwd=tmp_path)
        assert result.code == 0, result.err
        assert result.err.splitlines() == [
            "--var:1:1: warning: 'subjet' is used by no template; did you mean 'subject'?"]


def test_a_var_files_variable_no_template_reads_is_a_warning_at_its_line(cli: Cli, tmp_path: Path) -> None:
    # terraform warns of an undeclared variable in a .tfvars file too: a misspelt one must not
    # pass as "No changes"
    (tmp_path / "prod.yaml").write_text("subject: a bird\nsubjet: a plane\n")
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\nvars: {subject: a kite}\n'
        'scenes:\n  a: {prompt: "{{ subject }} in the sky"}\n')
    for command in ("validate", "plan"):
        result = cli(command, "--var-file", "prod.yaml", cwd=tmp_path)
        assert result.code == 0, result.err
        assert result.err.splitlines() == [
            "prod.yaml:2:1: warning: 'subjet' is used by no template; did you mean 'subject'?"]


def test_a_spec_left_mid_merge_says_it_has_merge_conflicts_at_the_first_marker(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nscenes:\n<<<<<<< HEAD\n  a: {prompt: a red kite}\n=======\n  a: {prompt: a blue kite}\n"
        ">>>>>>> feature\n")
    for command in ("validate", "plan"):
        result = cli(command, cwd=tmp_path)
        assert result.code == 1
        assert result.err.splitlines() == [
            "project.spark.yaml:3:1: error: the file has merge conflicts (git's <<<<<<< / ======= / >>>>>>> "
            "lines); keep one side of each and run again"]


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_template_that_runs_too_long_is_an_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loops over long strings are not bounded by range's steps: a render has a deadline."""
    import time

    from sparkspec.config import jinja_env
    from sparkspec.config.jinja_env import TemplateProblem, Templates

    monkeypatch.setattr(jinja_env, "RENDER_SECONDS", 0.3)
    templates = Templates(tmp_path)
    started = time.monotonic()
    with pytest.raises(TemplateProblem, match="took more than 0.3 s to render"):
        templates.render_inline('{% for a in "x" * 90000 %}{% for b in "y" * 90000 %}{% endfor %}{% endfor %}', {})
    assert time.monotonic() - started < 5
    assert templates.render_inline("{% for i in range(3) %}{{ i }}{% endfor %}", {}) == "012"  # the timer is gone
    time.sleep(0.4)  # no alarm goes off later


def test_a_matrix_scenes_own_id_as_a_target_names_its_expansions(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\nscenes:\n  flavor:\n    matrix: {taste: [vanilla, caramel]}\n'
        '    prompt: "a {{ taste }} latte"\n')
    for flag in ("--target", "--replace"):
        result = cli("plan", flag, "scene.flavor", cwd=tmp_path)
        assert result.code == 1
        assert result.err.strip() == (f"error: {flag} scene.flavor: flavor is a matrix scene; name one of its "
                                      "expansions: flavor-vanilla, flavor-caramel"), result.err


def test_a_blank_prompt_of_one_matrix_value_names_the_expansion(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\nscenes:\n  f: {prompt: "{{ v }}", matrix: {v: ["ok", "  ", "tea"]}}\n')
    result = cli("validate", cwd=tmp_path)
    assert result.code == 1
    [line] = result.err.splitlines()
    assert line.startswith("project.spark.yaml:4:15: error: scenes.f.prompt: the prompt renders to nothing for f-")
    assert "(v='  ')" in line


def test_a_var_every_scene_sets_itself_is_a_warning(cli: Cli, tmp_path: Path) -> None:
    """Every scene shadows it (its vars, its matrix): the value given reaches no template."""
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\nscenes:\n  a: {prompt: "A {{ product }}", vars: {product: cup}}\n'
        '  b: {prompt: "B {{ product }}", matrix: {product: [tea, milk]}}\n')
    result = cli("validate", "--var", "product=mug", cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.err.splitlines() == [
        "--var:1:1: warning: 'product' is set in the vars or matrix of every scene whose template reads it, "
        "so this value reaches no template"]


def test_a_var_shadowed_wherever_it_is_read_is_a_warning_though_other_scenes_set_nothing(
        cli: Cli, tmp_path: Path) -> None:
    """Scene t reads no variable and sets none: that does not let a shadowed value through. A
    prompt file and what it includes count as the scene's templates."""
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\nscenes:\n  s: {prompt: "a {{ who }} cup", matrix: {who: [b, c]}}\n'
        '  t: {prompt: "hello"}\n  v: {prompt_file: p.txt}\n')
    (tmp_path / "p.txt").write_text('{% include "inc.txt" %} and {{ thing }}')
    (tmp_path / "inc.txt").write_text("deep {{ deep }}")
    result = cli("validate", "--var", "who=z", "--var", "deep=1", "--var", "thing=2", cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.err.splitlines() == [
        "--var:1:1: warning: 'who' is set in the vars or matrix of every scene whose template reads it, "
        "so this value reaches no template"]


@pytest.mark.parametrize("where", ["output_dir", "prompt_file", "include", "lock_path"])
def test_a_symlink_loop_is_the_worlds_error_in_one_line(cli: Cli, tmp_path: Path, where: str) -> None:
    """Python 3.11 reports a link that leads back to itself as a RuntimeError: it was exit 3."""
    (tmp_path / "p.txt").write_text('a cup {% include "inc.txt" %}' if where == "include" else "a cup")
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\n"
        "scenes:\n  a: {prompt_file: p.txt}\n")
    if where == "lock_path":
        assert cli("apply", "--auto-approve", cwd=tmp_path).code == 0
        (tmp_path / "renders" / "a.mp4").unlink()
    link = {"output_dir": "renders", "prompt_file": "p.txt", "include": "inc.txt", "lock_path": "renders/a.mp4"}[where]
    if where == "prompt_file":
        (tmp_path / "p.txt").unlink()
    (tmp_path / link).symlink_to(Path(link).name)
    result = cli("plan", cwd=tmp_path)
    assert result.code == 1, result.out + result.err
    [line] = result.err.splitlines()
    assert "symlink loop" in line and "internal error" not in line, line
