#!/usr/bin/env bash
# The test command: what CI runs (.ci/run) and what to run before pushing.
#
# 1. Installs the Debian packages the end-to-end tests use, if missing:
#    opensc (pkcs11-tool drives the module like a real application), and a C compiler
#    (the raw C ABI probe in tests/c is compiled during the tests; Rust needs one anyway).
# 2. Style first, so a formatting or lint break fails fast:
#    cargo fmt --all -- --check, cargo clippy --release --all-targets -- -D warnings.
# 3. cargo test --release --workspace: unit tests, and the end-to-end tests in tests/, which
#    build hsm-daemon, libhsm_pkcs11.so and hsmctl themselves and run real clusters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
if command -v dpkg >/dev/null 2>&1; then
    dpkg -s opensc >/dev/null 2>&1 || missing+=(opensc)
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    if ((${#missing[@]})); then
        echo "== installing ${missing[*]}"
        sudo=()
        if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get update -q
        "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    echo "== not a Debian system: install pkcs11-tool (OpenSC) and a C compiler yourself" >&2
fi

echo "== cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "== cargo clippy --release --all-targets -- -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings

echo "== cargo test --release --workspace"
cargo test --release --workspace
