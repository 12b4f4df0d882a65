//! The web UI at `/ui` (DESIGN §7): sign-in, Keys, Virtual keys, API keys, Usage, Rate-limit
//! log and Audit log, served by the same binary with its assets embedded.

pub mod session;

use crate::RouteTable;

/// Adds the UI's routes to the table (each declares its role).
pub fn add_routes(table: RouteTable) -> RouteTable {
    table
}
