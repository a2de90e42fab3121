"""Prompt templates: the sandbox, strict variables, project-only includes, variable precedence."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkspec.errors import SpecError
from sparkspec.config.loader import LoadOptions, load_project
from sparkspec.config.jinja_env import JINJA_GLOBALS, Templates, TemplateProblem, inside
from sparkspec.config.jinja_sandbox import environment


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "prompts").mkdir(parents=True)
    (tmp_path / "secret.j2").write_text("the secret\n")
    return project


# -- rendering --------------------------------------------------------------------------------


def test_renders_names_filters_loops_and_macros(root: Path) -> None:
    t = Templates(root)
    ctx = {"product": "espresso machine", "n": 3, "tastes": ["vanilla", "mocha"], "on": True}
    assert t.render_inline("A {{ product }}", ctx) == "A espresso machine"
    assert t.render_inline("{{ n }} cups, {{ on }}", ctx) == "3 cups, True"
    assert t.render_inline("{{ product | upper }}", ctx) == "ESPRESSO MACHINE"
    assert t.render_inline("{% for x in tastes %}{{ x }}{% if not loop.last %}, {% endif %}{% endfor %}",
                           ctx) == "vanilla, mocha"
    assert t.render_inline("{% macro shot(x) %}[{{ x }}]{% endmacro %}{{ shot(product) }}", ctx) == \
        "[espresso machine]"
    assert t.render_inline("no template at all\n", ctx) == "no template at all"


names = st.sampled_from(["a", "b", "product", "n"])
texts = st.text(st.characters(blacklist_characters="{}%#", blacklist_categories=("Cs",)), max_size=12)
pieces = st.lists(st.one_of(texts, names.map(lambda n: "{{ " + n + " }}"),
                            names.map(lambda n: "{{" + n + "}}")), max_size=6)
values = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
                   st.lists(st.integers(), max_size=2))


@settings(max_examples=60, deadline=None)
@given(pieces, st.dictionaries(names, values))
def test_fast_path_renders_exactly_as_jinja(parts: list[str], context: dict[str, Any]) -> None:
    """Text-and-names prompts skip Jinja's compiler; the result must not change (a None printed
    is an error either way: a variable left without a value)."""
    source = "".join(parts)

    def printable(value: Any) -> Any:
        if value is None:
            raise LookupError("none printed")
        return value

    reference = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, finalize=printable)
    with tempfile.TemporaryDirectory() as name:
        templates = Templates(Path(name))
        problem = None
        try:
            expected: str | None = reference.from_string(source).render(context)
        except jinja2.UndefinedError:
            expected, problem = None, "undefined variable"
        except LookupError:
            expected, problem = None, "has no value here"
        if problem is not None:
            with pytest.raises(TemplateProblem, match=problem):
                templates.render_inline(source, context)
        else:
            assert templates.render_inline(source, context) == expected
            assert templates.render_inline(source, context) == expected  # from its cache


def test_plain_names_are_told_from_jinja_globals_without_jinja(tmp_path: Path) -> None:
    """`{{ range }}` is Jinja's global, not a variable: the fast path must know every global."""
    assert JINJA_GLOBALS == set(environment(tmp_path).globals)
    templates = Templates(tmp_path)
    assert templates.render_inline("{{ range(2) | list }} {{ x }}", {"x": 1}) == "[0, 1] 1"
    with pytest.raises(TemplateProblem, match="undefined variable"):
        templates.render_inline("{{ y }}", {})


def test_a_spec_without_jinja_templates_loads_without_importing_jinja(tmp_path: Path) -> None:
    """Jinja's import is a tenth of a plan's start-up: text and `{{ name }}` prompts skip it."""
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nname: plain\nprovider: {type: local}\nvars: {who: a cat}\n"
        "scenes:\n  one: {prompt: a dog}\n  two: {prompt: '{{ who }} on a sofa'}\n")
    code = ("import sys; from pathlib import Path; from sparkspec.config.loader import LoadOptions, load_project; "
            "p = load_project(Path('project.spark.yaml'), LoadOptions()).project; "
            "print(p.scenes['two'].prompt, 'jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["a", "cat", "on", "a", "sofa", "False"]


def test_undefined_variable_is_an_error_with_its_line(root: Path) -> None:
    t = Templates(root)
    with pytest.raises(TemplateProblem) as info:
        t.render_inline("line one\nline two {{ missing }}", {})
    assert info.value.message == "undefined variable: 'missing' is undefined"
    assert (info.value.file, info.value.line) == (None, 2)
    with pytest.raises(TemplateProblem, match="undefined variable"):
        t.render_inline("{{ product.colour }}", {"product": "x"})
    with pytest.raises(TemplateProblem, match="undefined variable"):
        t.render_inline("{% for x in missing %}{{ x }}{% endfor %}", {})
    # `default` is the explicit way out
    assert t.render_inline("{{ missing | default('none') }}", {}) == "none"


@pytest.mark.parametrize("source", ["A {{ ['red', 'blue'] | random }} car", "{{ lipsum(1) }}",
                                    "{% set x = [1, 2] | random %}{{ x }}"])
def test_a_template_that_differs_on_every_run_is_refused(root: Path, source: str) -> None:
    # Its key would change on every plan: every apply would render it and pay again.
    with pytest.raises(TemplateProblem, match="differ on every run, so every apply would render it and pay again"):
        Templates(root).render_inline(source, {})


def test_syntax_error_has_its_line(root: Path) -> None:
    with pytest.raises(TemplateProblem) as info:
        Templates(root).render_inline("ok\n{% if %}", {})
    assert info.value.message.startswith("template syntax: ")
    assert (info.value.file, info.value.line) == (None, 2)


# -- the sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ product.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].system('true') }}",
    "{{ product['__class__'] }}",
    "{{ product|attr('__class__') }}",
    "{{ '{0.__class__}'.format(product) }}",
])
def test_sandbox_refuses_unsafe_access(root: Path, source: str) -> None:
    with pytest.raises(TemplateProblem) as info:
        Templates(root).render_inline(source, {"product": "espresso"})
    assert info.value.message.startswith(("not allowed in a template", "undefined variable")), info.value.message


@pytest.mark.parametrize("source", [
    "{{ 'ab' * 400000000 }}",
    "{{ 400000000 * 'ab' }}",
    "{{ [1, 2] * 100000 }}",
    "{{ 2 ** 99999999 }}",
    # Doubling in a loop, widths, replacements and separators (each made hundreds of MB to GB):
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "{{ '%200000000s' % 'a' }}",
    "{{ '%.200000000f' % 1 }}",
    "{{ '%s'|format('a') ~ 'x'|center(200000000) }}",
    "{{ '{:>200000000}'.format('a') }}",
    "{{ 'a'.ljust(200000000) }}",
    "{{ 'x'|indent(200000000) }}",
    "{{ ('a' * 100000)|replace('a', 'b' * 100000) }}",
    "{{ range(100000)|join('x' * 100000) }}",
])
def test_templates_cannot_build_huge_values(root: Path, source: str) -> None:
    with pytest.raises(TemplateProblem) as info:
        Templates(root).render_inline(source, {})
    assert info.value.message.startswith("not allowed in a template"), info.value.message


def test_small_repeats_and_powers_still_render(root: Path) -> None:
    assert Templates(root).render_inline("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 3 * 4 }}", {}) == "ababab 1024 12"
    assert Templates(root).render_inline(
        "{{ '%s and %d'|format('ok', 3) }}|{{ 'a-b'|replace('-', ' ') }}|{{ [1, 2]|join(', ') }}|"
        "{{ 'q' ~ 1 ~ 'r' }}|{{ 'hi %s' % 'you' }}|{{ '{:>3}'.format('z') }}|{{ 'ab'.center(4) }}|{{ 1 + 2 }}|"
        "{{ users|join(',', attribute='n') }}|{{ 'x'|indent(2, first=True) }}|{{ 'a b'|wordwrap(1) }}",
        {"users": [{"n": "x"}, {"n": "y"}]}) == "ok and 3|a b|1, 2|q1r|hi you|  z| ab |3|x,y|  x|a\nb"


def test_sandbox_problem_is_a_diagnostic_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nscenes:\n  intro:\n    prompt: "{{ product.__class__.__mro__ }}"\n'
        "vars: {product: x}\n")
    with pytest.raises(SpecError) as info:
        load_project(tmp_path / "project.spark.yaml")
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.column, diag.path) == (4, 13, "scenes.intro.prompt")
    assert "not allowed in a template" in diag.message


# -- files, includes and imports -----------------------------------------------------------------


def test_prompt_files_include_and_import_from_the_project(root: Path) -> None:
    (root / "prompts" / "macros.j2").write_text("{% macro shot(x) %}close-up of {{ x }}{% endmacro %}")
    (root / "prompts" / "style.j2").write_text("in {{ light }} light")
    (root / "prompts" / "main.j2").write_text(
        '{% import "prompts/macros.j2" as m %}{{ m.shot(product) }}, {% include "prompts/style.j2" %}\n')
    out = Templates(root).render_file("prompts/main.j2", {"product": "a cup", "light": "warm"})
    assert out == "close-up of a cup, in warm light"


@pytest.mark.parametrize("reference", ["../secret.j2", "prompts/../../secret.j2", "/etc/hostname", "{abs}"])
def test_include_and_import_cannot_leave_the_project(root: Path, reference: str) -> None:
    reference = reference.format(abs=root.parent / "secret.j2")
    for statement in (f'{{% include "{reference}" %}}', f'{{% import "{reference}" as x %}}',
                      f'{{% extends "{reference}" %}}'):
        (root / "prompts" / "main.j2").write_text(f"first line\n{statement}\n")
        with pytest.raises(TemplateProblem) as info:
            Templates(root).render_file("prompts/main.j2", {})
        absolute = reference.startswith("/")
        assert ("an absolute path; give it relative to the spec's folder" if absolute
                else "outside the project folder") in info.value.message, info.value.message
        assert info.value.file == str(root / "prompts" / "main.j2")
        assert info.value.line == 2
        with pytest.raises(TemplateProblem, match="an absolute path" if absolute else "outside the project folder"):
            Templates(root).render_inline(statement, {})


def test_symlink_out_of_the_project_is_refused(root: Path) -> None:
    os.symlink(root.parent / "secret.j2", root / "prompts" / "link.j2")
    with pytest.raises(TemplateProblem, match="outside the project folder"):
        Templates(root).render_inline('{% include "prompts/link.j2" %}', {})
    assert inside(root, "prompts/link.j2") is None
    assert inside(root, "prompts/../prompts/x.j2") == root / "prompts" / "x.j2"
    assert inside(root, "") is None
    assert inside(root, "/abs") is None


def test_errors_inside_included_files_name_that_file_and_line(root: Path) -> None:
    (root / "prompts" / "inner.j2").write_text("one\ntwo\nthree {{ nope }}\n")
    (root / "prompts" / "outer.j2").write_text('outer\n{% include "prompts/inner.j2" %}\n')
    with pytest.raises(TemplateProblem) as info:
        Templates(root).render_file("prompts/outer.j2", {})
    assert info.value.file == str(root / "prompts" / "inner.j2")
    assert info.value.line == 3
    (root / "prompts" / "inner.j2").write_text("one\n{% endif %}\n")
    with pytest.raises(TemplateProblem) as info:
        Templates(root).render_file("prompts/outer.j2", {})
    assert (info.value.file, info.value.line) == (str(root / "prompts" / "inner.j2"), 2)
    assert info.value.message.startswith("template syntax:")


def test_a_byte_order_mark_is_no_part_of_a_prompt_file(root: Path) -> None:
    """Notepad's BOM stayed in the prompt: another key, so a paid render again, for the same text."""
    (root / "prompts" / "plain.j2").write_bytes(b"hello {{ who }}")
    (root / "prompts" / "bom.j2").write_bytes(b"\xef\xbb\xbfhello {{ who }}")
    (root / "prompts" / "outer.j2").write_bytes(b'\xef\xbb\xbf{% include "prompts/bom.j2" %}')
    templates = Templates(root)
    assert templates.render_file("prompts/bom.j2", {"who": "you"}) == "hello you"
    assert templates.render_file("prompts/outer.j2", {"who": "you"}) == "hello you"


def test_missing_prompt_file(root: Path) -> None:
    with pytest.raises(TemplateProblem, match="template file not found: prompts/none.j2"):
        Templates(root).render_file("prompts/none.j2", {})


# -- variable precedence ----------------------------------------------------------------------

PRECEDENCE_SPEC = """\
version: 1
vars:
  a: spec
  b: spec
  c: spec
  d: spec
  e: spec
scenes:
  plain:
    prompt: "{{ a }} {{ b }} {{ c }} {{ d }} {{ e }}"
  local:
    vars: {d: scene, e: scene}
    prompt: "{{ a }} {{ b }} {{ c }} {{ d }} {{ e }}"
  variant:
    vars: {d: scene, e: scene}
    matrix: {e: [matrix]}
    prompt: "{{ a }} {{ b }} {{ c }} {{ d }} {{ e }}"
"""


def test_variable_precedence(tmp_path: Path) -> None:
    """vars < --var-file (later files win) < --var < a scene's vars < its matrix values."""
    spec = tmp_path / "project.spark.yaml"
    spec.write_text(PRECEDENCE_SPEC)
    (tmp_path / "one.yaml").write_text("b: file1\nc: file1\nd: file1\ne: file1\n")
    (tmp_path / "two.yaml").write_text("c: file2\nd: file2\ne: file2\n")
    options = LoadOptions(variables=("d=cli", "e=cli"),
                          var_files=(str(tmp_path / "one.yaml"), str(tmp_path / "two.yaml")))
    scenes = load_project(spec, options).project.scenes
    assert scenes["plain"].prompt == "spec file1 file2 cli cli"
    assert scenes["local"].prompt == "spec file1 file2 scene scene"
    assert scenes["variant-matrix"].prompt == "spec file1 file2 scene matrix"
    assert load_project(spec).project.scenes["plain"].prompt == "spec spec spec spec spec"


def test_var_values(tmp_path: Path) -> None:
    spec = tmp_path / "project.spark.yaml"
    spec.write_text('version: 1\nvars: {n: 2, items: [x, y], nested: {k: v}}\nscenes:\n'
                    '  s:\n    prompt: "{{ n + 1 }} {{ items | join(\'+\') }} {{ nested.k }} {{ word }}"\n')
    project = load_project(spec, LoadOptions(variables=("word=a=b",))).project
    # YAML values keep their types; --var values are text, split at the first `=`
    assert project.scenes["s"].prompt == "3 x+y v a=b"
    with pytest.raises(SpecError) as info:
        load_project(spec, LoadOptions(variables=(" n =5", "word=x")))
    (diag,) = info.value.diagnostics
    assert diag.path == "scenes.s.prompt"
    assert diag.message.startswith("template failed: TypeError")


def test_vars_change_the_fingerprint(tmp_path: Path) -> None:
    spec = tmp_path / "project.spark.yaml"
    spec.write_text('version: 1\nvars: {a: 1}\nscenes:\n  s:\n    prompt: "x"\n')
    one = load_project(spec).project.vars_sha256
    assert load_project(spec, LoadOptions(variables=("a=2",))).project.vars_sha256 != one
    assert load_project(spec).project.vars_sha256 == one
