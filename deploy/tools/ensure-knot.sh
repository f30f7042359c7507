#!/usr/bin/env bash
# Makes sure Knot DNS's server (knotd) is on this machine: the local stack
# runs it as the platform's authoritative DNS server for DKIM records. It
# comes from the machine's packages; nothing is downloaded by hand.
set -euo pipefail
if [ -n "${LOCKDOWN_KNOTD:-}" ] || [ -x /usr/sbin/knotd ] || command -v knotd >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Knot DNS is missing: install the 'knot' package (apt-get install knot) or set LOCKDOWN_KNOTD to knotd's path" >&2
  exit 1
fi
echo "installing Knot DNS from the machine's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq knot >/dev/null
# The package starts no server here (no init system); the stack runs its own.
test -x /usr/sbin/knotd
