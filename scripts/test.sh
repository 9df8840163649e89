#!/usr/bin/env bash
# Runs the whole test suite (unit, integration against a real nats-server, end-to-end).
# Installs what is missing first: a nats-server >= 2.11 (into .tools/) and cargo-nextest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v cargo >/dev/null || { echo "needs a Rust toolchain (https://rustup.rs)" >&2; exit 1; }
command -v cc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential; }
GALLERY_NATS_SERVER="$("$ROOT/scripts/ensure-nats-server.sh")"
export GALLERY_NATS_SERVER
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# The shared developer image set, when it sits next to the checkout, enables extended checks.
if [ -z "${GALLERY_TESTDATA:-}" ] && [ -f "$ROOT/../shared/testdata/MANIFEST.tsv" ]; then
    export GALLERY_TESTDATA="$ROOT/../shared/testdata"
fi
echo "nats-server: $GALLERY_NATS_SERVER ($("$GALLERY_NATS_SERVER" --version))"
exec cargo nextest run --workspace --no-fail-fast "$@"
