// End-to-end tests of keygate's web UI in a real browser: Debian's headless Chromium driven by
// playwright-core. Builds nothing: it runs target/debug/keygate (KEYGATE_BIN) and
// target/debug/keygate-mock (KEYGATE_MOCK_BIN) from `cargo build`.
//
//   node --test tests/ui/ui.test.mjs            (or: npm test, in tests/ui)
//
// It walks every flow of the UI issue, asserting what a person sees: sign in; add a provider key
// (hub-specific fields appear for the chosen hub), rename it, rotate it; create a virtual key;
// make gateway requests against the mock upstream and see them on the Usage page; create an API
// key and see its secret exactly once (copy button included); the rate-limit and audit logs;
// delete the provider key; sign out and be refused, even with the old cookie.
//
// Screenshots of every page at 1280 px and 390 px go to target/ui-screenshots/; with
// UPDATE_SCREENSHOTS=1 the main ones are also copied to docs/screenshots/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, copyFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..", "..");
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target");
const KEYGATE_BIN = process.env.KEYGATE_BIN || join(TARGET, "debug", "keygate");
const MOCK_BIN = process.env.KEYGATE_MOCK_BIN || join(dirname(KEYGATE_BIN), "keygate-mock");
const CHROMIUM =
  process.env.CHROMIUM_BIN ||
  ["/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));
const SHOTS = join(TARGET, "ui-screenshots");
const DOCS_SHOTS = join(ROOT, "docs", "screenshots");
const WIDE = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };

const state = { procs: [], tmp: null, context: null, page: null, url: null, mock: null, admin: null };

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Starts a process; resolves with the first match of `pattern` in its stdout. */
function startProcess(cmd, args, env, pattern, what) {
  return new Promise((ok, fail) => {
    const proc = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    state.procs.push(proc);
    let out = "";
    let err = "";
    const timer = setTimeout(() => fail(new Error(`${what} did not start in 60 s.\n${out}\n${err}`)), 60_000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(pattern);
      if (m) {
        clearTimeout(timer);
        ok(m);
      }
    });
    proc.stderr.on("data", (d) => {
      err += d;
      if (err.length > 200_000) err = err.slice(-100_000);
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`${what} exited with ${code}.\n${out}\n${err.slice(-4000)}`));
    });
  });
}

async function waitHealthy(url) {
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("keygate did not become healthy");
}

async function api(method, path, body, key = state.admin) {
  const r = await fetch(`${state.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, json };
}

async function chat(key, slug, model = "gpt-4o-mini") {
  const r = await fetch(`${state.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-keygate-virtual-key": slug },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "Say hi" }], max_tokens: 16 }),
  });
  await r.text();
  return r.status;
}

/** Screenshots of the current page at both widths. */
async function shoot(name) {
  const page = state.page;
  await page.setViewportSize(WIDE);
  await page.screenshot({ path: join(SHOTS, `${name}-1280.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.screenshot({ path: join(SHOTS, `${name}-390.png`), fullPage: true });
  // At phone width nothing may overflow sideways (tables turn into stacked cards).
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `${name}: ${overflow}px of horizontal overflow at 390 px`);
  await page.setViewportSize(WIDE);
}

/** The page's HTML once it stops navigating. */
async function settledContent() {
  for (let i = 0; ; i++) {
    try {
      return await state.page.content();
    } catch (e) {
      if (i >= 20) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function flashText() {
  return (await state.page.locator(".flash").first().textContent()).trim();
}

function heading() {
  return state.page.locator("h1");
}

before(async () => {
  for (const [what, p] of [
    ["keygate (cargo build)", KEYGATE_BIN],
    ["keygate-mock (cargo build -p keygate-testkit --bin keygate-mock)", MOCK_BIN],
    ["Chromium (apt-get install chromium)", CHROMIUM],
  ]) {
    assert.ok(p && existsSync(p), `${what} is missing: ${p}`);
  }
  mkdirSync(SHOTS, { recursive: true });
  state.tmp = mkdtempSync(join(tmpdir(), "keygate-ui-"));
  const m = await startProcess(MOCK_BIN, ["--listen", "127.0.0.1:0"], process.env, /listening on (http:\/\/\S+)/, "keygate-mock");
  state.mock = m[1];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KEYGATE_")));
  env.KEYGATE_MASTER_KEY = randomBytes(32).toString("base64");
  env.KEYGATE_LOG = "warn";
  const port = await freePort();
  const k = await startProcess(
    KEYGATE_BIN,
    ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", join(state.tmp, "data"), "--allow-private-upstreams"],
    env,
    /kg_adm_[A-Za-z0-9]{38}/,
    "keygate",
  );
  state.admin = k[0];
  state.url = `http://127.0.0.1:${port}`;
  await waitHealthy(state.url);
  state.context = await chromium.launchPersistentContext(join(state.tmp, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: WIDE,
    permissions: ["clipboard-read", "clipboard-write"],
  });
  state.context.setDefaultTimeout(15_000);
  state.page = state.context.pages()[0] || (await state.context.newPage());
  // No request may leave for another host: every asset is embedded.
  state.external = [];
  state.page.on("request", (r) => {
    if (!r.url().startsWith(state.url) && !r.url().startsWith("data:")) state.external.push(r.url());
  });
  state.cspErrors = [];
  state.page.on("console", (msg) => {
    if (msg.type() === "error") state.cspErrors.push(msg.text());
  });
});

after(async () => {
  if (state.context) await state.context.close().catch(() => {});
  for (const p of state.procs) {
    if (p.exitCode === null) p.kill("SIGTERM");
  }
  if (state.tmp) rmSync(state.tmp, { recursive: true, force: true });
});

test("the web UI in a real browser", async (t) => {
  const page = state.page;
  const secretOne = "sk-browser-test-secret-1111";
  const secretTwo = "sk-browser-rotated-secret-2222";

  await t.test("sign in with an ADMIN key", async () => {
    const resp = await page.goto(`${state.url}/ui`);
    assert.equal(resp.status(), 200);
    assert.match(page.url(), /\/ui\/login/);
    assert.match(resp.headers()["content-security-policy"], /default-src 'self'/);
    await shoot("login");
    await page.fill("#f-key", "kg_adm_wrong");
    await page.click("#sign-in");
    assert.match(await flashText(), /API key/i);
    await page.fill("#f-key", state.admin);
    await page.click("#sign-in");
    await page.waitForURL(/\/ui\/keys$/);
    assert.equal(await heading().textContent(), "Keys");
    const cookies = await state.context.cookies();
    const session = cookies.find((c) => c.name === "kg_session");
    assert.ok(session, "a session cookie");
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, "Strict");
    assert.equal(session.path, "/ui");
    assert.ok(session.expires > Date.now() / 1000 + 7 * 3600, "expires in about 8 hours");
    // The page cannot read it.
    assert.equal(await page.evaluate(() => document.cookie.includes("kg_session")), false);
    await shoot("keys-empty");
  });

  await t.test("add a provider key: hub-specific fields follow the chosen hub", async () => {
    await page.click("#add-key");
    await page.waitForURL(/\/ui\/keys\/new/);
    const azure = page.locator('fieldset[data-hub="azure"]');
    const vertex = page.locator('fieldset[data-hub="vertex"]');
    assert.equal(await azure.isVisible(), false);
    await page.selectOption("#hub", "azure");
    assert.equal(await azure.isVisible(), true);
    assert.equal(await vertex.isVisible(), false);
    assert.equal(await page.locator("#f-hc-azure-resource_name").isVisible(), true);
    await shoot("key-new-azure");
    await page.selectOption("#hub", "vertex");
    assert.equal(await vertex.isVisible(), true);
    assert.equal(await azure.isVisible(), false);
    await page.selectOption("#hub", "openai");
    assert.equal(await vertex.isVisible(), false);
    // A readable error first: a name keygate refuses.
    await page.fill("#f-name", "bad name!");
    await page.evaluate(() => document.querySelector("#f-name").removeAttribute("pattern"));
    await page.fill("#f-api_key", secretOne);
    await page.click("#save-key");
    assert.match(await flashText(), /^Name /);
    assert.equal(await page.inputValue("#f-name"), "bad name!");
    assert.equal(await page.inputValue("#f-api_key"), "", "a secret is never sent back");
    await page.fill("#f-name", "openai-main");
    await page.fill("#f-api_key", secretOne);
    await page.fill("#f-base_url", `${state.mock}/v1`);
    await page.fill("#f-rate_limit_per_interval", "600");
    await page.click("#save-key");
    await page.waitForURL(/\/ui\/keys$/);
    assert.equal(await flashText(), "Added provider key openai-main.");
    const row = page.locator('tr[data-name="openai-main"]');
    assert.match(await row.textContent(), /OpenAI/);
    assert.match(await row.textContent(), /…1111/);
    assert.match(await row.textContent(), /v1/);
    assert.match(await row.textContent(), /600 per minute/);
    assert.equal((await page.content()).includes(secretOne), false, "the secret is not on the page");
  });

  await t.test("rename the provider key", async () => {
    await page.locator('tr[data-name="openai-main"] a', { hasText: "Edit" }).click();
    await page.waitForURL(/\/ui\/keys\/[^/]+$/);
    await shoot("key-edit");
    await page.fill("#f-new_name", "openai-primary");
    await page.click("#rename-key");
    await page.waitForURL(/\/ui\/keys$/);
    assert.equal(await flashText(), "Renamed openai-main to openai-primary.");
    assert.equal(await page.locator('tr[data-name="openai-main"]').count(), 0);
    assert.equal(await page.locator('tr[data-name="openai-primary"]').count(), 1);
  });

  await t.test("rotate the provider key", async () => {
    await page.locator('tr[data-name="openai-primary"] a', { hasText: "Edit" }).click();
    assert.equal(await page.locator("#secret-version").textContent(), "1");
    await page.fill("#f-rotate-key", secretTwo);
    await page.click("#rotate-key");
    await page.waitForURL(/\/ui\/keys$/);
    assert.equal(await flashText(), "Rotated openai-primary: secret version 2.");
    const row = await page.locator('tr[data-name="openai-primary"]').textContent();
    assert.match(row, /…2222/);
    assert.match(row, /v2/);
    // Search and filter.
    await page.fill('input[name="q"]', "nothing-like-this");
    await page.click('form.filters button[type="submit"]');
    assert.match(await page.locator(".empty").textContent(), /No provider keys match/);
    await page.fill('input[name="q"]', "primary");
    await page.click('form.filters button[type="submit"]');
    assert.equal(await page.locator('tr[data-name="openai-primary"]').count(), 1);
    await page.goto(`${state.url}/ui/keys`);
    await shoot("keys");
  });

  await t.test("create a virtual key", async () => {
    await page.click('nav a:has-text("Virtual keys")');
    await page.waitForURL(/\/ui\/virtual-keys$/);
    await page.click("#add-vk");
    await page.fill("#f-name", "Browser key");
    await page.fill("#f-slug", "browser-key");
    await page.check('label:has-text("openai-primary") >> xpath=ancestor::tr//input[@type="checkbox"]');
    await page.fill("#f-budget_usd", "0.05");
    await page.selectOption("#budget_period", "EPOCH");
    await page.fill("#f-rpm", "60");
    await shoot("virtual-key-new");
    await page.click("#save-vk");
    await page.waitForURL(/\/ui\/virtual-keys$/);
    assert.equal(await flashText(), "Created virtual key Browser key (slug browser-key).");
    const row = await page.locator('tr[data-slug="browser-key"]').textContent();
    assert.match(row, /openai-primary/);
    assert.match(row, /\$0\.00 of \$0\.05 today/);
    assert.match(row, /60 rpm/);
    assert.match(row, /active/);
  });

  await t.test("gateway requests through the mock show up on the Usage page", async () => {
    assert.equal(await chat(state.admin, "browser-key"), 200);
    assert.equal(await chat(state.admin, "browser-key", "gpt-4o"), 200);
    // A tight key for the rate-limit log: the second request in a minute is refused.
    const vk = await api("POST", "/api/v1/virtual_keys", {
      name: "Tight key",
      slug: "tight",
      providerKey: "openai-primary",
      rateLimits: { rpm: 1 },
    });
    assert.equal(vk.status, 201, JSON.stringify(vk.json));
    assert.equal(await chat(state.admin, "tight"), 200);
    assert.equal(await chat(state.admin, "tight"), 429);
    await page.click('nav a:has-text("Usage")');
    await page.waitForURL(/\/ui\/usage/);
    assert.equal(await page.locator("#total-requests").textContent(), "3");
    const records = await page.locator("#usage-records").textContent();
    assert.match(records, /gpt-4o-mini/);
    assert.match(records, /browser-key/);
    assert.match(records, /openai-primary/);
    assert.ok((await page.locator("#chart-cost-day rect.bar").count()) >= 30, "one column per day");
    assert.equal(await page.locator("#chart-tokens-by rect.bar").count(), 2, "two models");
    assert.match(await page.locator("#usage-groups").textContent(), /gpt-4o/);
    const tooltip = await page.locator("#chart-tokens-by rect.bar title").first().textContent();
    assert.match(tooltip, /gpt-4o/);
    await shoot("usage");
    // Broken down by virtual key, over a chosen range.
    await page.selectOption("#by", "key");
    await page.click("#apply-range");
    await page.waitForURL(/by=key/);
    assert.match(await page.locator("#usage-groups").textContent(), /browser-key/);
    assert.match(await page.locator("#usage-groups").textContent(), /tight/);
    await page.fill("#f-from", "2020-01-01");
    await page.fill("#f-to", "2020-01-31");
    await page.click("#apply-range");
    await page.waitForURL(/from=2020-01-01/);
    assert.equal(await page.locator("#total-requests").textContent(), "0");
    // The budget bar moved.
    await page.click('nav a:has-text("Virtual keys")');
    const row = await page.locator('tr[data-slug="browser-key"]').textContent();
    assert.doesNotMatch(row, /\$0\.00 of/);
    await shoot("virtual-keys");
    await page.click('nav a:has-text("Rate-limit log")');
    const log = await page.locator("#rate-limit-log").textContent();
    assert.match(log, /RPM/);
    assert.match(log, /tight/);
    await shoot("rate-limit-log");
  });

  await t.test("create an API key: its secret is shown exactly once", async () => {
    await page.click('nav a:has-text("API keys")');
    await page.click("#add-api-key");
    await page.selectOption("#api_key_type", "INFERENCE");
    await page.fill("#f-description", "CI pipeline");
    await page.fill("#f-limit_usd", "10");
    await page.selectOption("#limit_period", "MONTH");
    await page.fill("#f-rpm", "120");
    await page.selectOption("#default_virtual_key", "browser-key");
    await shoot("api-key-new");
    await page.click("#create-api-key");
    const secret = (await page.locator("#new-secret").textContent()).trim();
    assert.match(secret, /^kg_inf_[A-Za-z0-9]{38}$/);
    assert.match(await page.locator("#secret-card").textContent(), /will not show it again/);
    await page.click("#copy-secret");
    await page.waitForFunction(() => document.querySelector("#copy-secret").textContent !== "Copy");
    assert.equal(await page.locator("#copy-secret").textContent(), "Copied");
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
    await shoot("api-key-created");
    // The key works: its default virtual key needs no header.
    const r = await fetch(`${state.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 8 }),
    });
    assert.equal(r.status, 200);
    await page.click("#secret-done");
    await page.waitForURL(/\/ui\/api-keys$/);
    const list = await page.content();
    assert.equal(list.includes(secret), false, "the list does not show the secret");
    assert.ok(list.includes(`kg_inf_…${secret.slice(-6)}`), "only its last 6 characters");
    assert.match(await page.locator("#api-keys-table").textContent(), /CI pipeline/);
    assert.match(await page.locator("#api-keys-table").textContent(), /\$10\.00 per month/);
    await page.reload();
    assert.equal((await page.content()).includes(secret), false);
    // Going back does not show it again either (the answer was not stored).
    await page.goBack().catch(() => {});
    await page.waitForLoadState("load").catch(() => {});
    assert.equal((await settledContent()).includes(secret), false, "back does not show the secret");
    await page.goto(`${state.url}/ui/api-keys`);
    await shoot("api-keys");
  });

  await t.test("the audit log lists every change", async () => {
    await page.click('nav a:has-text("Audit log")');
    const log = await page.locator("#audit-log").textContent();
    for (const a of [
      "provider_key.create",
      "provider_key.rename",
      "provider_key.rotate",
      "virtual_key.create",
      "api_key.create",
    ]) {
      assert.match(log, new RegExp(a.replace(".", "\\.")));
    }
    await page.selectOption("#filter-action", "provider_key.rename");
    await page.click('form.filters button[type="submit"]');
    assert.equal(await page.locator("#audit-log tbody tr").count(), 1);
    await page.goto(`${state.url}/ui/audit`);
    await shoot("audit-log");
  });

  await t.test("delete the provider key, after confirming", async () => {
    await page.click('nav a:has-text("Keys")');
    await page.locator('tr[data-name="openai-primary"] a', { hasText: "Delete" }).click();
    assert.match(await page.locator(".confirm h2").textContent(), /Delete provider key openai-primary\?/);
    assert.match(await page.locator(".confirm").textContent(), /browser-key/, "names the virtual keys that use it");
    await shoot("key-delete");
    await page.click("text=Cancel");
    assert.equal(await page.locator('tr[data-name="openai-primary"]').count(), 1, "cancel keeps it");
    await page.locator('tr[data-name="openai-primary"] a', { hasText: "Delete" }).click();
    await page.click("#confirm-delete");
    await page.waitForURL(/\/ui\/keys$/);
    assert.equal(await flashText(), "Deleted provider key openai-primary.");
    assert.equal(await page.locator('tr[data-name="openai-primary"]').count(), 0);
    const left = await api("GET", "/api/v1/provider_keys");
    assert.equal(left.json.total, 0);
  });

  await t.test("sign out, then be refused", async () => {
    const before = (await state.context.cookies()).find((c) => c.name === "kg_session");
    await page.click("#sign-out");
    await page.waitForURL(/\/ui\/login$/);
    assert.equal((await state.context.cookies()).some((c) => c.name === "kg_session"), false);
    await page.goto(`${state.url}/ui/keys`);
    assert.match(page.url(), /\/ui\/login/);
    // The old cookie, put back, is refused too.
    await state.context.addCookies([before]);
    await page.goto(`${state.url}/ui/usage`);
    assert.match(page.url(), /\/ui\/login/);
    assert.equal(await heading().textContent(), "Sign in");
  });

  await t.test("no request left for another host and the CSP blocked nothing", async () => {
    assert.deepEqual(state.external, []);
    const csp = state.cspErrors.filter((e) => /Content Security Policy/i.test(e));
    assert.deepEqual(csp, []);
  });

  if (process.env.UPDATE_SCREENSHOTS === "1") {
    mkdirSync(DOCS_SHOTS, { recursive: true });
    for (const name of [
      "login-1280",
      "keys-1280",
      "key-new-azure-1280",
      "virtual-keys-1280",
      "api-key-created-1280",
      "usage-1280",
      "rate-limit-log-1280",
      "audit-log-1280",
      "usage-390",
      "keys-390",
    ]) {
      copyFileSync(join(SHOTS, `${name}.png`), join(DOCS_SHOTS, `${name}.png`));
    }
  }
});
