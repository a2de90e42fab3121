"""`sparkspec doctor` against the fake gateway: key, reachability, and never a create."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from cli_runner import run_main
from fakeapi import FakeSparkAPI
from sparkspec.commands.doctor import default_config, diagnose
from sparkspec.config.model import ProviderConfig

SPEC = "version: 1\nprovider: {type: spark, parallelism: 3, requests_per_minute: 90}\nscenes:\n  s: {prompt: x}\n"


def doctor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    return run_main(["doctor", *args], tmp_path, monkeypatch)


def test_a_working_key_passes_and_nothing_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     fake_api: FakeSparkAPI) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    monkeypatch.setenv("SPARK_API_KEY", fake_api.api_key)
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    code, out, err = doctor(tmp_path, monkeypatch)
    assert code == 0, out + err
    assert "FAIL" not in out and "key in SPARK_API_KEY is accepted" in out
    for shown in ("provider     spark", "generation protocol", f"base URL     {fake_api.base_url}",
                  "parallelism  3", "90 per minute"):
        assert shown in out
    assert fake_api.requests["query"] == 2 and fake_api.requests["create"] == 0  # the key, and a wrong one


def test_a_wrong_key_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_api: FakeSparkAPI) -> None:
    monkeypatch.setenv("SPARK_API_KEY", "wrong")
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    code, out, _ = doctor(tmp_path, monkeypatch)  # no spec yet: the defaults
    assert code == 1 and "FAIL" in out and "refused the key" in out and "parallelism  10" in out
    assert fake_api.requests["create"] == 0


def test_a_403_fails_with_the_apis_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         fake_api: FakeSparkAPI) -> None:
    fake_api.inject("query", "status", status=403, body={"message": "model not enabled for this key"})
    monkeypatch.setenv("SPARK_API_KEY", fake_api.api_key)
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    code, out, _ = doctor(tmp_path, monkeypatch)
    assert code == 1 and "model not enabled for this key" in out


def test_a_missing_key_fails_before_any_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fake_api: FakeSparkAPI) -> None:
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    code, out, _ = doctor(tmp_path, monkeypatch)
    assert code == 1 and "SPARK_API_KEY is not set" in out and sum(fake_api.requests.values()) == 0


def test_a_host_that_does_not_resolve_fails() -> None:
    asked: list[str] = []

    def resolve(host: str, port: int) -> object:  # no DNS query leaves the test
        asked.append(host)
        raise socket.gaierror(-2, "Name or service not known")

    report = diagnose(ProviderConfig(), {"SPARK_API_KEY": "k", "SPARK_BASE_URL": "https://api.example.invalid"},
                      resolve=resolve)
    assert not report.ok and asked == ["api.example.invalid"]
    assert any("api.example.invalid does not resolve" in line for line in report.lines)


def test_the_default_base_url_is_the_operators_api_host() -> None:
    report = diagnose(ProviderConfig(), {}, resolve=lambda host, port: None)
    assert "base URL     https://cloud.vtrix.ai" in report.lines and not report.ok


def test_an_api_that_does_not_answer_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SPARK_API_KEY", "k")
    monkeypatch.setenv("SPARK_BASE_URL", f"http://127.0.0.1:{port}")
    code, out, _ = doctor(tmp_path, monkeypatch)
    assert code == 1 and "could not connect" in out


def test_local_needs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = doctor(tmp_path, monkeypatch, "--provider", "local")
    assert code == 0 and "provider     local" in out
    assert "per minute" not in out  # the API's request limit means nothing to renders made here


def test_a_spec_that_needs_a_var_is_checked_with_it_and_a_subfolder_names_its_project(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\nscenes:\n  a: {prompt: "a {{ x }}"}\n')
    code, out, err = doctor(tmp_path, monkeypatch)
    assert code == 1 and "undefined variable" in err + out
    code, out, err = doctor(tmp_path, monkeypatch, "--var", "x=kite")
    assert code == 0 and "provider     local" in out, err
    (tmp_path / "prompts").mkdir()
    code, out, err = doctor(tmp_path / "prompts", monkeypatch)
    assert code == 1 and "this folder is inside the project at" in err and "SPARK_API_KEY" not in out


def test_ark_without_a_spec_checks_arks_own_key_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        fake_api: FakeSparkAPI) -> None:
    monkeypatch.setenv("SPARK_API_KEY", "wrong")  # spark's variables must not be what is checked
    monkeypatch.setenv("SPARK_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ARK_BASE_URL", fake_api.ark_base_url)
    code, out, _ = doctor(tmp_path, monkeypatch, "--provider", "ark")
    assert code == 1 and "ARK_API_KEY is not set" in out and sum(fake_api.requests.values()) == 0
    monkeypatch.setenv("ARK_API_KEY", fake_api.api_key)
    code, out, err = doctor(tmp_path, monkeypatch, "--provider", "ark")
    assert code == 0, out + err
    for shown in ("provider     ark", "upstream (ModelArk)", f"base URL     {fake_api.ark_base_url}",
                  "key in ARK_API_KEY is accepted"):
        assert shown in out
    # the impossible task was read on ModelArk's own path, with ark's key
    assert fake_api.requests["query"] == 2 and fake_api.requests["create"] == 0  # the key, and a wrong one
    assert fake_api.api_authorization[-2:] == [f"Bearer {fake_api.api_key}", "Bearer sparkspec-doctor-not-a-key"]


def test_ark_without_a_spec_shows_what_a_spec_of_type_ark_would_use(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, bare, _ = doctor(tmp_path, monkeypatch, "--provider", "ark")
    (tmp_path / "project.spark.yaml").write_text("version: 1\nprovider: {type: ark}\nscenes:\n  s: {prompt: x}\n")
    _, with_spec, _ = doctor(tmp_path, monkeypatch)
    assert bare == with_spec and "ARK_API_KEY is not set" in bare and "ark.ap-southeast.bytepluses.com" in bare


def test_ark_wrong_key_and_unresolvable_host_name_arks_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 fake_api: FakeSparkAPI) -> None:
    monkeypatch.setenv("ARK_API_KEY", "wrong")
    monkeypatch.setenv("ARK_BASE_URL", fake_api.ark_base_url)
    code, out, _ = doctor(tmp_path, monkeypatch, "--provider", "ark")
    assert code == 1 and "refused the key" in out and "ARK_API_KEY" in out
    report = diagnose(default_config("ark"), {"ARK_API_KEY": "k", "ARK_BASE_URL": "https://ark.example.invalid"},
                      resolve=_no_dns)
    assert not report.ok and any("check provider.base_url or ARK_BASE_URL" in line for line in report.lines)


def _no_dns(host: str, port: int) -> object:
    raise socket.gaierror(-2, "Name or service not known")


class _Paths(httpx.AsyncBaseTransport):
    """The real transport, noting the path of each request."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("protocol,path", [("generation", "/model/v1/generation/task/"),
                                           ("queue", "/model/v1/queue/spark_dance_v1_0_pro_fast/requests/")])
def test_each_gateway_protocol_reads_the_impossible_task_where_it_reads_tasks(fake_api: FakeSparkAPI, protocol: str,
                                                                               path: str) -> None:
    for key, accepted in ((fake_api.api_key, True), ("wrong", False)):
        paths = _Paths()
        report = diagnose(replace(ProviderConfig(), protocol=protocol),
                          {"SPARK_API_KEY": key, "SPARK_BASE_URL": fake_api.base_url},
                          transport=paths, resolve=lambda host, port: None)
        assert report.ok is accepted, report.lines
        # Accepted: asked again with a wrong key, which must be refused for the 404 to prove anything.
        assert len(paths.paths) == (2 if accepted else 1) and all(p.startswith(path) for p in paths.paths), paths.paths
    assert fake_api.requests["create"] == 0


def test_doctor_checks_the_teams_remote_with_a_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = "version: 1\nprovider: {type: local}\nremote: {url: 'file://%s'}\nscenes:\n  a: {prompt: hi}\n"
    (tmp_path / "project.spark.yaml").write_text(spec % (tmp_path / "team"))
    code, out, _ = run_main(["doctor"], tmp_path, monkeypatch)
    assert code == 0 and f"remote       file://{tmp_path / 'team'} (read-write)" in out
    assert "ok   the remote answers; nothing pushed to it yet" in out
    assert not (tmp_path / "team").exists()  # a read: nothing written
    (tmp_path / "team" / "v1").mkdir(parents=True)
    (tmp_path / "team" / "v1" / "format.json").write_text('{"layout": 9}')
    code, out, _ = run_main(["doctor"], tmp_path, monkeypatch)
    assert code == 1 and "FAIL remote" in out and "layout 9" in out
    (tmp_path / "afile").write_text("")
    (tmp_path / "project.spark.yaml").write_text(spec % (tmp_path / "afile" / "team"))
    code, out, _ = run_main(["doctor"], tmp_path, monkeypatch)
    assert code == 1 and "is a file, where the remote's folder would be" in out
    (tmp_path / "project.spark.yaml").write_text(spec.replace("remote: {url: 'file://%s'}\n", ""))
    code, out, _ = run_main(["doctor"], tmp_path, monkeypatch)
    assert code == 0 and "remote       none" in out


def test_a_base_url_that_answers_404_to_any_key_is_not_the_api(fake_api: FakeSparkAPI) -> None:
    """A wrong path (the router's own 404) passed as 'the key is accepted'; the next apply failed."""
    for key in (fake_api.api_key, "wrong"):
        report = diagnose(ProviderConfig(), {"SPARK_API_KEY": key, "SPARK_BASE_URL": fake_api.base_url + "/v2"},
                          resolve=lambda host, port: None)
        assert not report.ok, report.lines
        assert any("answers 404 whatever the key, so it is not the API's base URL" in line for line in report.lines)
