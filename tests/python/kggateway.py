"""Helpers for the gateway tests (test_openai.py, test_portkey.py).

`RecordingUpstream` is an OpenAI-shaped upstream: a `ThreadingHTTPServer` on 127.0.0.1
(ephemeral port) in a daemon thread that keeps every request it receives (method, path,
query, headers, body) and answers like keygate-mock:

- `POST .../chat/completions`: a `chat.completion` (text "Hello!", usage 9 prompt / 3
  completion, the request's model echoed), or with `"stream": true` an SSE stream of
  `chat.completion.chunk`s ("Hel", "lo", "!") followed, only when
  `stream_options.include_usage` is true, by a usage-only chunk (`choices: []`), then
  `data: [DONE]`.
- `POST .../completions`: a `text_completion` with the same usage (or, streamed, the same
  pieces and the same usage rule as chat).
- `POST .../embeddings`: one 3-float vector per input (`[0.1*(i+1), -0.2, 0.3]`), as float
  arrays, or as base64 of little-endian float32 when `encoding_format` is `base64`; usage
  prompt 2 per input.
- `GET .../models` and `GET .../models/{id}`.

`omit_stream_usage = True` makes it a hub that ignores `stream_options` (no usage chunk ever);
`linger_after_done = s` keeps a stream's connection open s seconds after `data: [DONE]`.

Anything else answers 404 in OpenAI's error shape. `push(status, body)` makes the next
request get that answer instead (a scripted failure). The server never raises into the test;
a handler failure answers 500 and is kept in `errors`.

`Gateway` is the keygate side: the native management calls the tests need (platform keys,
provider keys, virtual keys, usage) with the ADMIN key, through `requests`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections import deque
from typing import Any, Optional
from urllib.parse import quote, unquote, urlsplit

import requests

PROMPT_TOKENS = 9
COMPLETION_TOKENS = 3
STREAM_PIECES = ("Hel", "lo", "!")
TEXT = "".join(STREAM_PIECES)


def embedding_vector(i: int) -> list[float]:
    """The vector answered for the i-th input. Exactly representable in float32 after rounding."""
    return [round(0.1 * (i + 1), 6), -0.2, 0.3]


def f32(xs: list[float]) -> list[float]:
    """The values after a float32 round trip (what a base64 vector decodes to)."""
    return list(struct.unpack(f"<{len(xs)}f", struct.pack(f"<{len(xs)}f", *xs)))


@dataclasses.dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its values joined by ", "
    raw_headers: list[tuple[str, str]]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header_blob(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.raw_headers)

    def describe(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''} {self.body[:300]!r}"


class RecordingUpstream:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.errors: list[str] = []
        self._scripted: deque = deque()
        # Like a hub that ignores stream_options: streams never carry a usage chunk.
        self.omit_stream_usage = False
        # Seconds the connection stays open after `data: [DONE]` before it ends (a slow network).
        self.linger_after_done = 0.0
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "RecordingUpstream":
        upstream = self

        class Handler(_Handler):
            owner = upstream

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """What a provider key's base URL / Portkey `custom_host` points at."""
        return f"{self.url}/v1"

    # -- what was received -----------------------------------------------------------------

    def mark(self) -> int:
        with self._lock:
            return len(self.received)

    def since(self, mark: int) -> list[Received]:
        with self._lock:
            return list(self.received[mark:])

    def _add(self, r: Received) -> None:
        with self._lock:
            self.received.append(r)

    # -- scripted answers ------------------------------------------------------------------

    def push(self, status: int, body: Any, headers: Optional[dict] = None) -> None:
        """The next request (whatever it is) gets this JSON answer instead of the usual one."""
        with self._lock:
            self._scripted.append((status, body, dict(headers or {})))

    def _pop_scripted(self):
        with self._lock:
            return self._scripted.popleft() if self._scripted else None

    def clear_scripted(self) -> None:
        with self._lock:
            self._scripted.clear()


def _chat_completion(model: str) -> dict:
    return {
        "id": "chatcmpl-rec-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
        "system_fingerprint": "fp_rec",
    }


def _chunks(model: str, include_usage: bool) -> list[dict]:
    base = {"id": "chatcmpl-rec-2", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}]
    for piece in STREAM_PIECES:
        out.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]})
    out.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    return _with_usage(out, base, include_usage)


def _text_chunks(model: str, include_usage: bool) -> list[dict]:
    base = {"id": "cmpl-rec-2", "object": "text_completion", "created": int(time.time()), "model": model}
    out = [
        {**base, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}
        for piece in STREAM_PIECES
    ]
    out.append({**base, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]})
    return _with_usage(out, base, include_usage)


def _with_usage(out: list[dict], base: dict, include_usage: bool) -> list[dict]:
    if include_usage:
        out.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            }
        )
    return out


def _embeddings(body: dict) -> dict:
    inp = body.get("input")
    if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)):
        inputs = [inp]
    else:
        inputs = list(inp or [])
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    for i, _ in enumerate(inputs):
        vec = embedding_vector(i)
        emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if as_b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    n = 2 * len(inputs)
    return {"object": "list", "data": data, "model": body.get("model", ""), "usage": {"prompt_tokens": n, "total_tokens": n}}


def _model(mid: str) -> dict:
    return {"id": mid, "object": "model", "created": 1686935002, "owned_by": "recording-upstream"}


class _Handler(BaseHTTPRequestHandler):
    owner: RecordingUpstream
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _record(self) -> Received:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        raw = [(k.lower(), v) for k, v in self.headers.items()]
        headers: dict[str, str] = {}
        for k, v in raw:
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        r = Received(self.command, parts.path, parts.query, headers, raw, body, time.time())
        self.owner._add(r)
        return r

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[dict]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for ev in events:
            self.wfile.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        if self.owner.linger_after_done:
            time.sleep(self.owner.linger_after_done)
        self.close_connection = True

    def _not_found(self) -> None:
        self._json(404, {"error": {"message": f"no route {self.command} {self.path}", "type": "invalid_request_error", "code": "not_found"}})

    def _dispatch(self) -> None:
        r = self._record()
        try:
            path = r.path
            scripted = self.owner._pop_scripted()
            if scripted is not None:
                status, body, headers = scripted
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                return
            if self.command == "POST" and path.endswith("/chat/completions"):
                body = r.json or {}
                model = body.get("model", "")
                if body.get("stream"):
                    include = bool((body.get("stream_options") or {}).get("include_usage"))
                    self._sse(_chunks(model, include and not self.owner.omit_stream_usage))
                else:
                    self._json(200, _chat_completion(model))
            elif self.command == "POST" and path.endswith("/completions") and (r.json or {}).get("stream"):
                body = r.json or {}
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                self._sse(_text_chunks(body.get("model", ""), include))
            elif self.command == "POST" and path.endswith("/completions"):
                body = r.json or {}
                self._json(
                    200,
                    {
                        "id": "cmpl-rec-1",
                        "object": "text_completion",
                        "created": int(time.time()),
                        "model": body.get("model", ""),
                        "choices": [{"index": 0, "text": TEXT, "logprobs": None, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
                    },
                )
            elif self.command == "POST" and path.endswith("/embeddings"):
                self._json(200, _embeddings(r.json or {}))
            elif self.command == "GET" and path.endswith("/models"):
                self._json(200, {"object": "list", "data": [_model("gpt-4o-mini"), _model("text-embedding-3-small")]})
            elif self.command == "GET" and "/models/" in path:
                self._json(200, _model(unquote(path.split("/models/", 1)[1])))
            else:
                self._not_found()
        except Exception as e:  # keep the test thread informed, never crash the server
            self.owner.errors.append(f"{r.describe()}: {e!r}")
            try:
                self._json(500, {"error": {"message": "recording upstream failed", "type": "server_error"}})
            except Exception:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


# ---------------------------------------------------------------------------------------------
# keygate's side: native management calls and what the tests check on every forwarded call.


class Gateway:
    """The native API of one keygate server as its ADMIN key (requests, no proxy)."""

    def __init__(self, base_url: str, admin_key: str):
        self.url = base_url.rstrip("/")
        self.admin_key = admin_key
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.headers["Authorization"] = f"Bearer {admin_key}"

    def _ok(self, r: requests.Response, what: str) -> dict:
        assert 200 <= r.status_code < 300, f"{what}: {r.status_code} {r.text}"
        return r.json()

    def create_api_key(self, key_type: str = "INFERENCE", description: str = "gateway tests", **fields: Any) -> dict:
        """A platform key (`POST /api/v1/api_keys`); the secret is in `apiKey` of the answer."""
        r = self.s.post(
            f"{self.url}/api/v1/api_keys",
            json={"apiKeyType": key_type, "description": description, **fields},
            timeout=10,
        )
        data = self._ok(r, f"create {key_type} API key")["data"]
        assert data["apiKeyType"] == key_type and data["apiKey"].startswith("kg_inf_" if key_type == "INFERENCE" else "kg_adm_"), data
        return data

    def create_provider_key(self, name: str, secret: str, base_url: str, hub: str = "openai") -> dict:
        r = self.s.post(
            f"{self.url}/api/v1/provider_keys",
            json={"name": name, "modelHub": hub, "apiKey": secret, "baseUrl": base_url},
            timeout=10,
        )
        return self._ok(r, f"create provider key {name}")["data"]

    def provider_key(self, name_or_id: str) -> Optional[dict]:
        r = self.s.get(f"{self.url}/api/v1/provider_keys/{quote(name_or_id, safe='')}", timeout=10)
        if r.status_code == 404:
            return None
        return self._ok(r, f"get provider key {name_or_id}")["data"]

    def create_virtual_key(self, name: str, provider_key: str, **fields: Any) -> dict:
        r = self.s.post(
            f"{self.url}/api/v1/virtual_keys",
            json={"name": name, "providerKey": provider_key, **fields},
            timeout=10,
        )
        body = self._ok(r, f"create virtual key {name}")
        assert body.get("success") is True, body
        return body["data"]

    def virtual_key(self, slug_or_id: str) -> Optional[dict]:
        r = self.s.get(f"{self.url}/api/v1/virtual_keys/{quote(slug_or_id, safe='')}", timeout=10)
        if r.status_code == 404:
            return None
        return self._ok(r, f"get virtual key {slug_or_id}")["data"]

    def usage(self, virtual_key: str, **params: Any) -> dict:
        r = self.s.get(f"{self.url}/api/v1/usage", params={"virtualKey": virtual_key, **params}, timeout=10)
        return self._ok(r, f"usage of {virtual_key}")["data"]

    def records(self, virtual_key: str) -> tuple[list[dict], int]:
        r = self.s.get(
            f"{self.url}/api/v1/usage/records", params={"virtualKey": virtual_key, "limit": 100}, timeout=10
        )
        body = self._ok(r, f"usage records of {virtual_key}")
        return body["data"], body["total"]

    def wait_records(self, virtual_key: str, n: int, timeout: float = 60.0) -> list[dict]:
        """The virtual key's usage records, newest first, once there are `n` of them.

        A stream's record is written when keygate sees the upstream end, which can be a moment
        after the client read `[DONE]`; so this waits (bounded), then checks that no more come."""
        deadline = time.monotonic() + timeout
        rows, total = self.records(virtual_key)
        while total < n and time.monotonic() < deadline:
            time.sleep(0.05)
            rows, total = self.records(virtual_key)
        time.sleep(0.2)
        rows, total = self.records(virtual_key)
        assert total == len(rows), (total, len(rows))
        assert total == n, f"expected {n} usage record(s) for {virtual_key}, found {total}: {rows}"
        return rows


def assert_clean_forward(
    rec: Received,
    *,
    path: str,
    secret: str,
    never: list[str],
    model: Optional[str] = None,
    method: str = "POST",
) -> dict:
    """What every forwarded call must look like upstream: the path, the stored provider secret
    as the one bearer credential, none of the client's credentials or gateway headers, and the
    model after alias/default resolution. Returns the JSON body sent."""
    assert rec.method == method, rec.describe()
    assert rec.path == path, rec.describe()
    auths = [v for k, v in rec.raw_headers if k == "authorization"]
    assert auths == [f"Bearer {secret}"], f"upstream authorization: {auths}"
    blob = rec.header_blob() + "\n" + rec.body.decode(errors="replace")
    for value in never:
        assert value not in blob, f"{value[:12]}… reached the upstream:\n{blob}"
    leaked = [k for k, _ in rec.raw_headers if k.startswith(("x-keygate-", "x-portkey-"))]
    assert leaked == [], f"gateway headers forwarded upstream: {leaked}"
    body = rec.json if rec.body else None
    if model is not None:
        assert isinstance(body, dict) and body.get("model") == model, f"upstream model: {rec.describe()}"
    return body


def assert_record(
    row: dict,
    *,
    vk_id: str,
    model: str,
    stream: bool,
    endpoint: str = "chat",
    prompt: int = PROMPT_TOKENS,
    completion: int = COMPLETION_TOKENS,
    status: Optional[int] = 200,
    request_id: Optional[str] = None,
) -> None:
    """One usage record as expected. For streams the status is not checked unless given: both
    SDKs close the connection as soon as they read `[DONE]`, and whether keygate saw the upstream
    end first is a race (see test_openai.py::test_stream_read_to_done_is_recorded_complete)."""
    if stream and status == 200:
        status = None
    got = {k: row.get(k) for k in ("virtualKeyId", "model", "stream", "endpoint", "promptTokens", "completionTokens", "status", "estimated")}
    want = {
        "virtualKeyId": vk_id,
        "model": model,
        "stream": stream,
        "endpoint": endpoint,
        "promptTokens": prompt,
        "completionTokens": completion,
        "status": status,
        "estimated": False,
    }
    if status is None:
        got.pop("status")
        want.pop("status")
    assert got == want, f"usage record {row}"
    if request_id is not None:
        assert row.get("requestId") == request_id, (row.get("requestId"), request_id)
