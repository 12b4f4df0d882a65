"""Shared helpers for the Python seed-client tests: the real keygate binary as a subprocess,
a recorder of every HTTP exchange made through `requests`, the native management API, and
secret-leak scanning (raw, URL-encoded, hex and base64 forms of every planted secret).

Fixtures live in conftest.py; this module holds the plain code so test modules can import it
(`import kgtest`: pytest puts tests/python on sys.path because it is not a package).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import os
import re
import secrets
import signal
import socket
import string
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import quote, quote_plus, urlsplit

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "keygate"
ADMIN_KEY_RE = re.compile(r"kg_adm_[A-Za-z0-9]{38}")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class KeygateError(RuntimeError):
    """The binary is missing or did not come up; the message says why and shows its log tail."""


def keygate_bin() -> Path:
    """`KEYGATE_BIN`, else `<repo>/target/debug/keygate`; raises with a clear message if absent."""
    path = Path(os.environ.get("KEYGATE_BIN") or DEFAULT_BIN)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise KeygateError(
            f"keygate binary not found or not executable at {path}. "
            "Build it with `cargo build` (or run scripts/test.sh), or point KEYGATE_BIN at it."
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _healthz(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class KeygateServer:
    """One `keygate serve` process on 127.0.0.1 with a fresh data directory.

    stdout and stderr go to files beside (not inside) the data directory, so a scan of the data
    directory sees only what keygate itself wrote there.
    """

    def __init__(self, base_dir: Path, extra_args: Iterable[str] = (), extra_env: Optional[dict] = None):
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.stdout_path = self.base_dir / "stdout.log"
        self.stderr_path = self.base_dir / "stderr.log"
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.master_key = random_master_key()
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.admin_key: Optional[str] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict:
        # Nothing from the caller's KEYGATE_* environment may change which store or config is used.
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
        env.update(KEYGATE_MASTER_KEY=self.master_key, KEYGATE_LOG="debug")
        env.update(self.extra_env)
        return env

    def start(self) -> "KeygateServer":
        binary = keygate_bin()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between our probe and the bind
            self.port = free_port()
            cmd = [
                str(binary), "serve",
                "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.data_dir),
                "--allow-private-upstreams",
                *self.extra_args,
            ]
            with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self._env())
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self.admin_key is None:
                    m = ADMIN_KEY_RE.search(self.stdout_path.read_text(errors="replace"))
                    if m:
                        self.admin_key = m.group(0)
                if self.admin_key and _healthz(self.port):
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.stop()
                raise KeygateError(
                    f"keygate did not become healthy with an ADMIN key banner within {START_TIMEOUT_S}s "
                    f"(admin key seen: {self.admin_key is not None}).\n{self.log_tail()}"
                )
            last_error = f"keygate exited with status {self.proc.returncode} at start.\n{self.log_tail()}"
            if "in use" not in self.log_text().lower():
                break
        raise KeygateError(last_error)

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Idempotent; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_bytes(self) -> bytes:
        out = b""
        for p in (self.stdout_path, self.stderr_path):
            if p.exists():
                out += p.read_bytes()
        return out

    def log_text(self) -> str:
        """stdout (the banner) followed by stderr (the logs), as text."""
        return self.log_bytes().decode("utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- last {lines} lines of keygate output ({self.base_dir}) ---\n{tail}"

    def data_files(self) -> dict[str, bytes]:
        """Every file under the data directory, by relative path, as raw bytes."""
        out = {}
        if self.data_dir.exists():
            for p in sorted(self.data_dir.rglob("*")):
                if p.is_file():
                    out[str(p.relative_to(self.data_dir))] = p.read_bytes()
        return out


# ---------------------------------------------------------------------------------------------
# Recording every exchange made through `requests` (the Vijil client and the native assertions).


@dataclasses.dataclass
class Exchange:
    method: str
    url: str
    status: int
    request_body: bytes
    response_headers: requests.structures.CaseInsensitiveDict
    response_body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def describe(self) -> str:
        return f"{self.method} {self.path} -> {self.status}: {self.response_body[:500]!r}"


class HttpRecorder:
    """Wraps `requests.Session.send` (which every requests call goes through, the Vijil client's
    module-level `requests.get/post/...` included) and keeps each exchange. The client's code is
    not touched; only the transport is observed."""

    def __init__(self):
        self.exchanges: list[Exchange] = []
        self._orig_send: Optional[Callable] = None

    def install(self) -> None:
        orig = requests.sessions.Session.send
        recorder = self

        def send(session, request, **kwargs):
            resp = orig(session, request, **kwargs)
            if not kwargs.get("stream"):
                body = request.body or b""
                if isinstance(body, str):
                    body = body.encode()
                recorder.exchanges.append(
                    Exchange(
                        method=request.method,
                        url=request.url,
                        status=resp.status_code,
                        request_body=body,
                        response_headers=requests.structures.CaseInsensitiveDict(resp.headers),
                        response_body=resp.content or b"",
                    )
                )
            return resp

        self._orig_send = orig
        requests.sessions.Session.send = send

    def uninstall(self) -> None:
        if self._orig_send is not None:
            requests.sessions.Session.send = self._orig_send
            self._orig_send = None

    def mark(self) -> int:
        return len(self.exchanges)

    def since(self, mark: int, base_url: Optional[str] = None) -> list[Exchange]:
        return [e for e in self.exchanges[mark:] if base_url is None or e.url.startswith(base_url)]

    def for_server(self, base_url: str) -> list[Exchange]:
        return self.since(0, base_url)


# ---------------------------------------------------------------------------------------------
# The native management API, for asserting server state independently of the client under test.


class NativeApi:
    def __init__(self, base_url: str, admin_key: str):
        self.base = base_url.rstrip("/")
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.headers["Authorization"] = f"Bearer {admin_key}"

    def _get(self, path: str, **params) -> requests.Response:
        return self.s.get(f"{self.base}{path}", params=params or None, timeout=10)

    def provider_key(self, name_or_id: str) -> Optional[dict]:
        """The `data` object of GET /api/v1/provider_keys/{name}, or None on 404."""
        r = self._get(f"/api/v1/provider_keys/{quote(name_or_id, safe='')}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"GET provider key {name_or_id}: {r.status_code} {r.text}"
        return r.json()["data"]

    def _all_pages(self, path: str) -> list[dict]:
        out: list[dict] = []
        page = 1
        while True:
            r = self._get(path, page=page, limit=100)
            assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
            body = r.json()
            out.extend(body["data"])
            if not body["data"] or len(out) >= body.get("total", len(out)):
                return out
            page += 1

    def provider_keys(self) -> list[dict]:
        return self._all_pages("/api/v1/provider_keys")

    def audit_events(self) -> list[dict]:
        """Every audit event, oldest first."""
        events = self._all_pages("/api/v1/audit")
        return sorted(events, key=lambda e: (e["at"], e["id"]))


# ---------------------------------------------------------------------------------------------
# Planted secrets and where they must never show up.

_ALNUM = string.ascii_letters + string.digits


def random_token(n: int = 32) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _b64_cores(raw: bytes, encode: Callable[[bytes], bytes]) -> list[bytes]:
    """The base64 characters that depend only on `raw`, for each of the 3 alignments it can have
    inside a longer encoded blob."""
    cores = []
    for k in range(3):
        enc = encode(b"\0" * k + raw)
        first_group = -(-k // 3)  # ceil(k / 3)
        last_group = (k + len(raw)) // 3
        cores.append(enc[4 * first_group: 4 * last_group])
    return cores


def secret_forms(secret: str) -> dict[bytes, str]:
    """Byte patterns (-> form name) that reveal `secret` or all of it but its 4-char hint."""
    raw = secret.encode()
    forms: dict[bytes, str] = {}

    def add(pattern: bytes, name: str) -> None:
        if len(pattern) >= 12:
            forms.setdefault(pattern, name)

    # Responses may show the last 4 characters (the hint); everything before them is secret.
    add(raw[:-4], "raw (without the 4-char hint)")
    add(quote(secret[:-4], safe="").encode(), "URL-encoded")
    add(quote_plus(secret[:-4]).encode(), "form-encoded")
    add(raw.hex().encode(), "hex")
    add(raw.hex().upper().encode(), "HEX")
    for i, core in enumerate(_b64_cores(raw, base64.b64encode)):
        add(core, f"base64 (alignment {i})")
    for i, core in enumerate(_b64_cores(raw, base64.urlsafe_b64encode)):
        add(core, f"base64url (alignment {i})")
    return forms


class Canaries:
    """Secrets planted in the server during a test module, by label."""

    def __init__(self):
        self.planted: dict[str, str] = {}

    def new(self, label: str, prefix: str = "") -> str:
        secret = f"{prefix}{random_token(32)}"
        assert label not in self.planted, label
        self.planted[label] = secret
        return secret


def find_leaks(planted: dict[str, str], blobs: dict[str, bytes]) -> list[str]:
    """'<secret label> as <form> in <where>' for every planted secret found in any blob."""
    found = []
    for label, secret in planted.items():
        for pattern, form in secret_forms(secret).items():
            for where, blob in blobs.items():
                if pattern in blob:
                    found.append(f"secret {label!r} as {form} in {where}")
    return found


@contextlib.contextmanager
def captured_stdout():
    """Collects what the code under it prints (the Vijil client prints its swallowed errors)."""
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf
