#!/usr/bin/env bash
# Installs what the browser test (e2e/tests/browser.rs) needs when missing: Debian's chromium
# and, from the npm registry, playwright-core (the version pinned in e2e/browser/package.json;
# it drives the system chromium and downloads no browser of its own).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v chromium >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
if ! command -v node >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [ ! -d "$ROOT/e2e/browser/node_modules/playwright-core" ]; then
    (cd "$ROOT/e2e/browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
