"""Provider types and protocols in the spec: `ark` (upstream's API) beside `spark` (the gateway,
with its `generation` or `queue` protocol), their defaults, and what validation says about them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import run_main
from sparkspec.config.loader import LoadOptions, load_project
from sparkspec.config.model import Project
from sparkspec.keys import scene_key

SPEC = "project.spark.yaml"


def load(tmp_path: Path, text: str, provider: str | None = None) -> tuple[Project, list[str]]:
    (tmp_path / SPEC).write_text(text)
    loaded = load_project(tmp_path / SPEC, LoadOptions(provider=provider))
    return loaded.project, [f"{d.line}:{d.column} {d.severity}: {d.message}" for d in loaded.warnings]


def test_ark_has_its_own_model_key_variable_and_default_protocol(tmp_path: Path) -> None:
    project, _ = load(tmp_path, 'version: 1\nprovider: {type: ark}\nscenes:\n  s: {prompt: "x"}\n')
    p = project.provider
    assert (p.type, p.model, p.api_key_env, p.protocol) == \
        ("ark", "seedance-1-0-pro-fast-251015", "ARK_API_KEY", "generation")
    project, _ = load(tmp_path, "version: 1\nprovider: {type: ark, model: ep-20261130-abc, "
                                "base_url: 'https://ark.cn-beijing.volces.com/api/v3'}\nscenes:\n  s: {prompt: x}\n")
    assert (project.provider.model, project.provider.base_url) == \
        ("ep-20261130-abc", "https://ark.cn-beijing.volces.com/api/v3")


def test_spark_takes_the_queue_protocol(tmp_path: Path) -> None:
    project, _ = load(tmp_path, "version: 1\nprovider: {type: spark, protocol: queue}\nscenes:\n  s: {prompt: x}\n")
    assert (project.provider.type, project.provider.protocol, project.provider.api_key_env) == \
        ("spark", "queue", "SPARK_API_KEY")


def test_provider_flag_switches_type_and_leaves_the_specs_model_behind(tmp_path: Path) -> None:
    text = "version: 1\nprovider: {type: spark, protocol: queue, api_key_env: MY_KEY}\nscenes:\n  s: {prompt: x}\n"
    project, _ = load(tmp_path, text, provider="ark")
    assert (project.provider.type, project.provider.model, project.provider.api_key_env) == \
        ("ark", "seedance-1-0-pro-fast-251015", "ARK_API_KEY")
    project, _ = load(tmp_path, "version: 1\nprovider: {type: ark, model: ep-1}\nscenes:\n  s: {prompt: x}\n",
                      provider="spark")
    assert (project.provider.type, project.provider.model) == ("spark", "spark_dance_v1_0_pro_fast")


@pytest.mark.parametrize("provider,message", [
    ("{type: spark, protocol: sse}", "provider.protocol"),
    ("{type: ark, protocol: queue}", "protocol is an option of type spark only"),
    ("{type: spark, model: seedance-1-0-pro-fast-251015}", "needs `type: ark`"),
    ("{type: ark, model: spark_dance_v1_0_pro_fast}", "the gateway's model id, which ModelArk does not know"),
    ("{type: modelark}", "provider.type"),
])
def test_bad_provider_settings_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str,
                                          message: str) -> None:
    (tmp_path / SPEC).write_text(f"version: 1\nprovider: {provider}\nscenes:\n  s: {{prompt: x}}\n")
    code, _, err = run_main(["validate"], tmp_path, monkeypatch)
    assert code == 1 and message in err and "Traceback" not in err
    assert err.startswith("project.spark.yaml:2:")


def test_upstream_text_commands_in_a_prompt_warn_for_ark_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = ("version: 1\nprovider: {type: ark}\nscenes:\n  a: {prompt: \"a kite --rs 720p --dur 5\"}\n"
            "  b:\n    prompt: \"a kite, --seed=7\"\n  c: {prompt: \"a kite -- flying--fast, --rsvp\"}\n")
    (tmp_path / SPEC).write_text(text)
    code, _, err = run_main(["validate"], tmp_path, monkeypatch)
    assert code == 0
    lines = [line for line in err.splitlines() if "text command" in line]
    assert len(lines) == 2
    assert lines[0].startswith("project.spark.yaml:4:") and "'--rs'" in lines[0] and "warning:" in lines[0]
    assert lines[1].startswith("project.spark.yaml:6:") and "'--seed'" in lines[1]
    (tmp_path / SPEC).write_text(text.replace("type: ark", "type: spark"))
    code, _, err = run_main(["validate"], tmp_path, monkeypatch)
    assert code == 0 and "text command" not in err
    code, _, err = run_main(["validate", "--provider", "ark"], tmp_path, monkeypatch)
    assert code == 0 and err.count("text command") == 2


def test_spark_and_ark_renders_never_share_a_key(tmp_path: Path) -> None:
    keys = {}
    for kind in ("spark", "ark", "local"):
        project, _ = load(tmp_path, f"version: 1\nprovider: {{type: {kind}}}\nscenes:\n  s: {{prompt: x, seed: 1}}\n")
        keys[kind] = scene_key(project, project.scenes["s"], None)
    assert len({k.hex for k in keys.values()}) == 3
    assert keys["ark"].inputs["provider"] == "ark" and keys["ark"].inputs["model"] == "seedance-1-0-pro-fast-251015"
    # The protocol decides how a render is asked for, not its pixels: same key.
    project, _ = load(tmp_path, "version: 1\nprovider: {type: spark, protocol: queue}\nscenes:\n  s: {prompt: x, seed: 1}\n")
    assert scene_key(project, project.scenes["s"], None).hex == keys["spark"].hex


def test_the_providers_task_options_hold_for_every_scene_that_sets_none(tmp_path: Path) -> None:
    """`service_tier: flex` on the provider was accepted and never sent: billed at full price."""
    project, _ = load(tmp_path, """\
version: 1
provider: {type: spark, service_tier: flex, execution_expires_after: 7200, callback_url: "https://example.com/cb"}
defaults: {execution_expires_after: 3600}
scenes:
  a: {prompt: "x"}
  b: {prompt: "y", service_tier: default, callback_url: "https://example.com/other"}
""")
    a, b = project.scenes["a"], project.scenes["b"]
    assert (a.service_tier, a.execution_expires_after, a.callback_url) == ("flex", 3600, "https://example.com/cb")
    assert (b.service_tier, b.execution_expires_after, b.callback_url) == ("default", 3600, "https://example.com/other")
    plain, _ = load(tmp_path, 'version: 1\nprovider: {type: spark}\nscenes:\n  a: {prompt: "x"}\n')
    assert scene_key(plain, plain.scenes["a"], None).hex == scene_key(project, a, None).hex  # not a new render
