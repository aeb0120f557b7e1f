#!/usr/bin/env bash
# Builds exit_paths.c and runs each mode with a time limit: each must exit 0 within 10 s.
# Needs a running cluster: `source hsm-dev/env` first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module=${HSM_PKCS11_MODULE:?source the cluster env first}
bin=$(mktemp -d)/exit_paths
cc -O1 -Wall -I/usr/include/p11-kit-1 -o "$bin" "$here/exit_paths.c" -ldl -lpthread
for mode in no-finalize atexit-finalize finalize-dlclose; do
  if timeout 10 "$bin" "$module" "$mode"; then
    echo "$mode: ok"
  else
    echo "$mode: FAILED (exit $?)"
    exit 1
  fi
done
