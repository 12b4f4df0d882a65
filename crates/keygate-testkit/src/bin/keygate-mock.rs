//! `keygate-mock`: the mock upstream as a standalone server, the "direct to mock" baseline of the benchmarks.
//!
//! Prints one line `keygate-mock listening on http://ADDR` on stdout once it accepts connections, then serves
//! until SIGINT / SIGTERM. No per-request logging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use keygate_testkit::{MockConfig, MockUpstream};

#[derive(Parser, Debug)]
#[command(
    name = "keygate-mock",
    about = "Mock LLM upstream (OpenAI / Azure / Vertex / Anthropic / OAuth token) for keygate benchmarks"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: SocketAddr,
    /// Fixed delay before answering every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Content chunks per SSE answer.
    #[arg(long, default_value_t = 3)]
    stream_chunks: usize,
    /// Delay between SSE frames, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Prompt / input tokens reported in usage.
    #[arg(long, default_value_t = 9)]
    prompt_tokens: u64,
    /// Completion / output tokens reported in usage.
    #[arg(long, default_value_t = 3)]
    completion_tokens: u64,
    /// Do not keep request records (always use this for benchmarks: records grow without bound).
    #[arg(long)]
    no_record: bool,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().expect("tokio runtime");
    rt.block_on(async move {
        let config = MockConfig {
            latency: Duration::from_millis(args.latency_ms),
            stream_chunks: args.stream_chunks,
            chunk_delay: Duration::from_millis(args.chunk_delay_ms),
            prompt_tokens: args.prompt_tokens,
            completion_tokens: args.completion_tokens,
            record: !args.no_record,
            ..MockConfig::default()
        };
        let mock = match MockUpstream::bind(args.listen, config).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("keygate-mock: cannot listen on {}: {e}", args.listen);
                std::process::exit(1);
            }
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "keygate-mock listening on {}", mock.url());
            let _ = out.flush();
        }
        shutdown_signal().await;
        drop(mock);
    });
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
