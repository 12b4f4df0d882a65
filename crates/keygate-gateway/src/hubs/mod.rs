//! One module per hub: how a request is built for it and how its answer is read.

pub mod anthropic;
pub mod vertex_auth;
