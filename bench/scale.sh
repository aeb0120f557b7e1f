#!/usr/bin/env bash
# The scale test (long; not part of CI): N AES-256 token keys in a throwaway 3-node development
# cluster, then
#   1. each node's memory (VmRSS, peak VmHWM) and store size with the N keys;
#   2. restarting one follower: time from `hsmctl unseal` until its status answers unsealed
#      (the node loads the N keys), and until its applied index is the leader's again;
#   3. a wiped node catching up: stop it, delete its directory, `hsmctl node remove`,
#      `node add`, start, unseal, `node join`; time until its applied index is the leader's
#      (the leader sends it a snapshot: the log behind the last snapshot is purged).
# Targets (issue 8): ≤ 2 GiB RSS per node with 1,000,000 keys; unseal ≤ 60 s.
#
#   bench/scale.sh [--keys N] [--sessions S] [--out FILE] [--no-build] [--keep]
#
#   --keys N      keys to create [default: 1000000; ≈ 6 min of filling at 3,000/s]
#   --sessions S  concurrent sessions creating them [default: 32]
#   --out FILE    the markdown report [default: target/bench-results/scale.md]
#   --no-build    use the binaries already built
#   --keep        leave the cluster directory (and do not stop the nodes)
# Binaries come from ${CARGO_TARGET_DIR:-target}/release.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-target}/release"

keys=1000000
sessions=32
out="target/bench-results/scale.md"
build=1
keep=0
while (($#)); do
    case "$1" in
    --keys) keys="$2"; shift 2 ;;
    --sessions) sessions="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "scale.sh: unknown argument ${1@Q} (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$keys" =~ ^[1-9][0-9]*$ && "$sessions" =~ ^[1-9][0-9]*$ ]] ||
    { echo "scale.sh: --keys and --sessions take positive integers" >&2; exit 2; }

if ! command -v jq >/dev/null; then
    echo "scale.sh: installing jq"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq jq >/dev/null
fi
if ((build)); then
    cargo build --release -p hsm-daemon -p hsm-pkcs11 -p hsmctl -p hsm-bench
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "scale.sh: $*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/hsm-bench-scale.XXXXXX")"
D="$work/cluster"
dev_pid=""
own_pids=() # daemons this script restarted itself
cleanup() {
    local pid
    ((keep)) && { say "kept $D (nodes still running)"; return; }
    for pid in "${own_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    [[ -n "$dev_pid" ]] && kill -TERM "$dev_pid" 2>/dev/null || true
    for pid in "${own_pids[@]}" $dev_pid; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(while sleep 1; do pgrep -c -x rustc || true; done) >"$work/rustc.samples" 2>/dev/null &
sampler=$!
begun=$(now)

# --- the cluster ------------------------------------------------------------------------------
port="$("$bin/hsm-bench" free-port --count 6)"
"$bin/hsmctl" dev --no-build --nodes 3 --dir "$D" --port "$port" >"$work/hsmctl.log" 2>&1 &
dev_pid=$!
deadline=$((SECONDS + 300))
until grep -q "The development cluster is running" "$work/hsmctl.log" 2>/dev/null; do
    if ! kill -0 "$dev_pid" 2>/dev/null || ((SECONDS > deadline)); then
        say "the dev cluster did not come up; its log (PIN lines removed):"
        grep -v -i "pin" "$work/hsmctl.log" | tail -n 30 >&2
        exit 1
    fi
    sleep 0.25
done
say "3-node dev cluster on 127.0.0.1:$port-$((port + 5)) (in $D)"
# HSM_PKCS11_MODULE, HSM_PKCS11_CONF, HSM_PIN, HSM_SO_PIN (never printed).
# shellcheck disable=SC1091
source "$D/env"

# The whole cluster as D/admin.toml lists it (a node between `node add` and `node join` is
# not listed yet: ask it with --node).
status_json() { "$bin/hsmctl" status --dir "$D" --json 2>/dev/null || true; }
# field NODE JQ-PATH: one field of NODE's own answer (empty when it does not answer).
field() {
    { "$bin/hsmctl" status --dir "$D" --node "$1" --json 2>/dev/null || true; } |
        jq -r ".nodes[0] | $2 // empty"
}
leader() { status_json | jq -r '.leader_name // empty'; }
leader_applied() {
    status_json | jq -r '[.nodes[] | select(.raft_state == "leader") | .applied][0] // empty'
}
node_pid() { pgrep -f -- "--config $D/$1/node.toml" | head -n 1; }
proc_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
store_size() { du -sh "$D/$1/data" 2>/dev/null | cut -f1; }
# wait_for WHAT SECONDS CMD...: until CMD succeeds.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local end=$((SECONDS + limit))
    until "$@"; do
        ((SECONDS < end)) || { say "timed out after ${limit}s waiting for $what"; exit 1; }
        sleep 0.2
    done
}
is_state() { [[ "$(field "$1" .state)" == "$2" ]]; }
# caught_up NODE: its applied index is the leader's (and the leader has one).
caught_up() {
    local lead mine
    lead="$(leader_applied)"
    mine="$(field "$1" .applied)"
    [[ -n "$lead" && -n "$mine" && "$mine" -ge "$lead" ]]
}
all_caught_up() {
    status_json | jq -e '[.nodes[] | .applied] | (length == 3) and (all(. != null)) and (min == max)' >/dev/null
}
stop_node() {
    local pid
    pid="$(node_pid "$1")"
    [[ -n "$pid" ]] || { say "no hsm-daemon for $1"; exit 1; }
    kill -TERM "$pid"
    wait_for "$1 to stop" 60 bash -c "! kill -0 $pid 2>/dev/null"
}
start_node() {
    "$bin/hsm-daemon" run --config "$D/$1/node.toml" >>"$D/$1/daemon.log" 2>&1 &
    own_pids+=($!)
    wait_for "$1 to answer" 60 is_state "$1" sealed
}
declare -A rss_before=()
# rss_row [growth]: "node1 270 MiB (peak 270 MiB, store 18M); …"; with "growth", also each
# node's growth since rss_before and per key.
rss_row() {
    local name pid rss hwm row=() extra
    for name in node1 node2 node3; do
        pid="$(node_pid "$name")"
        rss="$(proc_kib "$pid" VmRSS)"
        hwm="$(proc_kib "$pid" VmHWM)"
        extra=""
        if [[ "${1:-}" == growth ]]; then
            extra="$(awk -v a="${rss:-0}" -v b="${rss_before[$name]:-0}" -v n="$keys" \
                'BEGIN { printf ", +%.0f MiB = %.1f KiB/key", (a - b) / 1024, (a - b) / n }')"
        fi
        row+=("$name $(mib "${rss:-0}")$extra (peak $(mib "${hwm:-0}"), store $(store_size "$name"))")
    done
    local IFS=';'
    echo "${row[*]}" | sed 's/;/; /g'
}
# rss_1m_mib: the largest node's RSS extrapolated linearly to 1,000,000 keys from its RSS
# before and after the fill.
rss_1m_mib() {
    local name pid rss m=0 v
    for name in node1 node2 node3; do
        pid="$(node_pid "$name")"
        rss="$(proc_kib "$pid" VmRSS)"
        v="$(awk -v a="${rss:-0}" -v b="${rss_before[$name]:-0}" -v n="$keys" \
            'BEGIN { printf "%.0f", (b + (a - b) * 1000000 / n) / 1024 }')"
        ((v > m)) && m=$v
    done
    echo "$m"
}

for name in node1 node2 node3; do
    rss_before[$name]="$(proc_kib "$(node_pid "$name")" VmRSS)"
done
rss_empty="$(rss_row)"

# --- 1. fill ----------------------------------------------------------------------------------
say "creating $keys AES-256 token keys with $sessions sessions"
fill_line="$("$bin/hsm-bench" fill --count "$keys" --sessions "$sessions")"
fill_keys="$(sed -n 's/.*keys=\([0-9]*\).*/\1/p' <<<"$fill_line")"
fill_secs="$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$fill_line")"
fill_rate="$(sed -n 's/.*per_second=\([0-9]*\).*/\1/p' <<<"$fill_line")"
say "$fill_line"
t=$(now)
wait_for "the followers to apply everything" 600 all_caught_up
settle_secs="$(since "$t")"
rss_full="$(rss_row growth)"
rss_1m="$(rss_1m_mib)"
lead="$(leader)"
say "leader $lead; $rss_full"

# The wiped node is node3 unless it leads; the restarted node is the other follower.
wiped=node3
[[ "$lead" == node3 ]] && wiped=node2
for n in node1 node2 node3; do
    [[ "$n" != "$lead" && "$n" != "$wiped" ]] && restarted=$n
done

# --- 2. restart + unseal one follower ----------------------------------------------------------
say "restarting $restarted"
stop_node "$restarted"
t=$(now)
start_node "$restarted"
listen_secs="$(since "$t")"
t=$(now)
"$bin/hsmctl" unseal --dir "$D" --node "$restarted" --dev-key-file "$D/dev.key" >/dev/null
unseal_cmd_secs="$(since "$t")"
wait_for "$restarted to be unsealed" 900 is_state "$restarted" unsealed
unseal_secs="$(since "$t")"
wait_for "$restarted to catch up" 900 caught_up "$restarted"
unseal_caught_secs="$(since "$t")"
pid="$(node_pid "$restarted")"
rss_restarted="$(mib "$(proc_kib "$pid" VmRSS)") (peak $(mib "$(proc_kib "$pid" VmHWM)"))"
say "$restarted: unsealed ${unseal_secs}s after hsmctl unseal; RSS $rss_restarted"

# --- 3. a wiped node catches up by snapshot ------------------------------------------------------
say "wiping $wiped"
wiped_port=$((port + 2 * (${wiped#node} - 1)))
stop_node "$wiped"
t=$(now)
"$bin/hsmctl" node remove --dir "$D" --name "$wiped" >/dev/null
rm -rf "${D:?}/$wiped"
"$bin/hsmctl" node add --dir "$D" --name "$wiped" --listen "127.0.0.1:$wiped_port" \
    --cluster-listen "127.0.0.1:$((wiped_port + 1))" --dev >/dev/null
start_node "$wiped"
"$bin/hsmctl" unseal --dir "$D" --node "$wiped" --dev-key-file "$D/dev.key" >/dev/null
prepare_secs="$(since "$t")"
t=$(now)
join_tries=0
# `node join` is safe to run again (e.g. after its own timeout while a big snapshot installs).
until "$bin/hsmctl" node join --dir "$D" --name "$wiped" >"$work/join.log" 2>&1; do
    join_tries=$((join_tries + 1))
    ((join_tries < 5)) || { say "node join failed 5 times:"; tail -n 5 "$work/join.log" >&2; exit 1; }
    say "node join failed (attempt $join_tries), again: $(tail -n 1 "$work/join.log")"
done
join_secs="$(since "$t")"
wait_for "$wiped to catch up" 1800 caught_up "$wiped"
catch_secs="$(since "$t")"
pid="$(node_pid "$wiped")"
rss_wiped="$(mib "$(proc_kib "$pid" VmRSS)") (peak $(mib "$(proc_kib "$pid" VmHWM)"))"
# openraft logs each snapshot chunk it receives (InstallSnapshotRequest … last_log:T-N-INDEX).
snapshot_at="$(grep -o 'InstallSnapshotRequest.*' "$D/$wiped/daemon.log" |
    grep -o 'last_log:T[0-9]*-N[0-9]*-[0-9]*' | tail -n 1 | sed 's/.*-//' || true)"
say "$wiped: caught up ${catch_secs}s after node join; RSS $rss_wiped"

kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
total_secs="$(since "$begun")"
rustc="$(awk '{ n++; if ($1 > 0) busy++; if ($1 > max) max = $1 }
    END { if (n) printf "max %d concurrent rustc processes, present in %d%% of %d one-second samples", max, 100 * busy / n, n }' \
    "$work/rustc.samples")"

# --- report -------------------------------------------------------------------------------------
# Verdicts against the 1,000,000-key targets; smaller runs are extrapolated linearly (an
# indication only: per-key memory and load time need not be linear).
verdict() { # verdict MEASURED LIMIT UNIT: for N < 1M, measured scaled to 1M keys
    awk -v m="$1" -v lim="$2" -v u="$3" -v n="$keys" 'BEGIN {
        s = (n < 1000000) ? 1000000 / n : 1
        v = m * s
        txt = (n < 1000000) ? sprintf("≈ %.0f %s at 1 M (×%.0f, linear)", v, u, s) : sprintf("%.0f %s", v, u)
        if (v <= lim) printf "%s: met", txt; else printf "%s: **missed** by %.0f %s", txt, v - lim, u
    }'
}
rss_verdict="$(awk -v v="$rss_1m" -v n="$keys" 'BEGIN {
    pre = (n < 1000000) ? sprintf("largest node ≈ %.0f MiB at 1 M keys (before + growth × %.0f, linear)", v, 1000000 / n) : sprintf("largest node %.0f MiB", v)
    if (v <= 2048) printf "%s: met", pre; else printf "%s: **missed** by %.0f MiB", pre, v - 2048 }')"

mkdir -p "$(dirname "$out")"
{
    echo "# Scale test: $keys AES-256 keys in a 3-node cluster"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M') UTC on $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
        "($(nproc) CPUs, $(awk '/^MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo) RAM);" \
        "3 nodes on 127.0.0.1 (\`hsmctl dev --nodes 3\`), keys created with \`hsm-bench fill\`" \
        "($sessions sessions). Whole run ${total_secs}s. Machine: $rustc."
    echo
    echo "| step | measured | target |"
    echo "|---|---|---|"
    echo "| create $fill_keys token keys (\`C_GenerateKey\`, committed), $sessions sessions | ${fill_secs}s, $fill_rate keys/s | — |"
    echo "| followers apply everything after the fill | ${settle_secs}s | — |"
    echo "| RSS before the fill | $rss_empty | — |"
    echo "| RSS with the keys (VmRSS of each hsm-daemon, growth during the fill; peak = VmHWM; store = du of its data) | $rss_full | ≤ 2 GiB per node at 1 M keys: $rss_verdict |"
    echo "| restart $restarted: start until it answers (sealed) | ${listen_secs}s | — |"
    echo "| unseal $restarted with the keys: \`hsmctl unseal\` returned | ${unseal_cmd_secs}s | — |"
    echo "| unseal $restarted: \`hsmctl unseal\` until status answers unsealed | ${unseal_secs}s | ≤ 60 s at 1 M keys: $(verdict "$unseal_secs" 60 s) |"
    echo "| … until its applied index is the leader's | ${unseal_caught_secs}s | — |"
    echo "| RSS of $restarted after the restart | $rss_restarted | — |"
    echo "| wiped $wiped: node remove, delete, node add, start, unseal | ${prepare_secs}s | — |"
    echo "| wiped $wiped: \`hsmctl node join\` returned ($((join_tries + 1)) attempt(s)) | ${join_secs}s | — |"
    echo "| wiped $wiped: \`node join\` until its applied index is the leader's | ${catch_secs}s | — |"
    echo "| RSS of $wiped after catching up | $rss_wiped | — |"
    echo
    echo "Leader during the test: $lead. Snapshot policy: the daemon's defaults (a snapshot every" \
        "5,000 log entries, 1,000 kept behind it), so a new node cannot be served from the log alone."
    if [[ -n "$snapshot_at" ]]; then
        echo "The wiped $wiped received a snapshot up to log index $snapshot_at (openraft's" \
            "InstallSnapshotRequest in its log), then the entries after it."
    else
        echo "No snapshot installation found in $wiped's log: it caught up from the log."
    fi
    echo
    echo "Cluster status at the end (\`hsmctl status\`):"
    echo
    echo '```'
    "$bin/hsmctl" status --dir "$D" 2>&1 || true
    echo '```'
} >"$out"
cat "$out"
say "wrote $out"
