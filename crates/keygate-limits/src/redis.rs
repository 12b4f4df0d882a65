//! Counters on Redis: the scale-out backend. Every replica of keygate talks to one Redis, so
//! every limit is global; the decisions are the same as [`crate::memory::MemoryCounters`]'s
//! (one shared suite runs on both).
//!
//! **One round trip per call.** [`Counters::acquire`], [`Counters::adjust`] and
//! [`Counters::peek`] each run one Lua script (`EVALSHA`, loaded again by itself after a
//! `NOSCRIPT`, e.g. when Redis restarted), which reads, decides and writes every counter of
//! the call in one atomic execution: no other client's command runs in between, so a decision
//! over several counters is atomic across replicas.
//!
//! **Time is the caller's.** The scripts never read Redis's clock: every decision uses the
//! `now_ms` the caller passes (keygate's injectable [`crate::Clock`]). Replicas' clocks are
//! assumed NTP-synced; a replica whose clock is off by `d` ms counts its sub-buckets `d` ms
//! early or late, as it would in process. Redis's clock only decides when Redis drops a key
//! physically: a rate window's hash `(idx + 34) * blen - now` ms after its last write
//! (relative, so clock offsets do not matter), a budget at `expires_at_ms` (absolute,
//! `PEXPIREAT`; the caller gives budgets slack past their period, far more than clock skew).
//!
//! **Data layout** (every key is `prefix + Check::key`, e.g. `keygate:vk:vk_abc:rpm`):
//! - a rate window is a HASH: field `b` = the sub-bucket length in ms (fixed while the window
//!   lives, as in process), field `<idx>` (decimal sub-bucket index `now / b`) = the count of
//!   that sub-bucket. Each decision reads it with `HGETALL`, counts the sub-buckets
//!   `idx - 32 ..= idx` and deletes the older ones, so a hash holds at most 33 sub-buckets
//!   (plus any a replica with a clock ahead wrote) and `b`. `PEXPIRE` to
//!   `(newest + 34) * b - now` on every write.
//! - a budget is a STRING holding an integer (`INCRBY`), with `PEXPIREAT expires_at_ms`, no
//!   expiry for a lifetime budget. Its expiry is read back with `PEXPIRETIME`, so Redis 7.0 or
//!   later is required (checked by [`RedisCountersBuilder::connect`]).
//!
//! **Failures.** Every call has a timeout (250 ms unless [`RedisCountersBuilder::timeout`]
//! says otherwise); a Redis that is down, unreachable or slow gives
//! [`LimitError::Unavailable`] within it, never a hang or a panic, and the caller applies its
//! fail mode. The connection is a reconnecting multiplexed one
//! ([`redis::aio::ConnectionManager`]): once Redis answers again, calls succeed again without
//! a restart. A connection that stops answering without being closed (a half-open TCP
//! connection after a network partition) is replaced after a few timeouts in a row.
//!
//! **Differences from the in-process backend.** None in the shared suite, nor in random call
//! sequences compared call by call (`tests/redis.rs`), except these:
//! - an `acquire` that times out may still have been applied by Redis (the caller sees
//!   `Unavailable`, the counters hold the reservation until its window passes): the error
//!   side is over-counting, never over-admitting;
//! - the scripts compute in Lua numbers (doubles): counts, limits and amounts are exact up to
//!   2^53 (9.0e15; about 9 million USD in nano-USD per counter);
//! - `peek` never writes. The in-process `peek` drops the sub-buckets that left the window
//!   and turns a window it meets with a budget check into an empty budget. So a positive
//!   settlement (`adjust`) of a sub-bucket that left the window, when only peeks met the
//!   counter since its last acquire, is counted in the current sub-bucket in process and lost
//!   on Redis (as it is in process when nothing met the counter); and a window peeked with a
//!   budget check keeps its counts on Redis;
//! - Redis drops a key once its window or period has passed (TTL); in process a passed counter
//!   lingers until a sweep (every 4096 calls) and a late positive settlement can still land in
//!   it. A budget is dropped when Redis's clock reaches `expires_at_ms`, so a clock skew
//!   larger than the slack the caller puts after the period would end it early;
//! - a key met by a window check and a budget check within one `acquire` (no caller does
//!   that) may be left differently;
//! - needs Redis 7.0 or later, and not Redis Cluster (a call's keys may hash to different
//!   slots).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncConnectionConfig, Client, FromRedisValue, Script, ScriptInvocation};
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::{Acquired, Adjustment, Check, Counters, Kind, LimitError, WindowState};

/// The per-call timeout unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// The timeout of one connection attempt unless set otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeouts in a row after which the connection is replaced.
const STALLS_BEFORE_RECONNECT: u32 = 3;
/// At most one replacement of the connection per this interval.
const MIN_RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// Helpers every script starts with. `now` is `ARGV[1]` in every script.
const PRELUDE: &str = r#"
local S = 32
local now = tonumber(ARGV[1])
-- Integer division truncating toward zero, as Rust's `/` on i64.
local function idiv(a, b)
  local q = a / b
  if q >= 0 then return math.floor(q) end
  return math.ceil(q)
end
local function fmt(x) return string.format('%d', x) end
-- crate::bucket_len
local function blen_of(w)
  w = tonumber(w) or 1
  if w < 1 then w = 1 end
  return idiv(w + S - 1, S)
end
local function ktype(key) return redis.call('TYPE', key)['ok'] end
local function zeros()
  local c = {}
  for j = 1, S + 1 do c[j] = 0 end
  return c
end
-- A budget: its value and expiry (nil: never); nil when missing or past its expiry by the
-- caller's clock.
local function read_budget(key)
  local v = tonumber(redis.call('GET', key))
  if v == nil then return nil end
  local e = redis.call('PEXPIRETIME', key)
  if e < 0 then e = nil end
  if e ~= nil and e < now then return nil end
  return v, e
end
-- A rate window: nil when missing or expired (its newest sub-bucket has left the window),
-- else the sub-bucket length, the current index, the counts of the sub-buckets
-- idx-S .. idx (oldest first), the fields of the sub-buckets older than idx-S, the newest index,
-- the number of sub-buckets held.
local function read_rate(key)
  local all = redis.call('HGETALL', key)
  local b, newest
  local idxs, vals, names = {}, {}, {}
  for j = 1, #all, 2 do
    local f = all[j]
    if f == 'b' then
      b = tonumber(all[j + 1])
    else
      local i = tonumber(f)
      if i ~= nil then
        idxs[#idxs + 1] = i
        vals[#vals + 1] = tonumber(all[j + 1]) or 0
        names[#names + 1] = f
        if newest == nil or i > newest then newest = i end
      end
    end
  end
  if b == nil or b < 1 or newest == nil or (newest + S + 1) * b < now then return nil end
  local idx = idiv(now, b)
  local oldest = idx - S
  local counts = zeros()
  local stale = {}
  for j = 1, #idxs do
    local i = idxs[j]
    if i < oldest then
      stale[#stale + 1] = names[j]
    elseif i <= idx then
      counts[i - oldest + 1] = counts[i - oldest + 1] + vals[j]
    end
  end
  return b, idx, counts, stale, newest, #idxs
end
-- What is counted and crate::reset_after.
local function rate_state(counts, idx, b)
  local used, reset = 0, 0
  for j = 1, S + 1 do used = used + counts[j] end
  for j = 1, S + 1 do
    if counts[j] > 0 then
      reset = math.max((idx + j) * b - now, 1)
      break
    end
  end
  return used, reset
end
-- crate::retry_after, 0 for never.
local function retry_after(counts, limit, amount, idx, b)
  if amount > limit then return 0 end
  local total = 0
  for j = 1, S + 1 do total = total + counts[j] end
  local freed = 0
  for j = 1, S + 1 do
    freed = freed + counts[j]
    if total - freed + amount <= limit then return math.max((idx + j) * b - now, 1) end
  end
  return 0
end
"#;

/// KEYS: the counters. ARGV: now, then per check: kind (`r` | `b`), window ms (rate) or
/// expires-at ms (budget, empty for never), limit, amount.
/// Returns admitted (0/1), refused index (-1: none), retry-after ms, then per check: used
/// (before this request's amount), reset ms, sub-bucket (0 for a budget).
const ACQUIRE: &str = r#"
local n = #KEYS
local out = {0, -1, 0}
local refused, retry = -1, 0
local mode, blens, bkts, newests, expiries, emptied = {}, {}, {}, {}, {}, {}
for i = 1, n do
  local key = KEYS[i]
  local a = 2 + (i - 1) * 4
  local kind, param = ARGV[a], ARGV[a + 1]
  local limit, amount = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local t = ktype(key)
  local used, reset, bucket = 0, 0, 0
  local counts, b, idx
  if kind == 'r' and t == 'string' then
    -- A live budget met by a rate check is counted as the budget it is (as in process).
    local v, e = read_budget(key)
    if v ~= nil then
      mode[i] = 'b'
      expiries[i] = e
      used = v
      if e ~= nil then reset = math.max(e - now, 0) end
    end
  end
  if mode[i] == nil and kind == 'r' then
    if t == 'hash' then
      local stale, newest, held
      b, idx, counts, stale, newest, held = read_rate(key)
      if b == nil then
        redis.call('DEL', key)
      else
        newests[i] = newest
        for j = 1, #stale, 100 do
          redis.call('HDEL', key, unpack(stale, j, math.min(j + 99, #stale)))
        end
        -- Every sub-bucket just left: the window is over once this check is decided (as in
        -- process, an amount added starts a new window of this check's length).
        if #stale == held then emptied[i] = true end
      end
    elseif t ~= 'none' then
      redis.call('DEL', key)
    end
    if b == nil then
      -- A new window (or one that has passed, or a key of another kind) exists from now on,
      -- admitted or not (as in process): its sub-bucket length is fixed, and a late
      -- settlement of an earlier reservation is counted in it.
      b = blen_of(param)
      idx = idiv(now, b)
      counts = zeros()
      redis.call('HSET', key, 'b', fmt(b))
      redis.call('PEXPIRE', key, fmt((idx + S + 2) * b - now))
    end
    mode[i] = 'r'
    blens[i] = b
    bucket = idx
    used, reset = rate_state(counts, idx, b)
  elseif mode[i] == nil then
    local v, e
    if t == 'string' then v, e = read_budget(key) end
    if v == nil then
      -- A new budget (or one past its period, or a key of another kind) starts at 0 with this
      -- check's expiry, admitted or not (as in process).
      if t ~= 'none' then redis.call('DEL', key) end
      v, e = 0, tonumber(param)
      redis.call('SET', key, '0')
      if e ~= nil then redis.call('PEXPIREAT', key, fmt(e)) end
    end
    mode[i] = 'b'
    expiries[i] = e
    used = v
    if e ~= nil then reset = math.max(e - now, 0) end
  end
  if refused < 0 and used + amount > limit then
    refused = i - 1
    if mode[i] == 'r' then
      retry = retry_after(counts, limit, amount, idx, b)
    else
      retry = reset
    end
  end
  bkts[i] = bucket
  out[#out + 1] = used
  out[#out + 1] = reset
  out[#out + 1] = bucket
end
if refused >= 0 then
  out[2] = refused
  out[3] = retry
  return out
end
local seen, dup = {}, false
for i = 1, n do
  if seen[KEYS[i]] then dup = true end
  seen[KEYS[i]] = true
end
for i = 1, n do
  local key = KEYS[i]
  local a = 2 + (i - 1) * 4
  local kind, param, amount = ARGV[a], ARGV[a + 1], ARGV[a + 3]
  local m, b, top, e = mode[i], blens[i], newests[i], expiries[i]
  if emptied[i] then b, top = blen_of(param), nil end
  if dup then
    -- A key met twice may have changed since its check was decided: add to what it holds now,
    -- or to a new counter of the check's kind (as in process).
    local t = ktype(key)
    m = nil
    if t == 'string' then
      local v
      v, e = read_budget(key)
      if v ~= nil then m = 'b' end
    elseif t == 'hash' then
      local rb, _, _, _, newest = read_rate(key)
      if rb ~= nil then
        m, b, top = 'r', rb, newest
      end
    end
    if m == nil then
      if t ~= 'none' then redis.call('DEL', key) end
      if kind == 'r' then
        m, b, top = 'r', blen_of(param), nil
      else
        m, e = 'b', tonumber(param)
        redis.call('SET', key, '0')
        if e ~= nil then redis.call('PEXPIREAT', key, fmt(e)) end
      end
    end
  end
  if m == 'r' then
    local idx = bkts[i]
    local r = redis.pcall('HINCRBY', key, fmt(idx), amount)
    if type(r) ~= 'number' then redis.call('HSET', key, fmt(idx), '9223372036854775807') end
    redis.call('HSET', key, 'b', fmt(b))
    if top == nil or idx > top then top = idx end
    redis.call('PEXPIRE', key, fmt((top + S + 2) * b - now))
  else
    local r = redis.pcall('INCRBY', key, amount)
    if type(r) ~= 'number' then redis.call('SET', key, '9223372036854775807', 'KEEPTTL') end
    if e ~= nil and redis.call('PTTL', key) == -1 then redis.call('PEXPIREAT', key, fmt(e)) end
  end
end
out[1] = 1
return out
"#;

/// KEYS: the counters. ARGV: now, then per item: sub-bucket, delta, window ms (0 for a
/// budget). Acts on what each key holds (as in process); missing keys are left alone.
const ADJUST: &str = r#"
for i = 1, #KEYS do
  local key = KEYS[i]
  local a = 2 + (i - 1) * 3
  local bucket, delta, window = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local t = ktype(key)
  if t == 'string' then
    local r = redis.pcall('INCRBY', key, delta)
    if type(r) == 'number' and r < 0 then redis.call('SET', key, '0', 'KEEPTTL') end
  elseif t == 'hash' then
    if redis.call('HEXISTS', key, bucket) == 1 then
      local r = redis.pcall('HINCRBY', key, bucket, delta)
      if type(r) == 'number' and r < 0 then redis.call('HSET', key, bucket, '0') end
    elseif tonumber(delta) > 0 then
      -- The reservation's sub-bucket has left the window: count the extra now.
      local b = tonumber(redis.call('HGET', key, 'b')) or blen_of(window)
      local idx = idiv(now, b)
      redis.pcall('HINCRBY', key, fmt(idx), delta)
      redis.call('PEXPIRE', key, fmt((idx + S + 2) * b - now), 'GT')
    end
  end
end
return 0
"#;

/// KEYS: the counters. ARGV: now, then per check: kind (`r` | `b`), window ms or expires-at
/// ms (empty for never). Read-only. Returns per check: used, reset ms, 1 when no live counter.
const PEEK: &str = r#"
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local a = 2 + (i - 1) * 2
  local kind, param = ARGV[a], ARGV[a + 1]
  local t = ktype(key)
  local used, reset, none = 0, 0, 1
  if t == 'string' then
    local v, e = read_budget(key)
    if v ~= nil then
      none = 0
      used = v
      if e ~= nil then reset = math.max(e - now, 0) end
    end
  elseif t == 'hash' then
    local b, idx, counts = read_rate(key)
    if b ~= nil then
      none = 0
      if kind == 'r' then
        used, reset = rate_state(counts, idx, b)
      else
        -- A live window met by a budget check reads as a new budget (as in process).
        local e = tonumber(param)
        if e ~= nil then reset = math.max(e - now, 0) end
      end
    end
  end
  out[#out + 1] = used
  out[#out + 1] = reset
  out[#out + 1] = none
end
return out
"#;

/// Builds a [`RedisCounters`]: [`RedisCounters::builder`].
#[derive(Clone)]
pub struct RedisCountersBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for RedisCountersBuilder {
    // The URL may carry a password: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCountersBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCountersBuilder {
    /// The most one call (one round trip, including waiting for a connection) may take before
    /// it gives [`LimitError::Unavailable`]. Default [`DEFAULT_TIMEOUT`] (250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The most one connection attempt may take. Default [`DEFAULT_CONNECT_TIMEOUT`] (1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Connects now: [`LimitError::Unavailable`] when Redis does not answer within the connect
    /// timeout, [`LimitError::Invalid`] for a malformed URL or a Redis older than 7.0.
    pub async fn connect(self) -> Result<RedisCounters, LimitError> {
        let counters = self.connect_lazy()?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(counters.connect_timeout))
            .set_response_timeout(Some(counters.connect_timeout));
        let probe = async {
            let mut conn = counters
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            let info: String = ::redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
            for script in [&counters.acquire, &counters.adjust, &counters.peek] {
                script.load_async(&mut conn).await?;
            }
            Ok::<_, ::redis::RedisError>(info)
        };
        let info = match tokio::time::timeout(counters.connect_timeout, probe).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(unavailable(&e)),
            Err(_) => {
                return Err(LimitError::Unavailable(format!(
                    "Redis did not answer within {} ms",
                    counters.connect_timeout.as_millis()
                )))
            }
        };
        check_version(&info)?;
        // Open the shared connection too, so the first decision does not wait for it.
        counters.ping().await?;
        Ok(counters)
    }

    /// A client that connects on first use (and again whenever Redis comes back): Redis may be
    /// down now. [`LimitError::Invalid`] only for a malformed URL.
    pub fn connect_lazy(self) -> Result<RedisCounters, LimitError> {
        let client =
            Client::open(self.url.as_str()).map_err(|e| LimitError::Invalid(format!("Redis URL: {:?}", e.kind())))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(4);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
            .map_err(|e| LimitError::Invalid(format!("Redis client: {:?}", e.kind())))?;
        Ok(RedisCounters {
            prefix: self.prefix,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            client,
            manager_config,
            conn: RwLock::new(manager),
            stalls: AtomicU32::new(0),
            last_rebuild: Mutex::new(None),
            acquire: Script::new(&format!("{PRELUDE}{ACQUIRE}")),
            adjust: Script::new(&format!("{PRELUDE}{ADJUST}")),
            peek: Script::new(&format!("{PRELUDE}{PEEK}")),
        })
    }
}

/// Counters on Redis.
pub struct RedisCounters {
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    client: Client,
    manager_config: ConnectionManagerConfig,
    conn: RwLock<ConnectionManager>,
    /// Timeouts in a row.
    stalls: AtomicU32,
    last_rebuild: Mutex<Option<Instant>>,
    acquire: Script,
    adjust: Script,
    peek: Script,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Connects with the default timeouts: see [`RedisCountersBuilder::connect`]. `prefix`
    /// namespaces every key (e.g. `keygate:`).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisCounters, LimitError> {
        Self::builder(url, prefix).connect().await
    }

    /// A builder, to set timeouts or connect lazily.
    pub fn builder(url: &str, prefix: &str) -> RedisCountersBuilder {
        RedisCountersBuilder {
            url: url.to_string(),
            prefix: prefix.to_string(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether Redis answers (readiness probes).
    pub async fn ping(&self) -> Result<(), LimitError> {
        let mut conn = self.conn.read().clone();
        let call = async move { ::redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()) };
        self.bounded(call).await
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// Runs a script within the timeout.
    async fn run<T: FromRedisValue>(&self, inv: ScriptInvocation<'_>) -> Result<T, LimitError> {
        let mut conn = self.conn.read().clone();
        self.bounded(async move { inv.invoke_async::<T>(&mut conn).await })
            .await
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, LimitError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => {
                self.stalls.store(0, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_timeout() {
                    self.stalled();
                }
                Err(unavailable(&e))
            }
            Err(_) => {
                self.stalled();
                Err(LimitError::Unavailable(format!(
                    "Redis did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    /// A call timed out: after a few in a row, replace the connection (it may be half-open,
    /// which the connection manager does not notice by itself).
    fn stalled(&self) {
        let stalls = self.stalls.fetch_add(1, Ordering::Relaxed) + 1;
        if stalls < STALLS_BEFORE_RECONNECT {
            return;
        }
        let mut last = self.last_rebuild.lock();
        if last.is_some_and(|t| t.elapsed() < MIN_RECONNECT_INTERVAL) {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager_config.clone()) {
            Ok(manager) => {
                tracing::warn!(
                    stalls,
                    "Redis counters: no answer to {stalls} calls in a row, reconnecting"
                );
                *self.conn.write() = manager;
                *last = Some(Instant::now());
                self.stalls.store(0, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = ?e.kind(), "Redis counters: cannot reconnect"),
        }
    }
}

fn unavailable(e: &::redis::RedisError) -> LimitError {
    // The error names what failed, never the URL (it may carry a password).
    LimitError::Unavailable(format!("Redis: {e}"))
}

/// Redis 7.0 or later (`PEXPIRETIME`, `PEXPIRE … GT`).
fn check_version(info: &str) -> Result<(), LimitError> {
    let Some(version) = info.lines().find_map(|l| l.trim().strip_prefix("redis_version:")) else {
        return Ok(());
    };
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < 7 {
        return Err(LimitError::Invalid(format!(
            "Redis {version}: the Redis counters need Redis 7.0 or later"
        )));
    }
    Ok(())
}

fn validate(c: &Check) -> Result<(), LimitError> {
    if c.limit < 0 || c.amount < 0 {
        return Err(LimitError::Invalid(format!("{}: negative limit or amount", c.key)));
    }
    if let Kind::Rate { window_ms } = c.kind {
        if window_ms <= 0 {
            return Err(LimitError::Invalid(format!("{}: empty window", c.key)));
        }
    }
    Ok(())
}

/// A check's kind and its parameter as script arguments.
fn kind_args(kind: Kind) -> (&'static str, String) {
    match kind {
        Kind::Rate { window_ms } => ("r", window_ms.to_string()),
        Kind::Budget { expires_at_ms } => ("b", expires_at_ms.map(|e| e.to_string()).unwrap_or_default()),
    }
}

fn bad_reply(what: &str, len: usize) -> LimitError {
    LimitError::Unavailable(format!("Redis: unexpected {what} reply of {len} values"))
}

#[async_trait]
impl Counters for RedisCounters {
    async fn acquire(&self, checks: &[Check], now: i64) -> Result<Acquired, LimitError> {
        for c in checks {
            validate(c)?;
        }
        if checks.is_empty() {
            return Ok(Acquired {
                admitted: true,
                ..Acquired::default()
            });
        }
        let mut inv = self.acquire.prepare_invoke();
        inv.arg(now);
        for c in checks {
            let (kind, param) = kind_args(c.kind);
            inv.key(self.key(&c.key))
                .arg(kind)
                .arg(param)
                .arg(c.limit)
                .arg(c.amount);
        }
        let reply: Vec<i64> = self.run(inv).await?;
        if reply.len() != 3 + 3 * checks.len() {
            return Err(bad_reply("acquire", reply.len()));
        }
        let admitted = reply[0] == 1;
        let mut states = Vec::with_capacity(checks.len());
        let mut buckets = Vec::with_capacity(checks.len());
        for (c, r) in checks.iter().zip(reply[3..].chunks_exact(3)) {
            let used = if admitted { r[0].saturating_add(c.amount) } else { r[0] };
            states.push(WindowState {
                limit: c.limit,
                used,
                remaining: (c.limit - used).max(0),
                reset_ms: r[1],
            });
            buckets.push(r[2]);
        }
        let refused = usize::try_from(reply[1]).ok();
        Ok(Acquired {
            admitted,
            refused: if admitted { None } else { refused },
            retry_after_ms: if admitted { 0 } else { reply[2] },
            states,
            buckets,
        })
    }

    async fn adjust(&self, items: &[Adjustment], now: i64) -> Result<(), LimitError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut inv = self.adjust.prepare_invoke();
        inv.arg(now);
        for a in items {
            let window = match a.kind {
                Kind::Rate { window_ms } => window_ms,
                Kind::Budget { .. } => 0,
            };
            inv.key(self.key(&a.key)).arg(a.bucket).arg(a.delta).arg(window);
        }
        let _: i64 = self.run(inv).await?;
        Ok(())
    }

    async fn peek(&self, checks: &[Check], now: i64) -> Result<Vec<WindowState>, LimitError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.peek.prepare_invoke();
        inv.arg(now);
        for c in checks {
            let (kind, param) = kind_args(c.kind);
            inv.key(self.key(&c.key)).arg(kind).arg(param);
        }
        let reply: Vec<i64> = self.run(inv).await?;
        if reply.len() != 3 * checks.len() {
            return Err(bad_reply("peek", reply.len()));
        }
        Ok(checks
            .iter()
            .zip(reply.chunks_exact(3))
            .map(|(c, r)| {
                if r[2] == 1 {
                    WindowState {
                        limit: c.limit,
                        used: 0,
                        remaining: c.limit,
                        reset_ms: 0,
                    }
                } else {
                    WindowState {
                        limit: c.limit,
                        used: r[0],
                        remaining: (c.limit - r[0]).max(0),
                        reset_ms: r[1],
                    }
                }
            })
            .collect())
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
