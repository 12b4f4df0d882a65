//! keygate's hot path pieces, free of HTTP-server concerns so they can be tested, fuzzed and
//! benchmarked alone: hub adapters (how a request for each hub is built and its answer
//! read), the incremental SSE parser and usage scanner, and the usage figures.
#![forbid(unsafe_code)]

pub mod hubs;
pub mod raw;
pub mod request;
pub mod sse;
pub mod usage;

pub use usage::Usage;
