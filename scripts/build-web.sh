#!/usr/bin/env bash
# Build the operator page's front-end libraries: `npm ci` in web/ (exact versions and hashes from
# web/package-lock.json), then copy the few files the page loads into
# lib/sentinel/serve/static/vendor/, which `sentinel serve` serves itself (no CDN at run time).
# scripts/setup.sh runs this when the vendor files are missing; run it again after changing
# web/package.json (then `npm install` in web/ to update the lock, and commit both).
set -euo pipefail
cd "$(dirname "$0")/.."
VENDOR=lib/sentinel/serve/static/vendor
FILES=(dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE)  # the minified build: 51 kB + 2 kB
command -v npm >/dev/null || { echo "[web] error: npm (Node.js 20) is needed to build the operator page: apt-get install -y nodejs npm" >&2; exit 1; }
echo "[web] npm ci in web/ (uPlot $(sed -n 's/.*"uplot": "\(.*\)".*/\1/p' web/package.json))"
(cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
mkdir -p "$VENDOR"
for f in "${FILES[@]}"; do
  cp "web/node_modules/uplot/$f" "$VENDOR/$(basename "$f" | sed 's/^LICENSE$/uPlot.LICENSE/')"
done
echo "[web] $VENDOR: $(ls "$VENDOR" | tr '\n' ' ')"
