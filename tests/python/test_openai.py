"""The unmodified `openai` client (3.57.0) against the real keygate gateway.

Every test gets its own provider key (a planted secret) pointing at a recording upstream
(kggateway.RecordingUpstream) and its own virtual key, and calls the gateway with
`OpenAI(base_url=f"{url}/v1", api_key=<keygate INFERENCE key>, default_headers={"x-keygate-virtual-key": slug})`
or a variant (no header and `@slug/model`, alias, default model, the platform key's default
virtual key, trailing slash, AsyncOpenAI).
For each call it checks three things:

1. what the client got: content, model, usage, chunks (no usage chunk unless the client asked
   for one), embeddings that decode, models, and the SDK's exception for each error status;
2. what the upstream received: the path, `authorization: Bearer <stored provider secret>` and no
   other credential, the keygate key in no header and no body, no gateway headers, the model
   after alias/default resolution, the client's other fields unchanged, and
   `stream_options.include_usage` added to streams;
3. what keygate metered: one usage record per call (streams included) with the upstream's
   tokens (9/3 for chat), `estimated` false, the request id of the response, and totals in
   `/api/v1/usage` that add up.

The INFERENCE key is made with `POST /api/v1/api_keys`; management and usage reads use the ADMIN key.
"""

from __future__ import annotations

import base64
import itertools
import os
import struct
import subprocess
import time
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

import kggateway
import kgtest
from kggateway import COMPLETION_TOKENS, PROMPT_TOKENS, TEXT, assert_clean_forward, assert_record

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}]
_seq = itertools.count(1)


@pytest.fixture(scope="module")
def canaries():
    return kgtest.Canaries()


class Vk:
    """A virtual key of this module, its provider key and the secret planted in it."""

    def __init__(self, data: dict, secret: str, provider_key: str):
        self.data = data
        self.id: str = data["id"]
        self.slug: str = data["slug"]
        self.secret = secret
        self.provider_key = provider_key


@pytest.fixture
def make_vk(gateway, upstream, canaries, request):
    """A fresh provider key (secret planted, base URL = the recording upstream) and a virtual key on it."""

    def make(**fields) -> Vk:
        n = next(_seq)
        label = f"{request.node.name}-{n}"
        secret = canaries.new(label, prefix="sk-up-")
        pk_name = f"oa-pk-{n}"
        gateway.create_provider_key(pk_name, secret, upstream.base_url)
        data = gateway.create_virtual_key(f"oa vk {n}", pk_name, slug=f"oa-vk-{n}", **fields)
        return Vk(data, secret, pk_name)

    return make


@pytest.fixture(scope="module")
def inference(gateway) -> dict:
    """The module's INFERENCE platform key (`POST /api/v1/api_keys`), as created."""
    return gateway.create_api_key("INFERENCE", "openai SDK tests")


@pytest.fixture(scope="module")
def inference_key(inference) -> str:
    return inference["apiKey"]


@pytest.fixture(scope="module")
def client_for(keygate, inference_key):
    def make(vk: Vk | None = None, headers: dict | None = None, **kwargs) -> OpenAI:
        if headers is None:
            headers = {"x-keygate-virtual-key": vk.slug} if vk is not None else {}
        kwargs.setdefault("base_url", f"{keygate.url}/v1")
        kwargs.setdefault("api_key", inference_key)
        return OpenAI(default_headers=headers, **kwargs)

    return make


@pytest.fixture(scope="module")
def never(keygate, inference_key) -> list[str]:
    """What must never reach an upstream: the keygate keys (the one the client presented included)."""
    return [inference_key, keygate.admin_key]


# ---------------------------------------------------------------------------------------------
# Chat


def test_chat_non_stream(keygate, gateway, upstream, make_vk, client_for, never, inference):
    """Plain chat: the answer is the upstream's, the upstream got the stored secret and the
    client's body unchanged (unknown fields too), one usage record with 9/3 and the request id."""
    vk = make_vk()
    mark = upstream.mark()
    raw = client_for(vk).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=32,
        temperature=0.2,
        user="u-1",
        extra_body={"keygate_test_unknown": {"kept": [1, 2]}},
    )
    resp = raw.parse()
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    request_id = raw.headers.get("x-request-id")
    assert request_id, "gateway responses carry x-request-id"
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"
    assert resp.choices[0].message.content == TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (9, 3, 12)

    got = upstream.since(mark)
    assert len(got) == 1, [r.describe() for r in got]
    body = assert_clean_forward(got[0], path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    assert body == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_tokens": 32,
        "temperature": 0.2,
        "user": "u-1",
        "keygate_test_unknown": {"kept": [1, 2]},
    }, "a non-stream body is forwarded as the client sent it"

    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=False, request_id=request_id)
    assert row["apiKeyId"] == inference["id"], "the record names the platform key that called"
    assert row["providerKeyId"] == gateway.provider_key(vk.provider_key)["id"]
    total = gateway.usage(vk.slug)
    assert (total["requests"], total["promptTokens"], total["completionTokens"], total["totalTokens"]) == (1, 9, 3, 12)
    assert total["estimatedRequests"] == 0
    assert total["costNanoUsd"] > 0 and total["costUsd"] == pytest.approx(total["costNanoUsd"] / 1e9)


def test_chat_stream_without_include_usage(keygate, gateway, upstream, make_vk, client_for, never):
    """A stream the client did not ask usage for: "Hello!" in chunks and no usage chunk, while
    keygate asked the upstream for usage (include_usage injected) and metered 9/3 from it."""
    vk = make_vk()
    mark = upstream.mark()
    raw = client_for(vk).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    request_id = raw.headers.get("x-request-id")
    chunks = list(raw.parse())
    assert chunks, "the stream yielded no chunk"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [c for c in chunks if c.usage is not None or not c.choices] == [], "usage chunk sent to a client that did not ask"
    assert chunks[-1].choices[0].finish_reason == "stop"

    (rec,) = upstream.since(mark)
    body = assert_clean_forward(rec, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}, "keygate must ask the upstream for usage on streams"
    assert body["messages"] == MESSAGES

    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=True, request_id=request_id)
    total = gateway.usage(vk.slug)
    assert (total["requests"], total["promptTokens"], total["completionTokens"], total["estimatedRequests"]) == (1, 9, 3, 0)


def test_chat_stream_with_include_usage(keygate, gateway, upstream, make_vk, client_for, never):
    """With `stream_options={"include_usage": True}` the usage chunk reaches the client (last,
    with `choices: []`), the client's stream_options go upstream as they were, metered 9/3."""
    vk = make_vk()
    mark = upstream.mark()
    stream = client_for(vk).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, chunks
    assert with_usage[0] is chunks[-1] and with_usage[0].choices == []
    u = with_usage[0].usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (9, 3, 12)

    (rec,) = upstream.since(mark)
    body = assert_clean_forward(rec, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}

    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=True)


@pytest.mark.asyncio
async def test_async_client_stream(keygate, gateway, upstream, make_vk, inference_key, never):
    """AsyncOpenAI (x-stainless-async) streams through the gateway the same way."""
    vk = make_vk()
    mark = upstream.mark()
    client = AsyncOpenAI(base_url=f"{keygate.url}/v1", api_key=inference_key, default_headers={"x-keygate-virtual-key": vk.slug})
    try:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        text = ""
        usage_chunks = 0
        async for c in stream:
            usage_chunks += c.usage is not None
            text += "".join(ch.delta.content or "" for ch in c.choices)
    finally:
        await client.close()
    assert text == TEXT and usage_chunks == 0
    (rec,) = upstream.since(mark)
    body = assert_clean_forward(rec, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    assert body["stream_options"] == {"include_usage": True}
    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=True)


def test_legacy_completions(keygate, gateway, upstream, make_vk, client_for, never):
    """`/v1/completions`, plain and streamed: the upstream gets /v1/completions with the secret
    (usage asked for on the stream), the client gets the text, two records of 9/3."""
    vk = make_vk()
    client = client_for(vk)
    mark = upstream.mark()
    resp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=5)
    assert resp.choices[0].text == TEXT
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (9, 3)
    pieces = [c.choices[0].text for c in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True) if c.choices]
    assert "".join(pieces) == TEXT

    plain, streamed = upstream.since(mark)
    body = assert_clean_forward(plain, path="/v1/completions", secret=vk.secret, never=never, model="gpt-3.5-turbo-instruct")
    assert body["prompt"] == "Say hi" and body["max_tokens"] == 5 and "stream_options" not in body
    body = assert_clean_forward(streamed, path="/v1/completions", secret=vk.secret, never=never, model="gpt-3.5-turbo-instruct")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}

    rows = gateway.wait_records(vk.slug, 2)
    by_stream = {r["stream"]: r for r in rows}
    assert set(by_stream) == {False, True}
    for s, row in by_stream.items():
        assert_record(row, vk_id=vk.id, model="gpt-3.5-turbo-instruct", stream=s, endpoint="completions")


def test_stream_read_to_done_is_recorded_complete(keygate, gateway, upstream, make_vk, client_for):
    """The SDK reads `data: [DONE]` and closes the connection at once (openai/_streaming.py). If
    the upstream's connection ends a moment later (here 300 ms: a slow network, a keep-alive
    hub), the answer was still delivered whole, with usage: the record must say 200, not a
    client that went away (docs/gateway.md "Metering": estimated/cut-off only for a client that
    left mid-stream)."""
    vk = make_vk()
    upstream.linger_after_done = 0.3
    try:
        chunks = list(client_for(vk).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    finally:
        upstream.linger_after_done = 0.0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    (row,) = gateway.wait_records(vk.slug, 1)
    assert (row["promptTokens"], row["completionTokens"], row["estimated"]) == (9, 3, False), row
    assert (row["status"], row["errorKind"]) == (200, None), f"a complete stream recorded as {row['status']} {row['errorKind']}"
    total = gateway.usage(vk.slug)
    assert total["errors"] == 0, total


def test_stream_usage_estimated_when_the_upstream_reports_none(keygate, gateway, upstream, make_vk, client_for):
    """A hub that ignores stream_options sends no usage chunk: the client still gets its stream,
    and the record is counted locally and marked estimated."""
    vk = make_vk()
    upstream.omit_stream_usage = True
    try:
        chunks = list(client_for(vk).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    finally:
        upstream.omit_stream_usage = False
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    (row,) = gateway.wait_records(vk.slug, 1)
    # Not the status: see test_stream_read_to_done_is_recorded_complete (a race, pinned there).
    assert row["estimated"] is True and row["stream"] is True, row
    assert row["promptTokens"] > 0 and row["completionTokens"] >= len(kggateway.STREAM_PIECES), row
    assert gateway.usage(vk.slug)["estimatedRequests"] == 1


def test_stream_answered_with_json_upstream(keygate, gateway, upstream, make_vk, client_for):
    """The openai client's wire format: a `stream: true` request answered with `application/json` makes the
    SDK yield zero chunks, silently, so the gateway must "always answer streaming requests with
    SSE, or with a non-2xx JSON error before streaming starts", also when the upstream hub
    ignored `stream` and answered one JSON chat.completion."""
    vk = make_vk()
    upstream.push(200, {
        "id": "chatcmpl-json", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    })
    try:
        raw = client_for(vk).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    except openai.APIStatusError as e:  # a JSON error before streaming: allowed
        assert e.status_code >= 400
    else:
        ctype = raw.headers.get("content-type", "")
        chunks = list(raw.parse())
        assert ctype.startswith("text/event-stream"), (
            f"a stream request got a 200 {ctype!r} answer: the SDK yielded {len(chunks)} chunks and no error"
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    finally:
        upstream.clear_scripted()
    (row,) = gateway.wait_records(vk.slug, 1)
    assert row["stream"] is True


def test_virtual_key_header_variants(keygate, gateway, upstream, make_vk, client_for, never):
    """The header may carry the `vk_…` id; `x-portkey-virtual-key` works with a Bearer key too;
    with both headers, `x-keygate-virtual-key` wins (docs/gateway.md "first match wins")."""
    a = make_vk()
    b = make_vk()
    mark = upstream.mark()
    client_for(headers={"x-keygate-virtual-key": a.id}).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client_for(headers={"x-portkey-virtual-key": b.slug}).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client_for(headers={"x-keygate-virtual-key": a.slug, "x-portkey-virtual-key": b.slug}).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    first, second, third = upstream.since(mark)
    assert_clean_forward(first, path=CHAT, secret=a.secret, never=never, model="gpt-4o-mini")
    assert_clean_forward(second, path=CHAT, secret=b.secret, never=never, model="gpt-4o-mini")
    assert_clean_forward(third, path=CHAT, secret=a.secret, never=never + [b.secret], model="gpt-4o-mini")
    assert len(gateway.wait_records(a.slug, 2)) == 2
    assert len(gateway.wait_records(b.slug, 1)) == 1


# ---------------------------------------------------------------------------------------------
# Embeddings


def test_embeddings_sdk_default_base64(keygate, gateway, upstream, make_vk, client_for, never):
    """Without encoding_format the SDK sends "base64" itself and decodes what comes back: the
    upstream sees base64 asked, the client gets the float32 vectors, one record of 4 prompt tokens."""
    vk = make_vk()
    mark = upstream.mark()
    raw = client_for(vk).embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a", "b"])
    resp = raw.parse()
    assert [d.index for d in resp.data] == [0, 1]
    for i, d in enumerate(resp.data):
        assert d.embedding == pytest.approx(kggateway.f32(kggateway.embedding_vector(i)))
    assert resp.usage.prompt_tokens == 4

    (rec,) = upstream.since(mark)
    body = assert_clean_forward(rec, path="/v1/embeddings", secret=vk.secret, never=never, model="text-embedding-3-small")
    assert body == {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"}

    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="text-embedding-3-small", stream=False, endpoint="embeddings",
                  prompt=4, completion=0, request_id=raw.headers.get("x-request-id"))


def test_embeddings_float(keygate, gateway, upstream, make_vk, client_for, never):
    """`encoding_format="float"`: float arrays both ways, a single string input."""
    vk = make_vk()
    mark = upstream.mark()
    resp = client_for(vk).embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float")
    assert len(resp.data) == 1
    assert resp.data[0].embedding == pytest.approx(kggateway.embedding_vector(0))
    (rec,) = upstream.since(mark)
    body = assert_clean_forward(rec, path="/v1/embeddings", secret=vk.secret, never=never, model="text-embedding-3-small")
    assert body == {"model": "text-embedding-3-small", "input": "a", "encoding_format": "float"}
    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="text-embedding-3-small", stream=False, endpoint="embeddings", prompt=2, completion=0)


def test_embeddings_explicit_base64_from_a_float_only_upstream(keygate, gateway, upstream, make_vk, client_for):
    """The openai client's wire format: "If the user explicitly asked for base64, return a string" even
    when the upstream answered floats; the string decodes to the upstream's values."""
    vk = make_vk()
    vec = [0.5, -0.25, 0.125, 1.0]
    upstream.push(200, {"object": "list", "model": "text-embedding-3-small",
                        "data": [{"object": "embedding", "index": 0, "embedding": vec}],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1}})
    resp = client_for(vk).embeddings.create(model="text-embedding-3-small", input="a", encoding_format="base64")
    emb = resp.data[0].embedding
    assert isinstance(emb, str), f"asked for base64, got {type(emb).__name__}"
    assert list(struct.unpack("<4f", base64.b64decode(emb))) == vec
    (row,) = gateway.wait_records(vk.slug, 1)
    assert_record(row, vk_id=vk.id, model="text-embedding-3-small", stream=False, endpoint="embeddings", prompt=1, completion=0)


# ---------------------------------------------------------------------------------------------
# Models


def test_models_list_and_retrieve(keygate, gateway, upstream, make_vk, client_for):
    """`models.list()` is what the key may use (allow-list, aliases, default); without a virtual
    key named, every usable one as `@slug/model`. `models.retrieve("@slug/gpt-4o-mini")` goes out
    as `/v1/models/@slug%2Fgpt-4o-mini` and is found; a model off the allow-list is 404."""
    vk = make_vk(models=["gpt-4o-mini", "text-embedding-3-small"], aliases={"fast": "gpt-4o-mini"}, defaultModel="fast")
    mark = upstream.mark()

    listed = client_for(vk).models.list()
    ids = [m.id for m in listed.data]
    assert sorted(ids) == ["fast", "gpt-4o-mini", "text-embedding-3-small"], ids
    assert all(m.object == "model" for m in listed.data)

    anywhere = [m.id for m in client_for().models.list().data]
    for model in ("gpt-4o-mini", "text-embedding-3-small", "fast"):
        assert f"@{vk.slug}/{model}" in anywhere, anywhere

    sent_paths: list[str] = []
    http_client = openai.DefaultHttpxClient(event_hooks={"request": [lambda req: sent_paths.append(req.url.raw_path.decode())]})
    plain = client_for(http_client=http_client)
    model = plain.models.retrieve(f"@{vk.slug}/gpt-4o-mini")
    assert sent_paths == [f"/v1/models/@{vk.slug}%2Fgpt-4o-mini"], "the SDK percent-encodes the slash"
    assert model.id == f"@{vk.slug}/gpt-4o-mini" and model.object == "model"

    assert client_for(vk).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    assert client_for(vk).models.retrieve("fast").id == "fast"
    with pytest.raises(openai.NotFoundError):
        client_for(vk).models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError):
        plain.models.retrieve(f"@{vk.slug}/gpt-4o")

    assert upstream.since(mark) == [], "model listing is answered by keygate, not forwarded"


# ---------------------------------------------------------------------------------------------
# Choosing the virtual key and the model


def test_at_slug_routing_without_header(keygate, gateway, upstream, make_vk, client_for, never):
    """No header: `@slug/model` picks the virtual key and the upstream sees the bare model;
    plain and streamed, both metered on that key."""
    vk = make_vk()
    client = client_for()
    mark = upstream.mark()
    resp = client.chat.completions.create(model=f"@{vk.slug}/gpt-4o-mini", messages=MESSAGES)
    assert resp.choices[0].message.content == TEXT
    assert resp.model == "gpt-4o-mini"
    chunks = list(client.chat.completions.create(model=f"@{vk.slug}/gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT

    plain, streamed = upstream.since(mark)
    assert_clean_forward(plain, path=CHAT, secret=vk.secret, never=never + [f"@{vk.slug}"], model="gpt-4o-mini")
    body = assert_clean_forward(streamed, path=CHAT, secret=vk.secret, never=never + [f"@{vk.slug}"], model="gpt-4o-mini")
    assert body["stream_options"] == {"include_usage": True}

    rows = gateway.wait_records(vk.slug, 2)
    assert sorted(r["stream"] for r in rows) == [False, True]
    for row in rows:
        assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=row["stream"])


def test_alias_and_default_model(keygate, gateway, upstream, make_vk, client_for, never):
    """An alias goes upstream as its target; an empty model (header or bare `@slug`) takes the
    virtual key's default, itself an alias. Usage is recorded under the upstream model."""
    vk = make_vk(aliases={"fast": "gpt-4o-mini"}, defaultModel="fast")
    mark = upstream.mark()
    assert client_for(vk).chat.completions.create(model="fast", messages=MESSAGES).choices[0].message.content == TEXT
    assert client_for(vk).chat.completions.create(model="", messages=MESSAGES).model == "gpt-4o-mini"
    assert client_for().chat.completions.create(model=f"@{vk.slug}/fast", messages=MESSAGES).model == "gpt-4o-mini"
    assert client_for().chat.completions.create(model=f"@{vk.slug}", messages=MESSAGES).model == "gpt-4o-mini"
    chunks = list(client_for(vk).chat.completions.create(model="fast", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT

    got = upstream.since(mark)
    assert len(got) == 5, [r.describe() for r in got]
    for rec in got:
        assert_clean_forward(rec, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")

    rows = gateway.wait_records(vk.slug, 5)
    for row in rows:
        assert_record(row, vk_id=vk.id, model="gpt-4o-mini", stream=row["stream"])
    grouped = gateway.usage(vk.slug, groupBy="model")
    assert [(r["model"], r["requests"], r["promptTokens"], r["completionTokens"]) for r in grouped["rows"]] == [
        ("gpt-4o-mini", 5, 5 * PROMPT_TOKENS, 5 * COMPLETION_TOKENS)
    ]


def test_platform_key_default_and_allowed_virtual_keys(keygate, gateway, upstream, make_vk, never):
    """An INFERENCE key with `defaultVirtualKey` routes requests that name none to it (docs/gateway.md,
    third rule); its `virtualKeys` allow-list makes every other virtual key 403."""
    a = make_vk()
    b = make_vk()
    key = gateway.create_api_key("INFERENCE", "default vk", defaultVirtualKey=a.slug, virtualKeys=[a.slug])
    assert key["defaultVirtualKey"] in (a.slug, a.id), key
    client = OpenAI(base_url=f"{keygate.url}/v1", api_key=key["apiKey"])
    mark = upstream.mark()
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content == TEXT
    assert "gpt-4o-mini" in [m.id for m in client.models.list().data]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=f"@{b.slug}/gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError):
        OpenAI(base_url=f"{keygate.url}/v1", api_key=key["apiKey"], default_headers={"x-keygate-virtual-key": b.slug}) \
            .chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (rec,) = upstream.since(mark)
    assert_clean_forward(rec, path=CHAT, secret=a.secret, never=never + [key["apiKey"]], model="gpt-4o-mini")
    (row,) = gateway.wait_records(a.slug, 1)
    assert_record(row, vk_id=a.id, model="gpt-4o-mini", stream=False)
    assert row["apiKeyId"] == key["id"]
    gateway.wait_records(b.slug, 0, timeout=0.2)


def test_trailing_slash_base_url(keygate, gateway, upstream, make_vk, inference_key, never):
    """The openai client's wire format: a base URL ending in `/v1/` works the same."""
    vk = make_vk()
    client = OpenAI(base_url=f"{keygate.url}/v1/", api_key=inference_key, default_headers={"x-keygate-virtual-key": vk.slug})
    mark = upstream.mark()
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content == TEXT
    assert "gpt-4o-mini" in [m.id for m in client.models.list().data]
    (rec,) = upstream.since(mark)
    assert_clean_forward(rec, path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    gateway.wait_records(vk.slug, 1)


# ---------------------------------------------------------------------------------------------
# Errors


def _error_body(exc: openai.APIStatusError) -> dict:
    assert isinstance(exc.body, dict), exc.body
    assert set(exc.body) >= {"message", "type", "code"}, exc.body
    return exc.body


def test_error_mapping(keygate, gateway, upstream, make_vk, client_for, inference_key):
    """Refusals before any upstream call, each the SDK's own exception with an OpenAI-shaped body:
    no virtual key named -> BadRequestError (400, says how to name one); a bad keygate key ->
    AuthenticationError (401); a model off the allow-list or an unknown virtual key ->
    PermissionDeniedError (403). Nothing reaches the upstream and nothing is metered."""
    vk = make_vk(models=["gpt-4o-mini"])
    mark = upstream.mark()

    with pytest.raises(openai.BadRequestError) as e:
        client_for().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    body = _error_body(e.value)
    assert e.value.status_code == 400 and body["code"] == "invalid_request"
    assert "x-keygate-virtual-key" in body["message"] and "@slug/model" in body["message"]

    with pytest.raises(openai.BadRequestError):
        client_for().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    for bad_key in ("sk-not-a-keygate-key", "kg_adm_" + "A" * 38, inference_key[:-1] + ("x" if inference_key[-1] != "x" else "y")):
        with pytest.raises(openai.AuthenticationError) as e:
            client_for(vk, api_key=bad_key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert e.value.status_code == 401 and _error_body(e.value)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client_for(vk, api_key="sk-not-a-keygate-key").embeddings.create(model="text-embedding-3-small", input="a")
    with pytest.raises(openai.AuthenticationError):
        client_for(vk, api_key="sk-not-a-keygate-key").models.list()

    with pytest.raises(openai.PermissionDeniedError) as e:
        client_for(vk).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert e.value.status_code == 403 and _error_body(e.value)["code"] == "forbidden"
    with pytest.raises(openai.PermissionDeniedError):
        client_for(vk).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    with pytest.raises(openai.PermissionDeniedError):
        client_for().chat.completions.create(model=f"@{vk.slug}/gpt-4o", messages=MESSAGES)

    with pytest.raises(openai.PermissionDeniedError) as e:
        client_for(headers={"x-keygate-virtual-key": "no-such-slug"}).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert _error_body(e.value)["code"] == "forbidden"

    assert upstream.since(mark) == [], "a refused request reached the upstream"
    gateway.wait_records(vk.slug, 0, timeout=0.2)


def test_upstream_5xx_is_not_replayed(keygate, gateway, upstream, make_vk, client_for, never):
    """An upstream 500 comes back as the SDK's InternalServerError with the upstream's message
    and `x-should-retry: false`, so the SDK (max_retries=2) does not replay a possibly-billed
    request: the upstream sees exactly one call, one usage record with status 500."""
    vk = make_vk()
    upstream.push(500, {"error": {"message": "upstream exploded", "type": "server_error", "code": None}})
    mark = upstream.mark()
    with pytest.raises(openai.InternalServerError) as e:
        client_for(vk).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    upstream.clear_scripted()
    assert e.value.status_code == 500
    assert e.value.response.headers.get("x-should-retry") == "false"
    assert "upstream exploded" in _error_body(e.value)["message"]
    got = upstream.since(mark)
    assert len(got) == 1, f"the request was replayed: {[r.describe() for r in got]}"
    assert_clean_forward(got[0], path=CHAT, secret=vk.secret, never=never, model="gpt-4o-mini")
    (row,) = gateway.wait_records(vk.slug, 1)
    assert row["status"] == 500 and row["virtualKeyId"] == vk.id


# ---------------------------------------------------------------------------------------------
# The real mock upstream: a longer, paced stream arrives unbuffered


@pytest.fixture(scope="module")
def keygate_mock():
    # KEYGATE_MOCK_BIN, else beside the keygate binary under test (scripts/test.sh sets KEYGATE_BIN).
    binary = Path(os.environ.get("KEYGATE_MOCK_BIN") or kgtest.keygate_bin().parent / "keygate-mock")
    if not binary.is_file():
        pytest.fail(f"{binary} not found: build it with `cargo build -p keygate-testkit --bin keygate-mock`", pytrace=False)
    port = kgtest.free_port()
    proc = subprocess.Popen(
        [str(binary), "--listen", f"127.0.0.1:{port}", "--stream-chunks", "12", "--chunk-delay-ms", "150"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline().decode()
        assert "keygate-mock listening on http://" in line, line
        yield line.strip().rsplit(" ", 1)[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_stream_is_not_buffered(keygate, gateway, keygate_mock, canaries, inference_key):
    """Through keygate-mock (12 chunks, 150 ms apart) the first content chunk reaches the client
    long before the last one, the usage chunk arrives when asked for, and the record is 9/3."""
    secret = canaries.new("mock upstream", prefix="sk-mock-")
    gateway.create_provider_key("oa-mock", secret, f"{keygate_mock}/v1")
    vk = gateway.create_virtual_key("oa mock", "oa-mock", slug="oa-mock")
    client = OpenAI(base_url=f"{keygate.url}/v1", api_key=inference_key, default_headers={"x-keygate-virtual-key": vk["slug"]})
    t0 = time.monotonic()
    arrivals = []
    usage = None
    for c in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}):
        if c.choices and c.choices[0].delta.content:
            arrivals.append(time.monotonic() - t0)
        if c.usage is not None:
            usage = c.usage
    assert len(arrivals) >= 10, arrivals
    assert arrivals[-1] - arrivals[0] > 0.4, f"chunks arrived together (buffered): {arrivals}"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (9, 3)
    (row,) = gateway.wait_records(vk["slug"], 1)
    assert_record(row, vk_id=vk["id"], model="gpt-4o-mini", stream=True)


def test_client_disconnect_mid_stream_is_billed(keygate, gateway, keygate_mock, canaries, inference_key):
    """A client that goes away mid-stream is billed for what the upstream produced until then
    (docs/gateway.md "Metering"): one record, stream, estimated, at least the chunks read."""
    secret = canaries.new("mock upstream disconnect", prefix="sk-mock-")
    gateway.create_provider_key("oa-mock-dc", secret, f"{keygate_mock}/v1")
    vk = gateway.create_virtual_key("oa mock dc", "oa-mock-dc", slug="oa-mock-dc")
    client = OpenAI(base_url=f"{keygate.url}/v1", api_key=inference_key, default_headers={"x-keygate-virtual-key": vk["slug"]})
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    read = 0
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            read += 1
            if read == 2:
                break
    stream.close()
    (row,) = gateway.wait_records(vk["slug"], 1)
    assert row["stream"] is True and row["virtualKeyId"] == vk["id"], row
    assert row["estimated"] is True, row
    assert row["completionTokens"] >= 2, row
    assert row["status"] != 200 and row["errorKind"], "a cut-off stream is not recorded as a complete answer"


def test_no_planted_secret_in_responses_or_logs(keygate, make_vk, client_for, canaries):
    """Last: after all of the above, no planted provider secret appears in keygate's logs or data
    files, and none in a gateway answer (one more call of each kind is checked here)."""
    vk = make_vk()
    bodies = {}
    client = client_for(vk)
    bodies["chat"] = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES).http_response
    bodies["models"] = client.models.with_raw_response.list().http_response
    blobs = {k: ("\n".join(f"{h}: {v}" for h, v in r.headers.items()) + "\n\n" + r.text).encode() for k, r in bodies.items()}
    exit_status = keygate.stop()
    blobs["keygate stdout+stderr"] = keygate.log_bytes()
    blobs.update({f"data dir file {n}": b for n, b in keygate.data_files().items()})
    assert b" DEBUG " in blobs["keygate stdout+stderr"]
    leaks = kgtest.find_leaks(canaries.planted, blobs)
    assert leaks == [], "planted secrets found:\n" + "\n".join(leaks)
    assert exit_status == 0
