//! The `keygate` binary: `serve`, the store tools (`admin-key`, `master-key rotate`) and the
//! CLI for every management operation, which talks to a running server.
// One exception, `tune_allocator`: a call that sets an integer option of mimalloc.
#![deny(unsafe_code)]

mod client;
mod config;
mod serve;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "keygate", version, about = "A self-hosted LLM API-key vault and gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the store is, for the commands that open it directly.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// Data directory of the embedded store (and its generated master key).
    #[arg(long, env = "KEYGATE_DATA_DIR", default_value = "./keygate-data")]
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…` (default: SQLite in the data directory).
    #[arg(long, env = "KEYGATE_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("keygate.db").display()))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway, the management API and the health endpoints.
    Serve(serve::ServeArgs),
    /// Create an ADMIN key directly in the store and print only its secret.
    AdminKey(tools::AdminKeyArgs),
    /// Master-key operations.
    MasterKey {
        #[command(subcommand)]
        command: tools::MasterKeyCommand,
    },
    /// Manage provider keys on a running server (KEYGATE_URL, KEYGATE_API_KEY).
    #[command(name = "provider-keys")]
    ProviderKeys {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::ProviderKeysCommand,
    },
    /// Manage virtual keys on a running server (KEYGATE_URL, KEYGATE_API_KEY).
    #[command(name = "virtual-keys")]
    VirtualKeys {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::VirtualKeysCommand,
    },
    /// Manage platform API keys on a running server (KEYGATE_URL, KEYGATE_API_KEY).
    #[command(name = "api-keys")]
    ApiKeys {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::ApiKeysCommand,
    },
    /// Manage workspaces on a running server (KEYGATE_URL, KEYGATE_API_KEY).
    Workspaces {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::WorkspacesCommand,
    },
    /// Requests, tokens and cost of a running server (KEYGATE_URL, KEYGATE_API_KEY).
    Usage {
        #[command(flatten)]
        conn: client::Conn,
        #[command(flatten)]
        args: client::UsageArgs,
    },
    /// Read the audit log of a running server (KEYGATE_URL, KEYGATE_API_KEY).
    Audit {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::AuditCommand,
    },
}

/// mimalloc: fewer instructions per allocation than glibc's malloc on the gateway's many small,
/// short-lived allocations, and no arena growth across worker threads; built without transparent
/// huge pages, which cost 16 MiB of resident memory for no measurable speed (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option `purge_delay` (its place in `mi_option_e` of mimalloc 3, which keeps the
/// places of retired options so that the numbering never changes).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed by the allocator goes back to the system after 10 ms instead of mimalloc 3's
/// default of 1 s (mimalloc 2's default was 10 ms): the burst of a load that opens many
/// connections at once no longer stays resident for a second, a 5 MiB lower peak under load for
/// no measurable throughput (docs/benchmarks.md). `MIMALLOC_PURGE_DELAY` in the environment
/// still wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads options atomically and allows setting
        // them at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
}

/// The allocator's purge delay now, in milliseconds.
#[cfg(test)]
#[allow(unsafe_code)]
fn purge_delay_ms() -> std::ffi::c_long {
    // SAFETY: reads one integer option.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        serve::init_logging_for_tools();
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::AdminKey(args) => tools::admin_key(args).await,
            Command::MasterKey { command } => tools::master_key(command).await,
            Command::ProviderKeys { conn, command } => client::provider_keys(conn, command).await,
            Command::Audit { conn, command } => client::audit(conn, command).await,
            Command::VirtualKeys { conn, command } => client::virtual_keys(conn, command).await,
            Command::Usage { conn, args } => client::usage(conn, args).await,
            Command::ApiKeys { conn, command } => client::api_keys(conn, command).await,
            Command::Workspaces { conn, command } => client::workspaces(conn, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_returns_freed_memory_after_10_ms() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("SKIPPED: MIMALLOC_PURGE_DELAY is set in the environment");
            return;
        }
        // mimalloc 3's own default: reading it proves that option 15 is the purge delay.
        assert_eq!(super::purge_delay_ms(), 1000);
        super::tune_allocator();
        assert_eq!(super::purge_delay_ms(), 10);
    }
}
