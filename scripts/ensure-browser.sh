#!/usr/bin/env bash
# Installs what the browser test (e2e/tests/browser.rs) needs when missing: Debian's chromium
# and chromium-driver (chromedriver, the WebDriver server the test's Rust client talks to).
# Nothing else: the WebDriver client is a crate (fantoccini), and no npm registry is needed.
set -euo pipefail
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v chromedriver >/dev/null || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
