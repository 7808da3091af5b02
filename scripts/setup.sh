#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Safe to run again.
# - iproute2 and nftables: the NAT lab and the TUN link emulator (tests that need root).
# - python3: the module-cycle check; bsdutils (script): tests of progress lines on a terminal.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need[*]}; run as root or install them: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The lab needs /dev/net/tun for the TUN link emulator.
if [ "$(id -u)" -eq 0 ] && [ ! -e /dev/net/tun ]; then
  mkdir -p /dev/net
  mknod /dev/net/tun c 10 200 || true
fi
