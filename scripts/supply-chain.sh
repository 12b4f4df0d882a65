#!/usr/bin/env bash
# Supply-chain checks of keygate's dependency tree (docs/security.md, "Supply chain"):
#   1. cargo deny check bans licenses sources  (deny.toml: permissive licences, crates.io only)
#   2. cargo deny check advisories and cargo audit against the RustSec advisory database
# The tools are installed with `cargo install --locked` at the versions below when missing.
# The advisory database is fetched from GitHub; where it cannot be (a machine that reaches only
# the package registries), step 2 is skipped with a visible notice, unless
# KEYGATE_REQUIRE_ADVISORIES=1, which makes that a failure. KEYGATE_ADVISORY_DB=<dir> runs
# cargo audit on a local clone of github.com/RustSec/advisory-db instead (used as it is, not fetched).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DENY_VERSION=0.20.2
AUDIT_VERSION=0.22.2

step() { printf '\n==> %s\n' "$*"; }

have_version() {  # have_version <binary> <version>
    command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -q " $2\$"
}

if ! have_version cargo-deny "$DENY_VERSION"; then
    step "installing cargo-deny $DENY_VERSION"
    cargo install --locked --quiet cargo-deny --version "$DENY_VERSION"
fi
if ! have_version cargo-audit "$AUDIT_VERSION"; then
    step "installing cargo-audit $AUDIT_VERSION"
    cargo install --locked --quiet cargo-audit --version "$AUDIT_VERSION"
fi

step "cargo deny check bans licenses sources"
cargo deny --log-level error check bans licenses sources

step "advisories (cargo deny check advisories, cargo audit)"
if [[ -n "${KEYGATE_ADVISORY_DB:-}" ]]; then
    [[ -d "$KEYGATE_ADVISORY_DB" ]] || { echo "error: KEYGATE_ADVISORY_DB=$KEYGATE_ADVISORY_DB is not a directory" >&2; exit 1; }
    cargo audit --db "$KEYGATE_ADVISORY_DB" --no-fetch --deny warnings
    echo "cargo audit: ok (database $KEYGATE_ADVISORY_DB)"
    exit 0
fi
if timeout 20 git ls-remote --exit-code https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny --log-level error check advisories
    cargo audit --deny warnings
    echo "advisories: ok"
else
    if [[ "${KEYGATE_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
        echo "error: the RustSec advisory database (github.com/RustSec/advisory-db) is unreachable" >&2
        exit 1
    fi
    echo "SKIPPED advisories: the RustSec advisory database (github.com/RustSec/advisory-db) is unreachable"
    echo "  from this machine; licences, bans and sources were checked. Run this script where GitHub is"
    echo "  reachable, or with KEYGATE_ADVISORY_DB=<a clone of it>, to check advisories too."
fi
