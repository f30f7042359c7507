#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs (initdb, postgres) are on this
# machine: the local stack runs a fresh cluster from them. They come from the
# machine's packages; nothing is downloaded by hand.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${LOCKDOWN_PG_BIN_DIR:-}" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries are missing and this is not root: install the 'postgresql' package (apt-get install postgresql) or set LOCKDOWN_PG_BIN_DIR" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries are missing and apt-get is not available: install PostgreSQL 15+ and set LOCKDOWN_PG_BIN_DIR" >&2
  exit 1
fi
echo "installing PostgreSQL from the machine's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
