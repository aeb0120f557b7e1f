#!/usr/bin/env bash
# One command for the whole benchmark: SoftHSMv2 (installed if missing), a release build, a
# throwaway 1-node development cluster on a free port, hsm-bench over limit / SoftHSMv2 / ours,
# then the cluster is stopped and removed. Extra arguments go to hsm-bench, e.g.
#   bench/run.sh --seconds 5 --large-find
#   bench/run.sh --ops p256-sign,aes-gcm-1k --sessions 1,16
# Results: target/bench-results/{results.md,chart.png,*.jsonl} (or --out DIR).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# --- SoftHSMv2 and a font for the chart (Debian packages; idempotent) -----------------------
missing=()
dpkg -s softhsm2 >/dev/null 2>&1 || missing+=(softhsm2)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
if ((${#missing[@]})); then
    echo "run.sh: installing ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- build ---------------------------------------------------------------------------------
cargo build --release -p hsm-daemon -p hsm-pkcs11 -p hsmctl -p hsm-bench

# --- a throwaway 1-node dev cluster ----------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/hsm-bench-cluster.XXXXXX")"
cluster_pid=""
cleanup() {
    if [[ -n "$cluster_pid" ]] && kill -0 "$cluster_pid" 2>/dev/null; then
        kill -TERM "$cluster_pid" 2>/dev/null || true
        wait "$cluster_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(target/release/hsm-bench free-port)"
# hsmctl's log holds the generated dev passwords: it stays in $work (removed at exit) and is
# only ever shown with PIN lines filtered out.
target/release/hsmctl dev --no-build --dir "$work/cluster" --port "$port" >"$work/hsmctl.log" 2>&1 &
cluster_pid=$!
for _ in $(seq 1 240); do
    grep -q "The development cluster is running" "$work/hsmctl.log" 2>/dev/null && break
    if ! kill -0 "$cluster_pid" 2>/dev/null; then
        echo "run.sh: hsmctl dev exited; its log (PIN lines removed):" >&2
        grep -v -i "pin" "$work/hsmctl.log" | tail -n 30 >&2
        exit 1
    fi
    sleep 0.25
done
if ! grep -q "The development cluster is running" "$work/hsmctl.log"; then
    echo "run.sh: the dev cluster did not come up within 60 s; its log (PIN lines removed):" >&2
    grep -v -i "pin" "$work/hsmctl.log" | tail -n 30 >&2
    exit 1
fi
echo "run.sh: 1-node dev cluster on 127.0.0.1:$port (in $work)"

# HSM_PKCS11_MODULE, HSM_PKCS11_CONF, HSM_PIN, HSM_SO_PIN: exported for hsm-bench, never printed.
# shellcheck disable=SC1091
source "$work/cluster/env"

# Other work on the machine disturbs the numbers: count concurrent compilations while we run.
(while sleep 1; do pgrep -c -x rustc || true; done) >"$work/rustc.samples" 2>/dev/null &
sampler=$!

# The tokens are throwaway: skip destroying the C_FindObjects population at the end.
status=0
target/release/hsm-bench --no-cleanup "$@" || status=$?
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
awk '{ n++; if ($1 > 0) busy++; if ($1 > max) max = $1 }
     END { if (n) printf "run.sh: concurrent rustc processes during the run: max %d, present in %d%% of %d one-second samples\n", max, 100 * busy / n, n }' \
    "$work/rustc.samples" >&2
exit "$status"
