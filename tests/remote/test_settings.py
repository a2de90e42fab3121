"""Which remote a run uses: spec, environment, CLI; and no credentials in the spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import Cli
from sparkspec.config.loader import load_project
from sparkspec.config.model import RemoteConfig
from sparkspec.errors import RemoteError, SpecError
from sparkspec.remote.settings import redact, resolve_remote

SPEC = RemoteConfig(url="s3://team/renders", endpoint="https://s3.example.com", region="eu-west-1", claim_ttl=60)


def test_spec_settings_apply_without_environment() -> None:
    settings = resolve_remote(SPEC, {})
    assert settings is not None
    assert (settings.url, settings.endpoint, settings.region, settings.claim_ttl, settings.mode) == \
        ("s3://team/renders", "https://s3.example.com", "eu-west-1", 60, "read-write")
    assert settings.signer == "unsigned"


def test_environment_overrides_the_spec() -> None:
    env = {"SPARKSPEC_REMOTE": "file:///srv/cache/", "AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2",
           "SPARKSPEC_REMOTE_CLAIM_TTL": "5", "SPARKSPEC_REMOTE_MODE": "read-only",
           "SPARKSPEC_REMOTE_SIGNING_KEY": "k"}
    settings = resolve_remote(SPEC, env)
    assert settings is not None
    assert (settings.url, settings.endpoint, settings.claim_ttl, settings.mode) == \
        ("file:///srv/cache", None, 5.0, "read-only")  # an S3 endpoint is nothing to a shared folder
    assert len(settings.signer) == 16 and "k" not in repr(settings)
    on_s3 = resolve_remote(SPEC, {**env, "SPARKSPEC_REMOTE": "s3://other/x"})
    assert on_s3 is not None and on_s3.endpoint == "http://b:2"
    assert resolve_remote(SPEC, {"AWS_ENDPOINT_URL": "http://a:1"}).endpoint == "http://a:1"  # type: ignore[union-attr]
    folder = resolve_remote(SPEC, {"SPARKSPEC_REMOTE": "file:///srv/cache", "AWS_ENDPOINT_URL_S3": "http://b:2"})
    assert folder is not None and folder.display == "file:///srv/cache"


def test_cli_switches_win() -> None:
    assert resolve_remote(SPEC, {}, remote="off") is None
    assert resolve_remote(SPEC, {"SPARKSPEC_REMOTE_MODE": "off"}) is None
    ro = resolve_remote(SPEC, {"SPARKSPEC_REMOTE_MODE": "off"}, mode="read-only")
    assert ro is not None and not ro.writable
    assert resolve_remote(None, {}) is None


@pytest.mark.parametrize("env", [{"SPARKSPEC_REMOTE": "ftp://x/y"}, {"SPARKSPEC_REMOTE_MODE": "sometimes"},
                                 {"SPARKSPEC_REMOTE_CLAIM_TTL": "-3"}, {"SPARKSPEC_REMOTE_CLAIM_TTL": "7200"},
                                 {"SPARKSPEC_REMOTE": "s3://"}])
def test_bad_environment_is_one_clear_error(env: dict[str, str]) -> None:
    with pytest.raises(RemoteError):
        resolve_remote(SPEC, env)


def test_redact_removes_credential_values() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_SESSION_TOKEN": "tok-en-123"}
    assert redact("failed with s3cr3t-value and tok-en-123", env) == "failed with <redacted> and <redacted>"


def test_spec_remote_is_loaded(tmp_path: Path) -> None:
    spec = tmp_path / "project.spark.yaml"
    spec.write_text("version: 1\nremote: {url: 's3://team/x', endpoint: 'http://127.0.0.1:9000', claim_ttl: 30}\n"
                    "scenes:\n  a: {prompt: hi, duration: 4}\n")
    project = load_project(spec).project
    assert project.remote == RemoteConfig(url="s3://team/x", endpoint="http://127.0.0.1:9000", claim_ttl=30.0)


def test_credentials_in_the_spec_are_an_error_pointing_to_the_environment(tmp_path: Path) -> None:
    spec = tmp_path / "project.spark.yaml"
    spec.write_text("version: 1\nremote:\n  url: 's3://team/x'\n  secret_access_key: abc\n  urll: x\n"
                    "  signing_key: abc\nscenes:\n  a: {prompt: hi, duration: 4}\n")
    with pytest.raises(SpecError) as raised:
        load_project(spec)
    messages = [str(d) for d in raised.value.diagnostics]
    assert any(":4:3: error: remote.secret_access_key:" in m and "AWS_ACCESS_KEY_ID" in m
               and "environment" in m for m in messages), messages
    assert any("unknown key 'urll'; did you mean 'url'?" in m for m in messages), messages
    assert any(":6:3: error: remote.signing_key:" in m and "SPARKSPEC_REMOTE_SIGNING_KEY" in m
               for m in messages), messages


@pytest.mark.parametrize(("url", "problem"), [("bucket/x", "is not a remote URL"),
                                             ("file://relative/path", "a file:// remote names a local folder")])
def test_a_bad_remote_url_in_the_spec_is_a_diagnostic(tmp_path: Path, url: str, problem: str) -> None:
    # What plan and apply refuse, validate reports at its line.
    spec = tmp_path / "project.spark.yaml"
    spec.write_text(f"version: 1\nremote: {{url: '{url}'}}\nscenes:\n  a: {{prompt: hi, duration: 4}}\n")
    with pytest.raises(SpecError) as raised:
        load_project(spec)
    assert any(problem in str(d) and ":2:" in str(d) for d in raised.value.diagnostics), raised.value.diagnostics


@pytest.mark.parametrize("remote", ["{url: 's3://AKIDTEAM:hunter2-topsecret@team/x'}",
                                    "{url: 's3://team/x', endpoint: 'http://u:hunter2-topsecret@127.0.0.1:9'}",
                                    "{url: 's3://team/x?X-Amz-Signature=hunter2-topsecret'}"])
def test_a_credential_inside_a_remote_url_in_the_spec_is_an_error_pointing_to_the_environment(
        tmp_path: Path, cli: Cli, remote: str) -> None:
    (tmp_path / "project.spark.yaml").write_text(f"version: 1\nremote: {remote}\nscenes:\n  a: {{prompt: hi}}\n")
    for verb in ("validate", "plan"):
        run = cli(verb, cwd=tmp_path)
        assert run.code == 1, run
        assert "credentials never go in the spec" in run.err and "AWS_ACCESS_KEY_ID" in run.err, run.err
        assert "hunter2" not in run.out + run.err


@pytest.mark.parametrize("env", [{"SPARKSPEC_REMOTE": "s3://AKIDTEAM:hunter2-topsecret@team/x"},
                                 {"AWS_ENDPOINT_URL_S3": "http://u:hunter2-topsecret@127.0.0.1:9"}])
def test_a_credential_inside_a_remote_url_in_the_environment_is_one_line_never_echoed(
        tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    (tmp_path / "project.spark.yaml").write_text("version: 1\nremote: {url: 's3://team/x'}\nscenes:\n  a: {prompt: hi}\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = cli("plan", cwd=tmp_path)
    assert run.code == 1, run
    assert "credentials never go in" in run.err and "AWS_ACCESS_KEY_ID" in run.err, run.err
    assert "hunter2" not in run.out + run.err


def test_redact_removes_the_userinfo_of_any_url() -> None:
    assert redact("GET http://u:hunter2@127.0.0.1:9/b failed; s3://k:p@b/x", {}) == \
        "GET http://<redacted>@127.0.0.1:9/b failed; s3://<redacted>@b/x"


def test_a_store_whose_client_refuses_its_settings_never_fails_a_plan(tmp_path: Path, cli: Cli) -> None:
    """az:// with no account known: the Azure client refuses to be made. Like a store that
    does not answer, that is one warning with the store's words, and the plan goes on."""
    (tmp_path / "project.spark.yaml").write_text("version: 1\nprovider: {type: local}\nremote: {url: 'az://team/x'}\n"
                                                 "scenes:\n  a: {prompt: hi}\n")
    run = cli("plan", cwd=tmp_path)
    assert run.code == 0, run
    assert "1 to render" in run.out
    warnings = run.err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: remote az://team/x: ") and \
        "Account must be specified" in warnings[0], run.err
    assert cli("push", cwd=tmp_path).code == 1  # about the remote itself: an error


@pytest.mark.parametrize("url", ["file://shared/renders", "file://./renders"])
def test_a_file_url_with_a_host_is_a_bad_setting_even_for_a_plan(tmp_path: Path, cli: Cli, url: str) -> None:
    (tmp_path / "project.spark.yaml").write_text(f"version: 1\nprovider: {{type: local}}\nremote: {{url: '{url}'}}\n"
                                                 "scenes:\n  a: {prompt: hi}\n")
    run = cli("plan", cwd=tmp_path)
    assert run.code == 1 and "a file:// remote names a local folder (file:///path)" in run.err, run


@pytest.mark.parametrize("url", ["s3:///prefix", "gs:///team/x"])
def test_a_remote_url_without_a_bucket_is_refused_from_the_environment_too(tmp_path: Path, cli: Cli, url: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """From SPARKSPEC_REMOTE it was taken: listings went to the store's list of buckets and read
    as an empty remote, exit 0 (the spec's schema refused the same URL)."""
    (tmp_path / "project.spark.yaml").write_text("version: 1\nprovider: {type: local}\nscenes:\n  a: {prompt: hi}\n")
    monkeypatch.setenv("SPARKSPEC_REMOTE", url)
    run = cli("remote", "status", cwd=tmp_path)
    assert run.code == 1 and f"{url!r} names no bucket" in run.err, run


@pytest.mark.parametrize("url", ["s3:///nobucket", "gs:///team/x"])
def test_a_spec_url_without_a_bucket_is_one_line(tmp_path: Path, cli: Cli, url: str) -> None:
    """The schema's pattern and the loader's own check each said it: two lines for one mistake."""
    (tmp_path / "project.spark.yaml").write_text(
        f'version: 1\nprovider: {{type: local}}\nremote:\n  url: "{url}"\nscenes:\n  a: {{prompt: hi}}\n')
    run = cli("validate", cwd=tmp_path)
    assert run.code == 1
    assert run.err.splitlines() == [f"project.spark.yaml:4:8: error: remote.url: {url!r} names no bucket; "
                                    f"use {url.split(':')[0]}://bucket/prefix"], run.err
