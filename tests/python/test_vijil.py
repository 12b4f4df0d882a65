"""The unmodified Vijil client (`vijil` 0.1.58) against the real keygate binary.

Walks the lifecycle of the Vijil seed documents (list, create, modify, rename, delete; Vertex and
DigitalOcean hub configs) through `Vijil(base_url=".../v1")`, as the Vijil client's wire format says the
client speaks it, and after each step checks what the server holds through the native API:
names, hubs, rate limits, secret versions, deletions, and exactly one audit event per change,
carrying the request id of the change. The last test stops the server and scans every response
body seen, the server's debug logs and every file of its data directory for each planted secret.

The client swallows HTTP errors (prints "Error: ..." and returns None), so every step asserts on
return values, on what the client printed, on the status of every exchange it made, and on
server state; never on exceptions.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any, Callable, Iterable

import pytest
import requests
from vijil import Vijil

import kgtest

# The seed document's names and examples.
SEED_NAME = "openAI20240630-2"
SEED_NEW_NAME = "openAI20240630-3"

ROTATION_OR_UPDATE = ("provider_key.rotate", "provider_key.update")


@pytest.fixture(scope="module")
def vj(keygate):
    return Vijil(base_url=f"{keygate.url}/v1", api_key=keygate.admin_key)


@pytest.fixture(scope="module")
def canaries():
    return kgtest.Canaries()


@dataclasses.dataclass
class Step:
    """One client call: what it returned, printed and sent, and the audit events it caused."""

    result: Any
    printed: str
    exchanges: list[kgtest.Exchange]
    audit: list[dict]

    def mutation(self) -> kgtest.Exchange:
        writes = [e for e in self.exchanges if e.method != "GET"]
        assert len(writes) == 1, f"expected one write request, got {[e.describe() for e in writes]}"
        return writes[0]


@pytest.fixture(scope="module")
def run(keygate, native, http_log) -> Callable[..., Step]:
    """Runs a Vijil client call and checks it went through cleanly: nothing printed (the client
    prints the HTTP errors it swallows) and every exchange with keygate a 2xx JSON answer."""

    def call(fn: Callable, *args, **kwargs) -> Step:
        before = {e["id"] for e in native.audit_events()}
        mark = http_log.mark()
        with kgtest.captured_stdout() as out:
            result = fn(*args, **kwargs)
        exchanges = http_log.since(mark, keygate.url)
        printed = out.getvalue()
        assert "Error" not in printed, f"the Vijil client reported a failure: {printed}"
        assert exchanges, "the client made no request"
        for ex in exchanges:
            assert 200 <= ex.status < 300, f"non-2xx answer to the Vijil client: {ex.describe()}"
            ctype = ex.response_headers.get("content-type", "")
            assert ctype.startswith("application/json"), f"not JSON ({ctype!r}): {ex.describe()}"
            json.loads(ex.response_body)  # a body that parses, DELETE included
        audit = [e for e in native.audit_events() if e["id"] not in before]
        return Step(result, printed, exchanges, audit)

    return call


def assert_vijil_view(obj: Any) -> None:
    """A key as the Vijil client's wire format wants it: id, name, hub; never the secret `value`."""
    assert isinstance(obj, dict), obj
    assert isinstance(obj.get("id"), str) and obj["id"], obj
    assert isinstance(obj.get("name"), str), obj
    assert isinstance(obj.get("hub"), str), obj
    assert "value" not in obj, f"the secret field `value` is in a response: {obj}"


def assert_list_matches_server(listed: Any, native: kgtest.NativeApi) -> None:
    assert isinstance(listed, list), f"list() must return the bare array, got {type(listed)}: {listed!r}"
    server = {k["id"]: k for k in native.provider_keys()}
    assert {k["id"] for k in listed} == set(server)
    for item in listed:
        assert_vijil_view(item)
        n = server[item["id"]]
        assert item["name"] == n["name"]
        assert item["hub"] == n["modelHub"]
        assert item["rate_limit_per_interval"] == n["rateLimitPerInterval"]
        assert item["rate_limit_interval"] == n["rateLimitInterval"]


def assert_one_audit(step: Step, actions: Iterable[str] | str, target_id: str) -> dict:
    """Exactly one new audit event, of the expected action, on the key, from this request."""
    actions = (actions,) if isinstance(actions, str) else tuple(actions)
    got = [(e["action"], e["targetId"]) for e in step.audit]
    assert len(step.audit) == 1, f"expected one audit event ({' or '.join(actions)}), got {got}"
    event = step.audit[0]
    assert event["action"] in actions, got
    assert event["targetId"] == target_id, got
    request_id = step.mutation().response_headers.get("x-request-id")
    assert request_id, "the write response has no x-request-id"
    assert event["requestId"] == request_id, (event, request_id)
    return event


def assert_proxy_cache(vj: Vijil, hub: str, name: str, key_id: str | None) -> None:
    """The hub -> name -> id cache the client rebuilds after each change (needs `hub` in the list)."""
    for part in (vj.evaluations, vj.detections):
        cache = part.api_proxy_dict
        assert isinstance(cache, dict), f"cache refresh failed: {cache!r}"
        assert cache.get(hub, {}).get(name) == key_id, cache


# ---------------------------------------------------------------------------------------------


def test_seed_lifecycle(vj, run, native, canaries):
    """The seed document, step by step: list, create (600/60), modify (new secret, 5 per 1 s),
    rename, delete."""
    step = run(vj.api_keys.list)
    assert_list_matches_server(step.result, native)
    assert SEED_NAME not in [k["name"] for k in step.result]
    assert step.audit == []

    # Add an API key, exactly as the seed does (with a real-looking secret in place of "sk+++").
    first_secret = canaries.new("seed create", prefix="sk+++")
    step = run(
        vj.api_keys.create,
        name=SEED_NAME,
        model_hub="openai",
        api_key=first_secret,
        rate_limit_per_interval=600,
        rate_limit_interval=60,
    )
    assert step.mutation().method == "POST" and step.mutation().status in (200, 201)
    assert_vijil_view(step.result)
    assert step.result["name"] == SEED_NAME and step.result["hub"] == "openai"
    key = native.provider_key(SEED_NAME)
    assert key is not None, "created key not found through the native API"
    assert key["id"] == step.result["id"]
    assert key["modelHub"] == "openai"
    assert (key["rateLimitPerInterval"], key["rateLimitInterval"]) == (600, 60)
    assert key["secretVersion"] == 1
    assert key["secretHint"] == first_secret[-4:]
    key_id = key["id"]
    assert_one_audit(step, "provider_key.create", key_id)
    assert_proxy_cache(vj, "openai", SEED_NAME, key_id)

    step = run(vj.api_keys.list)
    assert_list_matches_server(step.result, native)
    assert SEED_NAME in [k["name"] for k in step.result]

    # Modify: new secret and rate limit (the seed's "sk---" example; model_hub is required by 0.1.58).
    second_secret = canaries.new("seed modify", prefix="sk---")
    step = run(
        vj.api_keys.modify,
        name=SEED_NAME,
        model_hub="openai",
        api_key=second_secret,
        rate_limit_interval=1,
        rate_limit_per_interval=5,
    )
    assert step.mutation().method == "PUT" and step.mutation().path == f"/v1/api-keys/{key_id}"
    assert isinstance(step.result, dict) and "value" not in step.result
    key = native.provider_key(SEED_NAME)
    assert key is not None and key["id"] == key_id and key["name"] == SEED_NAME
    assert key["modelHub"] == "openai"
    assert (key["rateLimitPerInterval"], key["rateLimitInterval"]) == (5, 1)
    assert key["secretVersion"] == 2, "a new api_key is a rotation: the secret version goes 1 -> 2"
    assert key["secretHint"] == second_secret[-4:]
    assert_one_audit(step, ROTATION_OR_UPDATE, key_id)

    # Rename.
    step = run(vj.api_keys.rename, name=SEED_NAME, new_name=SEED_NEW_NAME)
    assert step.mutation().method == "PUT" and step.mutation().path == f"/v1/api-keys/{key_id}"
    assert isinstance(step.result, dict) and "value" not in step.result
    assert native.provider_key(SEED_NAME) is None, "the old name still answers after rename"
    key = native.provider_key(SEED_NEW_NAME)
    assert key is not None and key["id"] == key_id
    assert (key["rateLimitPerInterval"], key["rateLimitInterval"]) == (5, 1)
    assert key["secretVersion"] == 2, "a rename is not a rotation"
    assert_one_audit(step, "provider_key.rename", key_id)
    assert_proxy_cache(vj, "openai", SEED_NEW_NAME, key_id)
    assert_proxy_cache(vj, "openai", SEED_NAME, None)

    # Delete.
    step = run(vj.api_keys.delete, name=SEED_NEW_NAME)
    assert step.mutation().method == "DELETE" and step.mutation().path == f"/v1/api-keys/{key_id}"
    assert step.result is not None, "DELETE must answer with a JSON body"
    assert native.provider_key(SEED_NEW_NAME) is None
    assert native.provider_key(key_id) is None
    assert key_id not in {k["id"] for k in native.provider_keys()}
    assert_one_audit(step, "provider_key.delete", key_id)
    assert_proxy_cache(vj, "openai", SEED_NEW_NAME, None)

    step = run(vj.api_keys.list)
    assert_list_matches_server(step.result, native)
    assert key_id not in [k["id"] for k in step.result]


def test_create_with_client_defaults(vj, run, native, canaries):
    """Without rate-limit arguments the client sends its own defaults (60 per 10 s); they are stored."""
    secret = canaries.new("defaults create", prefix="tgp_v1_")
    step = run(vj.api_keys.create, name="together-defaults", model_hub="together", api_key=secret)
    sent = json.loads(step.mutation().request_body)
    assert (sent["rate_limit_per_interval"], sent["rate_limit_interval"]) == (60, 10)
    assert sent["url"] is None and "hub_config" not in sent
    assert_vijil_view(step.result)
    key = native.provider_key("together-defaults")
    assert key is not None and key["id"] == step.result["id"]
    assert key["modelHub"] == "together"
    assert (key["rateLimitPerInterval"], key["rateLimitInterval"]) == (60, 10)
    assert key["secretVersion"] == 1
    assert_one_audit(step, "provider_key.create", key["id"])
    assert_list_matches_server(vj.api_keys.list(), native)


def test_create_vertex_with_oauth_hub_config(vj, run, native, canaries):
    """Vertex in Vijil's shape: region, project_id and OAuth client id/secret/refresh token; no api_key."""
    client_secret = canaries.new("vertex client_secret", prefix="GOCSPX-")
    refresh_token = canaries.new("vertex refresh_token", prefix="1//0g")
    hub_config = {
        "region": "us-central1",
        "project_id": "keygate-test-project",
        "client_id": "123456789012-abcdefg.apps.googleusercontent.com",
        "client_secret": client_secret,
        "refresh_token": refresh_token,
    }
    step = run(vj.api_keys.create, name="vertex-oauth", model_hub="vertex", hub_config=hub_config)
    sent = json.loads(step.mutation().request_body)
    assert sent["value"] is None and sent["hub_config"] == hub_config
    assert_vijil_view(step.result)
    key = native.provider_key("vertex-oauth")
    assert key is not None and key["id"] == step.result["id"]
    assert key["modelHub"] == "vertex"
    assert (key["rateLimitPerInterval"], key["rateLimitInterval"]) == (60, 10)
    assert key["secretVersion"] == 1
    config = key["hubConfig"]
    assert config.get("region") == "us-central1", config
    assert config.get("projectId") == "keygate-test-project", config
    assert_one_audit(step, "provider_key.create", key["id"])
    assert_proxy_cache(vj, "vertex", "vertex-oauth", key["id"])


def test_create_digitalocean_agent_with_url(vj, run, native, canaries):
    """DigitalOcean agent: hub_config {agent_id, agent_key} plus the agent's endpoint url."""
    agent_key = canaries.new("digitalocean agent_key")
    url = "https://a1b2c3d4e5f6a7b8c9d0.agents.do-ai.run"
    hub_config = {"agent_id": "0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f", "agent_key": agent_key}
    step = run(vj.api_keys.create, name="do-agent", model_hub="digitalocean", hub_config=hub_config, url=url)
    assert json.loads(step.mutation().request_body)["url"] == url
    assert_vijil_view(step.result)
    key = native.provider_key("do-agent")
    assert key is not None and key["id"] == step.result["id"]
    assert key["modelHub"] == "digitalocean"
    assert key["baseUrl"] == url
    assert key["hubConfig"].get("agentId") == hub_config["agent_id"], key["hubConfig"]
    assert key["secretVersion"] == 1
    assert_one_audit(step, "provider_key.create", key["id"])
    listed = {k["name"]: k for k in vj.api_keys.list()}
    assert listed["do-agent"]["url"] == url


def test_modify_rate_limits_only_keeps_the_secret(vj, run, native, canaries):
    """modify without api_key changes the limits only: no rotation, the secret version stays 1."""
    secret = canaries.new("limits-only create", prefix="sk-")
    step = run(vj.api_keys.create, name="limits-only", model_hub="openai", api_key=secret)
    key_id = step.result["id"]
    step = run(vj.api_keys.modify, name="limits-only", model_hub="openai", rate_limit_per_interval=7, rate_limit_interval=3)
    assert "value" not in json.loads(step.mutation().request_body)
    key = native.provider_key("limits-only")
    assert key is not None and key["id"] == key_id
    assert (key["rateLimitPerInterval"], key["rateLimitInterval"]) == (7, 3)
    assert key["secretVersion"] == 1, "no new secret was sent: this is not a rotation"
    assert key["secretHint"] == secret[-4:]
    assert_one_audit(step, "provider_key.update", key_id)


def test_modify_hub_only(vj, run, native, canaries):
    """The Vijil client's captured `{"name": ..., "hub": "together"}`: PUT is a partial update."""
    secret = canaries.new("hub-only create", prefix="sk-")
    step = run(
        vj.api_keys.create,
        name="hub-only",
        model_hub="openai",
        api_key=secret,
        rate_limit_per_interval=100,
        rate_limit_interval=20,
    )
    key_id = step.result["id"]
    step = run(vj.api_keys.modify, name="hub-only", model_hub="together")
    assert json.loads(step.mutation().request_body) == {"name": "hub-only", "hub": "together"}
    key = native.provider_key("hub-only")
    assert key is not None and key["id"] == key_id
    assert key["modelHub"] == "together"
    assert (key["rateLimitPerInterval"], key["rateLimitInterval"]) == (100, 20), "limits must not change"
    assert key["secretVersion"] == 1
    assert_one_audit(step, "provider_key.update", key_id)
    assert_proxy_cache(vj, "together", "hub-only", key_id)


def test_trailing_slash_base_url(keygate, run, native, canaries):
    """`Vijil(base_url=".../v1/")` sends `/v1//api-keys`; the server collapses the slashes."""
    vj2 = Vijil(base_url=f"{keygate.url}/v1/", api_key=keygate.admin_key)
    step = run(vj2.api_keys.list)
    assert all(e.path.startswith("/v1//api-keys") for e in step.exchanges), [e.path for e in step.exchanges]
    assert_list_matches_server(step.result, native)

    step = run(vj2.api_keys.create, name="slashy", model_hub="mistral", api_key=canaries.new("slash create"))
    assert step.mutation().path == "/v1//api-keys"
    key_id = step.result["id"]
    assert native.provider_key("slashy")["modelHub"] == "mistral"
    assert_one_audit(step, "provider_key.create", key_id)

    step = run(vj2.api_keys.modify, name="slashy", model_hub="mistral", api_key=canaries.new("slash modify"))
    assert step.mutation().path == f"/v1//api-keys/{key_id}"
    assert native.provider_key("slashy")["secretVersion"] == 2
    assert_one_audit(step, ROTATION_OR_UPDATE, key_id)

    step = run(vj2.api_keys.rename, name="slashy", new_name="slashy-2")
    assert native.provider_key("slashy") is None and native.provider_key("slashy-2")["id"] == key_id
    assert_one_audit(step, "provider_key.rename", key_id)

    step = run(vj2.api_keys.delete, name="slashy-2")
    assert native.provider_key("slashy-2") is None
    assert_one_audit(step, "provider_key.delete", key_id)


def test_no_planted_secret_leaks(keygate, vj, run, native, canaries, http_log):
    """Last in this module: stops the server, then looks for every secret planted in it (raw minus
    the 4-char hint, URL-encoded, hex, base64 at every alignment) in every response body and header
    keygate sent, in its stdout and debug logs, and in every file of its data directory."""
    # Plant some here too, so the check means something when this test runs alone.
    kept = canaries.new("leak-check create", prefix="sk-proj-")
    run(vj.api_keys.create, name="leak-check", model_hub="openai", api_key=kept)
    run(vj.api_keys.modify, name="leak-check", model_hub="openai", api_key=canaries.new("leak-check rotate", prefix="sk---"))
    run(vj.api_keys.create, name="leak-check-2", model_hub="fireworks", api_key=canaries.new("leak-check deleted", prefix="fw_"))
    run(vj.api_keys.delete, name="leak-check-2")

    # Refused writes must not echo the secret they carried either.
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {keygate.admin_key}"
    bad_name = canaries.new("refused: bad name")
    dup = canaries.new("refused: duplicate name")
    truncated = canaries.new("refused: truncated JSON")
    r = s.post(f"{keygate.url}/v1/api-keys", json={"name": "bad name!", "hub": "openai", "value": bad_name, "url": None}, timeout=10)
    assert 400 <= r.status_code < 500, r.text
    r = s.post(f"{keygate.url}/v1/api-keys", json={"name": "leak-check", "hub": "openai", "value": dup, "url": None}, timeout=10)
    assert 400 <= r.status_code < 500, r.text
    r = s.post(
        f"{keygate.url}/v1/api-keys",
        data=f'{{"name": "trunc", "hub": "openai", "value": "{truncated}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert 400 <= r.status_code < 500, r.text

    exit_status = keygate.stop()

    exchanges = http_log.for_server(keygate.url)
    responses = {}
    requests_sent = {}
    for i, ex in enumerate(exchanges):
        where = f"response #{i} to {ex.method} {ex.path} ({ex.status})"
        headers = "\n".join(f"{k}: {v}" for k, v in ex.response_headers.items()).encode()
        responses[where] = headers + b"\n\n" + ex.response_body
        requests_sent[f"request #{i}"] = ex.request_body
    logs = keygate.log_bytes()
    files = {f"data dir file {name}": blob for name, blob in keygate.data_files().items()}

    # The scan must have something to look at, and must find what is really there.
    planted = canaries.planted
    assert len(planted) >= 6, planted.keys()
    assert len(responses) > 10
    assert b" DEBUG " in logs, "KEYGATE_LOG=debug was not in effect; the log scan would mean little"
    assert any(name.startswith("keygate") for name in keygate.data_files()), keygate.data_files().keys()
    positive = kgtest.find_leaks({"leak-check create": kept}, requests_sent)
    assert positive, "self-check: the scanner did not find a secret in the request that carried it"

    leaks = kgtest.find_leaks(planted, {**responses, "keygate stdout+stderr": logs, **files})
    assert leaks == [], "planted secrets found:\n" + "\n".join(leaks)

    # The platform key is stored only as a keyed hash and the master key only in the environment.
    master_raw = base64.b64decode(keygate.master_key)
    stderr = keygate.stderr_path.read_bytes()
    for label, needle in (
        ("ADMIN key", keygate.admin_key.encode()),
        ("master key (base64)", keygate.master_key.encode()),
        ("master key (raw)", master_raw),
        ("master key (hex)", master_raw.hex().encode()),
    ):
        for where, blob in {"keygate stderr": stderr, **files}.items():
            assert needle not in blob, f"{label} found in {where}"
    assert keygate.master_key.encode() not in keygate.stdout_path.read_bytes(), "master key printed on stdout"

    assert exit_status == 0, f"keygate did not exit cleanly on SIGTERM (status {exit_status})\n{keygate.log_tail()}"
