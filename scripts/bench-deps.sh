#!/usr/bin/env bash
# Installs the peers the benchmarks (volley-bench) run beside Volley: aria2 (BitTorrent client),
# opentracker (tracker) and mktorrent for `volley-bench swarm` and `volley-bench tracker`; casync
# (and python3 for its HTTP store) for `volley-bench reuse`. All Debian packages. Safe to run again.
set -euo pipefail

need=()
command -v aria2c >/dev/null 2>&1 || need+=(aria2)
command -v opentracker >/dev/null 2>&1 || need+=(opentracker)
command -v mktorrent >/dev/null 2>&1 || need+=(mktorrent)
command -v casync >/dev/null 2>&1 || need+=(casync)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "${#need[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-deps: missing ${need[*]} (for volley-bench swarm, reuse and tracker); run as root or: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "bench-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
