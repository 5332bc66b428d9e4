#!/usr/bin/env bash
# Install the browser libraries pinned in package-lock.json and copy the built files the admin serves as
# static files (no CDN, nothing fetched at run time). Re-runs only when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=monitoring/static/monitoring/vendor
stamp="$vendor/.installed"
if [ -f "$stamp" ] && [ ! package-lock.json -nt "$stamp" ] && [ -f "$vendor/chart.umd.min.js" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is required to install the dashboard charts (Chart.js): install Node.js 18+ with npm." >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
mkdir -p "$vendor"
cp node_modules/chart.js/dist/chart.umd.min.js "$vendor/chart.umd.min.js"
cp node_modules/chart.js/LICENSE.md "$vendor/chart.js-LICENSE.md"
touch "$stamp"
