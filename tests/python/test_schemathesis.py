"""Schemathesis against the real binary's own OpenAPI document (issue 8).

`st run` (the Schemathesis CLI, in a subprocess) reads `/api/v1/openapi.json` from a fresh
`keygate serve` and calls every documented operation with an ADMIN key: the examples, coverage
(boundary and negative values, missing auth), fuzzing and stateful phases, the last one following
the document's links (create -> get / change / rotate / delete). Every answer must be a non-5xx
whose status, content type and body are the ones the document declares. Any failure fails this
test with Schemathesis's report (each failure with a curl line that reproduces it).

What keeps the run repeatable and bounded: a fixed seed, one worker, no example database,
`MAX_EXAMPLES` per operation and a hard time limit. The server is thrown away afterwards, so
destructive calls are allowed; the API-key creation and wallet throttles are raised so that
generated requests reach the logic behind them rather than answering 429.

Schemathesis never reuses values read from answers (no `extra-data-sources`, no inferred links):
the listing of API keys names the very key it authenticates with, and rotating, restricting or
deleting that key would turn the rest of the run into 401s. The explicit links of the document
only follow objects it created itself. The key is checked to still work at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests

SEED = 20261127
MAX_EXAMPLES = 50
STATEFUL_MAX_STEPS = 10
TIME_LIMIT_S = 900  # a hang stops here; a run takes a fraction of it
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"

CONFIG = f"""
seed = {SEED}
workers = 1
request-timeout = 10

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

[phases.examples.extra-data-sources]
responses = false
[phases.coverage.extra-data-sources]
responses = false
[phases.fuzzing.extra-data-sources]
responses = false
[phases.stateful]
max-steps = {STATEFUL_MAX_STEPS}
[phases.stateful.inference]
algorithms = []
"""


@pytest.fixture(scope="module")
def server(keygate_factory):
    return keygate_factory(
        extra_env={
            "KEYGATE_API_KEY_CREATIONS_PER_MINUTE": "100000",
            "KEYGATE_WALLET_REQUESTS_PER_MINUTE": "100000",
        }
    )


def documented_operations(url: str) -> int:
    doc = requests.get(f"{url}/api/v1/openapi.json", timeout=10).json()
    return sum(len(item) for item in doc["paths"].values())


def test_every_documented_operation_answers_as_documented(server, tmp_path):
    operations = documented_operations(server.url)
    assert operations >= 30, f"the document lists only {operations} operations"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(config), "--no-color",
        "run", f"{server.url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {server.admin_key}",
        "--checks", CHECKS,
    ]
    started = time.monotonic()
    # cwd: anything Schemathesis or Hypothesis writes stays in the test's temporary directory.
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_LIMIT_S)
    elapsed = time.monotonic() - started
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"Schemathesis found failures (exit {proc.returncode}):\n{report}"

    tested = re.search(r"Tested:\s+(\d+)", report)
    generated = re.search(r"(\d+) generated", report)
    assert tested and int(tested.group(1)) == operations, f"not every operation was tested:\n{report}"
    assert generated and int(generated.group(1)) >= operations * MAX_EXAMPLES // 2, report
    print(f"schemathesis: {tested.group(1)} operations, {generated.group(1)} test cases in {elapsed:.1f}s")

    # The run kept its credential to the end (a lost key would have turned it into 401s).
    r = requests.get(
        f"{server.url}/api/v1/api_keys/rate_limits",
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=10,
    )
    assert r.status_code == 200, f"the ADMIN key Schemathesis used no longer works: {r.status_code} {r.text}"
    assert server.running, server.log_tail()
    assert "panicked" not in server.log_text(), server.log_tail()
