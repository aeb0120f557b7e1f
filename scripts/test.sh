#!/usr/bin/env bash
# The test command: what CI runs (.ci/run) and what to run before pushing.
#
# 1. Installs the Debian packages the end-to-end tests use, if missing:
#    opensc (pkcs11-tool drives the module like a real application), and a C compiler
#    (the raw C ABI probe in tests/c is compiled during the tests; Rust needs one anyway);
#    for the interop tests (tests/tests/interop_*.rs): pkcs11-provider (OpenSSL 3; from
#    bookworm-backports on Debian 12, whose apt source is added when no source offers it),
#    libengine-pkcs11-openssl (the libp11 engine), p11-kit, and a JDK (SunPKCS11, keytool,
#    jarsigner, javac).
# 2. Style first, so a formatting or lint break fails fast:
#    cargo fmt --all -- --check, cargo clippy --release --all-targets -- -D warnings.
# 3. cargo test --release --workspace: unit tests, and the end-to-end tests in tests/, which
#    build hsm-daemon, libhsm_pkcs11.so and hsmctl themselves and run real clusters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
if command -v dpkg >/dev/null 2>&1; then
    for pkg in opensc pkcs11-provider libengine-pkcs11-openssl p11-kit; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
    if ((${#missing[@]})); then
        echo "== installing ${missing[*]}"
        sudo=()
        if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get update -q
        # pkcs11-provider is in bookworm-backports on Debian 12: add that suite, from the
        # mirror host the existing sources use, when no configured source offers the package.
        if [[ " ${missing[*]} " == *" pkcs11-provider "* ]] &&
            ! apt-cache policy pkcs11-provider 2>/dev/null | grep -q 'Candidate: [0-9]' &&
            grep -qs 'bookworm' /etc/os-release; then
            mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v '^[[:space:]]*#' |
                grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
            mirror=${mirror:-http://deb.debian.org/debian}
            echo "== adding bookworm-backports ($mirror) for pkcs11-provider"
            echo "deb ${mirror%/} bookworm-backports main" |
                "${sudo[@]}" tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
            "${sudo[@]}" apt-get update -q
        fi
        "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    echo "== not a Debian system: install pkcs11-tool (OpenSC), pkcs11-provider, the libp11" \
        "engine, p11-kit, a JDK and a C compiler yourself" >&2
fi

echo "== cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "== cargo clippy --release --all-targets -- -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings

echo "== cargo test --release --workspace"
cargo test --release --workspace
