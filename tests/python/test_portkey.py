"""The unmodified `portkey-ai` client (2.3.4) against the real keygate binary.

Admin side: `Portkey(api_key=<ADMIN key>, base_url=f"{url}/v1").virtual_keys` create (inline
provider secret, note, `usage_limits`, `rate_limits` and `custom_host`, the last two through the
SDK's extra kwargs), list, retrieve, update (rename, new secret, limits) and delete, each checked
against the native view (`/api/v1/virtual_keys/{slug}`, `/api/v1/provider_keys/{name}`).
`custom_host` points at a recording upstream (kggateway.RecordingUpstream), so the gateway side
can be checked on the wire:

- `Portkey(..., virtual_key=slug).chat.completions.create(...)`, plain and `stream=True`, and
  the `openai` package with `createHeaders(api_key=..., virtual_key=slug)`: the upstream saw the
  stored secret (after an update, the new one), never the SDK's `Bearer OPENAI_API_KEY`
  placeholder, the caller's dummy key or the keygate key, and no `x-portkey-*` header;
- every call left one usage record (streams included) with the upstream's 9/3 tokens.

Gateway calls use an INFERENCE platform key (made with `POST /api/v1/api_keys`); admin calls
the ADMIN key, which is also the only kind the admin mount accepts.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct

import openai
import pytest
from portkey_ai import Portkey, createHeaders
from portkey_ai._vendor import openai as vendored_openai
from portkey_ai.api_resources import exceptions as pk_exc

import kggateway
import kgtest
from kggateway import TEXT, assert_clean_forward, assert_record

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Hi"}]
USAGE_LIMITS = {"credit_limit": 100, "periodic_reset": "monthly", "alert_threshold": 80}
RATE_LIMITS = [{"type": "requests", "unit": "rpm", "value": 60}]
PLACEHOLDER = "OPENAI_API_KEY"  # what the Portkey SDK sends as `Authorization: Bearer …`
_seq = itertools.count(1)


@pytest.fixture(autouse=True)
def _no_portkey_env(monkeypatch):
    """The caller's Portkey/OpenAI environment must not change what the SDKs send."""
    for var in ("PORTKEY_API_KEY", "PORTKEY_PROXY", "PORTKEY_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def canaries():
    return kgtest.Canaries()


@pytest.fixture(scope="module")
def admin(keygate) -> Portkey:
    return Portkey(api_key=keygate.admin_key, base_url=f"{keygate.url}/v1")


@pytest.fixture(scope="module")
def inference_key(gateway) -> str:
    return gateway.create_api_key("INFERENCE", "portkey SDK tests")["apiKey"]


@pytest.fixture(scope="module")
def portkey_for(keygate, inference_key):
    """A Portkey client for the gateway: the INFERENCE key and a virtual key."""

    def make(slug: str, **kwargs) -> Portkey:
        kwargs.setdefault("api_key", inference_key)
        return Portkey(base_url=f"{keygate.url}/v1", virtual_key=slug, **kwargs)

    return make


@pytest.fixture(scope="module")
def never(keygate, inference_key) -> list[str]:
    """What must never reach an upstream: the keygate keys and the SDK's placeholder credential."""
    return [inference_key, keygate.admin_key, PLACEHOLDER]


class Created:
    def __init__(self, resp, secret: str, name: str, note: str):
        self.resp = resp
        self.slug: str = resp.slug
        self.id: str = resp.id
        self.secret = secret
        self.name = name
        self.note = note


@pytest.fixture
def create_vk(admin, upstream, canaries, request):
    """`virtual_keys.create` with an inline secret and custom_host = the recording upstream."""

    def create(**overrides) -> Created:
        n = next(_seq)
        secret = canaries.new(f"{request.node.name}-{n}", prefix="sk-live-")
        name = overrides.pop("name", f"openai-prod-{n}")
        kwargs = dict(
            name=name,
            provider="openai",
            key=secret,
            note=f"prod key {n}",
            usage_limits=USAGE_LIMITS,
            rate_limits=RATE_LIMITS,
            custom_host=upstream.base_url,
        )
        kwargs.update(overrides)
        resp = admin.virtual_keys.create(**kwargs)
        return Created(resp, secret, name, kwargs["note"])

    return create


def inline_provider_key(gateway: kggateway.Gateway, slug: str) -> dict:
    vk = gateway.virtual_key(slug)
    assert vk is not None, slug
    (target,) = vk["targets"]
    pk = gateway.provider_key(target["providerKey"])
    assert pk is not None and pk["id"] == target["providerKeyId"], (target, pk)
    return pk


def chat_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# ---------------------------------------------------------------------------------------------
# Admin API


def test_create_list_retrieve(keygate, admin, gateway, upstream, create_vk):
    """create answers `{id, slug, object}` with slug at top level; the inline key becomes a
    provider key whose base URL is custom_host (so the SDK did pass the extra kwarg); the native
    view has budget usd 100 per MONTH and rpm 60; list and retrieve show Portkey's shape and
    never the key."""
    vk = create_vk()
    assert isinstance(vk.slug, str) and vk.slug, vk.resp
    assert vk.id.startswith("vk_"), vk.resp
    assert vk.resp.object == "virtual-key"

    native = gateway.virtual_key(vk.slug)
    assert native is not None
    assert native["id"] == vk.id and native["name"] == vk.name and native["note"] == vk.note
    assert native["budget"] == {"usd": 100}, native["budget"]
    assert native["budgetPeriod"] == "MONTH"
    assert native["rateLimits"] == {"rpm": 60}
    assert native["status"] == "active"
    pk = inline_provider_key(gateway, vk.slug)
    assert pk["modelHub"] == "openai"
    assert pk["baseUrl"] == upstream.base_url, "custom_host (an extra kwarg of create) must become the base URL"
    assert pk["secretHint"] == vk.secret[-4:] and pk["secretVersion"] == 1

    listed = admin.virtual_keys.list()
    assert listed.object == "list"
    assert listed.total == len(listed.data)
    (item,) = [d for d in listed.data if d.get("slug") == vk.slug]
    assert item["id"] == vk.id and item["name"] == vk.name and item["note"] == vk.note
    assert item["object"] == "virtual-key" and item["status"] == "active"
    assert item["usage_limits"] == USAGE_LIMITS
    assert item["rate_limits"] == RATE_LIMITS
    assert "key" not in item

    got = admin.virtual_keys.retrieve(slug=vk.slug)
    top = got.model_dump()
    assert top["slug"] == vk.slug and top["id"] == vk.id and top["name"] == vk.name
    assert top["usage_limits"] == USAGE_LIMITS and top["rate_limits"] == RATE_LIMITS
    assert "key" not in top

    for blob in (json.dumps(listed.model_dump()), json.dumps(top), json.dumps(vk.resp.model_dump())):
        assert vk.secret[:-4] not in blob, "an admin answer carries the provider secret"


def test_admin_errors(admin):
    """Admin refusals are the SDK's typed exceptions with `Error code: <status> - <message>`."""
    with pytest.raises(pk_exc.BadRequestError) as e:
        admin.virtual_keys.create(name="bad-provider", provider="no-such-provider", key="sk-xxxxxxxxxxxx")
    assert str(e.value).startswith("Error code: 400 - ")
    with pytest.raises(pk_exc.BadRequestError):
        admin.virtual_keys.create(name="no-key", provider="openai")
    with pytest.raises(pk_exc.NotFoundError):
        admin.virtual_keys.retrieve(slug="no-such-slug")
    with pytest.raises(pk_exc.NotFoundError):
        admin.virtual_keys.update(slug="no-such-slug", name="x")
    with pytest.raises(pk_exc.NotFoundError):
        admin.virtual_keys.delete(slug="no-such-slug")


def test_admin_credentials(keygate, inference_key):
    """The admin API authenticates on `x-portkey-api-key`: none (sent empty) or a wrong one is 401,
    an INFERENCE key 403 (it may only use the gateway)."""
    base = f"{keygate.url}/v1"
    with pytest.raises(pk_exc.PermissionDeniedError):
        Portkey(api_key=inference_key, base_url=base).virtual_keys.list()
    with pytest.raises(pk_exc.PermissionDeniedError):
        Portkey(api_key=inference_key, base_url=base).virtual_keys.create(name="nope", provider="openai", key="sk-xxxxxxxxxxxx")
    with pytest.raises(pk_exc.AuthenticationError):
        Portkey(api_key=None, base_url=base).virtual_keys.list()
    with pytest.raises(pk_exc.AuthenticationError):
        Portkey(api_key="kg_adm_" + "A" * 38, base_url=base).virtual_keys.list()
    # An empty x-portkey-api-key counts as none, so `Authorization: Bearer <keygate key>` is used
    # (Bearer, or x-portkey-api-key when it has a value).
    assert Portkey(api_key=None, base_url=base, Authorization=keygate.admin_key).virtual_keys.list().object == "list"


def test_admin_calls_ignore_routing_headers(keygate, create_vk, portkey_for):
    """A client built with virtual_key, trace_id, metadata and config sends them on admin calls
    too (the Portkey client's wire format); they are ignored there."""
    vk = create_vk()
    other = create_vk()
    pk = portkey_for(other.slug, api_key=keygate.admin_key, trace_id="trace-1", metadata={"_user": "u1"}, provider="openai")
    assert vk.slug in [d["slug"] for d in pk.virtual_keys.list().data]
    assert pk.virtual_keys.retrieve(slug=vk.slug).model_dump()["slug"] == vk.slug
    assert pk.virtual_keys.update(slug=vk.slug, note="touched").slug == vk.slug


def test_update_rotates_secret_and_limits(keygate, admin, gateway, upstream, create_vk, portkey_for, never):
    """update(name, key, usage_limits, rate_limits) is a partial update: the name and limits change,
    the reset period stays MONTH, the new key is a rotation (secret version 2), and the gateway
    presents the new secret upstream from then on, plain and streamed."""
    vk = create_vk()
    gw = portkey_for(vk.slug)
    mark = upstream.mark()
    assert gw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content == TEXT
    (before,) = upstream.since(mark)
    assert_clean_forward(before, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")

    new_secret = vk.secret[:8] + kgtest.random_token(32)
    resp = admin.virtual_keys.update(
        slug=vk.slug,
        name=f"{vk.name}-renamed",
        key=new_secret,
        usage_limits={"credit_limit": 5},
        rate_limits=[{"type": "requests", "unit": "rpm", "value": 5}],
    )
    assert resp.slug == vk.slug and resp.id == vk.id

    native = gateway.virtual_key(vk.slug)
    assert native["name"] == f"{vk.name}-renamed"
    assert native["budget"] == {"usd": 5} and native["budgetPeriod"] == "MONTH"
    assert native["rateLimits"] == {"rpm": 5}
    pk = inline_provider_key(gateway, vk.slug)
    assert (pk["secretVersion"], pk["secretHint"]) == (2, new_secret[-4:])
    top = admin.virtual_keys.retrieve(slug=vk.slug).model_dump()
    assert top["name"] == f"{vk.name}-renamed"
    assert top["usage_limits"] == {"credit_limit": 5, "periodic_reset": "monthly", "alert_threshold": 80}
    assert top["rate_limits"] == [{"type": "requests", "unit": "rpm", "value": 5}]

    # Name only: nothing else moves.
    admin.virtual_keys.update(slug=vk.slug, name=f"{vk.name}-again")
    native = gateway.virtual_key(vk.slug)
    assert native["name"] == f"{vk.name}-again" and native["budget"] == {"usd": 5} and native["rateLimits"] == {"rpm": 5}
    assert inline_provider_key(gateway, vk.slug)["secretVersion"] == 2

    mark = upstream.mark()
    assert gw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content == TEXT
    assert chat_text(gw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)) == TEXT
    after = upstream.since(mark)
    assert len(after) == 2, [r.describe() for r in after]
    for rec in after:
        assert_clean_forward(rec, path=CHAT, secret=new_secret, never=never + [vk.secret], model="gpt-4o-mini")

    rows = gateway.wait_records(vk.slug, 3)
    for row in rows:
        assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=row["stream"])


def test_delete(keygate, admin, gateway, upstream, create_vk, portkey_for):
    """delete answers a JSON object; the key (and its inline provider key) is gone from list,
    retrieve and the native API, the gateway refuses it (403, nothing forwarded), and its usage stays readable by id."""
    vk = create_vk()
    gw = portkey_for(vk.slug)
    gw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    gateway.wait_records(vk.slug, 1)
    pk_name = inline_provider_key(gateway, vk.slug)["name"]

    resp = admin.virtual_keys.delete(slug=vk.slug)
    assert resp.success is True
    assert gateway.virtual_key(vk.slug) is None
    assert gateway.provider_key(pk_name) is None, "the inline provider key goes with its virtual key (docs/gateway.md)"
    assert vk.slug not in [d.get("slug") for d in admin.virtual_keys.list().data]
    with pytest.raises(pk_exc.NotFoundError):
        admin.virtual_keys.retrieve(slug=vk.slug)

    mark = upstream.mark()
    with pytest.raises(vendored_openai.PermissionDeniedError) as e:
        gw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert e.value.status_code == 403
    assert upstream.since(mark) == []
    (row,) = gateway.wait_records(vk.id, 1)
    assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=False)


# ---------------------------------------------------------------------------------------------
# Gateway


def test_gateway_chat_plain_and_stream(keygate, gateway, upstream, create_vk, portkey_for, never):
    """`Portkey(api_key, base_url, virtual_key=slug).chat.completions.create`: the SDK sends
    `Authorization: Bearer OPENAI_API_KEY` and x-portkey-*; keygate authenticates on
    x-portkey-api-key, and the upstream sees only the stored secret. Plain and streamed, both
    metered 9/3 (the stream's usage asked for upstream and not shown to the client)."""
    vk = create_vk()
    gw = portkey_for(vk.slug)
    mark = upstream.mark()
    resp = gw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
    assert resp.choices[0].message.content == TEXT
    assert resp.model == "gpt-4o-mini"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (9, 3, 12)
    chunks = list(gw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert chat_text(chunks) == TEXT
    assert [c for c in chunks if getattr(c, "usage", None) is not None or not c.choices] == []

    plain, streamed = upstream.since(mark)
    body = assert_clean_forward(plain, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    assert body == {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 16}
    body = assert_clean_forward(streamed, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}

    rows = gateway.wait_records(vk.slug, 2)
    assert sorted(r["stream"] for r in rows) == [False, True]
    for row in rows:
        assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=row["stream"])
    total = gateway.usage(vk.slug)
    assert (total["requests"], total["promptTokens"], total["completionTokens"], total["estimatedRequests"]) == (2, 18, 6, 0)


def test_gateway_embeddings(keygate, gateway, upstream, create_vk, portkey_for, never):
    """`pk.embeddings.create` goes through the vendored OpenAI client the same way."""
    vk = create_vk()
    mark = upstream.mark()
    resp = portkey_for(vk.slug).embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(resp.data) == 2
    for i, d in enumerate(resp.data):
        emb = d.embedding
        if isinstance(emb, str):
            emb = list(struct.unpack(f"<{len(base64.b64decode(emb)) // 4}f", base64.b64decode(emb)))
        assert emb == pytest.approx(kggateway.f32(kggateway.embedding_vector(i)))
    (rec,) = upstream.since(mark)
    body = assert_clean_forward(rec, path="/v1/embeddings", secret=vk.secret, never=never, model="text-embedding-3-small")
    assert body["input"] == ["a", "b"]
    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="text-embedding-3-small", stream=False, endpoint="embeddings", prompt=4, completion=0)


def test_openai_sdk_with_create_headers(keygate, gateway, upstream, create_vk, inference_key, never):
    """The `openai` package with `default_headers=createHeaders(api_key=…, virtual_key=slug, …)`
    and a dummy api_key: the dummy `Authorization` is ignored, the upstream gets the stored
    secret; plain, streamed and streamed with include_usage all metered."""
    vk = create_vk()
    headers = createHeaders(api_key=inference_key, virtual_key=vk.slug, trace_id="t-9", metadata={"env": "dev"})
    assert headers["x-portkey-virtual-key"] == vk.slug
    dummy = "sk-dummy-" + kgtest.random_token(16)
    client = openai.OpenAI(api_key=dummy, base_url=f"{keygate.url}/v1", default_headers=headers)
    mark = upstream.mark()
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content == TEXT
    assert chat_text(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)) == TEXT
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chat_text(chunks) == TEXT
    assert chunks[-1].usage is not None and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 3)

    got = upstream.since(mark)
    assert len(got) == 3, [r.describe() for r in got]
    for rec in got:
        assert_clean_forward(rec, path=CHAT, secret=vk.secret, never=never + [dummy], model="gpt-4o-mini")
    assert [r.json.get("stream_options") for r in got] == [None, {"include_usage": True}, {"include_usage": True}]

    rows = gateway.wait_records(vk.slug, 3)
    assert sorted(r["stream"] for r in rows) == [False, True, True]
    for row in rows:
        assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=row["stream"])


def test_gateway_credentials(keygate, gateway, upstream, create_vk, portkey_for):
    """No Portkey key (the SDK then sends it empty, plus `Bearer OPENAI_API_KEY`) or a wrong one
    is 401 on the gateway; an unknown virtual key is 403; nothing reaches the upstream."""
    vk = create_vk()
    mark = upstream.mark()
    with pytest.raises(vendored_openai.AuthenticationError) as e:
        portkey_for(vk.slug, api_key=None).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert e.value.status_code == 401
    with pytest.raises(vendored_openai.AuthenticationError):
        portkey_for(vk.slug, api_key="kg_adm_" + "B" * 38).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(vendored_openai.PermissionDeniedError) as e:
        portkey_for("no-such-virtual-key").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert e.value.status_code == 403
    assert upstream.since(mark) == []
    gateway.wait_records(vk.slug, 0, timeout=0.2)


def test_model_omitted_uses_the_default(keygate, gateway, upstream, canaries, portkey_for, never):
    """Without `model` the Portkey SDK sends "portkey-default": a virtual key with a default
    model sends that model upstream."""
    secret = canaries.new("portkey default model", prefix="sk-live-")
    gateway.create_provider_key("pk-default-model", secret, upstream.base_url)
    vk = gateway.create_virtual_key("with default", "pk-default-model", slug="pk-with-default", defaultModel="gpt-4o-mini")
    mark = upstream.mark()
    resp = portkey_for(vk["slug"]).chat.completions.create(messages=MESSAGES)
    assert resp.choices[0].message.content == TEXT
    (rec,) = upstream.since(mark)
    assert_clean_forward(rec, path=CHAT, secret=secret, never=never + ["portkey-default"], model="gpt-4o-mini")
    (row,) = gateway.wait_records(vk["slug"], 1)
    assert_record(row, vk_id=vk["id"], model="gpt-4o-mini", stream=False)


def test_model_omitted_without_a_default_is_refused(keygate, gateway, upstream, create_vk, portkey_for):
    """The Portkey client's wire format: if the user omits `model` (the SDK sends "portkey-default"), "the
    gateway should then use the model from the virtual key or config, or reject the request with
    400". A Portkey-created virtual key has no default model, so: 400, and "portkey-default"
    never reaches the upstream."""
    vk = create_vk()
    mark = upstream.mark()
    with pytest.raises(vendored_openai.BadRequestError):
        portkey_for(vk.slug).chat.completions.create(messages=MESSAGES)
    got = upstream.since(mark)
    assert got == [], f"forwarded upstream: {[r.describe() for r in got]}"


def test_gateway_5xx_is_not_replayed_by_the_portkey_sdk(keygate, gateway, upstream, create_vk, portkey_for):
    """The Portkey client's wire format: the Portkey SDK retries a 5xx once unless it carries
    x-portkey-request-id / x-portkey-trace-id / x-portkey-gateway-exception (it ignores
    x-should-retry). keygate sends `x-should-retry: false` to say "do not replay" (a possibly
    billed upstream call), so its gateway 5xx must carry one of those headers too: the upstream
    must see exactly one call."""
    vk = create_vk()
    upstream.push(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
    mark = upstream.mark()
    outcome: object = None
    try:
        outcome = portkey_for(vk.slug).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    except vendored_openai.InternalServerError as exc:
        outcome = exc
    finally:
        upstream.clear_scripted()
    got = upstream.since(mark)
    rows = gateway.wait_records(vk.slug, len(got))
    assert len(got) == 1, (
        f"the Portkey SDK replayed the request: {len(got)} upstream calls, usage records with status "
        f"{sorted(r['status'] for r in rows)}, client outcome {type(outcome).__name__}"
    )
    assert isinstance(outcome, vendored_openai.InternalServerError), outcome
    headers = outcome.response.headers
    assert any(headers.get(h) for h in ("x-portkey-request-id", "x-portkey-trace-id", "x-portkey-gateway-exception")), dict(headers)


def test_no_planted_secret_in_responses_or_logs(keygate, admin, create_vk, portkey_for, canaries):
    """Last: no planted provider secret in keygate's logs, data files or the admin answers."""
    vk = create_vk()
    portkey_for(vk.slug).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    blobs = {
        "list": json.dumps(admin.virtual_keys.list().model_dump()).encode(),
        "retrieve": json.dumps(admin.virtual_keys.retrieve(slug=vk.slug).model_dump()).encode(),
    }
    exit_status = keygate.stop()
    blobs["keygate stdout+stderr"] = keygate.log_bytes()
    blobs.update({f"data dir file {n}": b for n, b in keygate.data_files().items()})
    leaks = kgtest.find_leaks(canaries.planted, blobs)
    assert leaks == [], "planted secrets found:\n" + "\n".join(leaks)
    assert exit_status == 0
