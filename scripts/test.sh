#!/usr/bin/env bash
# Runs the whole test suite (unit, integration against a real nats-server, end-to-end).
# Installs what is missing first: a nats-server >= 2.11 (into .tools/), Garage (the S3 server
# of the S3-mode tests; built once from crates.io, ~8 minutes) and cargo-nextest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/ensure-build-deps.sh"
# The browser test drives Debian's chromium through Debian's chromedriver.
"$ROOT/scripts/ensure-browser.sh"
# The fault suite runs a processor under libfaketime (a skewed clock).
"$ROOT/scripts/ensure-faketime.sh"
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
if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny from crates.io (a few minutes, once)" >&2
    cargo install cargo-deny --locked
fi
# The shared developer image set, when it sits next to the checkout, enables extended checks.
if [ -z "${GALLERY_TESTDATA:-}" ] && [ -f "$ROOT/../shared/testdata/MANIFEST.tsv" ]; then
    export GALLERY_TESTDATA="$ROOT/../shared/testdata"
fi
echo "nats-server: $GALLERY_NATS_SERVER ($("$GALLERY_NATS_SERVER" --version))"
# Style and lints first: a clean clone must be formatted and warning-free.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# No import circles between the files of a crate (docs/ARCHITECTURE.md §1).
python3 "$ROOT/scripts/check-module-cycles.py" src api/src api/lifecycle/src schema/src nats/src \
    projector/src processor/src processor/render/src processor/libtiff/src e2e/src
# No function over 80 lines and no file over 400 outside tests (docs/ARCHITECTURE.md §0).
python3 "$ROOT/scripts/check-shape.py" "$ROOT"
# Supply chain (deny.toml): licenses, banned crates and sources always; known vulnerabilities
# when the advisory database (a git repository) can be fetched, which needs more than the
# package registries.
cargo deny --workspace --log-level error check licenses bans sources
if timeout 120 cargo deny --workspace --log-level error fetch >/dev/null 2>&1; then
    cargo deny --workspace --log-level error check advisories
else
    echo "cargo deny: the advisory database can't be fetched from here; advisories NOT checked" >&2
fi
# The cargo-fuzz targets need nightly to run; with GALLERY_CHECK_FUZZ=1 they are compiled.
if [ -n "${GALLERY_CHECK_FUZZ:-}" ]; then
    cargo check --manifest-path fuzz/Cargo.toml --target-dir target
fi
# The fault suite (e2e/tests/faults.rs) runs the real binary.
cargo build --bin gallery
exec cargo nextest run --workspace --no-fail-fast "$@"
