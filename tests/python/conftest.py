"""Fixtures for the seed-client tests: the real keygate binary, one fresh server per test module.

- `keygate` (module scope): a running `keygate serve` on a free 127.0.0.1 port with a fresh data
  directory, a random KEYGATE_MASTER_KEY and KEYGATE_LOG=debug. It has `.url`, `.admin_key`,
  `.data_dir`, `.log_text()` (stdout + stderr), `.data_files()` and `.stop()`; it is stopped
  (SIGTERM, then SIGKILL) when the module is done.
- `keygate_factory` (session scope): starts more servers, e.g. with extra flags or environment:
  `keygate_factory(extra_args=[...], extra_env={...})`. All are stopped at the end of the session.
- `http_log` (session scope): every exchange made through `requests` (see kgtest.HttpRecorder).
- `upstream` (module scope): a recording OpenAI-shaped upstream on 127.0.0.1 (kggateway.RecordingUpstream).
- `gateway` (module scope): the module server's native API for the gateway tests (kggateway.Gateway).

The binary is `KEYGATE_BIN`, else `<repo>/target/debug/keygate`. A missing binary fails every test
that needs it with a message that says how to build it; nothing is skipped.
"""

from __future__ import annotations

import os

import pytest

import kggateway
import kgtest

# Loopback traffic must never go through a proxy from the caller's environment.
for _var in ("NO_PROXY", "no_proxy"):
    _cur = os.environ.get(_var, "")
    os.environ[_var] = ",".join(x for x in (_cur, "127.0.0.1", "localhost", "::1") if x)


@pytest.fixture(scope="session")
def keygate_factory(tmp_path_factory):
    started: list[kgtest.KeygateServer] = []

    def start(extra_args=(), extra_env=None) -> kgtest.KeygateServer:
        server = kgtest.KeygateServer(tmp_path_factory.mktemp("keygate"), extra_args, extra_env)
        started.append(server)
        try:
            return server.start()
        except kgtest.KeygateError as e:
            error = str(e)
        pytest.fail(error, pytrace=False)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def keygate(keygate_factory):
    server = keygate_factory()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def http_log():
    recorder = kgtest.HttpRecorder()
    recorder.install()
    yield recorder
    recorder.uninstall()


@pytest.fixture(scope="module")
def native(keygate):
    """The native management API of the module's server, as its first ADMIN key."""
    return kgtest.NativeApi(keygate.url, keygate.admin_key)


@pytest.fixture(scope="module")
def upstream():
    server = kggateway.RecordingUpstream().start()
    yield server
    server.stop()
    assert server.errors == [], f"the recording upstream failed: {server.errors}"


@pytest.fixture(scope="module")
def gateway(keygate):
    return kggateway.Gateway(keygate.url, keygate.admin_key)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show the tail of the module server's output beside the traceback."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("keygate")
    if report.failed and isinstance(server, kgtest.KeygateServer):
        report.sections.append(("keygate output", server.log_tail()))
