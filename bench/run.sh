#!/usr/bin/env bash
# One command for the whole benchmark: SoftHSMv2 (installed if missing), a release build,
# throwaway development clusters of 1 and 3 nodes on free ports, hsm-bench over limit /
# SoftHSMv2 / ours (1 node) / ours (3 nodes), then the clusters are stopped and removed.
#
#   bench/run.sh [--nodes LIST] [--no-build] [hsm-bench arguments]
#
#   --nodes LIST  cluster sizes to measure, one "ours" column each [default: 1,3, or
#                 $HSM_BENCH_NODES]: --nodes 1 or --nodes 3 skips the other one
#   --no-build    use the binaries already built
#   --abuse       only the abuse run (1 node): a good client's P-256 p99 while another client
#                 floods the node with wrong-password logins and unread 1 MiB answers
#
# Everything else goes to hsm-bench, e.g.
#   bench/run.sh --seconds 5 --large-find
#   bench/run.sh --nodes 3 --ops p256-sign,aes-create --sessions 1,16
# Binaries come from ${CARGO_TARGET_DIR:-target}/release. Results:
# target/bench-results/{results.md,chart.png,*.jsonl} (or --out DIR), and with a 3-node
# cluster the failover run's failover.{png,json} (HSM_BENCH_FAILOVER=0 skips it), with a
# 1-node cluster the abuse run's abuse.{md,json} (HSM_BENCH_ABUSE=0 skips it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-target}/release"

nodes_list="${HSM_BENCH_NODES:-1,3}"
build=1
abuse_only=0
bench_args=()
while (($#)); do
    case "$1" in
    --nodes)
        [[ $# -ge 2 ]] || { echo "run.sh: --nodes needs a list, e.g. 1,3" >&2; exit 2; }
        nodes_list="$2"
        shift 2
        ;;
    --nodes=*) nodes_list="${1#--nodes=}"; shift ;;
    --no-build) build=0; shift ;;
    --abuse) abuse_only=1; shift ;;
    *) bench_args+=("$1"); shift ;;
    esac
done
IFS=',' read -r -a cluster_sizes <<<"$nodes_list"
((abuse_only)) && cluster_sizes=(1)
for n in "${cluster_sizes[@]}"; do
    [[ "$n" =~ ^[1-9]$ ]] || { echo "run.sh: --nodes takes sizes from 1 to 9, not ${n@Q}" >&2; exit 2; }
done
# No cluster when the ours column is not measured (--targets without "ours").
for ((i = 0; i < ${#bench_args[@]}; i++)); do
    case "${bench_args[i]}" in
    --targets) targets="${bench_args[i + 1]:-}" ;;
    --targets=*) targets="${bench_args[i]#--targets=}" ;;
    *) continue ;;
    esac
    [[ ",$targets," == *,ours,* ]] || cluster_sizes=()
done

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
if ((build)); then
    cargo build --release -p hsm-daemon -p hsm-pkcs11 -p hsmctl -p hsm-bench
fi

# --- throwaway dev clusters, one per size ------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/hsm-bench-cluster.XXXXXX")"
cluster_pids=()
cleanup() {
    local pid
    for pid in "${cluster_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${cluster_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_cluster N: `hsmctl dev --nodes N` in $work/cN on 2N free consecutive ports; waits
# until it runs, then exports HSM_BENCH_PIN_N (the user PIN; never printed) and sets conf_N.
start_cluster() {
    local n=$1 dir="$work/c$1" log="$work/hsmctl-$1.log" port pid
    port="$("$bin/hsm-bench" free-port --count $((2 * n)))"
    # hsmctl's log holds the generated dev passwords: it stays in $work (removed at exit) and
    # is only ever shown with PIN lines filtered out.
    "$bin/hsmctl" dev --no-build --nodes "$n" --dir "$dir" --port "$port" >"$log" 2>&1 &
    pid=$!
    cluster_pids+=("$pid")
    local deadline=$((SECONDS + 60 + 60 * n))
    until grep -q "The development cluster is running" "$log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
            echo "run.sh: the $n-node dev cluster did not come up; its log (PIN lines removed):" >&2
            grep -v -i "pin" "$log" | tail -n 30 >&2
            exit 1
        fi
        sleep 0.25
    done
    # HSM_PKCS11_MODULE, HSM_PKCS11_CONF, HSM_PIN from the cluster's env file, in a subshell
    # so that the clusters' variables do not mix.
    export "HSM_BENCH_PIN_$n=$(. "$dir/env" && printf '%s' "$HSM_PIN")"
    printf -v "conf_$n" '%s' "$(. "$dir/env" && printf '%s' "$HSM_PKCS11_CONF")"
    export HSM_PKCS11_MODULE
    HSM_PKCS11_MODULE="$(. "$dir/env" && printf '%s' "$HSM_PKCS11_MODULE")"
    # The daemons' process ids, for counting their context switches per operation.
    printf -v "pids_$n" '%s' "$(grep -o 'hsm-daemon (pid [0-9]*' "$log" | grep -o '[0-9]*$' | paste -sd+)"
    echo "run.sh: $n-node dev cluster on 127.0.0.1:$port-$((port + 2 * n - 1)) (in $dir)"
}

ours=()
for n in "${cluster_sizes[@]}"; do
    start_cluster "$n"
    conf_var="conf_$n"
    if ((n == 1)); then label="ours (1 node)"; else label="ours ($n nodes)"; fi
    pids_var="pids_$n"
    ours+=(--ours "$label=${!conf_var},pin-env=HSM_BENCH_PIN_$n${!pids_var:+,node-pids=${!pids_var}}")
done

# Other work on the machine disturbs the numbers: count concurrent compilations while we run.
(while sleep 1; do pgrep -c -x rustc || true; done) >"$work/rustc.samples" 2>/dev/null &
sampler=$!

# The tokens are throwaway: skip destroying the C_FindObjects population at the end.
status=0
if ((!abuse_only)); then
    "$bin/hsm-bench" --no-cleanup "${ours[@]}" "${bench_args[@]}" || status=$?
fi

# The failover run on the 3-node cluster: ops/s over time while its leader is killed with
# SIGKILL and restarted (failover.png and failover.json beside the table). Skip it with
# HSM_BENCH_FAILOVER=0.
out_dir="target/bench-results"
for ((i = 0; i < ${#bench_args[@]}; i++)); do
    case "${bench_args[i]}" in
    --out) out_dir="${bench_args[i + 1]:-$out_dir}" ;;
    --out=*) out_dir="${bench_args[i]#--out=}" ;;
    esac
done
# The abuse run on the 1-node cluster: a good client's P-256 signatures while another client
# floods the node (abuse.md and abuse.json beside the table).
if [[ -n "${conf_1:-}" && "${HSM_BENCH_ABUSE:-1}" != 0 ]]; then
    HSM_PKCS11_CONF="$conf_1" "$bin/hsm-bench" abuse --pin-env HSM_BENCH_PIN_1 \
        --node-pids "${pids_1//+/,}" --out "$out_dir" || status=$?
fi
if [[ -n "${conf_3:-}" && "${HSM_BENCH_FAILOVER:-1}" != 0 ]] && ((!abuse_only)); then
    HSM_PKCS11_CONF="$conf_3" "$bin/hsm-bench" failover --pin-env HSM_BENCH_PIN_3 \
        --cluster-dir "$work/c3" --bin-dir "$bin" --out "$out_dir" || status=$?
fi
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
awk '{ n++; if ($1 > 0) busy++; if ($1 > max) max = $1 }
     END { if (n) printf "run.sh: concurrent rustc processes during the run: max %d, present in %d%% of %d one-second samples\n", max, 100 * busy / n, n }' \
    "$work/rustc.samples" >&2
exit "$status"
