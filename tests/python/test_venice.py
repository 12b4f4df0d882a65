"""The unmodified Venice client (`venice-py` 2.9.0, `venice_ai`) against the real keygate binary.

Runs the examples of the Venice seed document (`venice_ai.resources.api_keys`) through
`VeniceClient(base_url=f"{url}/api/v1", api_key=<ADMIN key>)` inside `async with`, as
the Venice client's wire format says the client speaks: list, create (the seed's INFERENCE and ADMIN
bodies), retrieve, update (the id in the body, `ipAllowlist: []` clears), `iter_all` over several
pages, the seed's batch delete of test keys, the calling key's rate limits and refusal log, and
wallet sign-in (`get_web3_token` / `create_web3_key`, signed with `eth_account`). Around them:
base-URL normalisation, rotation with a grace period, expiry, IP allow-lists, the privilege rule,
the creation throttle and cap, workspace isolation, and that every refusal reaches the caller as
the client's documented exception class (the Venice client's wire format).

The client has no call for rotation, key rate limits (`rateLimits`) or wallet registration; those
go over plain HTTP with `requests`, everything else through the client. Each test makes its own
keys; descriptions contain "test" only where the seed's batch delete is meant to remove them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Any, Awaitable, Optional

import aiohttp
import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from venice_ai import VeniceClient
from venice_ai import exceptions as vx
from venice_ai.types.api import CreateApiKeyRequest, CreatedApiKey, Web3CreateApiKeyRequest

import kgtest

# What the recording upstream (kggateway) answers: 9 prompt + 3 completion tokens.
CHAT_MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hi"}]

IP_RESTRICTED_PREFIX = "This API key is restricted to configured IP addresses"

# The client warns at construction that pydantic-settings is absent; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:pydantic-settings is not installed:UserWarning")


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def keygate(keygate_factory):
    """This module's server. It creates far more than 20 keys a minute, so the creation throttle
    is raised here; the throttle itself is tested on a server of its own."""
    server = keygate_factory(extra_env={"KEYGATE_API_KEY_CREATIONS_PER_MINUTE": "100000"})
    yield server
    server.stop()


def venice(keygate, key: Optional[str] = None, base_url: Optional[str] = None, **kwargs) -> VeniceClient:
    """The client as the seed builds it: API root with its version, a key (the ADMIN key by default)."""
    return VeniceClient(
        base_url=base_url if base_url is not None else f"{keygate.url}/api/v1",
        api_key=key if key is not None else keygate.admin_key,
        **kwargs,
    )


def http(key: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = f"Bearer {key}"
    return s


def parse_time(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    assert t.tzinfo is not None, f"timestamp without a zone: {s!r}"
    return t


def iso_in(seconds: float) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def raises(exc_type: type, status: int, awaitable: Awaitable, contains: Optional[str] = None) -> Any:
    """Awaits a client call that must fail with exactly `exc_type` (not a subclass) and `status`."""
    with pytest.raises(vx.VeniceError) as info:
        await awaitable
    e = info.value
    assert type(e) is exc_type, f"expected {exc_type.__name__}, got {type(e).__name__}: {e}"
    assert e.status_code == status, f"expected status {status}, got {e.status_code}: {e}"
    if contains is not None:
        assert contains.lower() in str(e).lower(), f"{contains!r} not in {e}"
    return e


def raw_list(keygate, key: Optional[str] = None, **params) -> list[dict]:
    r = http(key or keygate.admin_key).get(f"{keygate.url}/api/v1/api_keys", params=params or None, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def native_create(keygate, key: Optional[str] = None, **body) -> dict:
    """A key created over plain HTTP (for fields the client cannot send, e.g. `rateLimits`)."""
    r = http(key or keygate.admin_key).post(f"{keygate.url}/api/v1/api_keys", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["data"]


def register_wallet(keygate, address: str, allow_admin: bool = False) -> dict:
    body: dict[str, Any] = {"address": address}
    if allow_admin:
        body["allowAdmin"] = True
    r = http(keygate.admin_key).post(f"{keygate.url}/api/v1/wallets", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["data"]


def sign(account, token: str) -> str:
    """EIP-191 personal_sign over the token string, as a wallet would."""
    signed = Account.sign_message(encode_defunct(text=token), private_key=account.key)
    return "0x" + bytes(signed.signature).hex()


def root_id(keygate) -> str:
    mine = [k for k in raw_list(keygate) if k["last6Chars"] == keygate.admin_key[-6:]]
    assert len(mine) == 1, mine
    return mine[0]["id"]


class WireLog:
    """Every exchange of an aiohttp session, observed through a TraceConfig (the body is read in
    the hook and stays cached for the client). The client's code is untouched."""

    def __init__(self) -> None:
        self.exchanges: list[dict] = []

    def trace_config(self) -> aiohttp.TraceConfig:
        tc = aiohttp.TraceConfig()

        async def on_end(session, ctx, params):
            body = await params.response.read()
            self.exchanges.append(
                {
                    "method": params.method,
                    "url": params.url,
                    "status": params.response.status,
                    "content_type": params.response.headers.get("Content-Type", ""),
                    "body": body,
                }
            )

        tc.on_request_end.append(on_end)
        return tc


# ---------------------------------------------------------------------------------------------
# Pointing the client at keygate


@pytest.mark.asyncio
async def test_base_url_forms(keygate, monkeypatch):
    """The API root with its version works, and so does the bare host (with or without a trailing
    slash), which the client turns into `/api/v1`, also when it comes from VENICE_API_BASE_URL.
    A URL with another path is used as given."""
    rid = root_id(keygate)
    for base in (f"{keygate.url}/api/v1", f"{keygate.url}/api/v1/", keygate.url, f"{keygate.url}/"):
        async with venice(keygate, base_url=base) as client:
            keys = await client.api_keys.list()
        assert rid in [k.id for k in keys], base
    monkeypatch.setenv("VENICE_API_BASE_URL", keygate.url)
    async with VeniceClient(api_key=keygate.admin_key) as client:
        assert rid in [k.id for k in await client.api_keys.list()]
    monkeypatch.delenv("VENICE_API_BASE_URL")
    async with venice(keygate, base_url=f"{keygate.url}/gw/venice") as client:
        await raises(vx.NotFoundError, 404, client.api_keys.list())


# ---------------------------------------------------------------------------------------------
# The seed document: list, create, retrieve, update


@pytest.mark.asyncio
async def test_seed_list_create_retrieve(keygate):
    """list() shows the ADMIN key; the seed's two create bodies; retrieve() of each; the secret is
    in the creation answer only."""
    async with venice(keygate) as client:
        before = await client.api_keys.list()
        root = [k for k in before if k.last6Chars == keygate.admin_key[-6:]]
        assert len(root) == 1 and root[0].apiKeyType == "ADMIN", before

        # the Venice client's wire format, first captured body.
        inf = await client.api_keys.create(
            api_key_request=CreateApiKeyRequest(
                apiKeyType="INFERENCE",
                description="Example API Key",
                consumptionLimit={"usd": 50, "diem": 10},
                limitPeriod="MONTH",
                expiresAt="2030-01-01T00:00:00Z",
            )
        )
        assert isinstance(inf, CreatedApiKey)
        assert inf.apiKey.startswith("kg_inf_") and inf.apiKeyType == "INFERENCE"
        assert inf.description == "Example API Key"
        assert (inf.consumptionLimit.usd, inf.consumptionLimit.diem) == (50, 10)
        assert inf.limitPeriod == "MONTH"
        assert parse_time(inf.expiresAt) == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
        assert inf.ipAllowlist == []

        # the Venice client's wire format, second captured body: the allow-list comes back in CIDR form.
        adm = await client.api_keys.create(
            api_key_request=CreateApiKeyRequest(
                apiKeyType="ADMIN", description="admin", modelPrivacy="PRIVATE_ONLY", ipAllowlist=["11.22.33.44"]
            )
        )
        assert adm.apiKey.startswith("kg_adm_") and adm.apiKeyType == "ADMIN"
        assert adm.ipAllowlist == ["11.22.33.44/32"]
        assert adm.expiresAt is None

        # A date without a time is accepted too.
        dated = await client.api_keys.create(
            api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="dated", expiresAt="2030-01-01")
        )
        assert parse_time(dated.expiresAt) == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

        got = await client.api_keys.retrieve(api_key_id=inf.id)
        assert got.id == inf.id and got.apiKeyType == "INFERENCE" and got.description == "Example API Key"
        assert got.last6Chars == inf.apiKey[-6:]
        assert (got.consumptionLimits.usd, got.consumptionLimits.diem) == (50, 10)  # plural in ApiKey
        assert got.limitPeriod == "MONTH" and got.modelPrivacy == "ALL" and got.ipAllowlist == []
        assert parse_time(got.expiresAt) == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
        assert abs((parse_time(got.createdAt) - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 60
        assert float(got.usage.trailingSevenDays.usd) == 0 and float(got.usage.trailingSevenDays.diem) == 0

        got = await client.api_keys.retrieve(api_key_id=adm.id)
        assert got.apiKeyType == "ADMIN" and got.modelPrivacy == "PRIVATE_ONLY"
        assert got.ipAllowlist == ["11.22.33.44/32"] and got.last6Chars == adm.apiKey[-6:]

        after = await client.api_keys.list()
        assert {inf.id, adm.id, dated.id} <= {k.id for k in after}
        assert len(after) == len(before) + 3

        await raises(vx.NotFoundError, 404, client.api_keys.retrieve(api_key_id=str(uuid.uuid4())))

    # The secret is never shown again: not in the list or in retrieve, as sent on the wire.
    s = http(keygate.admin_key)
    for url in (f"{keygate.url}/api/v1/api_keys", f"{keygate.url}/api/v1/api_keys/{inf.id}"):
        r = s.get(url, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        for secret in (inf.apiKey, adm.apiKey, dated.apiKey):
            assert secret[:-6] not in r.text, url


@pytest.mark.asyncio
async def test_seed_update(keygate):
    """update(): the captured body of the Venice client's wire format, then partial updates leave the rest
    alone, and `ip_allowlist=[]` (unlike leaving it out) removes the restriction."""
    async with venice(keygate) as client:
        key = await client.api_keys.create(
            api_key_request=CreateApiKeyRequest(
                apiKeyType="INFERENCE",
                description="to update",
                consumptionLimit={"usd": 50, "diem": 10},
                limitPeriod="MONTH",
                ipAllowlist=["11.22.33.44"],
            )
        )
        # The seed docstring's example.
        upd = await client.api_keys.update(id=key.id, description="Updated description", consumption_limit={"diem": 5, "usd": 50})
        assert upd.id == key.id and upd.description == "Updated description"
        assert (upd.consumptionLimits.usd, upd.consumptionLimits.diem) == (50, 5)
        assert upd.ipAllowlist == ["11.22.33.44/32"] and upd.limitPeriod == "MONTH"

        # the Venice client's wire format, the captured body.
        upd = await client.api_keys.update(
            id=key.id,
            description="Updated",
            expires_at="2031-01-01T00:00:00Z",
            consumption_limit={"usd": 5.0},
            model_privacy="ALL",
            limit_period="LIFETIME",
            ip_allowlist=[],
        )
        assert upd.description == "Updated" and upd.consumptionLimits.usd == 5
        assert parse_time(upd.expiresAt) == dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
        assert upd.modelPrivacy == "ALL" and upd.limitPeriod == "LIFETIME" and upd.ipAllowlist == []
        assert (await client.api_keys.retrieve(api_key_id=key.id)).model_dump() == upd.model_dump()

        # Only the description: everything else stays.
        again = await client.api_keys.update(id=key.id, description="Renamed only")
        assert again.description == "Renamed only"
        for field in ("expiresAt", "consumptionLimits", "modelPrivacy", "limitPeriod", "ipAllowlist", "last6Chars"):
            assert getattr(again, field) == getattr(upd, field), field

        # A new allow-list in canonical form (host bits cleared), kept by an update that omits it,
        # removed by [].
        upd = await client.api_keys.update(id=key.id, ip_allowlist=["10.1.2.3/8", "2001:db8::1", "11.22.33.44"])
        assert upd.ipAllowlist == ["10.0.0.0/8", "2001:db8::1/128", "11.22.33.44/32"]
        upd = await client.api_keys.update(id=key.id, description="allow-list kept")
        assert upd.ipAllowlist == ["10.0.0.0/8", "2001:db8::1/128", "11.22.33.44/32"]
        upd = await client.api_keys.update(id=key.id, ip_allowlist=[])
        assert upd.ipAllowlist == []
        assert (await client.api_keys.retrieve(api_key_id=key.id)).ipAllowlist == []

        await raises(vx.NotFoundError, 404, client.api_keys.update(id=str(uuid.uuid4()), description="x"))
        await raises(vx.InvalidRequestError, 400, client.api_keys.update(id=key.id, ip_allowlist=["not-an-ip"]))


@pytest.mark.asyncio
async def test_ip_allowlist_enforced(keygate):
    """A key restricted to 11.22.33.44, used from 127.0.0.1: 403 that the client raises as
    ApiKeyIpRestrictedError (a PermissionDeniedError). Cleared with `ip_allowlist=[]` it works;
    restricted to 127.0.0.1 it works as well."""
    async with venice(keygate) as admin:
        key = await admin.api_keys.create(
            api_key_request=CreateApiKeyRequest(
                apiKeyType="ADMIN", description="ip bound", modelPrivacy="PRIVATE_ONLY", ipAllowlist=["11.22.33.44"]
            )
        )
        async with venice(keygate, key=key.apiKey) as restricted:
            for call in (restricted.api_keys.list, restricted.api_keys.get_rate_limits):
                e = await raises(vx.ApiKeyIpRestrictedError, 403, call(), contains=IP_RESTRICTED_PREFIX)
                assert isinstance(e, vx.PermissionDeniedError)

            await admin.api_keys.update(id=key.id, ip_allowlist=[])
            assert key.id in [k.id for k in await restricted.api_keys.list()]

            upd = await admin.api_keys.update(id=key.id, ip_allowlist=["127.0.0.1"])
            assert upd.ipAllowlist == ["127.0.0.1/32"]
            assert key.id in [k.id for k in await restricted.api_keys.list()]


# ---------------------------------------------------------------------------------------------
# Paging


@pytest.mark.asyncio
async def test_iter_all_pages(keygate):
    """iter_all(page_size=2) walks page=1,2,… with limit=2 until a short page, yields every key of
    the workspace exactly once, and no answer ever holds more than `limit` items."""
    async with venice(keygate) as client:
        for i in range(5):
            await client.api_keys.create(
                api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description=f"page key {i}")
            )
    expected = [k["id"] for k in raw_list(keygate, limit=500)]
    assert len(expected) >= 6

    wire = WireLog()
    async with aiohttp.ClientSession(trace_configs=[wire.trace_config()]) as session:
        async with venice(keygate, http_client=session) as client:
            seen = [k.id async for k in client.api_keys.iter_all(page_size=2)]
            capped = [k.id async for k in client.api_keys.iter_all(page_size=2, max_items=3)]
            page2 = await client.api_keys.list(page=2, limit=2)
            beyond = await client.api_keys.list(page=1000, limit=2)

    assert len(seen) == len(set(seen)), f"a key was yielded twice: {seen}"
    assert sorted(seen) == sorted(expected)
    assert seen == expected, "iter_all must follow the server's order"
    assert capped == expected[:3]
    assert [k.id for k in page2] == expected[2:4]
    assert beyond == []

    pages = len(expected) // 2 + 1  # stops at the first short page (possibly empty)
    walk = wire.exchanges[:pages]
    assert [(e["method"], e["url"].path, dict(e["url"].query)) for e in walk] == [
        ("GET", "/api/v1/api_keys", {"page": str(n), "limit": "2"}) for n in range(1, pages + 1)
    ]
    for e in wire.exchanges:
        assert e["status"] == 200, e
        assert e["content_type"].startswith("application/json"), e
        body = json.loads(e["body"])
        limit = int(e["url"].query.get("limit", 500))
        assert body["object"] == "list" and len(body["data"]) <= limit, (e["url"], len(body["data"]))

    async with venice(keygate) as client:
        await raises(vx.InvalidRequestError, 400, client.api_keys.list(limit=501))
        await raises(vx.InvalidRequestError, 400, client.api_keys.list(page=0, limit=2))
        assert len(await client.api_keys.list(limit=500)) == len(expected)


# ---------------------------------------------------------------------------------------------
# Delete


@pytest.mark.asyncio
async def test_seed_batch_delete(keygate):
    """The seed's batch delete: list, delete every key whose description says "test", list again.
    Only those go; their secrets stop working; DELETE again is still a success; an unknown id is
    a NotFoundError."""
    async with venice(keygate) as client:
        doomed = []
        for d in ("test key 1", "Integration TEST 2", "load-test 3"):
            doomed.append(
                await client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description=d))
            )
        kept = await client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="keep me"))
        async with venice(keygate, key=doomed[0].apiKey) as victim:
            await victim.api_keys.get_rate_limits()

        # The seed, verbatim.
        keys = await client.api_keys.list()
        deleted = []
        for key in keys:
            if "test" in key.description.lower():
                result = await client.api_keys.delete(api_key_id=key.id)
                assert result.success is True
                deleted.append(key.id)

        assert sorted(deleted) == sorted(k.id for k in doomed)
        after = await client.api_keys.list()
        assert not [k for k in after if "test" in k.description.lower()]
        assert {k.id for k in after} == {k.id for k in keys} - set(deleted)
        assert kept.id in {k.id for k in after}

        async with venice(keygate, key=doomed[0].apiKey) as victim:
            await raises(vx.AuthenticationError, 401, victim.api_keys.get_rate_limits())
        await raises(vx.NotFoundError, 404, client.api_keys.retrieve(api_key_id=doomed[0].id))
        assert (await client.api_keys.delete(api_key_id=doomed[0].id)).success is True  # idempotent
        await raises(vx.NotFoundError, 404, client.api_keys.delete(api_key_id=str(uuid.uuid4())))


# ---------------------------------------------------------------------------------------------
# Rate limits and the refusal log


def chat(keygate, key: str, vk_slug: str) -> requests.Response:
    return http(key).post(
        f"{keygate.url}/v1/chat/completions",
        headers={"x-keygate-virtual-key": vk_slug},
        json={"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 16},
        timeout=30,
    )


@pytest.fixture(scope="module")
def vk_slug(gateway, upstream) -> str:
    """A virtual key on a provider key whose base URL is the recording upstream."""
    gateway.create_provider_key("venice-pk", "sk-up-" + kgtest.random_token(32), upstream.base_url)
    return gateway.create_virtual_key("venice vk", "venice-pk", slug="venice-vk")["slug"]


@pytest.mark.asyncio
async def test_rate_limits_of_the_admin_key(keygate):
    """get_rate_limits() as the unrestricted ADMIN key: access permitted, nothing charged, no
    windows, no expiry, the next UTC day as the next epoch."""
    async with venice(keygate) as client:
        rl = await client.api_keys.get_rate_limits()
    d = rl.data
    assert d.accessPermitted is True
    assert d.apiTier.id and d.apiTier.isCharged is False
    assert isinstance(d.balances.USD, float) and isinstance(d.balances.DIEM, float)
    assert d.keyExpiration is None
    assert all(r.rateLimits == [] for r in d.rateLimits)
    now = dt.datetime.now(dt.timezone.utc)
    assert now < parse_time(d.nextEpochBegins) <= now + dt.timedelta(days=1)
    raw = http(keygate.admin_key).get(f"{keygate.url}/api/v1/api_keys/rate_limits", timeout=10).json()["data"]
    assert raw["windows"] == [] and raw["balancesLimited"] is False


@pytest.mark.asyncio
async def test_rate_limits_and_log_of_an_inference_key(keygate, gateway, upstream, vk_slug):
    """An INFERENCE key with consumption limits {usd 3, diem 2} (1 diem = 1 USD: the cap is 2 USD)
    and rate limits rpm 2, tpd 10000. Its get_rate_limits() shows balances, limits and windows; two
    gateway calls pass and the third is refused (429); then the RPM window is used up, the balance
    is lower by exactly what was spent, and get_rate_limit_logs() lists the refusal for this key
    (and for the workspace's ADMIN key), not for another INFERENCE key."""
    expires = iso_in(3600)
    key = native_create(
        keygate,
        apiKeyType="INFERENCE",
        description="limited inference",
        consumptionLimit={"usd": 3, "diem": 2},
        limitPeriod="EPOCH",
        expiresAt=expires,
        rateLimits={"rpm": 2, "tpd": 10000},
    )
    async with venice(keygate, key=key["apiKey"]) as client:
        rl = (await client.api_keys.get_rate_limits()).data
        assert rl.accessPermitted is True and rl.apiTier.isCharged is True
        assert rl.balances.USD == pytest.approx(2.0) and rl.balances.DIEM == pytest.approx(2.0)
        assert parse_time(rl.keyExpiration) == parse_time(expires)
        tomorrow = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
        assert parse_time(rl.nextEpochBegins) == dt.datetime.combine(tomorrow, dt.time(), dt.timezone.utc)
        amounts = {r.type: r.amount for m in rl.rateLimits for r in m.rateLimits}
        assert amounts == {"RPM": 2, "TPD": 10000}
        assert (await client.api_keys.get_rate_limit_logs()).data == []

        raw = http(key["apiKey"]).get(f"{keygate.url}/api/v1/api_keys/rate_limits", timeout=10).json()["data"]
        windows = {w["type"]: w for w in raw["windows"]}
        assert set(windows) == {"RPM", "TPD"}
        assert (windows["RPM"]["limit"], windows["RPM"]["used"], windows["RPM"]["remaining"]) == (2, 0, 2)

        assert [chat(keygate, key["apiKey"], vk_slug).status_code for _ in range(2)] == [200, 200]
        refused = chat(keygate, key["apiKey"], vk_slug)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1

        async with venice(keygate) as admin:
            spent = float((await admin.api_keys.retrieve(api_key_id=key["id"])).currentPeriodUsage.usd)
        assert spent > 0
        # Settlement may trail the answer by a moment: wait (bounded) for the balance to match.
        deadline = time.monotonic() + 60
        while True:
            rl = (await client.api_keys.get_rate_limits()).data
            if rl.balances.USD == pytest.approx(2.0 - spent, abs=1e-9) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert rl.balances.USD == pytest.approx(2.0 - spent, abs=1e-9)
        assert rl.balances.DIEM == pytest.approx(2.0 - spent, abs=1e-9)
        assert rl.accessPermitted is True
        raw = http(key["apiKey"]).get(f"{keygate.url}/api/v1/api_keys/rate_limits", timeout=10).json()["data"]
        rpm = {w["type"]: w for w in raw["windows"]}["RPM"]
        assert (rpm["used"], rpm["remaining"]) == (2, 0)
        assert parse_time(rpm["reset"]) > dt.datetime.now(dt.timezone.utc)
        tpd = {w["type"]: w for w in raw["windows"]}["TPD"]
        assert tpd["used"] == 2 * (9 + 3)

        log = await client.api_keys.get_rate_limit_logs()
        assert log.object == "list"
        mine = [e for e in log.data if e.apiKeyId == key["id"]]
        assert len(mine) == 1 and len(log.data) == 1, log.data
        assert mine[0].rateLimitType == "RPM" and mine[0].modelId == CHAT_MODEL
        assert abs((parse_time(mine[0].timestamp) - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 60

    async with venice(keygate) as admin:
        assert key["id"] in [e.apiKeyId for e in (await admin.api_keys.get_rate_limit_logs()).data]
    other = native_create(keygate, apiKeyType="INFERENCE", description="bystander")
    async with venice(keygate, key=other["apiKey"]) as bystander:
        assert (await bystander.api_keys.get_rate_limit_logs()).data == []


@pytest.mark.asyncio
async def test_rate_limits_of_an_exhausted_key(keygate, gateway, upstream, vk_slug):
    """A key allowed one request: after it, get_rate_limits() says access is no longer permitted
    and the REQUESTS balance is 0; the next call is refused (402) and the refusal is logged."""
    key = native_create(keygate, apiKeyType="INFERENCE", description="one shot", consumptionLimit={"requests": 1})
    async with venice(keygate, key=key["apiKey"]) as client:
        rl = (await client.api_keys.get_rate_limits()).data
        assert rl.accessPermitted is True and rl.balances.model_extra.get("REQUESTS") == 1
        assert chat(keygate, key["apiKey"], vk_slug).status_code == 200
        rl = (await client.api_keys.get_rate_limits()).data
        assert rl.accessPermitted is False and rl.balances.model_extra.get("REQUESTS") == 0
        refused = chat(keygate, key["apiKey"], vk_slug)
        assert refused.status_code == 402, refused.text
        log = (await client.api_keys.get_rate_limit_logs()).data
        assert [(e.apiKeyId, e.modelId) for e in log] == [(key["id"], CHAT_MODEL)]


# ---------------------------------------------------------------------------------------------
# Rotation and expiry


@pytest.mark.asyncio
async def test_rotation_with_grace(keygate):
    """POST /api_keys/{id}/rotate {"gracePeriodSeconds": 5}: same id, new secret (an answer the
    client's CreatedApiKey model reads); the old secret works until the grace ends, then 401;
    the new one keeps working. Without grace the old secret fails at once."""
    async with venice(keygate) as admin:
        key = await admin.api_keys.create(
            api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="rotating", consumptionLimit={"usd": 1})
        )
        r = http(keygate.admin_key).post(
            f"{keygate.url}/api/v1/api_keys/{key.id}/rotate", json={"gracePeriodSeconds": 5}, timeout=10
        )
        rotated_at = dt.datetime.now(dt.timezone.utc)
        assert r.status_code == 200 and r.json()["success"] is True, r.text
        new = CreatedApiKey.model_validate(r.json()["data"])
        assert new.id == key.id and new.apiKey != key.apiKey and new.apiKey.startswith("kg_inf_")
        assert new.consumptionLimit.usd == 1 and new.description == "rotating"
        got = await admin.api_keys.retrieve(api_key_id=key.id)
        assert got.last6Chars == new.apiKey[-6:]

        async with venice(keygate, key=key.apiKey) as old, venice(keygate, key=new.apiKey) as fresh:
            assert (await old.api_keys.get_rate_limits()).data.accessPermitted is True
            assert (await fresh.api_keys.get_rate_limits()).data.accessPermitted is True
            left = 5.0 - (dt.datetime.now(dt.timezone.utc) - rotated_at).total_seconds()
            await asyncio.sleep(max(left, 0) + 0.5)
            await raises(vx.AuthenticationError, 401, old.api_keys.get_rate_limits(), contains="rotated")
            assert (await fresh.api_keys.get_rate_limits()).data.accessPermitted is True

        r = http(keygate.admin_key).post(f"{keygate.url}/api/v1/api_keys/{key.id}/rotate", json={}, timeout=10)
        assert r.status_code == 200, r.text
        newest = r.json()["data"]["apiKey"]
        async with venice(keygate, key=new.apiKey) as previous, venice(keygate, key=newest) as current:
            await raises(vx.AuthenticationError, 401, previous.api_keys.get_rate_limits())
            await current.api_keys.get_rate_limits()

    r = http(keygate.admin_key).post(f"{keygate.url}/api/v1/api_keys/{uuid.uuid4()}/rotate", json={}, timeout=10)
    assert r.status_code == 404, r.text


@pytest.mark.asyncio
async def test_expiry(keygate):
    """A key created already expired is refused (401, AuthenticationError); a key expiring five
    seconds ahead works, reports its expiry, and is refused once it has passed."""
    async with venice(keygate) as admin:
        past = await admin.api_keys.create(
            api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="born expired", expiresAt="2020-01-01T00:00:00Z")
        )
        expires = iso_in(5)
        soon = await admin.api_keys.create(
            api_key_request=CreateApiKeyRequest(apiKeyType="ADMIN", description="short lived", expiresAt=expires)
        )
        assert parse_time(soon.expiresAt) == parse_time(expires)

    async with venice(keygate, key=past.apiKey) as client:
        await raises(vx.AuthenticationError, 401, client.api_keys.get_rate_limits(), contains="expired")
    async with venice(keygate, key=soon.apiKey) as client:
        rl = (await client.api_keys.get_rate_limits()).data
        assert rl.accessPermitted is True and parse_time(rl.keyExpiration) == parse_time(expires)
        assert soon.id in [k.id for k in await client.api_keys.list()]
        left = (parse_time(expires) - dt.datetime.now(dt.timezone.utc)).total_seconds()
        await asyncio.sleep(max(left, 0) + 0.3)
        await raises(vx.AuthenticationError, 401, client.api_keys.get_rate_limits(), contains="expired")
        await raises(vx.AuthenticationError, 401, client.api_keys.list(), contains="expired")


# ---------------------------------------------------------------------------------------------
# Wallet sign-in


@pytest.mark.asyncio
async def test_wallet_sign_in(keygate):
    """A registered wallet signs a one-time token (EIP-191) and mints a key that works; the token
    cannot be replayed; a signature by another account, an unregistered wallet and an unknown
    token are refused (401); an ADMIN key only from a wallet registered with allowAdmin (403
    otherwise); a malformed address (the Venice client's placeholder "0xabc") is a 400. Both
    wallet routes are public: a client holding no valid key gets a token and mints with it."""
    wallet = Account.create()
    register_wallet(keygate, wallet.address)
    admin_wallet = Account.create()
    register_wallet(keygate, admin_wallet.address, allow_admin=True)

    # Both wallet routes are public: the Authorization header (here not even a keygate key) is ignored.
    async with venice(keygate, key="not-a-keygate-key") as anon:
        tok = await anon.api_keys.get_web3_token()
        assert tok.success is True and tok.data.token
        request = Web3CreateApiKeyRequest(
            apiKeyType="INFERENCE",
            address=wallet.address,
            signature=sign(wallet, tok.data.token),
            token=tok.data.token,
            description="wallet minted",
            consumptionLimit={"usd": 1.5},
            limitPeriod="EPOCH",
        )
        minted = await anon.api_keys.create_web3_key(web3_key_request=request)
        assert minted.success is True
        m = minted.data
        assert m.apiKey.startswith("kg_inf_") and m.apiKeyType == "INFERENCE" and m.description == "wallet minted"
        assert m.consumptionLimit.usd == 1.5 and m.limitPeriod == "EPOCH"

        # The same token and signature again.
        await raises(vx.AuthenticationError, 401, anon.api_keys.create_web3_key(web3_key_request=request), contains="already used")

    async with venice(keygate, key=m.apiKey) as as_minted:
        rl = (await as_minted.api_keys.get_rate_limits()).data
        assert rl.accessPermitted is True and rl.balances.USD == pytest.approx(1.5)
        await raises(vx.PermissionDeniedError, 403, as_minted.api_keys.list())

    async with venice(keygate) as client:
        assert m.id in [k.id for k in await client.api_keys.list()]  # the registering workspace

        # Signed by someone else for the registered address.
        tok = (await client.api_keys.get_web3_token()).data.token
        forged = Web3CreateApiKeyRequest(
            apiKeyType="INFERENCE", address=wallet.address, signature=sign(Account.create(), tok), token=tok
        )
        await raises(vx.AuthenticationError, 401, client.api_keys.create_web3_key(web3_key_request=forged))

        # A correct signature from a wallet nobody registered.
        stranger = Account.create()
        tok = (await client.api_keys.get_web3_token()).data.token
        unregistered = Web3CreateApiKeyRequest(
            apiKeyType="INFERENCE", address=stranger.address, signature=sign(stranger, tok), token=tok
        )
        await raises(vx.AuthenticationError, 401, client.api_keys.create_web3_key(web3_key_request=unregistered), contains="not registered")

        # A token the server never issued.
        made_up = kgtest.random_token(43)
        unknown = Web3CreateApiKeyRequest(
            apiKeyType="INFERENCE", address=wallet.address, signature=sign(wallet, made_up), token=made_up
        )
        await raises(vx.AuthenticationError, 401, client.api_keys.create_web3_key(web3_key_request=unknown), contains="unknown")

        # The captured example's placeholder address.
        tok = (await client.api_keys.get_web3_token()).data.token
        bad = Web3CreateApiKeyRequest(apiKeyType="INFERENCE", address="0xabc", signature=sign(wallet, tok), token=tok)
        await raises(vx.InvalidRequestError, 400, client.api_keys.create_web3_key(web3_key_request=bad), contains="address")

        # ADMIN: refused for the INFERENCE-only wallet, granted to the allowAdmin one.
        tok = (await client.api_keys.get_web3_token()).data.token
        admin_req = Web3CreateApiKeyRequest(apiKeyType="ADMIN", address=wallet.address, signature=sign(wallet, tok), token=tok)
        await raises(vx.PermissionDeniedError, 403, client.api_keys.create_web3_key(web3_key_request=admin_req))
        tok = (await client.api_keys.get_web3_token()).data.token
        admin_minted = await client.api_keys.create_web3_key(
            web3_key_request=Web3CreateApiKeyRequest(
                apiKeyType="ADMIN", address=admin_wallet.address, signature=sign(admin_wallet, tok), token=tok
            )
        )
        assert admin_minted.data.apiKey.startswith("kg_adm_") and admin_minted.data.description == "Web3 API Key"
        assert admin_minted.data.consumptionLimit is not None
        async with venice(keygate, key=admin_minted.data.apiKey) as as_admin:
            assert m.id in [k.id for k in await as_admin.api_keys.list()]


# ---------------------------------------------------------------------------------------------
# The privilege rule


@pytest.mark.asyncio
async def test_privileges(keygate):
    """An INFERENCE key may read its own rate limits but not manage keys (403
    PermissionDeniedError). An ADMIN key limited to 10 USD cannot create a key allowed 20 USD or
    one without a limit, nor raise its own limit, nor edit the organisation admin; it may create
    one within its limits."""
    rid = root_id(keygate)
    async with venice(keygate) as root:
        inf = await root.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="plain inference"))
        capped = await root.api_keys.create(
            api_key_request=CreateApiKeyRequest(apiKeyType="ADMIN", description="ten dollar admin", consumptionLimit={"usd": 10})
        )

    async with venice(keygate, key=inf.apiKey) as client:
        e = await raises(vx.PermissionDeniedError, 403, client.api_keys.list())
        assert e.code == "forbidden"
        await raises(
            vx.PermissionDeniedError,
            403,
            client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="x")),
        )
        await raises(vx.PermissionDeniedError, 403, client.api_keys.retrieve(api_key_id=inf.id))
        await raises(vx.PermissionDeniedError, 403, client.api_keys.update(id=inf.id, description="x"))
        await raises(vx.PermissionDeniedError, 403, client.api_keys.delete(api_key_id=inf.id))
        assert (await client.api_keys.get_rate_limits()).data.accessPermitted is True
        assert (await client.api_keys.get_rate_limit_logs()).object == "list"

    def req(key_type: str = "INFERENCE", **fields) -> CreateApiKeyRequest:
        return CreateApiKeyRequest(apiKeyType=key_type, description="made by the capped admin", **fields)

    async with venice(keygate, key=capped.apiKey) as client:
        higher = "more rights or higher limits"
        await raises(vx.PermissionDeniedError, 403, client.api_keys.create(api_key_request=req(consumptionLimit={"usd": 20})), higher)
        await raises(vx.PermissionDeniedError, 403, client.api_keys.create(api_key_request=req()), higher)
        await raises(vx.PermissionDeniedError, 403, client.api_keys.create(api_key_request=req("ADMIN")), higher)
        await raises(vx.PermissionDeniedError, 403, client.api_keys.update(id=capped.id, consumption_limit={"usd": 20}), higher)
        await raises(vx.PermissionDeniedError, 403, client.api_keys.update(id=rid, description="hijacked"), higher)

        child = await client.api_keys.create(api_key_request=req(consumptionLimit={"usd": 5}))
        assert child.consumptionLimit.usd == 5
        peer = await client.api_keys.create(api_key_request=req("ADMIN", consumptionLimit={"usd": 10}))
        assert peer.apiKeyType == "ADMIN"
        await raises(vx.PermissionDeniedError, 403, client.api_keys.update(id=child.id, consumption_limit={"usd": 50}), higher)
        upd = await client.api_keys.update(id=child.id, consumption_limit={"usd": 2})
        assert upd.consumptionLimits.usd == 2
        assert (await client.api_keys.delete(api_key_id=child.id)).success is True

    async with venice(keygate) as root:
        got = await root.api_keys.retrieve(api_key_id=rid)
        assert got.description != "hijacked"
        assert (await root.api_keys.retrieve(api_key_id=capped.id)).consumptionLimits.usd == 10


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.asyncio
async def test_error_classes(keygate):
    """Each refusal arrives as the client's class for its status (the Venice client's wire format),
    with the server's message and code."""
    async with venice(keygate, key="kg_adm_" + "A" * 38) as client:
        e = await raises(vx.AuthenticationError, 401, client.api_keys.list())
        assert e.code == "invalid_api_key"
    async with venice(keygate, key="sk-not-keygate") as client:
        await raises(vx.AuthenticationError, 401, client.api_keys.get_rate_limits())
    async with venice(keygate) as client:
        await raises(
            vx.InvalidRequestError,
            400,
            client.api_keys.create(
                api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="x", ipAllowlist=["999.1.1.1"])
            ),
            contains="ipAllowlist",
        )
        await raises(
            vx.InvalidRequestError,
            400,
            client.api_keys.create(
                api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="x", expiresAt="2030-13-45")
            ),
            contains="expiresAt",
        )
        e = await raises(vx.NotFoundError, 404, client.api_keys.retrieve(api_key_id="no-such-key"))
        assert e.code == "not_found"


@pytest.mark.asyncio
async def test_creation_throttle(keygate_factory):
    """At most N creations a minute per workspace (here N = 2): the next is a 429 the client raises
    as RateLimitError with the Retry-After seconds."""
    server = keygate_factory(extra_env={"KEYGATE_API_KEY_CREATIONS_PER_MINUTE": "2"})
    try:
        async with venice(server) as client:
            for i in range(2):
                await client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description=f"k{i}"))
            e = await raises(
                vx.RateLimitError,
                429,
                client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="one too many")),
                contains="per minute",
            )
            assert e.retry_after_seconds is not None and 1 <= e.retry_after_seconds <= 60
            assert len(await client.api_keys.list()) == 3  # the ADMIN key and the two
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_active_key_cap(keygate_factory):
    """At most N active keys per workspace (here 3, the first ADMIN key included): the next
    creation is a 403 PermissionDeniedError; deleting one makes room again."""
    server = keygate_factory(extra_env={"KEYGATE_MAX_API_KEYS_PER_WORKSPACE": "3"})
    try:
        async with venice(server) as client:
            made = [
                await client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description=f"k{i}"))
                for i in range(2)
            ]
            over = client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="k2"))
            await raises(vx.PermissionDeniedError, 403, over, contains="limit of 3")
            await client.api_keys.delete(api_key_id=made[0].id)
            await client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="k3"))
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Workspaces


@pytest.mark.asyncio
async def test_workspace_isolation(keygate):
    """A key of another workspace answers 404 to retrieve, update and delete from the default
    workspace and is not listed there; the organisation admin reaches it with the
    `x-keygate-workspace` header (passed through the client's `headers=`); that workspace's own
    ADMIN key sees only its workspace."""
    s = http(keygate.admin_key)
    r = s.post(f"{keygate.url}/api/v1/workspaces", json={"id": "venice-ws", "name": "Venice tests"}, timeout=10)
    assert r.status_code == 201, r.text
    r = s.post(
        f"{keygate.url}/api/v1/api_keys",
        headers={"x-keygate-workspace": "venice-ws"},
        json={"apiKeyType": "ADMIN", "description": "ws admin"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    foreign = r.json()["data"]

    async with venice(keygate) as client:
        assert foreign["id"] not in [k.id for k in await client.api_keys.list()]
        await raises(vx.NotFoundError, 404, client.api_keys.retrieve(api_key_id=foreign["id"]))
        await raises(vx.NotFoundError, 404, client.api_keys.update(id=foreign["id"], description="x"))
        await raises(vx.NotFoundError, 404, client.api_keys.delete(api_key_id=foreign["id"]))

    async with venice(keygate, headers={"x-keygate-workspace": "venice-ws"}) as client:
        assert [k.id for k in await client.api_keys.list()] == [foreign["id"]]
        assert (await client.api_keys.retrieve(api_key_id=foreign["id"])).description == "ws admin"

    rid = root_id(keygate)
    async with venice(keygate, key=foreign["apiKey"]) as client:
        assert [k.id for k in await client.api_keys.list()] == [foreign["id"]]
        await raises(vx.NotFoundError, 404, client.api_keys.retrieve(api_key_id=rid))
        made = await client.api_keys.create(api_key_request=CreateApiKeyRequest(apiKeyType="INFERENCE", description="ws inference"))
    assert made.id not in [k["id"] for k in raw_list(keygate)]
