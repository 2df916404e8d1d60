#!/usr/bin/env bash
# Build ff as an application that depends on it would: a new Cargo project
# outside the workspace that depends on ffstream (every backend) and ff-http
# by path, resolves the newest compatible versions of every dependency
# (ignoring the workspace's Cargo.lock), type-checks, and fails on any
# warning. A new release of a dependency that deprecates something ff uses
# fails here, before it shows up as a warning in every consumer's build.
#
# Needs network access to the crates.io index; compiles every dependency
# afresh (several minutes). Usage: scripts/fresh-resolve.sh [work dir]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
WORK=${1:-$ROOT/target/fresh-resolve}

mkdir -p "$WORK/src"
cat >"$WORK/Cargo.toml" <<EOF
[package]
name = "ff-fresh-resolve"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
ffstream = { path = "$ROOT/ffstream", features = ["memory", "valkey", "postgres", "testkit"] }
ff-http = { path = "$ROOT/ff-http" }

[workspace]
EOF
cat >"$WORK/src/main.rs" <<'EOF'
fn main() {
    let _ = ffstream::connect;
    let _ = ff_http::Gateway::router;
}
EOF

cd "$WORK"
rm -f Cargo.lock
echo "==> cargo update (newest compatible versions) in $WORK" >&2
cargo update
echo "==> cargo check (cargo shows warnings of path dependencies: ff's crates)" >&2
CARGO_TARGET_DIR="$WORK/target" cargo check --message-format short 2>&1 | tee "$WORK/check.log"
if grep -q 'warning' "$WORK/check.log"; then
    echo "scripts/fresh-resolve.sh: error: ff builds with warnings against freshly resolved dependencies (above)" >&2
    exit 1
fi
echo "==> ff builds without warnings against freshly resolved dependencies" >&2
