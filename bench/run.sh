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

# --- peers and tools: installed once, idempotently (CI machines start fresh),
# and only those this run starts: Ringway's rows alone need none of the peers.
install() { # Debian packages
    echo "bench: installing $*" >&2
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
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "$@"
    # Where systemd runs, make sure no system-wide instance is left listening.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        "${sudo[@]}" systemctl disable --now nginx haproxy >/dev/null 2>&1 || true
    fi
    if [ "$added_policy" -eq 1 ]; then
        "${sudo[@]}" rm -f "$policy"
        added_policy=0
    fi
}

if [ "$want_help" -eq 0 ]; then
    command -v python3 >/dev/null 2>&1 || install python3
    # The harness reads the options, so a bad one stops the run here.
    missing_tools="$(python3 bench/harness.py --missing-tools "${args[@]}")"
    packages=()
    want_perf=0
    for tool in $missing_tools; do
        case "$tool" in
            nginx) packages+=(nginx-light) ;;
            taskset) packages+=(util-linux) ;;
            perf) want_perf=1 ;;
            *) packages+=("$tool") ;;
        esac
    done
    [ "${#packages[@]}" -eq 0 ] || install "${packages[@]}"
    # Debian's package; elsewhere (Ubuntu: linux-tools-*) the harness then
    # says perf is missing, and the rest is installed all the same.
    [ "$want_perf" -eq 0 ] || install linux-perf || echo "bench: could not install perf (Debian's linux-perf)" >&2
fi

if [ "$build" -eq 1 ] && [ "$want_help" -eq 0 ]; then
    cargo build --release --workspace
fi

# 10,000 held connections need more than the usual 1024 descriptors, for the
# proxy and for the holder alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec python3 bench/harness.py "${args[@]}"
