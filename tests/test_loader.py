"""The loader: how values resolve, what matrices expand to, what warns, and what passes."""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkspec import cli
from sparkspec.errors import SpecError
from sparkspec.config.loader import LoadOptions, load_project, slugify
from sparkspec.config.model import Project

SPEC = "project.spark.yaml"


def load(tmp_path: Path, text: str, options: LoadOptions = LoadOptions()) -> Project:
    (tmp_path / SPEC).write_text(text)
    return load_project(tmp_path / SPEC, options).project


def errors(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / SPEC).write_text(text)
    with pytest.raises(SpecError) as info:
        load_project(tmp_path / SPEC)
    return [f"{d.line}:{d.column} {d.path}: {d.message}"
            for d in sorted(info.value.diagnostics) if d.severity == "error"]


def png(path: Path, size: tuple[int, int] = (640, 480)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(buffer, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


# -- resolution of values ---------------------------------------------------------------------------


def test_api_defaults(tmp_path: Path) -> None:
    project = load(tmp_path, 'version: 1\nscenes:\n  s:\n    prompt: "x"\n')
    s = project.scenes["s"]
    assert (s.resolution, s.ratio, s.duration, s.frames, s.seed, s.camera_fixed, s.watermark) == \
        ("1080p", "16:9", 5, None, None, False, False)
    assert (s.service_tier, s.execution_expires_after, s.callback_url, s.description) == (None, None, None, None)
    assert (project.name, project.output_dir, project.salt) == (tmp_path.name, "renders", "")
    p = project.provider
    assert (p.type, p.model, p.api_key_env, p.parallelism, p.base_url, p.price_per_million_tokens) == \
        ("spark", "spark_dance_v1_0_pro_fast", "SPARK_API_KEY", 10, None, None)
    assert p.requests_per_minute == 500


def test_local_renders_on_every_cpu_by_default(tmp_path: Path) -> None:
    project = load(tmp_path, 'version: 1\nprovider: {type: local}\nscenes:\n  s:\n    prompt: "x"\n')
    assert project.provider.parallelism == (os.cpu_count() or 1)
    project = load(tmp_path, 'version: 1\nprovider: {type: local, parallelism: 3, requests_per_minute: 60}\n'
                             'scenes:\n  s:\n    prompt: "x"\n')
    assert (project.provider.parallelism, project.provider.requests_per_minute) == (3, 60)


def test_scene_beats_defaults(tmp_path: Path) -> None:
    project = load(tmp_path, """\
version: 1
defaults: {resolution: 720p, ratio: "4:3", seed: 1, camera_fixed: true, watermark: true,
           service_tier: flex, execution_expires_after: 7200, callback_url: "https://a.example/cb"}
scenes:
  inherit:
    prompt: "x"
  own:
    prompt: "y"
    resolution: 480p
    ratio: "9:16"
    seed: 2
    camera_fixed: false
    watermark: false
    service_tier: default
    execution_expires_after: 3600
    callback_url: "http://b.example/cb"
    description: "the own scene"
""")
    inherit, own = project.scenes["inherit"], project.scenes["own"]
    assert (inherit.resolution, inherit.ratio, inherit.seed, inherit.camera_fixed, inherit.watermark,
            inherit.service_tier, inherit.execution_expires_after, inherit.callback_url) == \
        ("720p", "4:3", 1, True, True, "flex", 7200, "https://a.example/cb")
    assert (own.resolution, own.ratio, own.seed, own.camera_fixed, own.watermark, own.service_tier,
            own.execution_expires_after, own.callback_url, own.description) == \
        ("480p", "9:16", 2, False, False, "default", 3600, "http://b.example/cb", "the own scene")


@pytest.mark.parametrize("defaults, scene, expected", [
    ("", "", ("duration", 5)),
    ("duration: 4", "", ("duration", 4)),
    ("frames: 97", "", ("frames", 97)),
    ("frames: 97", "duration: 3", ("duration", 3)),  # the more specific level wins
    ("duration: 3", "frames: 57", ("frames", 57)),
    ("duration: 3", "duration: 6", ("duration", 6)),
    ("frames: 97", "frames: 29", ("frames", 29)),
])
def test_duration_or_frames_the_most_specific_wins(tmp_path: Path, defaults: str, scene: str,
                                                   expected: tuple[str, int]) -> None:
    text = (f"version: 1\ndefaults: {{{defaults}}}\nscenes:\n  s:\n    prompt: \"x\"\n"
            + (f"    {scene}\n" if scene else ""))
    s = load(tmp_path, text).scenes["s"]
    assert (("duration", s.duration) if s.frames is None else ("frames", s.frames)) == expected
    assert (s.duration is None) != (s.frames is None)


@pytest.mark.parametrize("ratio", ["16:9", "4:3", "1:1", "3:4", "9:16", "21:9"])
def test_unquoted_ratio_is_the_ratio_written(tmp_path: Path, ratio: str) -> None:
    project = load(tmp_path, f"version: 1\ndefaults: {{ratio: {ratio}}}\nscenes:\n"
                             f"  a:\n    prompt: x\n  b:\n    prompt: y\n    ratio: {ratio}\n")
    assert project.scenes["a"].ratio == project.scenes["b"].ratio == ratio


def test_an_unquoted_date_is_the_text_written(tmp_path: Path) -> None:
    # YAML 1.1 reads 2024-05-01 as a date (a timestamp tag nobody wrote); a spec means the text.
    project = load(tmp_path, "version: 1\nvars: {launch: 2024-05-01 10:00:00}\n"
                             "scenes:\n  a:\n    prompt: \"launch {{ launch }}\"\n    description: 2024-05-01\n")
    assert project.scenes["a"].prompt == "launch 2024-05-01 10:00:00"
    assert project.scenes["a"].description == "2024-05-01"


def test_first_frame_defaults_to_adaptive(tmp_path: Path) -> None:
    png(tmp_path / "assets" / "a.png")
    project = load(tmp_path, """\
version: 1
scenes:
  still:
    prompt: "x"
    first_frame: {image: assets/a.png}
  chained:
    prompt: "y"
    first_frame: {scene: still}
  plain:
    prompt: "z"
""")
    assert [project.scenes[s].ratio for s in ("still", "chained", "plain")] == ["adaptive", "adaptive", "16:9"]
    assert project.scenes["chained"].upstream == "still"
    image = project.scenes["still"].image
    assert image is not None and image.path == tmp_path.resolve() / "assets" / "a.png"
    assert (image.width, image.height) == (640, 480)


def test_images_files_urls_data_urls_and_templates(tmp_path: Path) -> None:
    data = base64.b64encode(png(tmp_path / "assets" / "espresso.png", (500, 400))).decode()
    project = load(tmp_path, f"""\
version: 1
vars: {{product: espresso}}
scenes:
  file:
    prompt: "x"
    first_frame: {{image: "assets/{{{{ product }}}}.png"}}
  remote:
    prompt: "x"
    first_frame: {{image: "https://cdn.example.com/frame.png"}}
  inline:
    prompt: "x"
    first_frame: {{image: "data:image/png;base64,{data}"}}
""")
    file, remote, inline = (project.scenes[s].image for s in ("file", "remote", "inline"))
    assert file is not None and file.text == "assets/espresso.png" and file.width == 500
    assert remote is not None and remote.url == "https://cdn.example.com/frame.png" and remote.path is None
    assert inline is not None and inline.url is not None and inline.url.startswith("data:image/png;base64,")
    assert (inline.width, inline.height) == (500, 400)


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    project = load(tmp_path, """\
version: 1
vars:
  look: &look {resolution: 720p, ratio: "1:1", seed: 3}
scenes:
  a:
    <<: *look
    prompt: "x"
  b:
    <<: *look
    seed: 4
    prompt: "y"
""")
    a, b = project.scenes["a"], project.scenes["b"]
    assert (a.resolution, a.ratio, a.seed) == ("720p", "1:1", 3)
    assert (b.resolution, b.seed) == ("720p", 4)  # an explicit key beats the merged one


# -- matrices ---------------------------------------------------------------------------------


def test_matrix_expansion_ids_and_values(tmp_path: Path) -> None:
    project = load(tmp_path, """\
version: 1
vars: {product: latte}
scenes:
  flavor:
    matrix:
      taste: [Vanilla Bean, "caramel!"]
      size: [1.5, true]
    vars: {cup: mug}
    prompt: "{{ size }} {{ taste }} {{ product }} in a {{ cup }}"
sequences:
  all: {scenes: [flavor-vanilla-bean-1-5, flavor-caramel-true]}
""")
    assert list(project.scenes) == ["flavor-vanilla-bean-1-5", "flavor-vanilla-bean-true",
                                    "flavor-caramel-1-5", "flavor-caramel-true"]
    assert project.scenes["flavor-caramel-true"].prompt == "True caramel! latte in a mug"
    assert {s.source_id for s in project.scenes.values()} == {"flavor"}
    assert project.sequences["all"].scenes == ("flavor-vanilla-bean-1-5", "flavor-caramel-true")


@pytest.mark.parametrize("value, slug", [
    ("Vanilla Bean", "vanilla-bean"), ("  a__b  ", "a-b"), ("Crème brûlée", "cr-me-br-l-e"),
    (1.5, "1-5"), (True, "true"), (42, "42"), ("x--y", "x-y"),
    ("拿铁", "xd4a87835"), ("摩卡", "xf2b9a88c"), ("☕", "xcf1f91e6"), ("!!", "x233d26e9"),
    ("拿铁 latte", "latte-x73641302"), ("抹茶 latte", "latte-xc95ba0b6"),  # more than accents lost: tagged
])
def test_slugify(value: object, slug: str) -> None:
    assert slugify(value) == slug


def test_matrix_scene_chained_by_expanded_id(tmp_path: Path) -> None:
    project = load(tmp_path, """\
version: 1
scenes:
  base:
    matrix: {taste: [a, b]}
    prompt: "{{ taste }}"
  next:
    first_frame: {scene: base-b}
    prompt: "after"
""")
    assert project.scenes["next"].upstream == "base-b"


# -- warnings --------------------------------------------------------------------------------


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    long = "word " * 120
    (tmp_path / SPEC).write_text(f"version: 1\ndefaults: {{seed: -1}}\nscenes:\n"
                                 f"  a:\n    prompt: \"{long}\"\n  b:\n    prompt: x\n    seed: -1\n")
    loaded = load_project(tmp_path / SPEC)
    assert [(w.line, w.column, w.path, w.message.split(":")[0]) for w in sorted(loaded.warnings)] == [
        (2, 18, "defaults.seed", "seed -1 asks the API for a random seed"),
        (5, 13, "scenes.a.prompt", "the rendered prompt is 600 characters; the API advises at most 500"),
        (8, 11, "scenes.b.seed", "seed -1 asks the API for a random seed"),
    ]
    assert all(w.severity == "warning" for w in loaded.warnings)
    assert loaded.project.scenes["a"].seed == -1


def test_validate_prints_warnings_and_needs_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / SPEC).write_text("version: 1\nscenes:\n  a:\n    prompt: x\n    seed: -1\n"
                                 "sequences:\n  all: {scenes: [a]}\n")
    monkeypatch.delenv("SPARK_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["sparkspec", "validate"])
    with CliRunner().isolation() as (out, err, *_):
        cli.main()  # returns: exit 0
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    assert stdout == "project.spark.yaml: valid (1 scene, 1 sequence(s)).\n"
    assert stderr.startswith("project.spark.yaml:5:11: warning: scenes.a.seed: seed -1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [SPEC]


# -- errors the corpus does not spell out -----------------------------------------------------


def test_errors_are_unique(tmp_path: Path) -> None:
    assert errors(tmp_path, """\
version: 1
scenes:
  flavor:
    matrix: {taste: [a, b, c]}
    prompt: "{{ nope }}"
  z:
    prompt: "x"
    duration: 99
""") == ["5:13 scenes.flavor.prompt: undefined variable: 'nope' is undefined",
         "8:15 scenes.z.duration: 99 is not in 2..12"]


def test_template_error_in_a_folded_block_points_into_it(tmp_path: Path) -> None:
    assert errors(tmp_path, 'version: 1\nscenes:\n  s:\n    prompt: |\n      one\n      two {{ x }}\n') == [
        "6:7 scenes.s.prompt: undefined variable: 'x' is undefined"]


def test_spec_under_another_name_and_folder(tmp_path: Path) -> None:
    (tmp_path / "sub" / "prompts").mkdir(parents=True)
    (tmp_path / "sub" / "prompts" / "p.j2").write_text("hello {{ who }}\n")
    (tmp_path / "sub" / "spot.yml").write_text(
        "version: 1\nvars: {who: world}\nscenes:\n  s:\n    prompt_file: prompts/p.j2\n")
    project = load_project(tmp_path / "sub" / "spot.yml", display="sub/spot.yml").project
    assert project.scenes["s"].prompt == "hello world"
    assert project.root == (tmp_path / "sub").resolve()
    assert project.display_path == "sub/spot.yml"


def test_whole_number_floats_count_as_integers(tmp_path: Path) -> None:
    """The schema (JSON Schema: 4.0 is an integer) accepts them, so they must take effect."""
    floats = load(tmp_path, "version: 1\nprovider: {parallelism: 2.0}\ndefaults: {seed: 7.0}\nscenes:\n"
                            "  a: {prompt: x, duration: 4.0, execution_expires_after: 3600.0}\n"
                            "  b: {prompt: y, frames: 33.0}\n")
    ints = load(tmp_path, "version: 1\nprovider: {parallelism: 2}\ndefaults: {seed: 7}\nscenes:\n"
                          "  a: {prompt: x, duration: 4, execution_expires_after: 3600}\n"
                          "  b: {prompt: y, frames: 33}\n")
    assert floats.provider.parallelism == 2
    assert floats.scenes == ints.scenes
    assert errors(tmp_path, "version: 1\nscenes:\n  a: {prompt: x, duration: 4.5, frames: 30.0}\n") == [
        "3:3 scenes.a: set duration or frames, not both",
        "3:28 scenes.a.duration: 4.5 is not an integer",
        "3:41 scenes.a.frames: 30 is not 25+4n in [29, 289]; use 29 or 33",
    ]


def test_matrix_values_that_slugify_to_nothing_give_distinct_ids(tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text("""\
version: 1
scenes:
  latte:
    matrix: {flavor: [拿铁, 摩卡, "☕"]}
    prompt: "a cup of {{ flavor }}"
""", encoding="utf-8")
    project = load_project(tmp_path / "project.spark.yaml").project
    assert list(project.scenes) == ["latte-xd4a87835", "latte-xf2b9a88c", "latte-xcf1f91e6"]
    assert project.scenes["latte-xf2b9a88c"].prompt == "a cup of 摩卡"


def test_matrix_values_that_share_their_latin_part_give_distinct_ids(tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text("""\
version: 1
scenes:
  cup:
    matrix: {taste: ["拿铁 latte", "抹茶 latte"], size: [大, 小]}
    prompt: "a {{ size }} {{ taste }}"
""", encoding="utf-8")
    project = load_project(tmp_path / "project.spark.yaml").project
    assert len(project.scenes) == 4 and all(sid.startswith("cup-latte-x") for sid in project.scenes)


def test_scene_ids_that_yaml_1_1_reads_as_booleans_or_numbers_stay_names(tmp_path: Path) -> None:
    # YAML 1.1 reads plain `no`, `on` and `1e3` as other types; as ids, and where a value
    # names a scene, the user meant what they wrote.
    project = load(tmp_path, """\
version: 1
scenes:
  no:
    prompt: a
  on:
    prompt: b
    first_frame: {scene: no}
  1e3:
    prompt: c
sequences:
  off: {scenes: [no, on, 1e3]}
""")
    assert list(project.scenes) == ["no", "on", "1e3"]
    assert project.scenes["on"].upstream == "no"
    assert project.sequences["off"].scenes == ("no", "on", "1e3")


def test_a_boolean_where_a_boolean_belongs_stays_one(tmp_path: Path) -> None:
    project = load(tmp_path, "version: 1\nscenes:\n  a: {prompt: x, camera_fixed: yes}\n")
    assert project.scenes["a"].camera_fixed is True
    assert errors(tmp_path, "version: 1\nscenes:\n  a: {prompt: x, seed: no}\n") == [
        "3:24 scenes.a.seed: false is not an integer"]


# -- bad input found by an audit: one located line each, never an internal error ----------------


def test_an_image_whose_header_claims_a_huge_size_is_an_error_at_its_line(tmp_path: Path) -> None:
    """Pillow refuses such a header (DecompressionBombError), which escaped as an internal error."""
    from PIL import Image

    small = io.BytesIO()
    Image.new("RGB", (640, 480)).save(small, "GIF")
    header = bytearray(small.getvalue())
    header[6:10] = b"\xff" * 4  # 65535 x 65535
    (tmp_path / "bomb.gif").write_bytes(bytes(header))
    data_url = "data:image/gif;base64," + base64.b64encode(bytes(header)).decode()
    found = errors(tmp_path, "version: 1\nprovider: {type: local}\nscenes:\n"
                             "  a: {prompt: x, first_frame: {image: bomb.gif}}\n"
                             f"  b: {{prompt: y, first_frame: {{image: \"{data_url}\"}}}}\n")
    assert len(found) == 2 and all("larger than the API takes" in e for e in found), found
    assert found[0].startswith("4:") and found[1].startswith("5:")


@pytest.mark.parametrize("field, value, where", [
    ("first_frame", '{image: "a\\0.png"}', "scenes.a.first_frame.image"),
    ("prompt_file", '"a\\0.j2"', "scenes.a.prompt_file"),
    ("prompt", '"a kite\\x00 at dusk"', "scenes.a.prompt"),
])
def test_a_nul_character_in_a_value_is_an_error_at_it(tmp_path: Path, field: str, value: str, where: str) -> None:
    prompt = "" if field == "prompt" else "prompt: x, "
    found = errors(tmp_path, f"version: 1\nprovider: {{type: local}}\nscenes:\n  a: {{{prompt}{field}: {value}}}\n")
    assert any(where in e and "NUL character" in e for e in found), found


def test_a_nul_character_in_output_dir_or_an_included_name_is_an_error(tmp_path: Path) -> None:
    found = errors(tmp_path, 'version: 1\nprovider: {type: local}\noutput_dir: "r\\0"\nscenes:\n  a: {prompt: x}\n')
    assert found == ["3:13 output_dir: contains a NUL character (\\0), which no file name, prompt or URL can "
                     "hold; remove it"]
    found = errors(tmp_path, 'version: 1\nprovider: {type: local}\nscenes:\n'
                             '  a: {prompt: "{% include \\"a\\\\x00.j2\\" %}"}\n')
    assert found == ["4:15 scenes.a.prompt: template file a\\0.j2: a NUL character is in its name"], found


def test_a_variable_with_no_value_is_an_error_where_a_prompt_prints_it(tmp_path: Path) -> None:
    """`product:` with nothing after it is null: the prompt said "A None on a counter", and
    that was rendered and paid for. A null that is only tested (`if`) is fine."""
    (tmp_path / "prompt.j2").write_text("first line\nA {{ product }} here\n")
    found = errors(tmp_path, 'version: 1\nprovider: {type: local}\nvars:\n  product:\nscenes:\n'
                             '  a: {prompt: "A {{ product }} on a counter"}\n'
                             '  b: {prompt: "A cup{% if product %} of {{ product }}{% endif %}"}\n'
                             '  c: {prompt: "{{ product ~ \\"\\" if product else \\"mug\\" }} and {{ none }}"}\n'
                             '  d: {prompt_file: prompt.j2}\n')
    assert [e.split(":", 1)[0] + " " + e.split(" ", 2)[1] for e in found] == [
        "6 scenes.a.prompt:", "8 scenes.c.prompt:", "2 scenes.d.prompt_file:"], found  # d: prompt.j2's line 2
    assert all("has no value here" in e for e in found), found
    assert "'product'" in found[0]


def test_a_null_in_a_var_file_is_an_error_where_it_is_printed(tmp_path: Path) -> None:
    (tmp_path / "prod.yaml").write_text("product:\n")
    (tmp_path / SPEC).write_text('version: 1\nprovider: {type: local}\nvars: {product: mug}\n'
                                 'scenes:\n  a: {prompt: "A {{ product }}"}\n')
    with pytest.raises(SpecError) as info:
        load_project(tmp_path / SPEC, LoadOptions(var_files=(str(tmp_path / "prod.yaml"),)))
    assert ["has no value here" in d.message for d in info.value.diagnostics if d.severity == "error"] == [True]


@pytest.mark.parametrize("output_dir, message", [
    (".sparkspec", "'.sparkspec' is inside .sparkspec/, sparkspec's own state"),
    (".sparkspec/renders", "'.sparkspec/renders' is inside .sparkspec/, sparkspec's own state"),
    ("project.spark.yaml", "'project.spark.yaml' is a file; output_dir names a folder"),
])
def test_an_output_dir_that_cannot_be_one_is_a_validation_error(tmp_path: Path, output_dir: str, message: str) -> None:
    """Both passed validate: renders went into the git-ignored state folder, or apply failed later."""
    found = errors(tmp_path, f"version: 1\nprovider: {{type: local}}\noutput_dir: {output_dir}\nscenes:\n  a: {{prompt: x}}\n")
    assert len(found) == 1 and found[0].startswith("3:13 output_dir: " + message), found


@pytest.mark.parametrize("url", ["https://", "https:///x.png", "https://exa mple.com/x.png"])
def test_an_https_first_frame_without_a_host_is_a_validation_error(tmp_path: Path, url: str) -> None:
    found = errors(tmp_path, f'version: 1\nprovider: {{type: local}}\nscenes:\n  a: {{prompt: x, first_frame: {{image: "{url}"}}}}\n')
    assert found == [f"4:39 scenes.a.first_frame.image: {url!r} is not a URL the API can fetch (no host, or a space "
                     "in it)"], found


def test_a_boolean_where_a_number_goes_is_said_as_the_spec_spells_it(tmp_path: Path) -> None:
    found = errors(tmp_path, "version: 1\nprovider: {type: local}\nscenes:\n  a: {prompt: x, frames: true}\n")
    assert found == ["4:26 scenes.a.frames: true is not an integer"], found  # was Python's "True"


def test_an_image_path_too_long_to_open_is_an_error_at_its_line_beside_the_others(tmp_path: Path) -> None:
    """It was one line with an absolute path and no location, and the spec's other errors went unsaid."""
    name = "a" * 300 + ".png"
    found = errors(tmp_path, f"version: 1\nprovider: {{type: local}}\nscenes:\n  a: {{prompt: x, first_frame: {{image: {name}}}}}\n"
                             "  b: {prompt: y, duration: 14}\n")
    assert found == [f"4:39 scenes.a.first_frame.image: {name}: cannot read it (File name too long)",
                     "5:28 scenes.b.duration: 14 is not in 2..12"], found
