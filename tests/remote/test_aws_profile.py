"""Credentials from an AWS profile (~/.aws/credentials and ~/.aws/config under HOME), as the AWS
CLI and boto3 read them: keys, region and endpoint_url, never printed. End to end against
SeaweedFS, whose S3 gateway checks every request's signature against its one identity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_runner import run_cli
from seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer
from sparkspec.config.model import RemoteConfig
from sparkspec.errors import RemoteError
from sparkspec.remote.awsprofile import read_profile
from sparkspec.remote.settings import resolve_remote
from sparkspec.remote.store import open_store

SPEC = """\
version: 1
name: profiled
provider: {type: local, parallelism: 1}
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 5}
scenes:
  intro: {prompt: "a paper boat on a pond"}
"""


def aws_files(home: Path, credentials: str, config: str = "") -> dict[str, str]:
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "credentials").write_text(credentials)
    (home / ".aws" / "config").write_text(config)
    return {"HOME": str(home)}


def test_a_profile_reads_like_the_aws_cli(tmp_path: Path) -> None:
    env = aws_files(tmp_path, "[default]\naws_access_key_id = AKIDEFAULT\naws_secret_access_key = s3cr3t-default\n"
                    "[team]\naws_access_key_id = AKITEAM\naws_secret_access_key = s3cr3t-team\n"
                    "aws_session_token = t0ken-team\nregion = us-west-2\n",
                    "[default]\nregion = eu-west-1\n[profile team]\nregion = ap-south-1\n"
                    "endpoint_url = http://127.0.0.1:9\n")
    default = read_profile(env)
    assert default is not None and (default.name, default.access_key_id, default.region) == \
        ("default", "AKIDEFAULT", "eu-west-1")
    team = read_profile(dict(env, AWS_PROFILE="team"))
    assert team is not None
    assert (team.access_key_id, team.secret_access_key, team.session_token) == ("AKITEAM", "s3cr3t-team", "t0ken-team")
    assert team.region == "us-west-2"  # the credentials file wins, as in boto3
    assert team.endpoint_url == "http://127.0.0.1:9"
    assert "s3cr3t" not in repr(team) and "AKITEAM" not in repr(team)
    assert read_profile(dict(env, AWS_DEFAULT_PROFILE="team")) == team
    assert read_profile({"HOME": str(tmp_path / "nobody")}) is None  # no files, no profile named: none

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "creds").write_text("[team]\naws_access_key_id = AKIMOVED\naws_secret_access_key = moved-secret\n")
    found = read_profile({"HOME": str(tmp_path / "nobody"), "AWS_PROFILE": "team",
                          "AWS_SHARED_CREDENTIALS_FILE": str(moved / "creds")})
    assert found is not None and found.access_key_id == "AKIMOVED"


@pytest.mark.parametrize("credentials, config, words", [
    ("", "", "AWS_PROFILE='team': no such profile in"),
    ("", "[profile team]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = default\n",
     "gets its keys through role_arn, which sparkspec does not follow; export keys instead: eval "
     "\"$(aws configure export-credentials --profile team --format env)\""),
    ("", "[profile team]\nsso_session = corp\n", "gets its keys through sso_session"),
    ("[team]\naws_access_key_id = AKIONLY\n", "", "has only one of aws_access_key_id and aws_secret_access_key"),
    ("[team\naws_access_key_id = x\n", "", "credentials: cannot read this AWS file"),
])
def test_a_profile_it_cannot_use_is_one_line(tmp_path: Path, credentials: str, config: str, words: str) -> None:
    env = dict(aws_files(tmp_path, credentials, config), AWS_PROFILE="team")
    with pytest.raises(RemoteError) as caught:
        read_profile(env)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_endpoint_precedence_environment_spec_profile(tmp_path: Path) -> None:
    env = aws_files(tmp_path, "", "[default]\nendpoint_url = http://profile:1\n")
    spec = RemoteConfig(url="s3://team/renders", endpoint="http://spec:2")
    bare = RemoteConfig(url="s3://team/renders")

    def endpoint(config: RemoteConfig, environ: dict[str, str]) -> str | None:
        settings = resolve_remote(config, environ)
        assert settings is not None
        return settings.endpoint

    assert endpoint(bare, env) == "http://profile:1"
    assert endpoint(spec, env) == "http://spec:2"
    assert endpoint(spec, dict(env, AWS_ENDPOINT_URL_S3="http://env:3")) == "http://env:3"
    folder = resolve_remote(RemoteConfig(url=f"file://{tmp_path}/shared"), dict(env, AWS_PROFILE="absent"))
    assert folder is not None and folder.endpoint is None  # profiles are an S3 matter


def test_a_profile_secret_never_reaches_a_message(tmp_path: Path) -> None:
    env = dict(aws_files(tmp_path, "[team]\naws_access_key_id = AKIPROFILE123\n"
                         "aws_secret_access_key = profile-secret-value\n"), AWS_PROFILE="team")
    settings = resolve_remote(RemoteConfig(url="s3://team/renders", endpoint="http://127.0.0.1:9"), env)
    assert settings is not None
    store = open_store(settings, env)
    message = str(store.failure(RuntimeError("denied for AKIPROFILE123 / profile-secret-value"), "GET x"))
    assert "profile-secret-value" not in message and "AKIPROFILE123" not in message
    assert message.count("<redacted>") == 2


def _profile_home(home: Path, server: SeaweedServer, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPARK"))}
    env.update(aws_files(home, f"[team]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {secret}\n",
                         f"[profile team]\nregion = {REGION}\nendpoint_url = {server.endpoint}\n"))
    env["AWS_PROFILE"] = "team"
    return env


@pytest.mark.slow  # SeaweedFS starts in seconds, and a real render
def test_a_profile_reaches_a_signature_checking_store(seaweedfs_server: SeaweedServer, tmp_path: Path) -> None:
    url = seaweedfs_server.bucket()
    first = tmp_path / "first"
    first.mkdir()
    (first / "project.spark.yaml").write_text(SPEC + f"remote: {{url: '{url}'}}\n")
    env = _profile_home(tmp_path / "home-first", seaweedfs_server, SECRET_KEY)
    made = run_cli("apply", "--auto-approve", "--json", cwd=first, env=env)
    assert made.code == 0, made.err
    assert [e["scene"] for e in made.events() if e["event"] == "pushed"] == ["intro"]  # keys, region, endpoint
    status = run_cli("remote", "status", cwd=first, env=env)
    assert status.code == 0 and "local and remote:               1" in status.out, status.out

    second = tmp_path / "second"
    second.mkdir()
    for name in ("project.spark.yaml", "project.spark.lock"):
        (second / name).write_bytes((first / name).read_bytes())
    wrong = "not-the-secret-key-at-all"
    denied = run_cli("pull", cwd=second, env=_profile_home(tmp_path / "home-wrong", seaweedfs_server, wrong))
    assert denied.code == 1
    assert "SignatureDoesNotMatch" in denied.out + denied.err or "AccessDenied" in denied.out + denied.err, denied
    assert wrong not in denied.out + denied.err
    pulled = run_cli("pull", cwd=second, env=_profile_home(tmp_path / "home-second", seaweedfs_server, SECRET_KEY))
    assert pulled.code == 0, pulled.out + pulled.err
    assert (second / "renders" / "intro.mp4").read_bytes() == (first / "renders" / "intro.mp4").read_bytes()
