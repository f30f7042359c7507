#!/usr/bin/env bash
# Makes sure a headless Chromium is on this machine: the console's test
# drives the web console in a real browser (chromedp). It comes from the
# machine's packages (Debian's chromium); nothing is downloaded by hand.
# LOCKDOWN_CHROMIUM names another binary.
set -euo pipefail
if [ -n "${LOCKDOWN_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium is missing: install the 'chromium' package (apt-get install chromium) or set LOCKDOWN_CHROMIUM to its path" >&2
  exit 1
fi
echo "installing Chromium from the machine's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
