#!/usr/bin/env bash
# Side-by-side benchmark: Ringway vs NGINX vs HAProxy vs the direct path.
# Installs the peers if missing, builds the workspace in release mode, raises
# the open-file limit and runs bench/harness.py, which writes bench/RESULTS.md.
# Options go to the harness: bench/run.sh --help. Method: bench/README.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

want_help=0
build=1
args=()
for a in "$@"; do
    case "$a" in
        -h | --help) want_help=1 ;;
        --no-build) build=0; continue ;;
    esac
    args+=("$a")
done

# --- peers and tools: installed once, idempotently (CI machines start fresh).
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(taskset)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ] && [ "$want_help" -eq 0 ]; then
    echo "bench: installing (missing: ${missing[*]})" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    # The packages' own service scripts would start NGINX and HAProxy on
    # 0.0.0.0:80; tell invoke-rc.d not to start anything while installing.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    trap '[ "$added_policy" -eq 1 ] && "${sudo[@]}" rm -f "$policy"' EXIT
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y nginx-light haproxy wrk util-linux python3 openssl
    # Where systemd runs, make sure no system-wide instance is left listening.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        "${sudo[@]}" systemctl disable --now nginx haproxy >/dev/null 2>&1 || true
    fi
    if [ "$added_policy" -eq 1 ]; then
        "${sudo[@]}" rm -f "$policy"
        added_policy=0
    fi
fi

if [ "$build" -eq 1 ] && [ "$want_help" -eq 0 ]; then
    cargo build --release --workspace
fi

# 10,000 held connections need more than the usual 1024 descriptors, for the
# proxy and for the holder alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec python3 bench/harness.py "${args[@]}"
