#!/usr/bin/env bash
# Runs the whole test suite (unit, integration against a real nats-server, end-to-end).
# Installs what is missing first: a nats-server >= 2.11 (into .tools/), Garage (the S3 server
# of the S3-mode tests; built once from crates.io, ~8 minutes) and cargo-nextest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/ensure-build-deps.sh"
GALLERY_NATS_SERVER="$("$ROOT/scripts/ensure-nats-server.sh")"
export GALLERY_NATS_SERVER
# The S3-mode tests run a real Garage unless they are pointed at another endpoint.
if [ -z "${GALLERY_TEST_S3_ENDPOINT:-}" ]; then
    GALLERY_GARAGE="$("$ROOT/scripts/ensure-garage.sh")"
    export GALLERY_GARAGE
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# The shared developer image set, when it sits next to the checkout, enables extended checks.
if [ -z "${GALLERY_TESTDATA:-}" ] && [ -f "$ROOT/../shared/testdata/MANIFEST.tsv" ]; then
    export GALLERY_TESTDATA="$ROOT/../shared/testdata"
fi
echo "nats-server: $GALLERY_NATS_SERVER ($("$GALLERY_NATS_SERVER" --version))"
# Style and lints first: a clean clone must be formatted and warning-free.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The fault suite (e2e/tests/faults.rs) runs the real binary.
cargo build --bin gallery
exec cargo nextest run --workspace --no-fail-fast "$@"
