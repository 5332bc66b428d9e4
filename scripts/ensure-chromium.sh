#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright (no browser download): install it when missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "The browser tests need /usr/bin/chromium: run 'sudo apt-get install -y chromium' (they are skipped without it)." >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
