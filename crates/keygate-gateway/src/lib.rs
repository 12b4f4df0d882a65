//! keygate's gateway: the pipeline a request to `/v1` takes (`pipeline`: select the virtual key
//! and target, admit through the core's limits, build and send the upstream request, answer and
//! settle), the OpenAI-shaped error edge (`error`), and the hot path's pieces, free of server
//! concerns so they can be tested, fuzzed and benchmarked alone: hub adapters (how a request for
//! each hub is built and its answer read), the request readers, the incremental SSE parser and
//! usage scanner. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod error;
pub mod hubs;
pub mod pipeline;
pub mod raw;
pub mod request;
pub mod sse;
pub mod usage;

pub use usage::Usage;
