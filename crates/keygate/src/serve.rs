//! `keygate serve`: opens the store, binds the vault, loads the key cache, serves, and shuts
//! down gracefully (readiness 503, drain for a bounded time, flush, exit).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keygate_api::auth::run_refresher;
use keygate_api::platform_keys::{create_platform_key, system_audit, KeySettings, NewPlatformKey};
use keygate_api::vault::VaultService;
use keygate_api::{ApiSettings, AppState};
use keygate_types::{PlatformKeyType, DEFAULT_WORKSPACE};

use crate::config::{Config, LogFormat, Overrides};
use crate::tools::master_key_for;
use crate::StoreArgs;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (also KEYGATE_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8400; KEYGATE_LISTEN).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory (default ./keygate-data; KEYGATE_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… (default: SQLite in the data directory; KEYGATE_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Allow provider keys that point at loopback or private addresses (KEYGATE_ALLOW_PRIVATE_UPSTREAMS).
    #[arg(long)]
    pub allow_private_upstreams: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key; KEYGATE_TLS_CERT).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (KEYGATE_TLS_KEY).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Shared limit counters on Redis for scale-out (KEYGATE_REDIS_URL).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Log format (KEYGATE_LOG_FORMAT); the level comes from KEYGATE_LOG (e.g. `debug`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Tools log warnings only (to stderr), so their stdout stays clean for scripts.
pub fn init_logging_for_tools() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The counters limits are kept in: Redis with `--redis-url`, else this process.
async fn limit_counters(config: &Config) -> anyhow::Result<Arc<dyn keygate_limits::Counters>> {
    match &config.redis_url {
        None => Ok(Arc::new(keygate_limits::memory::MemoryCounters::new())),
        Some(url) => redis_counters(url).await,
    }
}

fn describe_db(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        allow_private_upstreams: args.allow_private_upstreams.then_some(true),
        log_format: args.log_format,
        redis_url: args.redis_url.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
    };
    let config = Config::load(args.config.clone(), &overrides)?;
    init_logging(config.log_format);
    let started = std::time::Instant::now();

    let store_args = StoreArgs {
        data_dir: config.data_dir.clone(),
        database_url: config.database_url.clone(),
    };
    keygate_api::metrics::install();
    let store = crate::tools::open_store(&store_args).await?;
    let (key, source) = master_key_for(&config.data_dir, true)?;
    let vault = VaultService::bootstrap(store.as_ref(), key).await?;
    tracing::info!(
        database = describe_db(&config.database_url()),
        master_key = %source.describe(),
        master_key_version = vault.master_version(),
        "store opened"
    );

    if store.count_platform_keys().await? == 0 {
        let (_, secret) = create_platform_key(
            store.as_ref(),
            &vault,
            NewPlatformKey {
                workspace: DEFAULT_WORKSPACE,
                key_type: PlatformKeyType::Admin,
                org_admin: true,
                description: "first ADMIN key",
                settings: KeySettings::default(),
                expires_at: None,
                created_by: Some("keygate serve (first start)".into()),
            },
            Some(system_audit(DEFAULT_WORKSPACE, "system", "api_key.create", "api_key")),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the first ADMIN key: {e}"))?;
        // Printed, not logged: it is shown once and must not reach log collectors.
        println!(
            "\nkeygate: this is a new store. Its first ADMIN key (shown only now; keep it safe):\n\n    {}\n\n\
             Create another at any time with:  keygate admin-key --data-dir {}\n",
            secret.expose(),
            config.data_dir.display()
        );
    }

    let settings = ApiSettings {
        allow_private_upstreams: config.allow_private_upstreams,
        max_body_bytes: config.max_body_bytes,
        api_key_creations_per_minute: config.api_key_creations_per_minute,
        max_api_keys_per_workspace: config.max_api_keys_per_workspace,
        wallet_requests_per_minute: config.wallet_requests_per_minute,
        diem_usd_nano: keygate_types::NanoUsd::from_usd_f64(config.diem_usd)
            .map(|n| n.0)
            .unwrap_or(1_000_000_000),
        vcu_usd_nano: keygate_types::NanoUsd::from_usd_f64(config.vcu_usd)
            .map(|n| n.0)
            .unwrap_or(100_000_000),
    };
    let counters = limit_counters(&config).await?;
    let mut engine = keygate_api::limits::LimitEngine::new(
        counters,
        Arc::new(keygate_limits::SystemClock),
        if config.fail_mode == "open" {
            keygate_api::limits::FailMode::Open
        } else {
            keygate_api::limits::FailMode::Closed
        },
        if config.budget_mode == "soft" {
            keygate_api::limits::BudgetMode::Soft
        } else {
            keygate_api::limits::BudgetMode::Strict
        },
    );
    engine.default_max_output_tokens = config.default_max_output_tokens;
    engine.diem_nano = settings.diem_usd_nano;
    engine.vcu_nano = settings.vcu_usd_nano;
    let (state, meter_writer) = AppState::build_with(
        store.clone(),
        vault,
        settings,
        config.gateway_settings(),
        Arc::new(config.price_table()),
        Arc::new(engine),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    // Requests that reached an upstream when a previous process died get their record now;
    // budgets kept in this process start from the spend already recorded.
    // On PostgreSQL other replicas may have requests in flight: only records older than the
    // longest a request may take are surely orphaned. A periodic sweep catches the rest.
    let in_flight_ms = (config.upstream_total_timeout_seconds as i64 + 60) * 1000;
    let reconcile_before = match store.backend() {
        keygate_store::Backend::Sqlite => keygate_types::timefmt::now_ms(),
        keygate_store::Backend::Postgres => keygate_types::timefmt::now_ms() - in_flight_ms,
    };
    let reconciled = store.reconcile_pending_usage(reconcile_before).await?;
    if reconciled > 0 {
        tracing::warn!(
            records = reconciled,
            "usage records of requests interrupted by a previous stop were reconciled"
        );
    }
    let seeded =
        keygate_api::limits::seed_budgets(&state.limits, state.store.as_ref(), &state.auth, &state.runtime).await?;
    if seeded > 0 {
        tracing::info!(counters = seeded, "budget counters rebuilt from the usage records");
    }
    let (providers, vks) = state.runtime.counts();
    let unreadable_platform = state.auth.unreadable();
    let unreadable_keys = state.runtime.unreadable();
    let unreadable = unreadable_platform.len() + unreadable_keys.len();
    tracing::info!(
        platform_keys = state.auth.len(),
        provider_keys = providers,
        virtual_keys = vks,
        unreadable,
        "keys loaded"
    );
    if unreadable > 0 {
        // Each was logged with its reason as it loaded; this is the count an operator looks for.
        let ids: Vec<&str> = unreadable_platform
            .iter()
            .map(|(id, _)| id.as_str())
            .chain(unreadable_keys.iter().map(|u| u.id.as_str()))
            .collect();
        tracing::error!(
            count = unreadable,
            keys = %ids.join(", "),
            "keys whose stored record cannot be read are refused (503) until repaired or re-created"
        );
    }
    let (app, _) = keygate_api::app(state.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refresher = tokio::spawn(run_refresher(
        state.clone(),
        Duration::from_millis(250),
        stop_rx.clone(),
    ));
    let purge_store = store.clone();
    let mut purge_stop = stop_rx.clone();
    let purger = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = purge_stop.changed() => break,
            }
            let now = keygate_types::timefmt::now_ms();
            if let Err(e) = purge_store.purge_expired_secrets(now).await {
                tracing::warn!(error = %e, "cannot purge expired secrets");
            }
            match purge_store.reconcile_pending_usage(now - in_flight_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(records = n, "orphaned pending usage records reconciled"),
                Err(e) => tracing::warn!(error = %e, "cannot reconcile pending usage records"),
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr().unwrap_or(config.listen);
    let threads = config.serving_threads.unwrap_or_else(default_serving_threads);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            keygate_api::ui::session::set_serving_tls(true);
            Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .context("cannot load the TLS certificate and key")?,
            )
        }
        _ => None,
    };
    let (drain_tx, mut drain_rx) = tokio::sync::watch::channel(false);
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let make = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // One serving thread runs beside the usage writer: a wake-up per record is cheap there.
    state.meter.take_records_as_they_come(threads == 1);
    let mut servers = Vec::with_capacity(threads);
    if threads == 1 {
        let socket = listener.into_std().context("cannot hand the listener over")?;
        let serve = serve_connections(Source::Socket(socket), make, tls.clone(), drain_rx.clone(), grace);
        servers.push(Server::on_this_runtime(serve));
    } else if tls.is_some() {
        // HTTPS: every thread accepts from a copy of the listening socket (the TLS server
        // accepts for itself), whichever is free first taking the connection.
        let socket = listener
            .into_std()
            .context("cannot hand the listener to the serving threads")?;
        for i in 0..threads {
            let copy = socket.try_clone().context("cannot share the listening socket")?;
            let serve = serve_connections(Source::Socket(copy), make.clone(), tls.clone(), drain_rx.clone(), grace);
            servers.push(Server::on_a_thread(i, serve)?);
        }
    } else {
        // Plain HTTP: this runtime accepts and hands the connections to the threads in turn,
        // so that a load of long-lived connections is shared evenly.
        let mut senders = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            senders.push(tx);
            let handoff = Handoff { rx, local: bound };
            let serve = serve_connections(Source::Handoff(handoff), make.clone(), None, drain_rx.clone(), grace);
            servers.push(Server::on_a_thread(i, serve)?);
        }
        tokio::spawn(hand_out(listener, senders, drain_rx.clone()));
    }
    tracing::info!(
        listen = %bound,
        https = tls.is_some(),
        serving_threads = threads,
        startup_ms = started.elapsed().as_millis() as u64,
        "keygate is ready"
    );

    let shutdown_state = state.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: readiness is now 503, draining in-flight requests");
        shutdown_state.set_ready(false);
        let _ = drain_tx.send(true);
    });
    let outcome = tokio::select! {
        results = async {
            let mut results = Vec::with_capacity(servers.len());
            for server in servers.iter_mut() {
                results.push((&mut server.done).await.unwrap_or_else(|_| Err(anyhow::anyhow!("a serving thread stopped unexpectedly"))));
            }
            results
        } => results,
        _ = async {
            let _ = drain_rx.wait_for(|draining| *draining).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = config.shutdown_grace_seconds, "drain time is over; closing remaining connections");
            Vec::new()
        }
    };
    // Every server has ended or is told to end now; a thread's connections close with its runtime.
    for server in servers {
        server.stop().await;
    }
    for result in outcome {
        result.context("server")?;
    }
    let _ = stop_tx.send(true);
    let _ = refresher.await;
    let _ = purger.await;
    // Every request that reached an upstream is metered before the process exits.
    state.meter.flush().await;
    drop(state);
    meter_writer.abort();
    store.close().await;
    tracing::info!("keygate stopped");
    Ok(())
}

/// Serving threads when the configuration names none: one per CPU this process may run on.
fn default_serving_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

type MakeService = axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, std::net::SocketAddr>;

/// Where a server's connections come from.
enum Source {
    /// A listening socket (or a copy of it) that the server accepts from itself.
    Socket(std::net::TcpListener),
    /// Connections accepted by [`hand_out`].
    Handoff(Handoff),
}

/// The connections [`hand_out`] gives one serving thread, as an axum listener.
struct Handoff {
    rx: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for Handoff {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((stream, peer)) = self.rx.recv().await else {
                // The acceptor has stopped (shutdown): nothing more comes.
                return std::future::pending().await;
            };
            // Registers the connection with this thread's runtime.
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => return (stream, peer),
                Err(e) => tracing::debug!(error = %e, "cannot take over an accepted connection"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts connections and gives them to the serving threads in turn until `drain` turns true.
async fn hand_out(
    listener: tokio::net::TcpListener,
    threads: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, std::net::SocketAddr)>>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.wait_for(|draining| *draining) => return,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // A connection that failed before it was accepted costs nothing; anything else
                // (out of file descriptors) is waited out, as axum's own accept loop does.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        // Leaves this runtime; the serving thread registers it with its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot hand over an accepted connection");
                continue;
            }
        };
        if threads[next].send((stream, peer)).is_err() {
            tracing::warn!(thread = next, "a serving thread has stopped; its connection is closed");
        }
        next = (next + 1) % threads.len();
    }
}

/// Serves the connections of `source` until `drain` turns true, then lets the open ones finish
/// (HTTPS: for at most `grace`).
async fn serve_connections(
    source: Source,
    make: MakeService,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    mut drain: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> anyhow::Result<()> {
    let nodelay = |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    };
    // Without TCP_NODELAY every SSE frame after the first waits for the client's delayed ACK
    // (about 40 ms per streamed answer).
    use axum::serve::ListenerExt;
    match (source, tls) {
        (Source::Socket(socket), Some(tls)) => {
            let handle = axum_server::Handle::new();
            let shutdown = handle.clone();
            tokio::spawn(async move {
                let _ = drain.wait_for(|draining| *draining).await;
                shutdown.graceful_shutdown(Some(grace));
            });
            // TCP_NODELAY under TLS too: `from_tcp_rustls`'s default acceptor leaves Nagle on, and
            // every SSE frame after the first would wait for the client's delayed ACK.
            let acceptor =
                axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(axum_server::accept::NoDelayAcceptor::new());
            axum_server::from_tcp(socket)
                .acceptor(acceptor)
                .handle(handle)
                .serve(make)
                .await?;
        }
        (Source::Socket(socket), None) => {
            let listener = tokio::net::TcpListener::from_std(socket)?.tap_io(nodelay);
            axum::serve(listener, make)
                .with_graceful_shutdown(async move {
                    let _ = drain.wait_for(|draining| *draining).await;
                })
                .await?;
        }
        (Source::Handoff(handoff), _) => {
            axum::serve(handoff.tap_io(nodelay), make)
                .with_graceful_shutdown(async move {
                    let _ = drain.wait_for(|draining| *draining).await;
                })
                .await?;
        }
    }
    Ok(())
}

/// One accept loop and the connections it took: on the main runtime when it is the only one,
/// else on a thread of its own with a single-threaded runtime, so that a connection, its
/// upstream calls (a connection pool per thread) and their wake-ups never cross threads
/// (docs/benchmarks.md: 46 µs per request with two work-stealing workers against 37 µs on one).
struct Server {
    done: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
    kill: tokio::sync::oneshot::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn on_this_runtime(serve: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static) -> Server {
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let (kill, kill_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let result = tokio::select! {
                r = serve => r,
                _ = kill_rx => Ok(()),
            };
            let _ = done_tx.send(result);
        });
        Server {
            done,
            kill,
            thread: None,
        }
    }

    fn on_a_thread(
        index: usize,
        serve: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> anyhow::Result<Server> {
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let (kill, kill_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a serving thread's runtime")?;
        let thread = std::thread::Builder::new()
            .name(format!("keygate-serve-{index}"))
            .spawn(move || {
                let result = runtime.block_on(async move {
                    tokio::select! {
                        r = serve => r,
                        _ = kill_rx => Ok(()),
                    }
                });
                // Closes the connections still open; a name lookup in flight gets a second.
                runtime.shutdown_timeout(Duration::from_secs(1));
                let _ = done_tx.send(result);
            })
            .context("cannot start a serving thread")?;
        Ok(Server {
            done,
            kill,
            thread: Some(thread),
        })
    }

    /// Ends the server if it still runs and waits for its thread.
    async fn stop(self) {
        let _ = self.kill.send(());
        if let Some(thread) = self.thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn redis_counters(url: &str) -> anyhow::Result<Arc<dyn keygate_limits::Counters>> {
    // Lazy: keygate starts while Redis is down; `fail_mode` decides meanwhile.
    let counters = keygate_limits::redis::RedisCounters::builder(url, "keygate:")
        .connect_lazy()
        .map_err(|e| anyhow::anyhow!("invalid redis_url: {e}"))?;
    match counters.ping().await {
        Ok(()) => tracing::info!("limit counters on Redis"),
        Err(e) => tracing::warn!(error = %e, "Redis is unreachable at start; fail_mode decides until it answers"),
    }
    Ok(Arc::new(counters))
}
